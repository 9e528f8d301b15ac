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

import dataclasses
import os
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
from velocity_pg.postgres import db, endpoint, pgtools
from velocity_pg.restore import archive, copies, space, stage, staging, swap
from velocity_pg.restore.copies import Copy
from velocity_pg.restore.progress import RestoreProgress, Toc, parse_toc
from velocity_pg.restore.properties import DatabaseProps
from velocity_pg.restore.stage import StageResult
from velocity_pg.settings import Settings
from velocity_pg.store import catalog, lock, manifest

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]
    SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

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
def shielded(*, deliver: bool = True) -> Iterator[list[int]]:
    """Hold back Ctrl+C, SIGTERM and SIGHUP while a step that must not stop halfway runs.

    Yields the list of signals that arrived meanwhile. A signal is deferred, never
    dropped: with ``deliver`` (the default) the first one is handed, as the section
    ends, to the handler that was in place before it (Ctrl+C: KeyboardInterrupt;
    SIGTERM, SIGHUP: :class:`~velocity_pg.postgres.pgtools.Terminated`; the
    scheduler's own), so the run stops right there, as it would have without the
    shield. ``deliver=False`` is for a section that is the run's point of no return
    (the swap): the caller finishes and reports the signals it was given.
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
        if deliver and received:
            first = signal.Signals(received[0])
            deliver_signal(first, previous[first])


def signal_name(signum: int) -> str:
    """How messages name a stop signal: "Ctrl+C", "SIGTERM", "SIGHUP"."""
    return "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name


def deliver_signal(signum: int, handler: SignalHandler) -> None:
    """Act on a signal that was held back, as ``handler`` (the one it would have met) says."""
    if callable(handler):
        handler(signum, None)  # raises: KeyboardInterrupt, Terminated, ...
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action: the process ends, as it would have
    # SIG_IGN, or a handler installed outside Python: it was not ours to act on


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything checked before anything is touched."""

    backup: Path
    size: int
    toc: Toc
    #: The database the backup was made of (manifest, else archive), when known.
    source: str | None
    #: The server and database (``endpoint.dbname`` is ``target``).
    where: endpoint.Endpoint
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
    #: The rollback point's name, and the one there is (kept by an earlier restore).
    previous: str = ""
    rollback: Copy | None = None
    #: A complete staged copy (``restore --stage``) found in the staging name.
    staged: Copy | None = None
    #: Swap that staged copy in (it is of this very file) instead of restoring.
    reuse: bool = False
    #: Why the staged copy is dropped first (another backup, a changed file).
    stale_reason: str | None = None
    keep_previous: bool = True
    #: SHA-256 of the backup file, when it was needed (staging, judging a staged copy).
    sha256: str | None = None
    server_num: int = 0
    entries: tuple[archive.Entry, ...] = ()
    slots: tuple[str, ...] = ()  # logical replication slots of the live database
    subscriptions: tuple[str, ...] = ()  # logical replication subscriptions in it
    leftover_stories: tuple[str, ...] = ()  # per leftover: who left it (staging.leftover_story)
    room: space.Space | None = None  # the free-space check, where the disk is visible

    @property
    def other_source(self) -> bool:
        """The backup was made of another database than the one it would replace."""
        return self.source is not None and self.source != self.target

    def source_warning(self) -> str | None:
        """The loud line for a backup of database A restored into database B."""
        if not self.other_source:
            return None
        return (
            f"WARNING: {self.backup.name} is a backup of database {self.source!r}, "
            f"not of {self.target!r}: the restore replaces {self.target!r} with "
            f"the contents of {self.source!r}"
        )


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
            "source_database": plan.source,
            "other_source": plan.other_source,
            "database_exists": plan.live is not None,
            "objects": plan.toc.entries,
            "archive_created_at": plan.toc.created_at,
            "dumped_from": plan.toc.dumped_from,
            "server_version": plan.server_version,
            "pg_restore_version": plan.program.version,
            "jobs": plan.jobs,
            "leftovers": list(plan.leftovers),
            "replication_slots": list(plan.slots),
            "subscriptions": list(plan.subscriptions),
            "free_space": None if plan.room is None else plan.room.to_json(),
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
    #: Swapped in a copy staged earlier (no pg_restore in this run).
    used_staged_copy: bool = False
    #: Transactions committed in the live database between the stage and the swap
    #: (pg_stat_database; an upper bound, read-only ones included); None: not known.
    commits_since_stage: int | None = None
    #: The previous contents are the database's rollback point (``previous_kept_as``).
    rollback_point: bool = False
    #: The older rollback point this restore replaced (dropped), described.
    replaced_rollback: str | None = None
    #: A rollback point left as it was (BACKUP_KEEP_PREVIOUS=false), described.
    untouched_rollback: str | None = None
    unrefreshed_matviews: tuple[archive.Unrefreshed, ...] = ()
    #: The database the backup was made of, when known.
    source_database: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "database": self.database,
            "source_database": self.source_database,
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
            "used_staged_copy": self.used_staged_copy,
            "commits_since_stage": self.commits_since_stage,
            "rollback_point": self.previous_kept_as if self.rollback_point else None,
            "replaced_rollback_point": self.replaced_rollback,
            "unrefreshed_materialized_views": [v.to_json() for v in self.unrefreshed_matviews],
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
    stage_only: bool = False,
    drop_later: bool = False,
) -> CheckResult | RestoreResult | StageResult:
    """Check, count down, and (unless ``check``) restore; see the module docstring.

    ``drop_later``: after the swap, leave what it replaced for good (an older rollback
    point, or the previous contents when they are not kept) under the aside name for
    ``restore --tidy`` to drop, so `just db-restore` restarts the app before that drop.

    ``stage_only``: build the copy and stop (no countdown: nothing live changes).
    """
    console = Console() if console is None else console
    folder = settings.backup_dir
    catalog.require_dir(folder)
    result: CheckResult | RestoreResult | StageResult | None = None
    try:
        # Shared: a cleanup cannot delete the backup while we read it.
        with lock.shared(folder, "restore"):
            path = catalog.resolve_backup(folder, name)
            # The database libpq reaches with these settings (service file, URI, ...),
            # the one `backup` dumps: never a name guessed from the settings.
            where = endpoint.resolve(settings.connection)
            target = where.dbname
            refuse_target(target)
            # The session holds the per-database restore lock until it closes.
            with swap.connect_admin(where, target) as admin:
                plan = prepare(where, admin, path, target, jobs)
                plan = dataclasses.replace(plan, keep_previous=settings.keep_previous)
                plan = stage.judge(plan, stage_only)
                announce(console, settings, plan)
                stage.announce(console, plan, stage_only)
                # A check starts nothing, so there is nothing to count down to.
                if not (yes or check or stage_only):
                    countdown(console, countdown_seconds)
                if check:
                    result = CheckResult(plan)
                elif stage_only:
                    result = stage.build(settings, admin, plan, console)
                else:
                    result = execute(settings, admin, plan, console, drop_later=drop_later)
    except (KeyboardInterrupt, pgtools.Terminated) as exc:
        console.end_progress()
        if isinstance(result, (RestoreResult, StageResult)):  # came after it completed
            return result
        raise Interrupted(f"{pgtools.stop_word(exc)}; nothing was changed") from None
    assert result is not None
    return result


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


