"""``velocity-pg restore --undo``: swap the rollback point back in, in one transaction.

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

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import Interrupted, LockBusy, OperationFailed
from velocity_pg.postgres import db, endpoint, pgtools
from velocity_pg.postgres.endpoint import Endpoint
from velocity_pg.restore import copies, marks, staging, swap
from velocity_pg.restore.copies import Copy
from velocity_pg.restore.properties import DatabaseProps
from velocity_pg.settings import Settings

if TYPE_CHECKING:
    import psycopg

    from velocity_pg.restore.verb import Console

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


@dataclass(frozen=True)
class UndoCheck:
    plan: UndoPlan

    def to_json(self) -> dict[str, object]:
        mark = self.plan.rollback.rollback
        return {
            "check": "passed",
            "database": self.plan.target,
            "rollback_point": self.plan.rollback.name,
            "size_bytes": self.plan.rollback.size_bytes,
            "contents_before": None if mark is None else mark.describe(),
        }


@dataclass(frozen=True)
class UndoResult:
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


def undo(
    settings: Settings,
    *,
    check: bool = False,
    yes: bool = False,
    console: Console | None = None,
    countdown_seconds: int | None = None,
) -> UndoCheck | UndoResult:
    from velocity_pg.restore.verb import (
        COUNTDOWN_SECONDS,
        Console,
        countdown,
        refuse_target,
    )

    console = Console() if console is None else console
    where = endpoint.resolve(settings.connection)
    target = where.dbname
    refuse_target(target)
    result: UndoCheck | UndoResult | None = None
    try:
        with swap.connect_admin(where, target) as admin:
            plan = prepare(admin, target)
            announce(console, plan)
            # A check starts nothing, so there is nothing to count down to.
            if not (yes or check):
                seconds = COUNTDOWN_SECONDS if countdown_seconds is None else countdown_seconds
                countdown(console, seconds)
            result = UndoCheck(plan) if check else execute(where, admin, plan, console)
    except (KeyboardInterrupt, pgtools.Terminated) as exc:
        console.end_progress()
        if isinstance(result, UndoResult):
            return result
        raise Interrupted(f"{pgtools.stop_word(exc)}; nothing was changed") from None
    assert result is not None
    return result


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


def execute(where: Endpoint, admin: Conn, plan: UndoPlan, console: Console) -> UndoResult:
    import psycopg

    from velocity_pg.restore.verb import describe, shielded, signal_name

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
            from velocity_pg.restore.stage import quiet_rollback_point, release_slots

            release_slots(admin, rollback.name, target, console)
            quiet_rollback_point(admin, where, rollback.name, console)
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
