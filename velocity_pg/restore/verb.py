"""``velocity-pg restore NAME``: replace a database with a backup, never losing it.

Order of work, so that a failed restore leaves the database exactly as it was:

1. **Refuse before touching anything**: a name outside BACKUP_DIR or not a
   backup, a missing file, a dump that does not match its manifest (size and
   SHA-256), an archive ``pg_restore --list`` cannot read, a
   server we cannot reach, a user who may not create or rename the database,
   a database with prepared transactions, or a restore of the same database
   already running (a session advisory lock, see :mod:`velocity_pg.restore.staging`).
2. **Countdown** (5 s, Ctrl+C cancels; ``--yes`` skips it). ``--check`` stops here.
3. **Restore into a staging database** (``velocity_pg_staging_<hash>``) created
   from template0 with the live database's owner, encoding and locale; its
   settings and grants are rehearsed on it (and rolled back) first; then
   ``pg_restore --exit-on-error --jobs N`` and ``ANALYZE``. The live database
   keeps serving all along. Any failure or Ctrl+C drops the staging database.
   A run that was killed leaves it behind: the next run, holding the lock,
   knows it is abandoned and drops it.
4. **Swap** in one transaction (see :mod:`velocity_pg.restore.swap`): all or nothing,
   unavailable only for that transaction. Ctrl+C is held back until it ends.
5. **Drop the old database**, renamed aside by the swap.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from velocity_pg.errors import (
    CommandFailed,
    ConfigError,
    Interrupted,
    LockBusy,
    ManifestUnreadable,
    OperationFailed,
    VelocityError,
    describe_failure,
)
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres import db, pgtools
from velocity_pg.restore import staging, swap
from velocity_pg.restore.progress import RestoreProgress, Toc, parse_toc
from velocity_pg.restore.properties import DatabaseProps
from velocity_pg.settings import Connection, Settings
from velocity_pg.store import catalog, lock, manifest

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

COUNTDOWN_SECONDS = 5
SYSTEM_DATABASES = ("template0", "template1")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- what the user sees ------------------------------------------------------------


class Console:
    """Lines on stderr (``velocity-pg: ...``) and, on a terminal, a progress line."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty() if tty is None else tty
        self._open = False
        self._last = 0.0

    def say(self, text: str) -> None:
        self.end_progress()
        print(f"velocity-pg: {text}", file=self.stream, flush=True)

    def progress(self, text: str, *, force: bool = False) -> None:
        """Rewrite the progress line (terminals only, at most 10 times a second)."""
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(f"\r\033[Kvelocity-pg: {text}")
        self.stream.flush()
        self._open = True

    def end_progress(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def countdown(console: Console, seconds: int, sleep: Callable[[float], None] = time.sleep) -> None:
    """One line a second; Ctrl+C raises KeyboardInterrupt (nothing has changed yet)."""
    for remaining in range(seconds, 0, -1):
        if remaining == seconds:
            console.say(f"starting in {remaining} s; press Ctrl+C to cancel")
        else:
            console.say(f"{remaining}...")
        sleep(1)


@contextmanager
def shielded() -> Iterator[list[int]]:
    """Hold back Ctrl+C, SIGTERM and SIGHUP while a step that must not stop halfway runs.

    Yields the list of signals that arrived meanwhile.
    """
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    try:
        previous = {sig: signal.signal(sig, note) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals go elsewhere anyway
        yield received
        return
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything checked before anything is touched."""

    backup: Path
    size: int
    toc: Toc
    target: str
    live: DatabaseProps | None
    role: swap.Role
    program: pgtools.Program
    server_version: str
    jobs: int
    staging: str
    aside: str
    lock_key: int
    leftovers: tuple[str, ...]


@dataclass(frozen=True)
class CheckResult:
    plan: Plan

    def to_json(self) -> dict[str, object]:
        plan = self.plan
        return {
            "check": "passed",
            "name": plan.backup.name,
            "path": str(plan.backup),
            "size_bytes": plan.size,
            "database": plan.target,
            "database_exists": plan.live is not None,
            "objects": plan.toc.entries,
            "archive_created_at": plan.toc.created_at,
            "dumped_from": plan.toc.dumped_from,
            "server_version": plan.server_version,
            "pg_restore_version": plan.program.version,
            "jobs": plan.jobs,
            "leftovers": list(plan.leftovers),
        }


@dataclass(frozen=True)
class RestoreResult:
    name: str
    path: Path
    database: str
    created: bool
    started: datetime
    duration: float
    restore_seconds: float
    unavailable_seconds: float
    jobs: int
    objects_total: int
    objects_restored: int
    terminated_sessions: int
    server_version: str
    pg_restore_version: str
    dropped_leftovers: tuple[str, ...]
    previous_kept_as: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "database": self.database,
            "created_database": self.created,
            "started_at": self.started.isoformat(),
            "duration_seconds": round(self.duration, 3),
            "restore_seconds": round(self.restore_seconds, 3),
            "unavailable_seconds": round(self.unavailable_seconds, 3),
            "jobs": self.jobs,
            "objects": {"total": self.objects_total, "restored": self.objects_restored},
            "terminated_sessions": self.terminated_sessions,
            "server_version": self.server_version,
            "pg_restore_version": self.pg_restore_version,
            "dropped_leftovers": list(self.dropped_leftovers),
            "previous_kept_as": self.previous_kept_as,
        }


# -- the verb ----------------------------------------------------------------------------


def restore_backup(
    settings: Settings,
    name: str,
    *,
    check: bool = False,
    yes: bool = False,
    jobs: int | None = None,
    console: Console | None = None,
    countdown_seconds: int = COUNTDOWN_SECONDS,
) -> CheckResult | RestoreResult:
    """Check, count down, and (unless ``check``) restore; see the module docstring."""
    console = Console() if console is None else console
    folder = settings.backup_dir
    catalog.require_dir(folder)
    target = target_database(settings.connection)
    refuse_target(target)
    result: CheckResult | RestoreResult | None = None
    try:
        # Shared: a cleanup cannot delete the backup while we read it.
        with lock.shared(folder, "restore"):
            path = catalog.resolve_backup(folder, name)
            # The session holds the per-database restore lock until it closes.
            with swap.connect_admin(settings.connection, target) as admin:
                plan = prepare(settings, admin, path, target, jobs)
                announce(console, settings, plan)
                if not yes:
                    countdown(console, countdown_seconds)
                result = CheckResult(plan) if check else execute(settings, admin, plan, console)
    except (KeyboardInterrupt, pgtools.Terminated):
        console.end_progress()
        if isinstance(result, RestoreResult):  # came after the restore had completed
            return result
        raise Interrupted("interrupted; nothing was changed") from None
    assert result is not None
    return result


def target_database(conn: Connection) -> str:
    """The database to restore: PGDATABASE (and fallbacks), else libpq's default, the user."""
    if conn.dbname:
        return conn.dbname
    if conn.user:
        return conn.user
    return pwd.getpwuid(os.geteuid()).pw_name


def refuse_target(target: str) -> None:
    if target in SYSTEM_DATABASES:
        raise ConfigError(f"refusing to restore into {target}, a system database; set PGDATABASE")
    if staging.is_internal_name(target):
        raise ConfigError(
            f"refusing to restore into {target}, a name velocity-pg uses for its own "
            "temporary databases; set PGDATABASE"
        )


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_against_manifest(path: Path) -> None:
    """Refuse a dump that does not match its manifest (a dump without one is not checked)."""
    try:
        record = manifest.read(path)
    except ManifestUnreadable as exc:
        raise OperationFailed(f"{exc.message}; nothing was changed") from exc
    if record is None:
        return
    problem = manifest.checksum_problem(path, record)
    if problem is not None:
        raise OperationFailed(
            f"{path.name} does not match its manifest ({problem}); "
            "restore another backup (`velocity-pg list`); nothing was changed"
        )


def check_compression(program: pgtools.Program, path: Path) -> None:
    """Refuse, with the reason, a zstd/lz4 dump (per its manifest) this pg_restore cannot read."""
    record = manifest.read(path)  # already read and checked by check_against_manifest
    method = record.compression_method if record is not None else None
    problem = compressions.restore_problem(method, program.major, program.version)
    if problem is not None:
        raise OperationFailed(
            f"{path.name} cannot be restored here: {problem}; nothing was changed"
        )


def read_toc(program: pgtools.Program, path: Path) -> Toc:
    """The archive's table of contents; refuses what pg_restore cannot read."""
    try:
        listing = pgtools.capture(pgtools.pg_restore_list_cmd(program.path, path), {})
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is not a backup pg_restore {program.version} can read: "
            f"{describe_failure(exc.returncode, exc.stderr)}; nothing was changed"
        ) from exc
    return parse_toc(listing)


def prepare(settings: Settings, admin: Conn, path: Path, target: str, jobs: int | None) -> Plan:
    """Every check that can refuse, in order; takes the per-database restore lock."""
    server_num = db.server_version_num(admin)
    row = admin.execute("SHOW server_version").fetchone()
    server_version = str(row[0]) if row else str(server_num)
    program = pgtools.find_program("pg_restore", pgtools.server_major(server_num))
    check_against_manifest(path)
    check_compression(program, path)
    toc = read_toc(program, path)
    size = path.stat().st_size

    role = swap.current_role(admin)
    live = swap.read_props(admin, target)
    if not role.superuser:
        if not role.createdb:
            raise OperationFailed(
                f"user {role.name!r} may not create databases, which a restore needs; "
                "restore as a superuser (POSTGRES_USER) or grant it CREATEDB; nothing was changed"
            )
        if live is not None and not swap.is_member_of(admin, live.owner):
            raise OperationFailed(
                f"user {role.name!r} does not own database {target!r} (owner: {live.owner!r}); "
                "restore as a superuser or as the owner; nothing was changed"
            )
    if live is not None and swap.prepared_transactions(admin, target):
        raise OperationFailed(
            f"database {target!r} has prepared transactions, which would block the swap; "
            "COMMIT PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts); "
            "nothing was changed"
        )

    key = staging.lock_key(target)
    if not swap.try_lock(admin, key):
        raise LockBusy(
            f"a restore of database {target!r} is already running on this server; "
            "wait for it to finish; nothing was changed"
        )
    swap.keep_session_alive(admin)
    staging_db, aside_db = staging.staging_name(target), staging.aside_name(target)
    leftovers = tuple(swap.existing(admin, [staging_db, aside_db]))
    if aside_db in leftovers and live is None:
        raise OperationFailed(
            f"database {aside_db!r} holds what {target!r} contained before an earlier "
            f"restore, and {target!r} does not exist; rename it back (ALTER DATABASE "
            f"{aside_db} RENAME TO ...) or drop it, then restore again; nothing was changed"
        )
    return Plan(
        backup=path,
        size=size,
        toc=toc,
        target=target,
        live=live,
        role=role,
        program=program,
        server_version=server_version,
        jobs=jobs or default_jobs(),
        staging=staging_db,
        aside=aside_db,
        lock_key=key,
        leftovers=leftovers,
    )


def announce(console: Console, settings: Settings, plan: Plan) -> None:
    conn = settings.connection
    where = conn.host or "the local socket"
    if conn.port is not None:
        where += f":{conn.port}"
    version = (plan.toc.dumped_from or "").split(" ")[0]
    dumped = f", dumped from PostgreSQL {version}" if version else ""
    what = (
        "replacing its current contents"
        if plan.live is not None
        else "creating it (it does not exist yet)"
    )
    console.say(
        f"restore {plan.backup.name} ({catalog.human_size(plan.size)}, "
        f"{plan.toc.entries} objects{dumped}) into database {plan.target!r} on {where}, {what}"
    )
    if plan.leftovers:
        console.say(
            "an earlier restore of this database was killed; the restore will first drop "
            "what it left: " + ", ".join(plan.leftovers)
        )


def execute(settings: Settings, admin: Conn, plan: Plan, console: Console) -> RestoreResult:
    """Steps 3 to 5: staging, pg_restore, swap, drop the old database."""
    import psycopg

    started_at = datetime.now(UTC)
    clock = time.monotonic()
    target = plan.target
    dropped = drop_leftovers(admin, plan, console)

    progress = RestoreProgress(total=plan.toc.entries, entry_ids=plan.toc.entry_ids)
    try:
        comment = staging.staging_comment(target, os.getpid(), socket.gethostname())
        swap.create_staging(admin, plan.staging, plan.live, comment)
        if plan.live is not None:
            swap.rehearse_properties(
                admin, plan.staging, plan.live, as_grantors=plan.role.superuser
            )
        console.say(
            f"restoring into a new database, {plan.staging}, with {plan.jobs} job(s); "
            f"{target!r} is left as it is until the copy is complete"
        )
        run_pg_restore(settings, plan, progress, console)
        console.say("analyzing the restored copy")
        swap.analyze(settings.connection, plan.staging)
    except (KeyboardInterrupt, pgtools.Terminated):
        console.end_progress()
        raise Interrupted(f"interrupted; {discard_staging(settings, admin, plan)}") from None
    except Exception as exc:
        console.end_progress()
        raise OperationFailed(f"{describe(exc)}; {discard_staging(settings, admin, plan)}") from exc
    restore_seconds = time.monotonic() - clock

    console.say(
        f"swapping the restored copy in; {target!r} is unavailable until this finishes"
        if plan.live is not None
        else f"renaming the restored copy to {target!r}"
    )
    previous_kept_as: str | None = None
    with shielded() as held_back:
        try:
            swapped = swap.swap_in(
                admin,
                settings.connection,
                target=target,
                staging=plan.staging,
                aside=plan.aside,
                replace=plan.live is not None,
                as_grantors=plan.role.superuser,
            )
        except Exception as exc:  # swap_in raises only once it knows nothing was committed
            raise OperationFailed(
                f"{describe(exc)}; {discard_staging(settings, admin, plan)}"
            ) from exc
        # Committed: the restore is done. What follows only tidies up.
        if plan.live is not None:
            try:
                swap.drop_database(admin, plan.aside)
            except psycopg.Error as exc:
                previous_kept_as = plan.aside
                console.say(
                    f"warning: the restore is complete, but the previous contents of {target!r}, "
                    f"kept as database {plan.aside!r}, could not be dropped: {db.one_line(exc)}; "
                    "drop it yourself, or the next restore of this database drops it"
                )
    if held_back:
        console.say("Ctrl+C arrived during the swap, which never stops halfway; it completed")
    return RestoreResult(
        name=plan.backup.name,
        path=plan.backup,
        database=target,
        created=plan.live is None,
        started=started_at,
        duration=time.monotonic() - clock,
        restore_seconds=restore_seconds,
        unavailable_seconds=swapped.unavailable,
        jobs=plan.jobs,
        objects_total=plan.toc.entries,
        objects_restored=progress.done,
        terminated_sessions=swapped.terminated,
        server_version=plan.server_version,
        pg_restore_version=plan.program.version,
        dropped_leftovers=dropped,
        previous_kept_as=previous_kept_as,
    )


def drop_leftovers(admin: Conn, plan: Plan, console: Console) -> tuple[str, ...]:
    """Drop what a killed restore of this database left (we hold its lock, so it is dead)."""
    import psycopg

    for name in plan.leftovers:
        what = (
            "the unfinished copy"
            if name == plan.staging
            else f"the previous contents of {plan.target!r}, replaced by that restore"
        )
        with shielded():
            try:
                swap.drop_database(admin, name)
            except psycopg.Error as exc:
                raise OperationFailed(
                    f"cannot drop {name}, {what}, left by an earlier restore: "
                    f"{db.one_line(exc)}; drop it yourself (DROP DATABASE {name}); "
                    f"database {plan.target!r} was not changed"
                ) from exc
        console.say(f"dropped {name}, {what}, left by an earlier restore that was killed")
    return plan.leftovers


def run_pg_restore(
    settings: Settings, plan: Plan, progress: RestoreProgress, console: Console
) -> None:
    cmd = pgtools.pg_restore_cmd(
        plan.program.path, plan.backup, plan.staging, jobs=plan.jobs, verbose=True
    )
    env = settings.connection.libpq_env() | {"PGDATABASE": plan.staging}

    def on_line(line: str) -> None:
        if progress.feed(line):
            console.progress(f"restoring: {progress.describe()}")

    console.progress(f"restoring: {progress.describe()}", force=True)
    pgtools.run(cmd, env, on_stderr_line=on_line)
    progress.finish()
    console.progress(f"restoring: {progress.describe()}", force=True)
    console.end_progress()


def discard_staging(settings: Settings, admin: Conn, plan: Plan) -> str:
    """Drop the staging database after a failure; says what state things are in."""
    import psycopg

    target = plan.target
    with shielded():
        try:
            if admin.closed or admin.broken:
                raise psycopg.InterfaceError("the admin session is gone")
            try:
                swap.drop_database(admin, plan.staging)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if not (admin.closed or admin.broken):
                    raise
                raise psycopg.InterfaceError("the admin session is gone") from None
        except psycopg.InterfaceError:
            # Our session (and with it the lock) is gone: drop only under a new lock.
            try:
                with swap.connect_admin(settings.connection, target) as fresh:
                    if not swap.try_lock(fresh, plan.lock_key):
                        return (
                            f"database {target!r} was not changed; the unfinished copy "
                            f"{plan.staging!r} is left to the restore that is running now"
                        )
                    swap.drop_database(fresh, plan.staging)
            except (psycopg.Error, VelocityError) as exc:
                return not_dropped(plan, exc)
        except psycopg.Error as exc:
            return not_dropped(plan, exc)
    return f"the unfinished copy was dropped and database {target!r} was not changed"


def describe(exc: BaseException) -> str:
    """One line for an error: ours say it themselves; psycopg's and others' are flattened."""
    if isinstance(exc, VelocityError):
        return exc.message
    import psycopg

    if isinstance(exc, psycopg.Error):
        return db.one_line(exc)
    return f"unexpected {type(exc).__name__}: {db.one_line(exc)}"


def not_dropped(plan: Plan, exc: BaseException) -> str:
    reason = describe(exc)
    return (
        f"database {plan.target!r} was not changed, but the unfinished copy "
        f"{plan.staging!r} could not be dropped ({reason}); the next restore of "
        f"{plan.target!r} drops it"
    )
