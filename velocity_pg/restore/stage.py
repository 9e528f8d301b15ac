"""What a restore does with a staged copy and a rollback point (``restore NAME --stage``
itself, which builds the copy and stops, is a mode in :mod:`velocity_pg.verbs.restore`).

``--stage`` takes the restore's checks and builds its copy (pg_restore,
ANALYZE) in the staging database while the live database keeps serving, then
stops, marking the copy complete with the backup's name and the SHA-256 of
its file (:mod:`velocity_pg.restore.marks`). A later ``restore NAME`` finds
it and, when it is complete and of that very file (same name, same SHA-256
now), only swaps it in: the app is down for the swap, not for the pg_restore.
A staged copy of another backup, of a file changed since, or an unfinished one
is dropped first, and the output says so.

At the swap the live database's contents become its rollback point
(``velocity_pg_previous_<h>``) in the same transaction; an older rollback
point is moved out of the way in that transaction and dropped once it
committed, so a failed restore leaves it too as it was.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import OperationFailed
from velocity_pg.postgres import db
from velocity_pg.postgres.endpoint import Endpoint
from velocity_pg.restore import marks, swap
from velocity_pg.restore.console import Console, describe
from velocity_pg.restore.copies import Copy
from velocity_pg.restore.plan import Plan
from velocity_pg.restore.shield import shielded
from velocity_pg.settings import Settings
from velocity_pg.store import catalog, manifest

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


def file_fingerprint(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def judge(plan: Plan, stage_only: bool) -> Plan:
    """Decide what to do with a complete staged copy: swap it in (the same file) or
    drop it first (another backup, or the same name with other content now)."""
    found = plan.staged
    mark = found.staged if found is not None else None
    if found is None or mark is None:
        return plan
    if mark.backup != plan.backup.name:
        reason = f"it is a copy of another backup, {mark.backup}"
        return dataclasses.replace(plan, stale_reason=reason)
    digest = sha256_now(plan.backup)
    if digest != mark.sha256:
        reason = (
            f"the file {plan.backup.name} has changed since it was staged "
            "(its SHA-256 is not the one the copy was built from)"
        )
        return dataclasses.replace(plan, stale_reason=reason, sha256=digest)
    return dataclasses.replace(plan, reuse=True, sha256=digest)


def sha256_now(path: Path) -> str:
    """The file's SHA-256 now. With a manifest, the restore's checks have just hashed the
    file and found it equal to the manifest's: that hash is used instead of a second read
    (which, in `just db-restore`, would lengthen the app's downtime with the file's size)."""
    try:
        record = manifest.read(path)
    except OperationFailed:
        record = None
    if record is not None:
        return record.sha256
    return manifest.sha256_file(path)[0]


def describe_rollback(copy: Copy | None) -> str | None:
    if copy is None:
        return None
    what = (
        f"contents before {copy.rollback.describe()}" if copy.rollback is not None else "unmarked"
    )
    return (
        f"rollback point {copy.name} ({what}, from {copy.describe_age()}, "
        f"{catalog.human_size(copy.size_bytes)})"
    )


def announce(console: Console, plan: Plan, stage_only: bool) -> None:
    """What will happen to the staged copy and the rollback point (before the countdown)."""
    target = plan.target
    staged = plan.staged
    if staged is not None and staged.staged is not None:
        age = staged.describe_age()
        if plan.reuse:
            console.say(
                f"a complete copy of {plan.backup.name} staged {age} is ready, built from "
                "this very file (same SHA-256)" + ("" if stage_only else ": only the swap remains")
            )
        else:
            console.say(
                f"the copy staged {age} ({staged.name}) will be dropped first and the backup "
                f"restored again: {plan.stale_reason}"
            )
    if stage_only:
        console.say(
            f"staging only: the copy is built beside {target!r}, which keeps serving; "
            "nothing live changes"
        )
        return
    if plan.live is None:
        return
    old = describe_rollback(plan.rollback)
    if plan.keep_previous:
        console.say(
            f"the current contents of {target!r} will be kept as its rollback point, "
            f"{plan.previous} (as much room on the server as the database itself; "
            "BACKUP_KEEP_PREVIOUS=false or --no-keep-previous drops them instead)"
        )
        if old is not None:
            console.say(
                f"a database keeps one rollback point: the {old} will be dropped once the swap "
                "is done"
            )
    else:
        console.say(f"the current contents of {target!r} will be dropped after the swap")
        if old is not None:
            console.say(f"the {old} is left as it is")


def drop_stale(
    admin: Conn, plan: Plan, console: Console, settings: Settings | None = None
) -> tuple[str, ...]:
    """Drop a staged copy that must not be swapped in (we hold the restore lock)."""
    import psycopg

    found = plan.staged
    if found is None or plan.reuse:
        return ()
    with shielded():
        try:
            swap.drop_database(admin, found.name, plan.where)
        except psycopg.Error as exc:
            raise OperationFailed(
                f"cannot drop {found.name}, a copy staged earlier ({plan.stale_reason}): "
                f"{db.one_line(exc)}; drop it yourself (`velocity-pg restore --abort`); "
                f"database {plan.target!r} was not changed"
            ) from exc
    console.say(
        f"dropped {found.name}, the copy staged {found.describe_age()}: {plan.stale_reason}"
    )
    return (found.name,)


def ready_for_swap(admin: Conn, plan: Plan, console: Console) -> None:
    """The staged copy is swapped in as it is: rehearse the live database's settings and
    grants on it once more (they may have changed since staging), rolled back."""
    import psycopg

    found = plan.staged
    assert found is not None and found.staged is not None
    if plan.live is not None or plan.recorded is not None:
        try:
            swap.rehearse_merged(
                admin,
                plan.staging,
                plan.live,
                plan.recorded,
                as_grantors=plan.role.superuser,
            )
        except psycopg.Error as exc:
            raise OperationFailed(f"{describe(exc)}; {kept_after_failure(plan)}") from exc
    console.say(
        f"using {found.name}, the complete copy of {plan.backup.name} staged "
        f"{found.describe_age()} by {found.staged.by}; no pg_restore needed"
    )


def kept_after_failure(plan: Plan) -> str:
    return (
        f"database {plan.target!r} was not changed; the staged copy is kept: "
        f"`velocity-pg restore {plan.backup.name}` tries the swap again, "
        "`velocity-pg restore --abort` drops it"
    )


def swap_chain(plan: Plan) -> tuple[str, swap.Chain]:
    """Where the live contents go at the swap (the rollback point's name), and the chain
    that moves an older rollback point out of the way and marks the new one."""
    mark = marks.RollbackMark(
        database=plan.target,
        replaced_by="restore",
        backup=plan.backup.name,
        at=marks.now_iso(),
        by=marks.who(plan.role.name),
    )
    before = ((plan.rollback.name, plan.aside),) if plan.rollback is not None else ()
    chain = swap.Chain(before=before, comments=((plan.previous, marks.rollback_comment(mark)),))
    return plan.previous, chain


def committed(admin: Conn, database: str) -> int | None:
    """The transactions committed in ``database`` so far, by the server's statistics.

    ``pg_stat_database.xact_commit``: every committed transaction, read-only ones
    and velocity-pg's own included (sessions report theirs within about a second).
    None when the database does not exist (yet) or has no statistics.
    """
    row = admin.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
    ).fetchone()
    return None if row is None or row[0] is None else int(str(row[0]))


def commits_since_stage(admin: Conn, plan: Plan) -> int | None:
    """Transactions committed in the live database since its staged copy was complete:
    their writes go to the rollback point, not the restored database (an upper bound).
    None when it cannot be told (no staged copy, no live database, statistics reset)."""
    staged = None if plan.staged is None else plan.staged.staged
    if not plan.reuse or staged is None or staged.live_commits is None:
        return None
    now = committed(admin, plan.target)
    if now is None or now < staged.live_commits:
        return None
    return now - staged.live_commits


def flush_to_disk(admin: Conn, console: Console) -> None:
    """CHECKPOINT now, while the app still runs: pg_restore left the copy's pages dirty in
    shared buffers, and the DROP DATABASE after the swap (of the older rollback point, or of
    the previous contents) forces a checkpoint that would otherwise write them all while
    the app is stopped. Needs superuser (or pg_checkpoint); without it, skipped."""
    import psycopg

    try:
        admin.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        console.say("note: no CHECKPOINT (not a superuser); the swap may take longer")


def slots_notice(target: str, slots: tuple[str, ...] | list[str]) -> str:
    """What a restore or an undo does with the live database's logical replication slots."""
    return (
        f"database {target!r} has logical replication slot(s) {', '.join(slots)}: they are "
        "dropped once the swap is done (kept with the replaced contents they would serve no "
        "subscriber and hold back WAL until the server's disk fills), so their consumers must "
        f"be set up again: create the slots anew in {target!r} after the swap"
    )


def release_slots(admin: Conn, name: str, target: str, console: Console) -> None:
    """Drop the logical replication slots of ``name``, which holds ``target``'s contents a
    swap just replaced (its rollback point, or what is dropped next). Their consumers
    connect to ``target``, now another database: a slot left there serves none, retains
    WAL for as long as it exists, and keeps its name from being made anew in ``target``.
    Done once the swap committed: a slot that cannot be dropped is a warning that says
    how to drop it (``status`` lists it)."""
    import psycopg

    try:
        slots = [slot for slot, _wal in swap.slots_retaining_wal(admin, name)]
    except psycopg.Error as exc:
        console.say(
            f"warning: could not list the replication slots of {name}: {db.one_line(exc)}; "
            "`velocity-pg status` lists any left there"
        )
        return
    dropped: list[str] = []
    for slot in slots:
        try:
            swap.drop_slot(admin, slot, name)
            dropped.append(slot)
        except psycopg.Error as exc:
            console.say(
                f"warning: could not drop replication slot {slot} of the replaced contents "
                f"({name}): {db.one_line(exc)}; it holds back WAL until it is dropped: run "
                f"SELECT pg_drop_replication_slot('{slot}') as a superuser "
                "(`velocity-pg status` lists it)"
            )
    if dropped:
        console.say(
            f"dropped replication slot(s) {', '.join(dropped)} with the replaced contents "
            f"({name}); create them anew in {target!r} for their consumers"
        )


def quiet_rollback_point(admin: Conn, conn: Endpoint, name: str, console: Console) -> None:
    """A rollback point must stay as it was: not a template others copy, and without
    enabled subscriptions (which would keep applying changes into it). Done just after the
    swap committed; undoing brings the subscriptions back disabled (ENABLE them then)."""
    import psycopg
    from psycopg import sql

    try:
        row = admin.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is not None and row[0]:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name))
            )
        enabled = [sub for sub, _owner, on in swap.subscriptions(admin, name) if on]
        if enabled:
            with db.connect(conn, name) as inside:
                for sub in enabled:
                    inside.execute(
                        sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(sub))
                    )
            console.say(
                f"disabled subscription(s) {', '.join(enabled)} in the rollback point {name}, "
                "so they stop applying changes to it"
            )
    except (psycopg.Error, OperationFailed) as exc:
        console.say(
            f"warning: could not quiet the rollback point {name} (template flag, "
            f"subscriptions): {db.one_line(exc) if isinstance(exc, psycopg.Error) else exc}"
        )
