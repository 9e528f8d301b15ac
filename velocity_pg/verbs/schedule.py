"""``velocity-pg schedule``: backups that happen by themselves, in a long-running process.

At the due times of ``BACKUP_SCHEDULE`` it runs the steps of
:func:`plan_steps` (backup, off-site push, cleanup, verify; run by
:mod:`velocity_pg.scheduling.job`), one line per step on stdout. What it promises:

* **never two runs at once**: runs happen one after the other in this process,
  and a run holds ``BACKUP_DIR/.velocity-schedule.lock`` so another scheduler on
  the same folder cannot start one too. A due time that comes while a run is
  going on is skipped, logged and counted (``runs_total{result="skipped"}``);
  the next due time is computed from the clock, never piled up;
* **a failing step never stops the scheduler**: it is logged, pinged
  (``/fail``), counted, and the next run happens on time;
* **on start**, a run at once when the newest backup is older than one period
  of the schedule (or there is none);
* **SIGTERM / SIGINT** stop a running pg_dump or pg_restore with the clean-up of
  Ctrl+C (the verbs remove their temporary file, drop their throwaway
  database) and the process exits 0, within Docker's stop grace;
* ``--once``: one run, exit 0 only if every step passed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType

from velocity_pg.errors import ExitStatus, Interrupted, OperationFailed, VelocityError
from velocity_pg.postgres.pgtools import Terminated
from velocity_pg.scheduling import job, metrics, notify, runlog
from velocity_pg.scheduling.config import ScheduleConfig, VerifyMode, mask_url
from velocity_pg.scheduling.pings import Kind, Pinger
from velocity_pg.scheduling.timetable import human_duration
from velocity_pg.scheduling.watch import Watch
from velocity_pg.settings import Settings
from velocity_pg.store import catalog, lock, offsite

#: How long a stopping scheduler waits for its last pings (Docker kills at 10 s).
STOP_PING_WAIT = 2.0
#: How long ``--once`` waits for its pings before exiting.
ONCE_PING_WAIT = 20.0
#: The longest single sleep between due times, so a changed wall clock is noticed.
MAX_SLEEP = 30.0
#: How long a stopping scheduler (and ``--once``) waits for its last messages.
STOP_NOTIFY_WAIT = 3.0
ONCE_NOTIFY_WAIT = 20.0
#: The steps whose failure is an off-site one, and a verification's.
OFFSITE_STEPS = frozenset({"push", "cleanup off-site"})
VERIFY_STEPS = frozenset({"verify"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def print_line(line: str) -> None:
    print(line, flush=True)


class Scheduler:
    """The runs, their reports (log lines, pings, metrics) and the loop between them."""

    def __init__(
        self,
        settings: Settings,
        config: ScheduleConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        out: Callable[[str], None] = print_line,
    ) -> None:
        self.settings = settings
        self.config = config
        self.clock = clock
        self.out = out
        self.zone = config.timetable.zone
        #: The database backed up: its backups decide the start and are counted.
        self.database = settings.database
        self.totals = metrics.Totals()
        if config.metrics_file is not None:
            self.totals, problem = metrics.read_previous(config.metrics_file)
            if problem:
                self.log(f"metrics: {problem}")
        self.pinger = Pinger(config.ping_url, self.log) if config.ping_url else None
        self.notifier: notify.Notifier | None = None
        self.watch: Watch | None = None
        if config.notify is not None:
            self.notifier = notify.Notifier(config.notify, self.log)
            self.watch = Watch(
                settings.backup_dir,
                self.notifier,
                notify.origin_of(settings),
                repeat=config.notify.repeat,
                log=self.log,
            )
        #: The next due time (the status page shows it).
        self.due: datetime | None = None
        #: When the freshness clock started counting (no backup at all: stale from then).
        self.watching_since = clock()

    def log(self, message: str) -> None:
        self.out(f"{job.stamp(self.clock(), self.zone)} {message}")

    # -- one run ------------------------------------------------------------------

    def run(self, scheduled: datetime) -> job.RunResult | None:
        """One run now (due at ``scheduled``); None when another scheduler's run holds the lock."""
        folder = self.settings.backup_dir
        ctx: job.RunContext | None = None
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(lock.scheduled_run(folder))
            except VelocityError as exc:
                # Never unlocked: the run fails without starting, and says why.
                result = self.not_started(exc.message)
            else:
                if not held:
                    self.log(
                        f"skipped the run due at {job.stamp(scheduled, self.zone)}: another "
                        f"velocity-pg schedule run is going on in {folder}"
                    )
                    self.totals.runs["skipped"] += 1
                    self.write_metrics()
                    self.log_run(runlog.skipped(self.clock()))
                    return None
                self.log(f"run started (due at {job.stamp(scheduled, self.zone)})")
                if self.pinger is not None:
                    self.pinger.send(Kind.START, f"velocity-pg run started on {folder}\n")
                ctx = job.RunContext(settings=self.settings, config=self.config)
                steps = plan_steps(self.settings, self.config)
                result = job.run_steps(
                    ctx,
                    steps,
                    clock=self.clock,
                    on_step=lambda outcome: self.out(outcome.line(self.zone)),
                )
        self.tell_suspect(ctx)
        verdict = "succeeded" if result.ok else "FAILED"
        failed = [s.name for s in result.steps if s.status is job.StepStatus.FAILED]
        summary = f"run {verdict} in {result.duration:.1f} s" + (
            f" ({', '.join(failed)} failed)" if failed else ""
        )
        # Recorded (totals, run log) before the summary line: whoever reads the log's
        # "run succeeded" finds the run log already written, never its temporary file.
        self.record(result)
        backup = None if ctx is None or ctx.backup is None else ctx.backup.name
        self.log_run(runlog.entry(result, backup))
        self.log(summary)
        if self.pinger is not None:
            body = "\n".join([*(s.line(self.zone) for s in result.steps), summary]) + "\n"
            self.pinger.send(Kind.SUCCESS if result.ok else Kind.FAIL, body)
        try:
            self.tell(result, fresh=ctx is None or SUSPECT_KEY not in ctx.extra)
        except (KeyboardInterrupt, Terminated, Interrupted):
            raise
        except Exception as exc:  # a message never stops the scheduler
            self.log(f"notify: the run's message failed (unexpected {type(exc).__name__})")
        return result

    def tell_suspect(self, ctx: job.RunContext | None) -> None:
        """A new backup that looks wrong: logged, and the ``suspect`` message sent."""
        suspect = None if ctx is None else ctx.extra.get(SUSPECT_KEY)
        if not isinstance(suspect, tuple):
            return
        name, why, pinned = suspect
        self.log(f"WARNING: backup {name} looks wrong: {why}")
        if pinned:
            self.log(f"automatic pin: {pinned}")
        if self.watch is None:
            return
        try:
            self.watch.suspect(name, why, pinned)
        except (KeyboardInterrupt, Terminated, Interrupted):
            raise
        except Exception as exc:  # a message never stops the scheduler
            self.log(f"notify: the suspect message failed (unexpected {type(exc).__name__})")

    def tell(self, result: job.RunResult, *, fresh: bool = True) -> None:
        """The run's message, if any: failed (which steps, why) or recovered. ``fresh``:
        False when its backup is suspect, which does not make the backups fresh."""
        if self.watch is None:
            return
        what = f"the scheduled run started at {job.stamp(result.started, self.zone)}"
        if result.ok:
            self.watch.succeeded(result.finished, what, fresh=fresh)
            return
        failures = [(s.name, s.detail) for s in result.steps if s.status is job.StepStatus.FAILED]
        self.watch.failed(result.finished, what, classify(failures), failures)

    # -- the freshness clock ----------------------------------------------------------

    def allowance(self, now: datetime) -> timedelta:
        if self.config.health_max_age is not None:
            return self.config.health_max_age
        return self.config.timetable.health_allowance(now, self.watching_since)

    def check_freshness(self) -> None:
        """Stale or not, by this process's own clock (even while a run hangs); the digest."""
        if self.watch is None:
            return
        now = self.clock()
        newest = None
        try:
            backups = catalog.list_backups(self.settings.backup_dir, self.database)
            good = newest_good(backups)
            if good is not None:
                newest = (good.name, good.created)
        except VelocityError as exc:
            self.log(f"notify: cannot look at the backups: {exc.message}")
        self.watch.check_stale(now, newest, self.allowance(now), self.watching_since)
        self.maybe_digest(now)

    def maybe_digest(self, now: datetime) -> None:
        assert self.watch is not None and self.notifier is not None
        notify_config = self.config.notify
        if notify_config is None or notify_config.digest is None:
            return
        from velocity_pg.scheduling.timetable import parse_schedule

        timetable = parse_schedule(notify_config.digest, self.zone, probe=now)
        since = self.watch.last_digest() or self.watching_since
        if timetable.next_after(since, self.watching_since) > now:
            return
        self.notifier.send(notify.digest_message(self.watch.origin, self.digest_lines(now)))

    def digest_lines(self, now: datetime) -> list[str]:
        """The digest: all good or not, the runs, the backups here and off-site, the last drill."""
        from velocity_pg.scheduling.timetable import human_duration
        from velocity_pg.store import manifest

        assert self.watch is not None
        lines: list[str] = []
        try:
            backups = catalog.list_backups(self.settings.backup_dir, self.database)
        except VelocityError as exc:
            backups = []
            lines.append(f"Local backups: cannot be listed ({exc.message})")
        size = sum(b.size for b in backups)
        before = self.watch.digest_taken(now, size)
        state = self.watch.state
        good = state.failing_since is None and state.stale_since is None
        since = before["since"]
        lines.insert(
            0,
            ("What happened: all good." if good else "What happened: NOT all good: backups are "
             "failing or stale (see the earlier messages).")
            + f" Runs since {'the last digest' if since else 'the start'}: "
            f"{before['runs_ok']} succeeded, {before['runs_failed']} failed.",
        )  # fmt: skip
        change = ""
        if before["size"] is not None:
            delta = size - int(before["size"])
            sign = "+" if delta >= 0 else "-"
            change = f" ({sign}{catalog.human_size(abs(delta))} since the last digest)"
        newest = (
            f"; the newest, {backups[0].name}, is {human_duration(now - backups[0].created)} old"
            if backups
            else "; there is NONE"
        )
        lines.append(f"Local backups: {len(backups)}, {catalog.human_size(size)}{change}{newest}")
        if self.settings.offsite is not None:
            try:
                count, remote_size, newest_remote = remote_summary(self.settings, self.database)
                age = (
                    f"; the newest is {human_duration(now - newest_remote)} old"
                    if newest_remote is not None
                    else "; there is NONE"
                )
                lines.append(f"Off-site copies: {count}, {catalog.human_size(remote_size)}{age}")
            except (KeyboardInterrupt, Terminated):
                raise
            except Exception as exc:
                why = exc.message if isinstance(exc, VelocityError) else type(exc).__name__
                lines.append(f"Off-site copies: cannot be listed ({why})")
        drill = None
        for backup in backups:
            try:
                record = manifest.read(backup.path)
            except VelocityError:
                continue
            check = record.last_verification if record is not None else None
            if check is not None and check.method == "restore":
                drill = (backup.name, check)
                break
        if drill is None:
            lines.append("Last restore drill: none recorded (BACKUP_VERIFY=restore runs one)")
        else:
            verdict = "passed" if drill[1].ok else f"FAILED ({drill[1].detail})"
            lines.append(f"Last restore drill: {drill[1].at} on {drill[0]}, {verdict}")
        lines.append(
            "What to do: nothing. This message comes on BACKUP_NOTIFY_DIGEST's schedule: "
            "if it stops coming, the scheduler has stopped."
        )
        return lines

    def start_clock(self) -> None:
        """The freshness clock: a daemon thread calling :meth:`check_freshness`."""
        if self.watch is None or self.config.notify is None:
            return
        now = self.clock()
        every = min(
            MAX_SLEEP,
            self.allowance(now).total_seconds() / 4,
            self.config.notify.repeat.total_seconds() / 4,
        )
        if self.config.notify.digest is not None:
            from velocity_pg.scheduling.timetable import parse_schedule

            digest = parse_schedule(self.config.notify.digest, self.zone, probe=now)
            every = min(every, digest.period(now, now).total_seconds() / 4)
        tick = max(every, 0.5)

        def loop() -> None:
            while True:
                time.sleep(tick)
                try:
                    self.check_freshness()
                except Exception as exc:  # the clock must keep ticking
                    self.log(f"notify: the freshness check failed (unexpected {exc!r})")

        threading.Thread(target=loop, name="velocity-pg-freshness", daemon=True).start()

    def not_started(self, reason: str) -> job.RunResult:
        """A run whose lock could not be had: one failed step, ``run lock``, and no other."""
        now = self.clock()
        outcome = job.StepOutcome(job.RUN_LOCK_STEP, job.StepStatus.FAILED, reason, now)
        self.out(outcome.line(self.zone))
        return job.RunResult(started=now, finished=now, steps=[outcome], backup_size=None)

    def record(self, result: job.RunResult) -> None:
        t = self.totals
        t.runs["success" if result.ok else "failure"] += 1
        t.last_run = result.finished.timestamp()
        t.last_duration = round(result.duration, 3)
        if result.ok:
            t.last_success = t.last_run
        if result.backup_size is not None:
            t.last_backup_size = float(result.backup_size)

    def log_run(self, item: dict[str, object]) -> None:
        """One line in the run log (the status page's history); a failure to write it is
        logged and never fails the run."""
        try:
            runlog.append(self.settings.backup_dir, item)
        except (KeyboardInterrupt, Terminated, Interrupted):
            raise
        except VelocityError as exc:
            self.log(f"run log: {exc.message}")
        except OSError as exc:
            self.log(
                f"run log: cannot write {runlog.path_in(self.settings.backup_dir)}: "
                f"{exc.strerror or exc}"
            )
        except Exception as exc:  # the run log never stops the scheduler
            self.log(f"run log: unexpected {type(exc).__name__}")

    def current_totals(self) -> metrics.Totals:
        """A copy of the totals for /metrics (read from the server's threads)."""
        import copy

        for _ in range(3):
            try:
                return copy.deepcopy(self.totals)
            except RuntimeError:  # changed while copied: try again
                continue
        return metrics.Totals()

    def write_metrics(self) -> None:
        path = self.config.metrics_file
        if path is None:
            return
        try:
            backups = catalog.list_backups(self.settings.backup_dir, self.database)
            self.totals.backups["local"] = (len(backups), sum(b.size for b in backups))
        except VelocityError as exc:
            self.log(f"metrics: cannot count the local backups: {exc.message}")
        if self.settings.offsite is not None:
            try:
                self.totals.backups["remote"] = count_remote(self.settings, self.database)
            except (KeyboardInterrupt, Terminated):
                raise
            except Exception as exc:  # nothing off-site may stop the local backups
                why = exc.message if isinstance(exc, VelocityError) else f"unexpected {exc!r}"
                self.log(f"metrics: cannot count the off-site backups: {why}")
        try:
            metrics.write(path, self.totals)
        except OSError as exc:
            self.log(f"metrics: cannot write {path}: {exc.strerror or exc}")
        except VelocityError as exc:
            self.log(f"metrics: {exc.message}")

    # -- the loop -----------------------------------------------------------------

    def first_due(self, now: datetime, anchor: datetime) -> datetime:
        """Now, when the newest backup is older than one period (or there is none); else the
        next due time."""
        timetable = self.config.timetable
        period = timetable.period(now, anchor)
        try:
            backups = catalog.list_backups(self.settings.backup_dir, self.database)
        except VelocityError as exc:
            self.log(f"cannot look at the backups ({exc.message}): running now")
            return now
        if not backups:
            self.log(f"no backup yet in {self.settings.backup_dir}: running now")
            return now
        newest = backups[0]
        age = now - newest.created
        if age > period:
            self.log(
                f"the newest backup, {newest.name}, is {human_duration(age)} old, more than "
                f"one period of the schedule ({human_duration(period)}): running now"
            )
            return now
        due = timetable.next_after(now, anchor)
        self.log(
            f"the newest backup, {newest.name}, is {human_duration(age)} old; "
            f"next run at {job.stamp(due, self.zone)}"
        )
        return due

    def sleep_until(self, due: datetime) -> None:
        while True:
            left = (due - self.clock()).total_seconds()
            if left <= 0:
                return
            time.sleep(min(left, MAX_SLEEP))

    def serve(self) -> None:
        """Run at the due times until SIGTERM or SIGINT (which propagate as exceptions)."""
        timetable = self.config.timetable
        anchor = self.clock()
        self.log(
            f"velocity-pg schedule: {timetable.describe()}; backups in "
            f"{self.settings.backup_dir}; verify: {self.config.verify}; pings: "
            f"{mask_url(self.config.ping_url) if self.config.ping_url else 'off'}; metrics: "
            f"{self.config.metrics_file or 'off'}; off-site: "
            f"{self.settings.offsite.url if self.settings.offsite else 'off'}; messages: "
            f"{self.describe_notify()}"
        )
        self.write_metrics()  # the counts from the first minute, before any run
        self.start_clock()
        due = self.first_due(anchor, anchor)
        self.due = due
        while True:
            self.sleep_until(due)
            self.run(due)
            now = self.clock()
            missed = timetable.due_between(due, now, anchor)
            if missed:
                shown = ", ".join(job.stamp(m, self.zone) for m in missed[:3])
                more = f" and {len(missed) - 3} more" if len(missed) > 3 else ""
                self.log(
                    f"skipped {len(missed)} due time(s) that came while the run was going "
                    f"on: {shown}{more}"
                )
                self.totals.runs["skipped"] += len(missed)
            self.write_metrics()
            if missed:  # after the metrics: the count there never waits for this file
                self.log_run(runlog.skipped(now, len(missed)))
            due = timetable.next_after(now, anchor)
            self.due = due
            self.log(f"next run at {job.stamp(due, self.zone)}")

    def describe_notify(self) -> str:
        n = self.config.notify
        if n is None:
            return "off"
        events = ", ".join(sorted(n.events))
        digest = f", digest {n.digest}" if n.digest else ""
        return f"{len(n.urls)} URL(s) ({events}; repeated every {notify.short(n.repeat)}{digest})"

    def close(self, wait: float, notify_wait: float = STOP_NOTIFY_WAIT) -> None:
        if self.pinger is not None:
            self.pinger.close(wait)
        if self.notifier is not None:
            self.notifier.close(notify_wait)