def check_against_manifest(path: Path) -> manifest.Manifest | None:
    """Refuse a dump that does not match its manifest (a dump without one is not checked)."""
    try:
        record = manifest.read(path)
    except ManifestUnreadable as exc:
        raise OperationFailed(f"{exc.message}; nothing was changed") from exc
    if record is None:
        return None
    problem = manifest.checksum_problem(path, record)
    if problem is not None:
        raise OperationFailed(
            f"{path.name} does not match its manifest ({problem}); "
            "restore another backup (`velocity-pg list`); nothing was changed"
        )
    return record


def check_compression(program: pgtools.Program, path: Path) -> None:
    """Refuse, with the reason, a zstd/lz4 dump (per its manifest) this pg_restore cannot read."""
    record = manifest.read(path)  # already read and checked by check_against_manifest
    method = record.compression_method if record is not None else None
    problem = compressions.restore_problem(method, program.major, program.version)
    if problem is not None:
        raise OperationFailed(
            f"{path.name} cannot be restored here: {problem}; nothing was changed"
        )


def read_listing(program: pgtools.Program, path: Path) -> str:
    """The archive's ``pg_restore --list``; refuses what pg_restore cannot read."""
    try:
        return pgtools.capture(pgtools.pg_restore_list_cmd(program.path, path), {})
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is not a backup pg_restore {program.version} can read: "
            f"{describe_failure(exc.returncode, exc.stderr)}; nothing was changed"
        ) from exc


