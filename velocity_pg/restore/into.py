"""``restore NAME --into DB``: restore a backup into a new database beside the live one.

The restore is an ordinary one whose target is ``DB`` instead of the live
database: the same checks (manifest, archive, server, permissions, space), the
same staging database (``velocity_pg_staging_<hash of DB>``), built while
nothing else changes, then renamed to ``DB`` in one transaction once it is
complete. So a killed run leaves no database named ``DB``, only that staging
copy, which the next ``restore ... --into DB`` drops first. The live database is
never connected to, stopped or counted down for, and no rollback point is kept.

``DB`` must not exist, unless it is a copy velocity-pg itself made with
``--into`` and ``--replace`` is given: such a copy carries a mark in its comment
(see :mod:`velocity_pg.restore.marks`) that names it and its database oid, set in
the very transaction that gives it its name; a comment copied onto another
database does not match that database's oid, and a database without the mark is
never replaced.

With ``--table`` only the chosen tables (and what is theirs, and what they need)
are restored: see :mod:`velocity_pg.restore.tables`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import OperationFailed
from velocity_pg.restore import marks, plan, staging, swap, tables
from velocity_pg.restore.console import Console
from velocity_pg.restore.plan import Plan
from velocity_pg.restore.progress import Toc
from velocity_pg.store import catalog, manifest

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

INTO = "into-copy"
#: PostgreSQL's NAMEDATALEN - 1: longer names are cut short by the server.
MAX_NAME_BYTES = 63


@dataclass(frozen=True)
class Into:
    """What ``--into DB`` (``--replace``, ``--table``) asked."""

    database: str
    replace: bool = False
    tables: tuple[str, ...] = ()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an ``--into`` database (None: it can); pure, before anything."""
    if not name.strip():
        return "--into needs a database name"
    if "\x00" in name:
        return "--into: a database name cannot contain a NUL character"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"--into {name!r}: a database name is at most {MAX_NAME_BYTES} bytes"
    if name in plan.SYSTEM_DATABASES or name == "postgres":
        return f"--into {name!r}: that is a system database; choose a new name"
    if staging.is_internal_name(name):
        return f"--into {name!r}: a name velocity-pg uses for its own databases; choose another"
    return None


# -- the mark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IntoMark:
    """Database ``database`` (oid ``oid``) is velocity-pg's restore of ``backup``."""

    database: str
    oid: int
    backup: str
    at: str
    by: str
    tables: tuple[str, ...] = ()

    def comment(self) -> str:
        what = f"tables {', '.join(self.tables)} of backup" if self.tables else "backup"
        sentence = (
            f"velocity-pg: copy of {what} {self.backup} restored with --into at {self.at} "
            f"by {self.by}; `velocity-pg restore NAME --into {self.database} --replace` "
            "may replace it, DROP DATABASE drops it"
        )
        data = {"kind": INTO, **dataclasses.asdict(self), "tables": list(self.tables)}
        return f"{sentence}\n{marks.MARK_PREFIX}{json.dumps(data, sort_keys=True)}"


def parse_mark(comment: str | None) -> IntoMark | None:
    """The ``--into`` mark in a database comment, or None."""
    if not comment:
        return None
    last = comment.rstrip("\n").rsplit("\n", 1)[-1]
    if not last.startswith(marks.MARK_PREFIX):
        return None
    try:
        data = json.loads(last[len(marks.MARK_PREFIX) :])
        if data.pop("kind") != INTO:
            return None
        found = IntoMark(**{**data, "tables": tuple(data.get("tables", ()))})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(found.oid, int) or not isinstance(found.database, str):
        return None
    return found


def own_copy(admin: Conn, name: str) -> IntoMark | None:
    """The mark of database ``name`` when it is a copy velocity-pg made with ``--into``:
    its mark names it and its oid (a mark copied onto another database is not one)."""
    found = parse_mark(swap.database_comment(admin, name))
    if found is None or found.database != name or found.oid != swap.database_oid(admin, name):
        return None
    return found