def classify(failures: list[tuple[str, str]]) -> notify.Event:
    """A failed run's event: a failure of the backup itself first, then off-site, then a check."""
    names = {name for name, _ in failures}
    if names - OFFSITE_STEPS - VERIFY_STEPS:
        return notify.Event.FAILED
    if names & OFFSITE_STEPS:
        return notify.Event.OFFSITE
    return notify.Event.VERIFY


def remote_summary(settings: Settings, database: str | None) -> tuple[int, int, datetime | None]:
    """This folder's off-site backups of ``database``: how many, their bytes, the newest's time."""
    from velocity_pg.store import remote

    ctx = offsite.prepare(settings, for_upload=False)
    listing = remote.list_backups(ctx.store)
    mine, _foreign = offsite.split_owned(settings.backup_dir, listing.backups)
    good = [b for b in mine if database is None or b.database == database]
    newest = max((b.created for b in good), default=None)
    return len(good), sum(b.record.object_size for b in good if b.record is not None), newest


def count_remote(settings: Settings, database: str | None) -> tuple[int, int]:
    """This folder's off-site backups of ``database`` (all when None): how many, and their
    bytes (another folder's copies under the prefix are not counted)."""
    from velocity_pg.store import remote

    ctx = offsite.prepare(settings, for_upload=False)
    listing = remote.list_backups(ctx.store)
    mine, _foreign = offsite.split_owned(settings.backup_dir, listing.backups)
    good = [b for b in mine if database is None or b.database == database]
    return len(good), sum(b.record.object_size for b in good if b.record is not None)


