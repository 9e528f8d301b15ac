"""The copies a restore keeps beside a database: its staged copy and its rollback point.

Both live on the same server under names of velocity-pg's (see
:mod:`velocity_pg.restore.staging`), one of each per database, and say what
they are in their comment (see :mod:`velocity_pg.restore.marks`). This module
finds them, describes them (``status``), and drops them (``restore --abort``,
``restore --forget``), always under the database's restore lock, so it never
drops a copy a running restore is using.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import LockBusy, OperationFailed
from velocity_pg.postgres import db, endpoint
from velocity_pg.restore import marks, staging, swap
from velocity_pg.restore.shield import shielded
from velocity_pg.settings import Settings
from velocity_pg.store import catalog

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class Copy:
    """A database of ours on the server, with what its comment says it is."""

    name: str
    size_bytes: int
    comment: str | None
    mark: marks.Mark | None
    #: A staging database whose comment says it is velocity-pg's unfinished copy.
    unfinished: bool = False

    @property
    def staged(self) -> marks.StagedMark | None:
        return self.mark if isinstance(self.mark, marks.StagedMark) else None

    @property
    def rollback(self) -> marks.RollbackMark | None:
        return self.mark if isinstance(self.mark, marks.RollbackMark) else None

    def age(self, now: datetime) -> timedelta | None:
        at = marks.parse_time(self.mark.at) if self.mark is not None else None
        return None if at is None else max(timedelta(0), now - at)

    def describe_age(self, now: datetime | None = None) -> str:
        age = self.age(now or datetime.now(UTC))
        return "at an unknown time" if age is None else f"{catalog.human_age(age)} ago"


def find(admin: Conn, name: str) -> Copy | None:
    """The database ``name`` (its size and comment), or None."""
    row = admin.execute(
        "SELECT pg_database_size(oid), shobj_description(oid, 'pg_database') "
        "FROM pg_database WHERE datname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    comment = None if row[1] is None else str(row[1])
    mark = marks.parse_comment(comment)
    return Copy(name=name, size_bytes=int(row[0]), comment=comment, mark=mark)


def staged_copy(admin: Conn, target: str) -> Copy | None:
    """``target``'s staging database: a complete staged copy (with a mark) or unfinished."""
    found = find(admin, staging.staging_name(target))
    if found is None:
        return None
    if found.staged is not None and found.staged.database != target:
        return Copy(found.name, found.size_bytes, found.comment, None)  # not ours to trust
    if found.mark is None and staging.is_unfinished_copy_of(found.comment, target):
        return Copy(found.name, found.size_bytes, found.comment, None, unfinished=True)
    return found


def rollback_point(admin: Conn, target: str) -> Copy | None:
    """``target``'s rollback point, if there is one."""
    found = find(admin, staging.previous_name(target))
    if found is not None and found.rollback is not None and found.rollback.database != target:
        return Copy(found.name, found.size_bytes, found.comment, None)
    return found


# -- status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What ``status`` says about the target database's copies (or why it cannot)."""

    database: str
    staged: Copy | None = None
    rollback: Copy | None = None
    database_bytes: int | None = None
    error: str | None = None
    #: Replication slots left on the rollback point: (name, WAL it holds back in bytes).
    rollback_slots: tuple[tuple[str, int | None], ...] = ()

    def to_json(self, now: datetime) -> dict[str, object]:
        def one(copy: Copy | None) -> dict[str, object] | None:
            if copy is None:
                return None
            age = copy.age(now)
            out: dict[str, object] = {
                "database": copy.name,
                "size_bytes": copy.size_bytes,
                "age_seconds": None if age is None else int(age.total_seconds()),
                "complete": copy.mark is not None,
                "marked": copy.mark is not None or copy.unfinished,
            }
            if copy.staged is not None:
                out.update(backup=copy.staged.backup, sha256=copy.staged.sha256)
                out.update(staged_at=copy.staged.at, staged_by=copy.staged.by)
            if copy.rollback is not None:
                out.update(
                    replaced_by=copy.rollback.replaced_by,
                    restored_backup=copy.rollback.backup,
                    replaced_at=copy.rollback.at,
                    replaced_by_who=copy.rollback.by,
                )
            return out

        rollback = one(self.rollback)
        if rollback is not None:
            rollback["replication_slots"] = [
                {"name": slot, "retained_wal_bytes": wal} for slot, wal in self.rollback_slots
            ]
        return {
            "database": self.database,
            "database_size_bytes": self.database_bytes,
            "staged_copy": one(self.staged),
            "rollback_point": rollback,
            "error": self.error,
        }

    def lines(self, now: datetime) -> list[str]:
        if self.error is not None:
            return [f"Restore copies: not known ({self.error})"]
        staged, rollback = self.staged, self.rollback
        out: list[str] = []
        if staged is None:
            out.append("Staged copy:   none")
        elif staged.unfinished:
            size = catalog.human_size(staged.size_bytes)
            out.append(
                f"Staged copy:   unfinished ({staged.name}, {size}); "
                "the next restore drops it, or `velocity-pg restore --abort`"
            )
        elif staged.staged is None:
            out.append(f"Staged copy:   {unmarked(staged, 'a copy staged for', self.database)}")
        else:
            out.append(
                f"Staged copy:   {staged.staged.backup} ({staged.describe_age(now)}, "
                f"{catalog.human_size(staged.size_bytes)}); swap it in with "
                f"`velocity-pg restore {staged.staged.backup}`, drop it with "
                "`velocity-pg restore --abort`"
            )
        if rollback is None:
            out.append("Rollback point: none")
        elif rollback.rollback is None:
            out.append(
                f"Rollback point: {unmarked(rollback, 'the rollback point of', self.database)}"
            )
        else:
            what = f"contents before {rollback.rollback.describe()}"
            size = catalog.human_size(rollback.size_bytes)
            out.append(
                f"Rollback point: {what} ({rollback.describe_age(now)}, {size}, "
                f"database {rollback.name}); `velocity-pg restore --undo` brings it back, "
                f"`velocity-pg restore --forget` frees its {size} (a second copy of the "
                "database: it doubles the space the database takes on the server)"
            )
        for slot, wal in self.rollback_slots if rollback is not None else ():
            held = (
                "reserves no WAL yet"
                if wal is None
                else f"keeps {catalog.human_size(wal)} of WAL from being removed, more as the "
                "server writes"
            )
            out.append(
                f"  WARNING: replication slot {slot} is on the rollback point, where it serves "
                f"no subscriber, and {held}; free it with SELECT pg_drop_replication_slot("
                f"'{slot}') as a superuser, or drop the rollback point with it "
                "(`velocity-pg restore --forget`)"
            )
        return out


