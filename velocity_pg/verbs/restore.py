"""``velocity-pg restore``: replace a database with a backup, never losing it, and the
restore's other modes (``--stage``, ``--undo``, ``--abort``, ``--forget``, ``--tidy``).

Each mode has one home here, a function of the settings and the :class:`Request`
that returns a result rendering itself (:data:`MODES`, from the flag that picks it);
the command line only checks the combination of flags, builds the settings and
prints the result. The machinery they call is in :mod:`velocity_pg.restore`.

Order of work of ``restore NAME``, so that a failed restore leaves the database
exactly as it was:

1. **Refuse before touching anything** (:mod:`velocity_pg.restore.plan`): a name
   outside BACKUP_DIR or not a backup, a missing file, a dump that does not match
   its manifest (size and SHA-256), an archive ``pg_restore --list`` cannot read, a
   server we cannot reach, a user who may not create or rename the database,
   a database with prepared transactions, or a restore of the same database
   already running (a session advisory lock, see :mod:`velocity_pg.restore.staging`).
   A backup that is only off-site (BACKUP_S3_URL) is pulled first; its ``--check``
   reads the off-site manifest only.
2. **Countdown** (5 s, Ctrl+C cancels; ``--yes`` skips it). ``--check`` stops here.
3. **Restore into a staging database** (``velocity_pg_staging_<hash>``, see
   :mod:`velocity_pg.restore.build`) created from template0 with the live database's
   owner, encoding and locale; its settings and grants are rehearsed on it (and rolled
   back) first; then ``pg_restore --exit-on-error --jobs N`` and ``ANALYZE``. The live
   database keeps serving all along. Any failure or Ctrl+C drops the staging database.
   A run that was killed leaves it behind: the next run, holding the lock,
   knows it is abandoned and drops it. ``--stage`` stops here, the copy marked complete.
4. **Swap** in one transaction (see :mod:`velocity_pg.restore.swap`): all or nothing,
   unavailable only for that transaction. Ctrl+C is held back until it ends.
5. **Drop the old database**, renamed aside by the swap.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import ConfigError, Interrupted, OperationFailed
from velocity_pg.postgres import db, endpoint, pgtools
from velocity_pg.postgres.endpoint import Endpoint
from velocity_pg.restore import (
    archive,
    build,
    copies,
    drift,
    marks,
    stage,
    staging,
    swap,
    tables,
    undo,
)
from velocity_pg.restore import into as into_mode
from velocity_pg.restore import roles as restore_roles
from velocity_pg.restore.console import COUNTDOWN_SECONDS, Console, countdown, describe
from velocity_pg.restore.plan import Plan, prepare, read_listing, refuse_target
from velocity_pg.restore.progress import RestoreProgress
from velocity_pg.restore.shield import shielded, signal_name
from velocity_pg.settings import Settings
from velocity_pg.store import catalog, lock
from velocity_pg.verbs import Result

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


# -- what was asked, and the modes -------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What the command line asked of ``restore`` besides the settings (checked there)."""

    #: The backup (``restore NAME``, ``--stage NAME``); the other modes take none.
    name: str | None = None
    check: bool = False
    yes: bool = False
    jobs: int | None = None
    drop_later: bool = False
    #: ``--into DB`` (``--replace``, ``--table``): restore beside the live database.
    into: into_mode.Into | None = None
    #: ``--owner ROLE``: every object owned by ROLE (restore/roles.py).
    owner: str | None = None
    #: ``--create-missing-roles``: create the roles the target lacks before the restore.
    create_missing_roles: bool = False


@dataclass(frozen=True)
class Mode:
    """One of ``restore``'s modes: the flag that picks it, what it does, what goes with it."""

    #: ``--stage``, ``--undo``, ...; "" for ``restore NAME`` itself.
    flag: str
    run: Callable[[Settings, Request], Result]
    #: It needs a backup NAME (the others refuse one).
    takes_name: bool = False
    #: ``--check`` goes with it (a mode with a NAME always takes it).
    checks: bool = False