def read_every_block(program: pgtools.Program, path: Path) -> None:
    """Refuse a truncated or damaged dump that has no manifest to compare with.

    ``pg_restore --list`` reads only the table of contents, which sits at the
    start: the first 3,000 bytes of a dump list as well as the whole. So every
    data block is read and decompressed too (``pg_restore --data-only`` into
    nothing, streamed), as a restore would, before anything is staged or stopped.
    A dump with a manifest is checked by its size and SHA-256 instead.
    """
    try:
        pgtools.count_output(pgtools.pg_restore_data_cmd(program.path, path), {})
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is truncated or damaged: pg_restore cannot read its data "
            f"({describe_failure(exc.returncode, exc.stderr)}); it has no manifest to "
            "compare with; restore another backup (`velocity-pg list`); nothing was changed"
        ) from exc


def read_toc(program: pgtools.Program, path: Path) -> Toc:
    """The archive's table of contents; refuses what pg_restore cannot read."""
    return parse_toc(read_listing(program, path))


def prepare(
    where: endpoint.Endpoint, admin: Conn, path: Path, target: str, jobs: int | None
) -> Plan:
    """Every check that can refuse, in order; takes the per-database restore lock."""
    server_num = db.server_version_num(admin)
    row = admin.execute("SHOW server_version").fetchone()
    server_version = str(row[0]) if row else str(server_num)
    program = pgtools.find_program("pg_restore", pgtools.server_major(server_num))
    record = check_against_manifest(path)
    check_compression(program, path)
    listing = read_listing(program, path)
    if record is None:
        read_every_block(program, path)
    toc = parse_toc(listing)
    # The database the backup was made of: as recorded by `backup`, else the archive's.
    source = record.database if record is not None and record.database else toc.dbname
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
    if live is not None:
        rehearse_on_live(admin, role, live)
    subs = swap.subscriptions(admin, target) if live is not None else []
    if not role.superuser:
        foreign = sorted({owner for _, owner, _ in subs if not swap.is_member_of(admin, owner)})
        if foreign:
            raise OperationFailed(
                f"database {target!r} has subscriptions owned by {', '.join(foreign)}, which "
                "a restore must detach before it drops the current contents; restore as a "
                "superuser; nothing was changed"
            )
    slots = swap.logical_slots(admin, target) if live is not None else []
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
    others = swap.velocity_admin_sessions(admin, target)
    if others:  # a restore of postgres, where other runs keep their admin sessions
        raise LockBusy(
            f"another velocity-pg restore or verify is running on this server, connected to "
            f"database {target!r} for its own work (session {', '.join(map(str, others))}), "
            f"which a restore of {target!r} would end; wait for it to finish; "
            "nothing was changed"
        )
    staging_db, aside_db = staging.staging_name(target), staging.aside_name(target)
    leftovers = tuple(swap.existing(admin, [staging_db, aside_db]))
    stories = tuple(
        staging.leftover_story(name, swap.database_comment(admin, name)) for name in leftovers
    )
    if aside_db in leftovers and live is None:
        raise OperationFailed(
            f"database {aside_db!r} holds what {target!r} contained before an earlier "
            f"restore, and {target!r} does not exist; rename it back (ALTER DATABASE "
            f"{aside_db} RENAME TO ...) or drop it, then restore again; nothing was changed"
        )
    # What a killed or failed run left is dropped first: its space counts as free. So
    # does a staged copy's: either it is swapped in (no new copy is built) or, when it
    # is not a copy of this very file, it is dropped before the new one is built.
    reclaimed = leftovers
    # A staged copy (complete, marked) is judged by stage.judge, not dropped as a leftover.
    staged = copies.staged_copy(admin, target) if staging_db in leftovers else None
    if staged is not None and staged.staged is not None:
        kept = [(n, st) for n, st in zip(leftovers, stories, strict=True) if n != staging_db]
        leftovers = tuple(n for n, _ in kept)
        stories = tuple(st for _, st in kept)
    else:
        staged = None
    room = check_space(admin, program, path, target, live, reclaimed=reclaimed)
    return Plan(
        backup=path,
        size=size,
        toc=toc,
        source=source,
        where=where,
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
        previous=staging.previous_name(target),
        rollback=copies.rollback_point(admin, target),
        staged=staged,
        server_num=server_num,
        entries=tuple(archive.parse_entries(listing)),
        slots=tuple(slots),
        subscriptions=tuple(name for name, _, _ in subs),
        leftover_stories=stories,
        room=room,
    )