def run(settings: Settings, *, one_run: bool) -> int:
    """``velocity-pg schedule`` (``--once``): its settings checked first, then its runs;
    the exit status."""
    from velocity_pg.scheduling import config

    checked = config.load(settings, datetime.now(UTC))
    return once(settings, checked) if one_run else serve(settings, checked)


def serve(settings: Settings, config: ScheduleConfig) -> int:
    """``velocity-pg schedule``: run until stopped; 0 when stopped by SIGTERM/SIGINT."""
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Unwind like Ctrl+C, so the running verb cleans up; remember which signal.
        received.append(signal.Signals(signum).name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    from velocity_pg.verbs import serve as serving

    serving.http_addr(settings)  # a bad BACKUP_HTTP_ADDR: exit 2 before anything runs
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    scheduler = Scheduler(settings, config)
    # Bound before the first run: an address that cannot be had fails closed (exit 1).
    page = serving.start_beside(
        settings, scheduler.current_totals, scheduler.log, lambda: scheduler.due
    )
    try:
        scheduler.serve()
    except (Interrupted, KeyboardInterrupt, Terminated):
        why = received[0] if received else "interrupted"
        scheduler.log(f"stopping ({why}); nothing is left half-done")
        if page is not None:
            page.server.server_close()
        scheduler.close(STOP_PING_WAIT)
        return ExitStatus.OK
    return ExitStatus.OK  # pragma: no cover - serve() only ends by an exception


def once(settings: Settings, config: ScheduleConfig) -> int:
    """``velocity-pg schedule --once``: one run; 0 only if every step passed."""
    scheduler = Scheduler(settings, config)
    try:
        result = scheduler.run(scheduler.clock())
        scheduler.write_metrics()
        if result is not None and not result.ok:
            scheduler.check_freshness()
    except (KeyboardInterrupt, Terminated):
        scheduler.close(STOP_PING_WAIT)
        raise Interrupted("interrupted; the run was stopped and cleaned up") from None
    except Interrupted:
        scheduler.close(STOP_PING_WAIT)
        raise
    scheduler.close(ONCE_PING_WAIT, ONCE_NOTIFY_WAIT)
    if result is None:
        print(
            "velocity-pg: error: another velocity-pg schedule run is going on in "
            f"{settings.backup_dir}; this one was skipped",
            file=sys.stderr,
        )
        return ExitStatus.FAILED
    if not result.ok:
        failed = "; ".join(
            f"{s.name}: {s.detail}" for s in result.steps if s.status is job.StepStatus.FAILED
        )
        print(f"velocity-pg: error: the run failed: {failed}", file=sys.stderr)
        return ExitStatus.FAILED
    return ExitStatus.OK


# -- the steps of a run: each calls a verb's own code ---------------------------------------
#
# 1. ``backup``: :func:`velocity_pg.verbs.backup.create_backup`;
# 2. ``push``, when off-site copies are configured (``BACKUP_S3_URL``):
#    :func:`velocity_pg.verbs.backup.push_new` of the new backup;
# 3. ``cleanup``: :func:`velocity_pg.verbs.cleanup.run_cleanup` (local);
# 4. ``cleanup off-site``, when configured: :func:`velocity_pg.verbs.cleanup.cleanup_remote`;
# 5. ``verify``: :func:`velocity_pg.verbs.verify.verify` of the new backup, as
#    ``BACKUP_VERIFY`` says: ``checksum``, ``restore`` (with
#    :func:`velocity_pg.verbs.verify.restore_drill`) or ``none``.
#
# Nothing is pushed, pruned or verified without a new backup, and no off-site copy
# is pruned after a push that failed.


def newest_good(backups: list[catalog.Backup]) -> catalog.Backup | None:
    """The newest backup that is not suspect (``backups`` newest first), as ``status
    --max-age`` judges: a suspect backup is not a fresh one. One whose manifest cannot be
    read counts (its own problems are reported elsewhere)."""
    from velocity_pg.errors import ManifestUnreadable
    from velocity_pg.store import anomaly, manifest

    for backup in backups:
        try:
            record = manifest.read(backup.path)
        except (ManifestUnreadable, OSError):
            return backup
        if not anomaly.is_suspect(record):
            return backup
    return None


#: Where step_backup leaves (name, why, what became of the automatic pin) of a new backup
#: that looks wrong.
SUSPECT_KEY = "suspect"


def step_backup(ctx: job.RunContext) -> str:
    from velocity_pg.store import anomaly
    from velocity_pg.verbs.backup import create_backup

    result = create_backup(ctx.settings)
    ctx.backup = result
    said = (
        f"{result.name} ({catalog.human_size(result.size)}) of database {result.database!r} "
        f"in {result.duration:.1f} s"
    )
    if result.suspect is not None:
        pinned = "" if result.autopin is None else result.autopin.sentence()
        ctx.extra[SUSPECT_KEY] = (result.name, anomaly.describe(result.suspect), pinned)
        said += "; SUSPECT, see below"
    if result.statistics_problem:
        said += f"; {result.statistics_problem}"
    return said


def step_cleanup(ctx: job.RunContext) -> str:
    from velocity_pg.verbs import cleanup

    result = cleanup.run_cleanup(ctx.settings)
    if result.partial:
        raise OperationFailed(result.partial_message())
    return (
        f"kept {len(result.plan.keep)} backup(s), deleted {len(result.deleted)}, "
        f"freed {catalog.human_size(result.bytes_freed)}"
    )


def step_verify(ctx: job.RunContext) -> str:
    from velocity_pg.verbs import verify

    assert ctx.backup is not None
    drill = verify.restore_drill(ctx.settings) if ctx.config.verify is VerifyMode.RESTORE else None
    outcomes = verify.verify(ctx.settings, [ctx.backup.name], restore_check=drill)
    if not outcomes:  # pragma: no cover - the backup was just made
        raise OperationFailed(f"{ctx.backup.name} was not found to verify")
    outcome = outcomes[0]
    if not outcome.ok:
        raise OperationFailed(f"{outcome.name}: {outcome.problem}")
    return f"{outcome.name} ({', '.join(outcome.checks)})"


def step_push(ctx: job.RunContext) -> str:
    from velocity_pg.verbs.backup import BackupResult, push_new

    assert isinstance(ctx.backup, BackupResult)
    remote = offsite.prepare(ctx.settings)
    pushed = push_new(ctx.settings, remote, ctx.backup)
    how = "encrypted" if pushed.encrypted else "not encrypted"
    return (
        f"{pushed.name} {pushed.status}: {pushed.object_key} "
        f"({catalog.human_size(pushed.size)}, {how}) in {remote.store.describe()}, checked"
    )


def step_cleanup_offsite(ctx: job.RunContext) -> str:
    from velocity_pg.verbs import cleanup

    result = cleanup.cleanup_remote(ctx.settings)
    if result.failed:
        problems = "; ".join(f"{d.name}: {d.detail}" for d in result.failed[:3])
        raise OperationFailed(
            f"off-site cleanup was partial: {len(result.failed)} deletion(s) failed ({problems})"
        )
    summary = cleanup.format_remote_summary(result)
    if result.leftovers_skipped:
        summary += f" Note: {result.leftovers_skipped}."
    warning = result.warning()
    return summary if warning is None else f"{summary} Warning: {warning}"


def plan_steps(settings: Settings, config: ScheduleConfig) -> list[job.Step]:
    """The run's steps, in order."""
    remote = settings.offsite is not None
    steps = [job.Step("backup", step_backup)]
    if remote:
        steps.append(job.Step("push", step_push, needs=("backup",)))
    steps.append(job.Step("cleanup", step_cleanup, needs=("backup",)))
    if remote:
        steps.append(job.Step("cleanup off-site", step_cleanup_offsite, needs=("backup", "push")))
    if config.verify is not VerifyMode.NONE:
        steps.append(job.Step("verify", step_verify, needs=("backup",)))
    return steps