# -- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    """``restore NAME --check``: every check passed; nothing was changed."""

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
            "migrations": None if plan.migrations is None else plan.migrations.to_json(),
            "roles": None if plan.roles is None else plan.roles.to_json(),
            "database_properties_from_backup": properties_json(plan),
        }

    def lines(self) -> list[str]:
        plan = self.plan
        action = "replace" if plan.live is not None else "create"
        of = f", a backup of database {plan.source!r}" if plan.source else ""
        out = [
            f"Check passed: {plan.backup.name} ({plan.toc.entries} objects{of}) can restore "
            f"database {plan.target!r} (it would {action} it). Nothing was changed."
        ]
        warning = plan.source_warning()
        if warning is not None:
            out.append(warning)
        if plan.roles is not None:
            out.extend(plan.roles.lines())
        out.extend(properties_lines(plan))
        return out


@dataclass(frozen=True)
class RestoreResult:
    """``restore NAME``: the database holds the backup's contents now."""

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
    #: What was done about roles (created, privileges left out), one line each.
    roles_done: tuple[str, ...] = ()

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
            "roles": list(self.roles_done),
        }

    def lines(self) -> list[str]:
        out: list[str] = []
        source = self.source_database
        if source is not None and source != self.database:
            out.append(
                f"WARNING: database {self.database!r} now holds the contents of database "
                f"{source!r}, of which {self.name} is a backup"
            )
        verb = "Created" if self.created else "Restored"
        sessions = self.terminated_sessions
        ended = f"{sessions} session{'' if sessions == 1 else 's'} of it ended by the swap"
        how = " by swapping in the copy staged earlier" if self.used_staged_copy else ""
        out.append(
            f"{verb} database {self.database!r} from {self.name}{how} in {self.duration:.1f} s "
            f"({self.objects_total} objects); it was unavailable for "
            f"{self.unavailable_seconds:.2f} s, {ended}."
        )
        since = self.commits_since_stage
        if since is not None:
            where = (
                f"in the rollback point {self.previous_kept_as}"
                if self.rollback_point
                else "dropped with the previous contents"
            )
            out.append(
                f"{since} transaction{'' if since == 1 else 's'} committed in {self.database!r} "
                f"between the stage and the swap (pg_stat_database, an upper bound: read-only "
                f"ones count too); their writes are not in the restored database, they are "
                f"{where}."
            )
        if self.rollback_point:
            out.append(
                f"Its previous contents are kept as database {self.previous_kept_as}, its "
                "rollback point: every change made to it until the swap, also while the copy "
                "was being staged, is in there. Get them back with `velocity-pg restore "
                "--undo` (`just db-restore-undo`); free their space with `velocity-pg restore "
                "--forget`."
            )
        if self.replaced_rollback:
            out.append(f"The older {self.replaced_rollback} was dropped: one is kept per database.")
        if self.untouched_rollback:
            out.append(
                f"The previous contents were dropped (BACKUP_KEEP_PREVIOUS=false); the "
                f"{self.untouched_rollback} is left as it was."
            )
        out.extend(f"Roles: {line}." for line in self.roles_done)
        return out