def check_space(
    admin: Conn,
    program: pgtools.Program,
    path: Path,
    target: str,
    live: DatabaseProps | None,
    *,
    reclaimed: tuple[str, ...] = (),
) -> space.Space | None:
    """Refuse a restore whose copy would not fit on the server's disk (where visible);
    the ``reclaimed`` databases (leftovers, dropped first) count as free space."""
    tablespace = live.tablespace if live is not None else "pg_default"
    try:
        room = space.measure(
            admin,
            program.path,
            path,
            live=None if live is None else live.name,
            tablespace=tablespace,
            reclaimed=reclaimed,
        )
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is not a backup pg_restore {program.version} can read: "
            f"{describe_failure(exc.returncode, exc.stderr)}; nothing was changed"
        ) from exc
    if room is not None and not room.enough:
        raise OperationFailed(
            f"not enough free space for the restored copy: {catalog.human_size(room.free)} "
            f"free in {room.location} (tablespace {room.tablespace}), and the restore needs "
            f"about {catalog.human_size(room.needed)} while the current database still "
            "exists; free space there (or restore on a server with more room); "
            "nothing was changed"
        )
    return room


def rehearse_on_live(admin: Conn, role: swap.Role, live: DatabaseProps) -> None:
    """Apply the live database's own settings and grants to itself and roll back: what
    the restored copy cannot be given (a per-role setting a non-superuser may not make)
    is refused now, by ``--check`` too, not after the whole pg_restore."""
    try:
        swap.rehearse_properties(admin, live.name, live, as_grantors=role.superuser)
    except swap.PropertyRefused as exc:
        raise OperationFailed(
            f"user {role.name!r} cannot give the restored copy database {live.name!r}'s "
            f"settings and grants: `{exc.statement}` fails ({exc.reason}); restore as a "
            "superuser (POSTGRES_USER), or remove that setting; nothing was changed"
        ) from exc