def unmarked(copy: Copy, what: str, target: str) -> str:
    """A database under one of our names that carries no mark of ours: never touched."""
    return (
        f"database {copy.name} ({catalog.human_size(copy.size_bytes)}) has the name of "
        f"{what} {target!r} but carries no velocity-pg mark saying it is one (its comment "
        "was changed, or it is not velocity-pg's); look inside it, then rename or drop it "
        "yourself"
    )


def report(settings: Settings, target: str) -> Report:
    """The copies of ``target`` on the server; a server we cannot reach is said, not raised."""
    import psycopg

    try:
        with swap.connect_admin(endpoint.resolve(settings.connection), target) as admin:
            row = admin.execute(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (target,)
            ).fetchone()
            rollback = rollback_point(admin, target)
            return Report(
                database=target,
                staged=staged_copy(admin, target),
                rollback=rollback,
                database_bytes=None if row is None else int(row[0]),
                rollback_slots=tuple(
                    swap.slots_retaining_wal(admin, rollback.name) if rollback else ()
                ),
            )
    except (psycopg.Error, OperationFailed) as exc:
        message = exc.message if isinstance(exc, OperationFailed) else db.one_line(exc)
        return Report(database=target, error=message)


# -- dropping ----------------------------------------------------------------------------


def drop_under_lock(settings: Settings, target: str, which: str) -> Copy | None:
    """Drop ``target``'s staged copy (``which="staged"``) or rollback point; None if none.

    Takes the database's restore lock without waiting: a restore that is
    running owns these copies.
    """
    with swap.connect_admin(endpoint.resolve(settings.connection), target) as admin:
        if not swap.try_lock(admin, staging.lock_key(target)):
            raise LockBusy(
                f"a restore of database {target!r} is running on this server; "
                "wait for it to finish; nothing was changed"
            )
        found = staged_copy(admin, target) if which == "staged" else rollback_point(admin, target)
        if found is None:
            return None
        if which == "staged" and found.staged is None and not found.unfinished:
            raise OperationFailed(
                f"{unmarked(found, 'a copy staged for', target)}; nothing was changed"
            )
        if which != "staged" and found.rollback is None:
            raise OperationFailed(
                f"{unmarked(found, 'the rollback point of', target)}; nothing was changed"
            )
        import psycopg

        # The drop is this verb's whole work: once it runs, it completes and is reported.
        with shielded(deliver=False):
            try:
                swap.drop_database(admin, found.name, endpoint.resolve(settings.connection))
            except (psycopg.Error, OperationFailed) as exc:
                why = exc.message if isinstance(exc, OperationFailed) else db.one_line(exc)
                raise OperationFailed(
                    f"cannot drop database {found.name}: {why}; nothing was changed"
                ) from exc
        return found


def tidy(settings: Settings, target: str) -> str | None:
    """``restore --tidy``: drop what a swap replaced for good and left under the aside
    name (``restore --drop-later``, or a run killed after its swap); None if nothing."""
    import psycopg

    aside = staging.aside_name(target)
    with swap.connect_admin(endpoint.resolve(settings.connection), target) as admin:
        if not swap.try_lock(admin, staging.lock_key(target)):
            raise LockBusy(
                f"a restore of database {target!r} is running on this server; "
                "wait for it to finish; nothing was changed"
            )
        if not swap.existing(admin, [aside]):
            return None
        if swap.database_oid(admin, target) is None:
            raise OperationFailed(
                f"database {aside!r} holds what {target!r} contained before a restore, and "
                f"{target!r} does not exist; rename it back (ALTER DATABASE {aside} RENAME "
                "TO ...) or drop it yourself; nothing was changed"
            )
        # The drop is this verb's whole work: once it runs, it completes and is reported.
        with shielded(deliver=False):
            try:
                swap.drop_database(admin, aside, endpoint.resolve(settings.connection))
            except (psycopg.Error, OperationFailed) as exc:
                why = exc.message if isinstance(exc, OperationFailed) else db.one_line(exc)
                raise OperationFailed(
                    f"cannot drop database {aside}: {why}; fix that and run "
                    f"`velocity-pg restore --tidy` again (the next restore of {target!r} "
                    "drops it too)"
                ) from exc
    return aside