@dataclass(frozen=True)
class StageResult:
    """``restore NAME --stage``: the copy is built and marked complete; nothing live changed."""

    name: str
    database: str
    staged_as: str
    size_bytes: int
    sha256: str
    duration: float
    already_staged: bool
    jobs: int
    objects: int
    dropped_leftovers: tuple[str, ...]
    #: The migration drift of the staged copy from the live database (None: not Django's).
    migrations: drift.MigrationDrift | None = None
    #: BACKUP_MIGRATE_COMMAND and BACKUP_MIGRATE_SERVICE, for `just db-restore`.
    migrate_command: str = ""
    migrate_service: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "migrations": None if self.migrations is None else self.migrations.to_json(),
            # For `just db-restore`: behind, ahead, mixed, same; None when not compared.
            "migration_drift": None if self.migrations is None else self.migrations.direction,
            "migrate_command": self.migrate_command,
            "migrate_service": self.migrate_service,
            "staged": self.name,
            "database": self.database,
            "staged_as": self.staged_as,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "duration_seconds": round(self.duration, 3),
            "already_staged": self.already_staged,
            "jobs": self.jobs,
            "objects": self.objects,
            "dropped_leftovers": list(self.dropped_leftovers),
        }

    def lines(self) -> list[str]:
        how = "was already staged" if self.already_staged else f"staged in {self.duration:.1f} s"
        return [
            f"Staged {self.name} for database {self.database!r}: a complete copy, "
            f"{self.staged_as} ({catalog.human_size(self.size_bytes)}), {how}; "
            f"{self.database!r} was not changed and keeps serving.",
            f"Next: `velocity-pg restore {self.name}` swaps it in (the database is down only "
            "for the swap; `just db-restore` stops the app services only then), or "
            "`velocity-pg restore --abort` drops it.",
        ]


@dataclass(frozen=True)
class UndoCheck:
    """``restore --undo --check``: the rollback point can be swapped back in."""

    plan: undo.UndoPlan

    def to_json(self) -> dict[str, object]:
        mark = self.plan.rollback.rollback
        return {
            "check": "passed",
            "database": self.plan.target,
            "rollback_point": self.plan.rollback.name,
            "size_bytes": self.plan.rollback.size_bytes,
            "contents_before": None if mark is None else mark.describe(),
        }

    def lines(self) -> list[str]:
        return [
            f"Check passed: the rollback point of {self.plan.target!r} can be swapped back "
            "in. Nothing was changed."
        ]


@dataclass(frozen=True)
class UndoResult:
    """``restore --undo``: the rollback point is the database again."""

    database: str
    brought_back: str  # "the contents before the restore of X"
    rollback_point: str | None  # where the replaced contents are now
    unavailable_seconds: float
    duration: float
    terminated_sessions: int

    def to_json(self) -> dict[str, object]:
        return {
            "database": self.database,
            "brought_back": self.brought_back,
            "rollback_point": self.rollback_point,
            "unavailable_seconds": round(self.unavailable_seconds, 3),
            "duration_seconds": round(self.duration, 3),
            "terminated_sessions": self.terminated_sessions,
        }

    def lines(self) -> list[str]:
        out = [
            f"Undone: database {self.database!r} holds {self.brought_back} again; it was "
            f"unavailable for {self.unavailable_seconds:.2f} s."
        ]
        if self.rollback_point is not None:
            out.append(
                f"The contents it replaced are now its rollback point, {self.rollback_point}: "
                "`velocity-pg restore --undo` swaps them back, `velocity-pg restore --forget` "
                "drops them."
            )
        return out


@dataclass(frozen=True)
class Dropped:
    """``restore --abort`` / ``--forget``: the staged copy or the rollback point, dropped."""

    database: str
    #: "staged copy" or "rollback point".
    what: str
    #: What was dropped; None when there was none (nothing was changed).
    copy: copies.Copy | None

    def to_json(self) -> dict[str, object]:
        return {
            "database": self.database,
            "dropped": None if self.copy is None else self.copy.name,
            "size_bytes": None if self.copy is None else self.copy.size_bytes,
            "what": self.what,
        }

    def lines(self) -> list[str]:
        if self.copy is None:
            return [f"Database {self.database!r} has no {self.what}; nothing was changed."]
        return [
            f"Dropped the {self.what} of database {self.database!r}, {self.copy.name} "
            f"({catalog.human_size(self.copy.size_bytes)} freed); {self.database!r} itself "
            "was not changed."
        ]


@dataclass(frozen=True)
class Tidied:
    """``restore --tidy``: what a swap left for later, dropped (None: there was nothing)."""

    database: str
    dropped: str | None

    def to_json(self) -> dict[str, object]:
        return {"database": self.database, "dropped": self.dropped}

    def lines(self) -> list[str]:
        if self.dropped is None:
            return [f"Nothing to tidy for database {self.database!r}."]
        return [
            f"Dropped {self.dropped}, replaced by the last restore of database {self.database!r}."
        ]