def announce(console: Console, settings: Settings, plan: Plan) -> None:
    where = plan.where.where()
    version = (plan.toc.dumped_from or "").split(" ")[0]
    dumped = f", dumped from PostgreSQL {version}" if version else ""
    what = (
        "replacing its current contents"
        if plan.live is not None
        else "creating it (it does not exist yet)"
    )
    of = f"of database {plan.source!r}, " if plan.source else ""
    console.say(
        f"restore {plan.backup.name} ({of}{catalog.human_size(plan.size)}, "
        f"{plan.toc.entries} objects{dumped}) into database {plan.target!r} on {where}, {what}"
    )
    warning = plan.source_warning()
    if warning is not None:
        console.say(warning)
    if plan.slots:
        console.say(stage.slots_notice(plan.target, plan.slots))
    if plan.subscriptions:
        fate = (
            "they stay with its current contents in the rollback point, disabled there so "
            "they stop applying changes to it (their slots stay on the publisher)"
            if plan.keep_previous
            else "they are disabled, detached from their slots (which stay on the publisher) "
            "and dropped with its current contents"
        )
        console.say(
            f"database {plan.target!r} has subscription(s) {', '.join(plan.subscriptions)}: "
            f"{fate}; the backup's subscriptions come back disabled "
            "(ALTER SUBSCRIPTION ... ENABLE them when ready)"
        )
    for name, story in zip(plan.leftovers, plan.leftover_stories, strict=False):
        console.say(f"the restore will first drop {name}, left by {story}")


def execute(
    settings: Settings, admin: Conn, plan: Plan, console: Console, *, drop_later: bool = False
) -> RestoreResult:
    """Steps 3 to 5: staging, pg_restore, swap, drop the old database."""
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    target = plan.target
    dropped = drop_leftovers(settings, admin, plan, console) + stage.drop_stale(
        admin, plan, console, settings
    )

    progress = RestoreProgress(total=plan.toc.entries, entry_ids=plan.toc.entry_ids)
    if plan.reuse:
        stage.ready_for_swap(admin, plan, console)
        progress.finish()
        unrefreshed: list[archive.Unrefreshed] = []
    else:
        unrefreshed = build_copy(settings, admin, plan, progress, console)
    restore_seconds = time.monotonic() - clock

    keep = plan.keep_previous and plan.live is not None
    aside, chain = stage.swap_chain(plan) if keep else (plan.aside, None)
    console.say(
        f"swapping the restored copy in; {target!r} is unavailable until this finishes"
        if plan.live is not None
        else f"renaming the restored copy to {target!r}"
    )
    previous_kept_as: str | None = plan.previous if keep else None
    # Sampled just before the swap: what was committed to the old contents since the stage.
    since_stage = stage.commits_since_stage(admin, plan) if plan.live is not None else None
    # The point of no return: a signal that arrives meanwhile is reported, not acted on.
    with shielded(deliver=False) as held_back:
        try:
            swapped = swap.swap_in(
                admin,
                plan.where,
                target=target,
                staging=plan.staging,
                aside=aside,
                replace=plan.live is not None,
                as_grantors=plan.role.superuser,
                chain=chain,
            )
        except Exception as exc:  # swap_in raises only once it knows nothing was committed
            if plan.reuse:
                outcome = stage.kept_after_failure(plan)
            else:
                outcome = discard_staging(settings, admin, plan, describe(exc))
            if held_back:  # not committed: the signal is acted on
                word = pgtools.stop_word(signum=held_back[0])
                raise Interrupted(f"{word}; the swap failed ({describe(exc)}); {outcome}") from exc
            raise OperationFailed(f"{describe(exc)}; {outcome}") from exc
        # Committed: the restore is done. What follows only tidies up.
        if plan.live is not None:  # slots made since the check too
            stage.release_slots(admin, aside, target, console)
        if keep:
            stage.quiet_rollback_point(admin, plan.where, plan.previous, console)
        # plan.aside holds the replaced contents (not kept) or the older rollback point.
        left_for_tidy = plan.live is not None and (not keep or plan.rollback is not None)
        if left_for_tidy and drop_later:
            what = "the older rollback point" if keep else f"the previous contents of {target!r}"
            console.say(
                f"{what} is left as database {plan.aside} for `velocity-pg restore --tidy` "
                "to drop (the next restore of this database drops it otherwise)"
            )
        elif left_for_tidy:
            # Committed: whatever stops this drop (a connection to the old database refused
            # by pg_hba.conf, its connection limit or a revoked CONNECT; a lost session) is a
            # warning, never a failure: a user told "failed" would restore again, and that
            # second swap would drop the real rollback point.
            try:
                swap.drop_database(admin, plan.aside, plan.where)
            except Exception as exc:
                if not keep:
                    previous_kept_as = plan.aside
                mark(admin, plan.aside, staging.kept_comment(target))
                what = (
                    "the older rollback point" if keep else f"the previous contents of {target!r}"
                )
                console.say(
                    f"warning: the restore is complete, but {what}, kept as database "
                    f"{plan.aside!r}, could not be dropped: {describe(exc)}; once that is "
                    "fixed, `velocity-pg restore --tidy` drops it (so does the next restore "
                    "of this database)"
                )
    if held_back:
        console.say(
            f"{signal_name(held_back[0])} arrived during the swap, which never stops halfway; "
            "it completed"
        )
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
        used_staged_copy=plan.reuse,
        commits_since_stage=since_stage,
        rollback_point=keep,
        replaced_rollback=stage.describe_rollback(plan.rollback) if keep else None,
        untouched_rollback=None if keep else stage.describe_rollback(plan.rollback),
        unrefreshed_matviews=tuple(unrefreshed),
        source_database=plan.source,
    )