def mark_for(admin: Conn, the_plan: Plan, selection: tables.Selection | None) -> str:
    """The comment the restored copy gets, in the transaction that names it."""
    oid = swap.database_oid(admin, the_plan.staging)
    if oid is None:
        raise OperationFailed(f"database {the_plan.staging!r} disappeared")
    return IntoMark(
        database=the_plan.target,
        oid=oid,
        backup=the_plan.backup.name,
        at=marks.now_iso(),
        by=marks.who(the_plan.role.name),
        tables=() if selection is None else tuple(t.shown for t in selection.tables),
    ).comment()


# -- the plan -----------------------------------------------------------------------------


def adapt(admin: Conn, the_plan: Plan, into: Into) -> tuple[Plan, tables.Selection | None]:
    """The restore's plan for ``--into``: refuses an existing database that is not our own
    copy (or without ``--replace``), keeps no rollback point, and with ``--table`` restores
    only the selection."""
    target = into.database
    if the_plan.live is not None:
        mark = own_copy(admin, target)
        if mark is None:
            raise OperationFailed(
                f"database {target!r} already exists and is not a copy velocity-pg made with "
                "--into, so it is never replaced; choose a new name for --into (or drop it "
                "yourself); nothing was changed"
            )
        if not into.replace:
            raise OperationFailed(
                f"database {target!r} already exists (velocity-pg's copy of {mark.backup}, "
                f"made at {mark.at}); add --replace to replace it, or choose a new name for "
                "--into; nothing was changed"
            )
    # The copy's comment is velocity-pg's mark (how --replace knows its own copy): the
    # backup's comment is not given to it.
    from_backup = the_plan.from_backup
    if from_backup is not None:
        from_backup = dataclasses.replace(
            from_backup, taken=tuple(t for t in from_backup.taken if t != "comment")
        )
    # A copy staged for DB by `restore --stage` is never swapped in here: dropped first.
    the_plan = dataclasses.replace(
        the_plan,
        from_backup=from_backup,
        keep_previous=False,
        reuse=False,
        stale_reason="a restore --into builds its own copy" if the_plan.staged else None,
    )
    if not into.tables:
        return the_plan, None
    items = tables.parse_items(plan.read_listing(the_plan.program, the_plan.backup, verbose=True))
    chosen = tables.resolve(into.tables, [name for name, _ in tables.archive_tables(items)])
    selection = tables.select(items, chosen)
    ids = frozenset(e.dump_id for e in selection.entries)
    the_plan = dataclasses.replace(
        the_plan, entries=selection.entries, toc=Toc(entry_ids=ids, header=the_plan.toc.header)
    )
    return the_plan, selection


def announce(
    console: Console, the_plan: Plan, into: Into, selection: tables.Selection | None
) -> None:
    of = f"of database {the_plan.source!r}, " if the_plan.source else ""
    what = (
        "replacing velocity-pg's earlier copy there"
        if the_plan.live is not None
        else "a new database"
    )
    only = "" if selection is None else f", only table(s) {', '.join(into.tables)}"
    console.say(
        f"restore {the_plan.backup.name} ({of}{catalog.human_size(the_plan.size)}, "
        f"{the_plan.toc.entries} objects{only}) into database {the_plan.target!r} on "
        f"{the_plan.where.where()}, {what}; no other database is touched"
    )
    for note in [] if selection is None else selection.notes():
        console.say(note)
    for name, story in zip(the_plan.leftovers, the_plan.leftover_stories, strict=False):
        console.say(f"the restore will first drop {name}, left by {story}")
    line = None if the_plan.from_backup is None else the_plan.from_backup.line()
    if line is not None:
        console.say(line)


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntoCheck:
    """``restore NAME --into DB --check``: it would work; nothing was changed."""

    plan: Plan
    selection: tables.Selection | None = None

    def to_json(self) -> dict[str, object]:
        the_plan = self.plan
        return {
            "check": "passed",
            "name": the_plan.backup.name,
            "into": the_plan.target,
            "source_database": the_plan.source,
            "replaces_own_copy": the_plan.live is not None,
            "objects": the_plan.toc.entries,
            "selection": None if self.selection is None else self.selection.to_json(),
            "server_version": the_plan.server_version,
            "pg_restore_version": the_plan.program.version,
            "leftovers": list(the_plan.leftovers),
            "free_space": None if the_plan.room is None else the_plan.room.to_json(),
        }

    def lines(self) -> list[str]:
        the_plan = self.plan
        action = (
            "replace velocity-pg's earlier copy there" if the_plan.live is not None else "create it"
        )
        only = "" if self.selection is None else f" ({len(self.selection.tables)} table(s))"
        out = [
            f"Check passed: {the_plan.backup.name}{only} can be restored into database "
            f"{the_plan.target!r} (it would {action}; no other database is touched). "
            "Nothing was changed."
        ]
        line = None if the_plan.from_backup is None else the_plan.from_backup.line()
        if line is not None:
            out.append(line)
        return out + ([] if self.selection is None else self.selection.notes())