# -- the modes ---------------------------------------------------------------------------


def run_restore(settings: Settings, request: Request) -> Result:
    """``restore NAME`` (also ``--check``, ``--drop-later``)."""
    return named(settings, request, stage_only=False)


def run_stage(settings: Settings, request: Request) -> Result:
    """``restore NAME --stage``: build the copy beside the live database and stop."""
    return named(settings, request, stage_only=True)


def run_abort(settings: Settings, request: Request) -> Dropped:
    """``restore --abort``: drop the staged copy (``--into DB``: the unfinished copy a
    killed ``restore NAME --into DB`` left)."""
    return drop_copy(settings, "staged", None if request.into is None else request.into.database)


def run_forget(settings: Settings, request: Request) -> Dropped:
    """``restore --forget``: drop the rollback point."""
    return drop_copy(settings, "rollback")


def run_tidy(settings: Settings, request: Request) -> Tidied:
    """``restore --tidy``: drop what a swap left for later (``--drop-later``)."""
    target = resolve_target(settings).dbname
    return Tidied(target, copies.tidy(settings, target))


def named(settings: Settings, request: Request, *, stage_only: bool) -> Result:
    """A restore, its check or its stage of backup NAME. A backup that is only off-site
    is pulled first; its check downloads nothing (the off-site manifest only)."""
    from velocity_pg.store.offsite import offsite_of
    from velocity_pg.verbs import pull as pulling

    name = request.name
    assert name is not None
    console = Console()
    if pulling.needs_pull(settings, name):
        if request.check:
            return pulling.check_remote(settings, name)
        where = offsite_of(settings).url
        console.say(f"{name} is not in {settings.backup_dir}; downloading it from {where} first")
        pulling.pull(settings, name)
        console.say(f"{name} downloaded and checked; restoring it")
    return restore_backup(
        settings,
        name,
        check=request.check,
        yes=request.yes,
        jobs=request.jobs,
        console=console,
        stage_only=stage_only,
        drop_later=request.drop_later,
        into=request.into,
        owner=request.owner,
        create_missing_roles=request.create_missing_roles,
    )


def run_list_tables(settings: Settings, request: Request) -> into_mode.TableList:
    """``restore NAME --list-tables``: the tables backup NAME holds (what ``--table`` takes),
    with rows and sizes from its manifest's statistics where known. Touches no database."""
    from velocity_pg.store import manifest
    from velocity_pg.verbs import pull as pulling

    name = request.name
    assert name is not None
    if pulling.needs_pull(settings, name):
        raise OperationFailed(
            f"{name} is only off-site; `velocity-pg pull {name}` downloads it, then list its tables"
        )
    catalog.require_dir(settings.backup_dir)
    with lock.shared(settings.backup_dir, "restore"):
        path = catalog.resolve_backup(settings.backup_dir, name)
        listing = read_listing(pgtools.find_program("pg_restore"), path)
        return into_mode.list_tables(path.name, listing, manifest.read(path))


@dataclass(frozen=True)
class StagedUrl:
    """``restore --staged-url``: the project's DATABASE_URL (read from the standard input,
    never from the command line) pointed at the staged copy, for its migrate."""

    url: str = dataclasses.field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"database_url": self.url}

    def lines(self) -> list[str]:
        return [self.url]


def run_staged_url(settings: Settings, request: Request) -> StagedUrl:
    """``restore --staged-url``: the staged copy's DATABASE_URL (see drift.staged_database_url)."""
    import sys

    line = sys.stdin.readline(64 * 1024)
    return StagedUrl(drift.staged_database_url(line, resolve_target(settings).dbname))


def drop_copy(settings: Settings, which: str, target: str | None = None) -> Dropped:
    """``--abort`` (``which="staged"``) / ``--forget``: drop it under the restore lock."""
    target = target or resolve_target(settings).dbname
    dropped = copies.drop_under_lock(settings, target, which)
    return Dropped(target, "staged copy" if which == "staged" else "rollback point", dropped)