def build_copy(
    settings: Settings, admin: Conn, plan: Plan, progress: RestoreProgress, console: Console
) -> list[archive.Unrefreshed]:
    """Step 3: create the staging database, pg_restore into it, ANALYZE; on any failure
    or Ctrl+C drop it (the live database is never touched here)."""
    target = plan.target
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
        unrefreshed = run_pg_restore(settings, plan, progress, console)
        console.say("analyzing the restored copy")
        swap.analyze(plan.where, plan.staging)
    except (KeyboardInterrupt, pgtools.Terminated) as exc:
        console.end_progress()
        word = pgtools.stop_word(exc)
        raise Interrupted(f"{word}; {discard_staging(settings, admin, plan, word)}") from None
    except Exception as exc:
        console.end_progress()
        raise OperationFailed(
            f"{describe(exc)}; {discard_staging(settings, admin, plan, describe(exc))}"
        ) from exc
    return unrefreshed


def drop_leftovers(
    settings: Settings, admin: Conn, plan: Plan, console: Console
) -> tuple[str, ...]:
    """Drop what a killed restore of this database left (we hold its lock, so it is dead)."""
    import psycopg

    stories = plan.leftover_stories or tuple(
        staging.leftover_story(name, None) for name in plan.leftovers
    )
    for name, story in zip(plan.leftovers, stories, strict=False):
        what = (
            "the unfinished copy"
            if name == plan.staging
            else f"the previous contents of {plan.target!r}, replaced by that restore"
        )
        with shielded():
            try:
                swap.drop_database(admin, name, plan.where)
            except psycopg.Error as exc:
                raise OperationFailed(
                    f"cannot drop {name}, {what}, left by {story}: {db.one_line(exc)}; "
                    f"{leftover_fix(admin, name)}; database {plan.target!r} was not changed"
                ) from exc
        console.say(f"dropped {name}, {what}, left by {story}")
    return plan.leftovers


def leftover_fix(admin: Conn, name: str) -> str:
    """What will let a leftover of ours be dropped."""
    import psycopg

    try:
        prepared = swap.prepared_transactions(admin, name)
    except psycopg.Error:
        prepared = 0
    if prepared:
        return (
            f"it has {prepared} prepared transaction(s): ROLLBACK PREPARED them "
            "(see pg_prepared_xacts), then restore again (the restore drops it first)"
        )
    return (
        "fix the cause (a full disk: free space on it), then restore again, which drops it "
        f"first; or drop it yourself (DROP DATABASE {name})"
    )