@dataclass(frozen=True)
class IntoResult:
    """``restore NAME --into DB``: database DB holds the backup (or its tables) now."""

    name: str
    database: str
    replaced: bool
    duration: float
    objects: int
    source_database: str | None
    selection: tables.Selection | None = None
    unrefreshed: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "into": self.database,
            "replaced_own_copy": self.replaced,
            "duration_seconds": round(self.duration, 3),
            "objects": self.objects,
            "source_database": self.source_database,
            "selection": None if self.selection is None else self.selection.to_json(),
            "unrefreshed_materialized_views": self.unrefreshed,
        }

    def lines(self) -> list[str]:
        what = (
            "the backup"
            if self.selection is None
            else f"table(s) {', '.join(t.shown for t in self.selection.tables)}"
        )
        verb = "Replaced" if self.replaced else "Created"
        out = [
            f"{verb} database {self.database!r} with {what} of {self.name} in "
            f"{self.duration:.1f} s ({self.objects} objects); no other database was touched."
        ]
        return out + ([] if self.selection is None else self.selection.notes())


# -- --list-tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedTable:
    table: tables.TableName
    rows: int | None
    size_bytes: int | None


@dataclass(frozen=True)
class TableList:
    """``restore NAME --list-tables``: the tables a backup holds."""

    name: str
    tables: tuple[ListedTable, ...]
    #: When the sizes are known: the manifest's statistics, taken at backup time.
    statistics_at: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "statistics_at": self.statistics_at,
            "tables": [
                {
                    "schema": t.table.schema,
                    "table": t.table.name,
                    "rows": t.rows,
                    "size_bytes": t.size_bytes,
                }
                for t in self.tables
            ],
        }

    def lines(self) -> list[str]:
        if not self.tables:
            return [f"{self.name} holds no tables."]
        width = max(len(t.table.shown) for t in self.tables)
        out = [f"{'TABLE':<{width}}  {'ROWS':>12}  {'SIZE':>10}"]
        for t in self.tables:
            rows = "?" if t.rows is None else f"{t.rows:,}"
            size = "?" if t.size_bytes is None else catalog.human_size(t.size_bytes)
            out.append(f"{t.table.shown:<{width}}  {rows:>12}  {size:>10}")
        where = (
            f"rows and sizes: the server's estimates at backup time ({self.statistics_at})"
            if self.statistics_at
            else "rows and sizes not known (the backup's manifest has no statistics)"
        )
        out.append(f"{len(self.tables)} table(s) in {self.name}; {where}.")
        return out


def list_tables(name: str, listing: str, record: manifest.Manifest | None) -> TableList:
    """The archive's tables (pg_restore --list), with the manifest's statistics where known."""
    stats = None if record is None else record.statistics
    known = {} if stats is None else {(t.schema, t.name): t for t in stats.tables}
    found = []
    for table, _entry in tables.archive_tables(tables.parse_items(listing)):
        stat = known.get((table.schema, table.name))
        found.append(
            ListedTable(
                table=table,
                rows=None if stat is None else stat.rows,
                size_bytes=None if stat is None else stat.size_bytes,
            )
        )
    return TableList(
        name=name,
        tables=tuple(sorted(found, key=lambda t: t.table)),
        statistics_at=None if stats is None else stats.at,
    )