def into_request(
    flag: str, into: str | None, replace: bool, tables: tuple[str, ...], *, drop_later: bool
) -> into_mode.Into | None:
    """``--into DB`` (``--replace``, ``--table``) as the command line gave them, checked
    before anything runs (ConfigError: exit 2)."""
    if into is None:
        if tables:
            raise ConfigError(
                "--table needs --into DB: a table is restored into a new database beside "
                "the live one, never over it"
            )
        if replace:
            raise ConfigError("--replace goes only with --into DB")
        return None
    if flag and (flag != "--abort" or replace or tables):
        raise ConfigError(f"--into does not go with {flag}")
    if drop_later:
        raise ConfigError("--drop-later does not go with --into (nothing is replaced for later)")
    problem = into_mode.name_problem(into)
    if problem is not None:
        raise ConfigError(problem)
    return into_mode.Into(into, replace=replace, tables=tables)


def resolve_target(settings: Settings) -> Endpoint:
    """The server and database libpq reaches with these settings (service file, URI, ...),
    the one `backup` dumps, never a name guessed from the settings; refused when it is not
    a database a restore may replace."""
    where = endpoint.resolve(settings.connection)
    refuse_target(where.dbname)
    return where


# -- restore NAME, --check, --stage --------------------------------------------------------


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
    into: into_mode.Into | None = None,
    owner: str | None = None,
    create_missing_roles: bool = False,
) -> Result:
    """Check, count down, and (unless ``check``) restore; see the module docstring.

    ``drop_later``: after the swap, leave what it replaced for good (an older rollback
    point, or the previous contents when they are not kept) under the aside name for
    ``restore --tidy`` to drop, so `just db-restore` restarts the app before that drop.

    ``stage_only``: build the copy and stop (no countdown: nothing live changes).

    ``into``: restore into that new database instead (see :mod:`velocity_pg.restore.into`).
    """
    console = Console() if console is None else console
    folder = settings.backup_dir
    catalog.require_dir(folder)
    result: Result | None = None
    selection: tables.Selection | None = None
    try:
        # Shared: a cleanup cannot delete the backup while we read it.
        with lock.shared(folder, "restore"):
            path = catalog.resolve_backup(folder, name)
            where = resolve_target(settings)
            if into is not None:
                where = dataclasses.replace(where, dbname=into.database)
            target = where.dbname
            # The session holds the per-database restore lock until it closes.
            with swap.connect_admin(where, target) as admin:
                plan = prepare(where, admin, path, target, jobs)
                plan = dataclasses.replace(
                    plan,
                    roles=restore_roles.assess(
                        admin,
                        plan.program,
                        path,
                        plan.entries,
                        owner=owner,
                        create=create_missing_roles,
                        database_owner=None if plan.live is None else plan.live.owner,
                    ),
                )
                if into is not None:
                    plan, selection = into_mode.adapt(admin, plan, into)
                    into_mode.announce(console, plan, into, selection)
                else:
                    plan = dataclasses.replace(plan, keep_previous=settings.keep_previous)
                    plan = stage.judge(plan, stage_only)
                    plan = dataclasses.replace(plan, migrations=compare_migrations(plan))
                    announce(console, settings, plan)
                    announce_migrations(console, settings, plan, stage_only)
                    stage.announce(console, plan, stage_only)
                # A check starts nothing, so there is nothing to count down to; nor does
                # a restore --into, which changes no database but its own.
                if not (yes or check or stage_only or into):
                    countdown(console, countdown_seconds)
                if check:
                    return into_mode.IntoCheck(plan, selection) if into else CheckResult(plan)
                roles_done = tuple(restore_roles.create_missing(admin, plan.roles))
                for line in roles_done:
                    console.say(line)
                if stage_only:
                    result = stage_copy(settings, admin, plan, console)
                elif into is not None:
                    marked = functools.partial(into_mode.mark_for, admin, plan, selection)
                    done = execute(settings, admin, plan, console, mark=marked)
                    result = into_mode.IntoResult(
                        name=done.name,
                        database=done.database,
                        replaced=not done.created,
                        duration=done.duration,
                        objects=done.objects_total,
                        source_database=done.source_database,
                        selection=selection,
                        unrefreshed=len(done.unrefreshed_matviews),
                    )
                else:
                    result = execute(settings, admin, plan, console, drop_later=drop_later)
                    result = dataclasses.replace(result, roles_done=roles_done + left_out(plan))
    except (KeyboardInterrupt, pgtools.Terminated) as exc:
        console.end_progress()
        if isinstance(result, (RestoreResult, StageResult, into_mode.IntoResult)):  # completed
            return result
        raise Interrupted(f"{pgtools.stop_word(exc)}; nothing was changed") from None
    assert result is not None
    return result