def run_pg_restore(
    settings: Settings, plan: Plan, progress: RestoreProgress, console: Console
) -> list[archive.Unrefreshed]:
    """pg_restore into the staging database, then refresh the materialized views one by
    one; returns the views whose refresh failed (left unpopulated, each reported)."""
    env = plan.where.libpq_env(plan.staging) | db.untimed_env(plan.server_num, plan.where)

    def on_line(line: str) -> None:
        if progress.feed(line):
            console.progress(f"restoring: {progress.describe()}")

    console.progress(f"restoring: {progress.describe()}", force=True)
    try:
        archive.restore_all_but_matviews(
            plan.program.path,
            plan.backup,
            plan.where.conninfo(plan.staging),
            plan.entries,
            env,
            jobs=plan.jobs,
            verbose=True,
            on_stderr_line=on_line,
        )
        unrefreshed = archive.refresh_matviews(
            plan.program.path, plan.backup, plan.where.conninfo(plan.staging), plan.entries, env
        )
    except CommandFailed as exc:
        if not pgtools.went_silent(exc.stderr):
            raise
        note = pgtools.silence_note(settings.connection.tcp_timeout)
        raise OperationFailed(f"{exc.message} ({note})") from exc
    progress.finish()
    console.progress(f"restoring: {progress.describe()}", force=True)
    console.end_progress()
    for view in unrefreshed:
        console.say(f"warning: {view.describe()}")
    return unrefreshed


def discard_staging(settings: Settings, admin: Conn, plan: Plan, reason: str = "") -> str:
    """Drop the staging database after a failure; says what state things are in.

    A copy that cannot be dropped gets ``reason`` in its comment, for the next run.
    Ctrl+C or SIGTERM during the drop waits for it, then stops the run (Interrupted,
    with what state things are in).
    """
    with shielded(deliver=False) as held_back:
        outcome = drop_staging(admin, plan, reason)
    if held_back:
        raise Interrupted(f"{pgtools.stop_word(signum=held_back[0])}; {outcome}")
    return outcome


def drop_staging(admin: Conn, plan: Plan, reason: str) -> str:
    """:func:`discard_staging`'s drop, unshielded."""
    import psycopg

    target = plan.target
    try:
        if admin.closed or admin.broken:
            raise psycopg.InterfaceError("the admin session is gone")
        try:
            swap.drop_database(admin, plan.staging, plan.where)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            if not (admin.closed or admin.broken):
                raise
            raise psycopg.InterfaceError("the admin session is gone") from None
    except psycopg.InterfaceError:
        # Our session (and with it the lock) is gone: drop only under a new lock.
        try:
            with swap.connect_admin(plan.where, target) as fresh:
                if not swap.try_lock(fresh, plan.lock_key):
                    return (
                        f"database {target!r} was not changed; the unfinished copy "
                        f"{plan.staging!r} is left to the restore that is running now"
                    )
                swap.drop_database(fresh, plan.staging, plan.where)
        except (psycopg.Error, VelocityError) as exc:
            return not_dropped(plan, exc)
    except psycopg.Error as exc:
        mark(admin, plan.staging, staging.failed_comment(target, reason or describe(exc)))
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


def mark(admin: Conn, name: str, comment: str) -> None:
    """Best effort: say in a leftover's comment what left it (the next run reads it)."""
    import psycopg

    try:
        if not (admin.closed or admin.broken):
            swap.set_comment(admin, name, comment)
    except psycopg.Error:
        pass  # then the next run calls it killed: all it can know


def not_dropped(plan: Plan, exc: BaseException) -> str:
    reason = describe(exc)
    return (
        f"database {plan.target!r} was not changed, but the unfinished copy "
        f"{plan.staging!r} could not be dropped ({reason}); fix that (a full disk: free "
        f"space on it), then run `velocity-pg restore {plan.backup.name}` again, which "
        "drops the copy first"
    )
