"""Step 3 of a restore: build the restored copy in the staging database beside the live
one (pg_restore, ANALYZE), and on any failure drop it again, saying what state things
are in. Used by a restore and by ``restore --stage``; the live database is never touched.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import CommandFailed, Interrupted, OperationFailed, VelocityError
from velocity_pg.postgres import db, pgtools
from velocity_pg.restore import archive, roles, staging, swap
from velocity_pg.restore.console import Console, describe
from velocity_pg.restore.plan import Plan
from velocity_pg.restore.progress import RestoreProgress
from velocity_pg.restore.shield import shielded
from velocity_pg.settings import Settings

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


def build_copy(
    settings: Settings, admin: Conn, plan: Plan, progress: RestoreProgress, console: Console
) -> list[archive.Unrefreshed]:
    """Step 3: create the staging database, pg_restore into it, ANALYZE; on any failure
    or Ctrl+C drop it (the live database is never touched here)."""
    target = plan.target
    try:
        comment = staging.staging_comment(target, os.getpid(), socket.gethostname())
        swap.create_staging(admin, plan.staging, plan.live, comment)
        roles.own_new_database(admin, plan.staging, plan.roles, plan.live is None)
        if plan.live is not None or plan.recorded is not None:
            swap.rehearse_merged(
                admin, plan.staging, plan.live, plan.recorded, as_grantors=plan.role.superuser
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
    # restore --owner ROLE: --no-owner --role=ROLE, privileges applied after (restore/roles.py)
    owned = roles.pg_restore_args(plan.roles)
    try:
        archive.restore_all_but_matviews(
            plan.program.path,
            plan.backup,
            plan.where.conninfo(plan.staging),
            roles.restore_entries(plan.roles, plan.entries),
            env,
            jobs=plan.jobs,
            verbose=True,
            on_stderr_line=on_line,
            extra=owned,
        )
        roles.apply_acls(
            plan.program.path, plan.backup, plan.where, plan.staging, plan.roles, plan.entries
        )
        unrefreshed = archive.refresh_matviews(
            plan.program.path,
            plan.backup,
            plan.where.conninfo(plan.staging),
            plan.entries,
            env,
            extra=owned,
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