def compare_migrations(plan: Plan) -> drift.MigrationDrift | None:
    """The backup's migrations (the staged copy's own when it is what gets swapped in)
    next to the live database's (:mod:`velocity_pg.restore.drift`)."""
    staged = plan.staging if plan.reuse else None
    return drift.compare(plan.where, plan.backup, plan.live is not None, staged)


def announce_migrations(console: Console, settings: Settings, plan: Plan, stage_only: bool) -> None:
    """The drift, before anything changes; a plain restore of a backup behind says which
    command migrates it."""
    if plan.migrations is None:
        return
    hint = (
        "" if stage_only else drift.migrate_hint(settings.migrate_command, settings.migrate_service)
    )
    for line in plan.migrations.lines(migrate_hint=hint):
        console.say(line)


def properties_lines(plan: Plan) -> tuple[str, ...]:
    """``database settings from the backup: search_path, statement_timeout; comment``: what
    the restored database takes from the backup's manifest (the live one wins elsewhere)."""
    line = None if plan.from_backup is None else plan.from_backup.line()
    return () if line is None else (line,)


def properties_json(plan: Plan) -> dict[str, object] | None:
    if plan.from_backup is None or plan.recorded is None:
        return None
    return {
        "taken": list(plan.from_backup.taken),
        "left_out_roles": list(plan.from_backup.left_out),
    }


def left_out(plan: Plan) -> tuple[str, ...]:
    """restore --owner: the line naming the roles whose privileges were left out."""
    if plan.roles is None or not plan.roles.left_out:
        return ()
    return (
        "privileges of role(s) the target lacks were left out: " + ", ".join(plan.roles.left_out),
    )


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
    for line in properties_lines(plan):
        console.say(line)


def execute(
    settings: Settings,
    admin: Conn,
    plan: Plan,
    console: Console,
    *,
    drop_later: bool = False,
    mark: Callable[[], str] | None = None,
) -> RestoreResult:
    """Steps 3 to 5: staging, pg_restore, swap, drop the old database.

    ``mark``: the comment the restored copy gets in the swap's transaction, once built
    (a restore ``--into``)."""
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    target = plan.target
    dropped = build.drop_leftovers(settings, admin, plan, console) + stage.drop_stale(
        admin, plan, console, settings
    )

    progress = RestoreProgress(total=plan.toc.entries, entry_ids=plan.toc.entry_ids)
    if plan.reuse:
        stage.ready_for_swap(admin, plan, console)
        progress.finish()
        unrefreshed: list[archive.Unrefreshed] = []
    else:
        unrefreshed = build.build_copy(settings, admin, plan, progress, console)
    restore_seconds = time.monotonic() - clock

    keep = plan.keep_previous and plan.live is not None
    aside, chain = stage.swap_chain(plan) if keep else (plan.aside, None)
    if mark is not None:
        chain = swap.Chain(comments=((target, mark()),))
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
                recorded=plan.recorded,
            )
        except Exception as exc:  # swap_in raises only once it knows nothing was committed
            if plan.reuse:
                outcome = stage.kept_after_failure(plan)
            else:
                outcome = build.discard_staging(settings, admin, plan, describe(exc))
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
                build.mark(admin, plan.aside, staging.kept_comment(target))
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


