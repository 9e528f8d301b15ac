"""What ``velocity-pg restore --undo`` checks and announces before it swaps the rollback
point back in, in one transaction (the mode itself: :mod:`velocity_pg.verbs.restore`).

The rollback point (``velocity_pg_previous_<h>``) holds the database's
contents from before the last restore. The undo swaps it with the live
database exactly as a restore swaps its copy in::

    BEGIN;
    ALTER DATABASE live RENAME TO velocity_pg_old_<h>;
    ALTER DATABASE velocity_pg_previous_<h> RENAME TO live;
    -- live's settings, grants, owner and comment carried over
    ALTER DATABASE velocity_pg_old_<h> RENAME TO velocity_pg_previous_<h>;
    COMMENT ON DATABASE velocity_pg_previous_<h> IS '<what it holds now>';
    COMMIT;

so the contents it replaces become the rollback point in turn: an undo can be
undone. Same checks, countdown and ``--yes`` as a restore; nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import LockBusy, OperationFailed
from velocity_pg.restore import copies, staging, swap
from velocity_pg.restore.console import Console
from velocity_pg.restore.copies import Copy
from velocity_pg.restore.properties import DatabaseProps

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class UndoPlan:
    target: str
    live: DatabaseProps | None
    rollback: Copy
    role: swap.Role
    aside: str
    leftover: bool  # velocity_pg_old_<h> left by a killed restore: dropped first
    slots: tuple[str, ...] = ()  # logical replication slots of the live database


def prepare(admin: Conn, target: str) -> UndoPlan:
    """Every check that can refuse; takes the database's restore lock."""
    role = swap.current_role(admin)
    live = swap.read_props(admin, target)
    rollback = copies.rollback_point(admin, target)
    if rollback is None:
        raise OperationFailed(
            f"database {target!r} has no rollback point to go back to (a restore keeps one "
            "unless BACKUP_KEEP_PREVIOUS=false; `velocity-pg status` shows it); nothing was changed"
        )
    if rollback.rollback is None:
        raise OperationFailed(
            f"{copies.unmarked(rollback, 'the rollback point of', target)}; nothing was changed"
        )
    owners = [swap.database_owner(admin, rollback.name)]
    if live is not None:
        owners.append(live.owner)
    if not role.superuser:
        if not role.createdb:
            raise OperationFailed(
                f"user {role.name!r} may not rename databases (it lacks CREATEDB), which an "
                "undo needs; undo as a superuser (POSTGRES_USER); nothing was changed"
            )
        for owner in owners:
            if not swap.is_member_of(admin, owner):
                raise OperationFailed(
                    f"user {role.name!r} does not own the databases an undo swaps (owner: "
                    f"{owner!r}); undo as a superuser or as the owner; nothing was changed"
                )
    for name in (target, rollback.name):
        if swap.prepared_transactions(admin, name):
            raise OperationFailed(
                f"database {name!r} has prepared transactions, which would block the swap; "
                "COMMIT PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts); "
                "nothing was changed"
            )
    if not swap.try_lock(admin, staging.lock_key(target)):
        raise LockBusy(
            f"a restore of database {target!r} is already running on this server; "
            "wait for it to finish; nothing was changed"
        )
    swap.keep_session_alive(admin)
    aside = staging.aside_name(target)
    leftover = bool(swap.existing(admin, [aside]))
    if leftover and live is None:
        raise OperationFailed(
            f"database {aside!r} holds what {target!r} contained before an earlier "
            f"restore, and {target!r} does not exist; rename it back (ALTER DATABASE "
            f"{aside} RENAME TO ...) or drop it, then try again; nothing was changed"
        )
    slots = tuple(swap.logical_slots(admin, target)) if live is not None else ()
    return UndoPlan(
        target=target,
        live=live,
        rollback=rollback,
        role=role,
        aside=aside,
        leftover=leftover,
        slots=slots,
    )


def announce(console: Console, plan: UndoPlan) -> None:
    mark = plan.rollback.rollback
    assert mark is not None
    what = (
        "replacing its current contents, which become the rollback point in turn"
        if plan.live is not None
        else "which does not exist now: the rollback point becomes it"
    )
    console.say(
        f"undo: bring back the contents of database {plan.target!r} from before "
        f"{mark.describe()} ({plan.rollback.describe_age()}, "
        f"{db_size(plan.rollback)}), {what}"
    )
    if plan.slots:
        from velocity_pg.restore.stage import slots_notice

        console.say(slots_notice(plan.target, plan.slots))
    if plan.leftover:
        console.say(
            "an earlier restore of this database was killed; the undo will first drop what "
            f"it left: {plan.aside}"
        )


def db_size(copy: Copy) -> str:
    from velocity_pg.store.catalog import human_size

    return human_size(copy.size_bytes)