def stage_copy(settings: Settings, admin: Conn, plan: Plan, console: Console) -> StageResult:
    """``--stage``: build the copy, mark it complete, stop. The live database is not touched."""
    import psycopg
    from psycopg import sql

    clock = time.monotonic()
    if plan.reuse:
        assert plan.staged is not None and plan.sha256 is not None
        return StageResult(
            name=plan.backup.name,
            database=plan.target,
            staged_as=plan.staging,
            size_bytes=plan.staged.size_bytes,
            sha256=plan.sha256,
            duration=time.monotonic() - clock,
            already_staged=True,
            jobs=plan.jobs,
            objects=plan.toc.entries,
            dropped_leftovers=(),
            migrations=plan.migrations,
            migrate_command=settings.migrate_command,
            migrate_service=settings.migrate_service,
        )
    dropped = build.drop_leftovers(settings, admin, plan, console) + stage.drop_stale(
        admin, plan, console, settings
    )
    before = stage.file_fingerprint(plan.backup)
    digest = plan.sha256 or stage.sha256_now(plan.backup)
    progress = RestoreProgress(total=plan.toc.entries, entry_ids=plan.toc.entry_ids)
    build.build_copy(settings, admin, plan, progress, console)
    mark = marks.StagedMark(
        database=plan.target,
        backup=plan.backup.name,
        sha256=digest,
        size_bytes=plan.size,
        at=marks.now_iso(),
        by=marks.who(plan.role.name),
        live_commits=stage.committed(admin, plan.target),
    )
    # Marking the copy complete is this verb's point of no return.
    with shielded(deliver=False) as held_back:
        try:
            if stage.file_fingerprint(plan.backup) != before:
                raise OperationFailed(f"{plan.backup.name} changed while it was being restored")
            admin.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(plan.staging), sql.Literal(marks.staged_comment(mark))
                )
            )
            row = admin.execute("SELECT pg_database_size(%s)", (plan.staging,)).fetchone()
        except (psycopg.Error, OperationFailed, OSError) as exc:
            raise OperationFailed(
                f"{describe(exc)}; {build.discard_staging(settings, admin, plan)}"
            ) from exc
    if held_back:  # the copy is complete: say so, and stop before the checkpoint
        raise Interrupted(
            f"{pgtools.stop_word(signum=held_back[0])}; the copy of {plan.backup.name} was "
            f"complete and is staged as {plan.staging}: `velocity-pg restore "
            f"{plan.backup.name}` swaps it in, `velocity-pg restore --abort` drops it; "
            f"database {plan.target!r} was not changed"
        )
    stage.flush_to_disk(admin, console)
    return StageResult(
        name=plan.backup.name,
        database=plan.target,
        staged_as=plan.staging,
        size_bytes=int(row[0]) if row else 0,
        sha256=digest,
        duration=time.monotonic() - clock,
        already_staged=False,
        jobs=plan.jobs,
        objects=plan.toc.entries,
        dropped_leftovers=dropped,
        # What the copy holds now (its own django_migrations), next to the live database.
        migrations=drift.compare(plan.where, plan.backup, plan.live is not None, plan.staging),
        migrate_command=settings.migrate_command,
        migrate_service=settings.migrate_service,
    )


# -- --undo ------------------------------------------------------------------------------


def run_undo(
    settings: Settings,
    request: Request,
    *,
    console: Console | None = None,
    countdown_seconds: int = COUNTDOWN_SECONDS,
) -> UndoCheck | UndoResult:
    """``restore --undo`` (also ``--check``): swap the rollback point back in, in one
    transaction; the contents it replaces become the rollback point in turn (see
    :mod:`velocity_pg.restore.undo`). Same checks, countdown and ``--yes`` as a restore."""
    check, yes = request.check, request.yes
    console = Console() if console is None else console
    where = resolve_target(settings)
    target = where.dbname
    result: UndoCheck | UndoResult | None = None
    try:
        with swap.connect_admin(where, target) as admin:
            plan = undo.prepare(admin, target)
            undo.announce(console, plan)
            # A check starts nothing, so there is nothing to count down to.
            if not (yes or check):
                countdown(console, countdown_seconds)
            result = UndoCheck(plan) if check else execute_undo(where, admin, plan, console)
    except (KeyboardInterrupt, pgtools.Terminated) as exc:
        console.end_progress()
        if isinstance(result, UndoResult):
            return result
        raise Interrupted(f"{pgtools.stop_word(exc)}; nothing was changed") from None
    assert result is not None
    return result


def execute_undo(where: Endpoint, admin: Conn, plan: undo.UndoPlan, console: Console) -> UndoResult:
    """Drop what a killed restore left, then the swap (nothing is dropped)."""
    import psycopg

    clock = time.monotonic()
    target, rollback = plan.target, plan.rollback
    old_mark = rollback.rollback
    assert old_mark is not None
    if plan.leftover:
        with shielded():
            try:
                swap.drop_database(admin, plan.aside, where)
            except psycopg.Error as exc:
                raise OperationFailed(
                    f"cannot drop {plan.aside}, left by an earlier restore: {db.one_line(exc)}; "
                    f"drop it yourself (DROP DATABASE {plan.aside}); nothing was changed"
                ) from exc
        console.say(f"dropped {plan.aside}, left by an earlier restore that was killed")
    chain = None
    if plan.live is not None:
        mark = marks.RollbackMark(
            database=target,
            replaced_by="undo",
            backup=old_mark.backup,
            at=marks.now_iso(),
            by=marks.who(plan.role.name),
        )
        chain = swap.Chain(
            after=((plan.aside, rollback.name),),
            comments=((rollback.name, marks.rollback_comment(mark)),),
            reset_target=True,
        )
    console.say(f"swapping the rollback point in; {target!r} is unavailable until this finishes")
    # The point of no return: a signal that arrives meanwhile is reported, not acted on.
    with shielded(deliver=False) as held_back:
        try:
            swapped = swap.swap_in(
                admin,
                where,
                target=target,
                staging=rollback.name,
                aside=plan.aside,
                replace=plan.live is not None,
                as_grantors=plan.role.superuser,
                chain=chain,
            )
        except Exception as exc:  # raised only once nothing was committed
            outcome = f"database {target!r} and its rollback point were not changed"
            if held_back:  # not committed: the signal is acted on
                word = pgtools.stop_word(signum=held_back[0])
                raise Interrupted(f"{word}; the swap failed ({describe(exc)}); {outcome}") from exc
            raise OperationFailed(f"{describe(exc)}; {outcome}") from exc
        if plan.live is not None:
            stage.release_slots(admin, rollback.name, target, console)
            stage.quiet_rollback_point(admin, where, rollback.name, console)
    if held_back:
        console.say(
            f"{signal_name(held_back[0])} arrived during the swap, which never stops halfway; "
            "it completed"
        )
    return UndoResult(
        database=target,
        brought_back=f"its contents from before {old_mark.describe()}",
        rollback_point=rollback.name if plan.live is not None else None,
        unavailable_seconds=swapped.unavailable,
        duration=time.monotonic() - clock,
        terminated_sessions=swapped.terminated,
    )


#: ``restore``'s modes by the flag that picks them ("": ``restore NAME`` itself), in the
#: order the command line names them.
MODES: dict[str, Mode] = {
    mode.flag: mode
    for mode in (
        Mode("", run_restore, takes_name=True, checks=True),
        Mode("--stage", run_stage, takes_name=True, checks=True),
        Mode("--abort", run_abort),
        Mode("--undo", run_undo, checks=True),
        Mode("--forget", run_forget),
        Mode("--tidy", run_tidy),
        Mode("--list-tables", run_list_tables, takes_name=True),
        Mode("--staged-url", run_staged_url),
    )
}
