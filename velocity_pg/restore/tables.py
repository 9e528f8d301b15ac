"""``restore NAME --into DB --table T``: which entries of an archive a table needs (pure).

``pg_restore --list --verbose`` prints, under each entry, the dump ids it depends on
(``;\\tdepends on: 215 216``). A table's indexes, constraints, triggers, column
defaults, data, comments and privileges depend on it; the sequences it owns depend on
it, and their ``SEQUENCE SET`` and ``OWNED BY`` on them; the types, functions and
schemas it needs are what it (and those) depend on. So the selection is:

* the chosen tables;
* every entry that depends on them, directly or through other entries that are not
  relations (a sequence, an index, a constraint), and on no other relation: a foreign
  key to a table that is not restored depends on that table too, and is left out (and
  reported); so is a view over a chosen table;
* everything those need (schemas, types, functions, extensions), transitively;
* the archive's settings (``ENCODING``, ``STDSTRINGS``, ``SEARCHPATH``).

The ``--use-list`` file keeps the archive's order. ``pg_restore --table`` alone would
restore a table's definition and data but none of its indexes, constraints or triggers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from velocity_pg.errors import OperationFailed
from velocity_pg.restore import archive

_DEPENDS = re.compile(r"\A;\s*depends on:((?: \d+)*)\s*\Z")
#: Entries of the archive's own settings, restored whatever the selection.
SETTINGS_KINDS = ("ENCODING ", "STDSTRINGS ", "SEARCHPATH ")
#: Relations: what another relation's entries may not come along with.
RELATION_KINDS = ("TABLE ", "VIEW ", "MATERIALIZED VIEW ", "FOREIGN TABLE ")
#: Dependents of a chosen table never brought along (they are not the table's own).
NOT_BROUGHT = ("PUBLICATION TABLE ", "PUBLICATION ", "SUBSCRIPTION ")
#: Left-out entries not worth a line of their own (their object's line says it).
QUIET = ("TABLE DATA ", "COMMENT ", "ACL ", "SEQUENCE SET ", "SEQUENCE OWNED BY ",
         "MATERIALIZED VIEW DATA ", "SECURITY LABEL ")  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One archive entry and the dump ids it depends on."""

    entry: archive.Entry
    deps: tuple[int, ...] = ()

    @property
    def is_relation(self) -> bool:
        return self.entry.tableoid == archive.PG_CLASS_OID and self.entry.text.startswith(
            RELATION_KINDS
        )


@dataclass(frozen=True, order=True)
class TableName:
    """A table of the archive: schema and name, as ``pg_restore --list`` spells them."""

    schema: str
    name: str

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_items(listing: str) -> list[Item]:
    """The entries of a ``pg_restore --list --verbose`` listing with their dependencies."""
    items: list[Item] = []
    for line in listing.splitlines():
        entries = archive.parse_entries(line)
        if entries:
            items.append(Item(entries[0]))
            continue
        match = _DEPENDS.match(line)
        if match and items:
            last = items[-1]
            deps = tuple(int(d) for d in match.group(1).split())
            items[-1] = Item(last.entry, last.deps + deps)
    return items


def table_name(entry: archive.Entry) -> TableName:
    """A TABLE entry's schema and name (``TABLE <schema> <name> <owner>``).

    A listing does not quote names: a schema with a space in its name is read as
    ending at the space (the name keeps the rest)."""
    schema, _, rest = entry.label().partition(" ")
    name = rest.rsplit(" ", 1)[0] if " " in rest else rest
    return TableName(schema, name)


def archive_tables(items: Iterable[Item]) -> list[tuple[TableName, archive.Entry]]:
    """The archive's tables, in its order."""
    return [(table_name(i.entry), i.entry) for i in items if i.entry.is_table]


def resolve(asked: Sequence[str], tables: Sequence[TableName]) -> list[TableName]:
    """The tables ``--table`` names (``schema.table`` or ``table``), each once.

    Refuses (OperationFailed, nothing changed) a name the archive does not have, naming
    the close ones, and an unqualified name two schemas share, naming both."""
    chosen: list[TableName] = []
    for text in asked:
        if "." in text:
            schema, _, name = text.partition(".")
            found = [t for t in tables if t.schema == schema and t.name == name]
            if not found:  # a table whose name holds a dot, given unqualified
                found = [t for t in tables if t.name == text]
        else:
            found = [t for t in tables if t.name == text]
        if len(found) > 1:
            both = " and ".join(t.shown for t in found)
            raise OperationFailed(
                f"--table {text}: the backup has {both}; say which with schema.table; "
                "nothing was changed"
            )
        if not found:
            shown = [t.shown for t in tables]
            close = difflib.get_close_matches(text, shown, n=5, cutoff=0.6)
            close += [n for n in difflib.get_close_matches(text, [t.name for t in tables])]
            names = sorted({t.shown for t in tables if t.shown in close or t.name in close})
            hint = (
                f"close names: {', '.join(names)}"
                if names
                else "`velocity-pg restore NAME --list-tables` lists its tables"
            )
            raise OperationFailed(
                f"--table {text}: the backup has no such table ({hint}); nothing was changed"
            )
        if found[0] not in chosen:
            chosen.append(found[0])
    return chosen


@dataclass(frozen=True)
class Selection:
    """The entries a table restore keeps, in the archive's order, and what it leaves out."""

    tables: tuple[TableName, ...]
    entries: tuple[archive.Entry, ...]
    #: Foreign keys of the chosen tables to (or from) a table that is not restored.
    foreign_keys_left_out: tuple[str, ...] = ()
    #: Other objects over the chosen tables that are not restored (views, child tables).
    left_out: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "tables": [t.shown for t in self.tables],
            "objects": len(self.entries),
            "foreign_keys_left_out": list(self.foreign_keys_left_out),
            "left_out": list(self.left_out),
        }

    def notes(self) -> list[str]:
        out = []
        if self.foreign_keys_left_out:
            out.append(
                "foreign key(s) to or from tables not restored are left out: "
                + "; ".join(self.foreign_keys_left_out)
            )
        if self.left_out:
            out.append(
                "objects over the restored tables that are not restored: "
                + "; ".join(self.left_out)
            )
        return out


def select(items: Sequence[Item], chosen: Sequence[TableName]) -> Selection:
    """The entries that restore ``chosen`` with what is theirs and what they need."""
    by_id = {i.entry.dump_id: i for i in items}
    chosen_ids = {
        i.entry.dump_id for i in items if i.entry.is_table and table_name(i.entry) in chosen
    }
    memo: dict[int, frozenset[int]] = {}

    def relations(dump_id: int, seen: frozenset[int] = frozenset()) -> frozenset[int]:
        """The relations an entry depends on, through entries that are not relations."""
        if dump_id in memo:
            return memo[dump_id]
        found: set[int] = set()
        for dep in by_id[dump_id].deps if dump_id in by_id else ():
            item = by_id.get(dep)
            if item is None or dep in seen:
                continue
            found |= {dep} if item.is_relation else relations(dep, seen | {dump_id})
        memo[dump_id] = frozenset(found)
        return memo[dump_id]

    for table in sorted(chosen_ids):
        others = relations(table) - chosen_ids
        if others:
            needs = ", ".join(sorted(table_name(by_id[o].entry).shown for o in others))
            raise OperationFailed(
                f"table {table_name(by_id[table].entry).shown} needs {needs} (its type or "
                f"a function it uses); add --table for it; nothing was changed"
            )
    kept = set(chosen_ids)
    fks: list[str] = []
    left: list[str] = []
    for item in items:
        entry = item.entry
        if item.is_relation or entry.dump_id in kept:
            if entry.dump_id not in kept and relations(entry.dump_id) & chosen_ids:
                left.append(entry.text.rsplit(" ", 1)[0])
            continue
        over = relations(entry.dump_id)
        if not over & chosen_ids:
            continue
        if over <= chosen_ids and not entry.text.startswith(NOT_BROUGHT):
            kept.add(entry.dump_id)
        elif entry.text.startswith("FK CONSTRAINT "):
            schema, on, rest = entry.text.removeprefix("FK CONSTRAINT ").split(" ", 2)
            fks.append(f"{rest.rsplit(' ', 1)[0]} of {schema}.{on}")
        elif not entry.text.startswith(QUIET):
            left.append(entry.text.rsplit(" ", 1)[0])
    # What the kept entries need: schemas, types, functions, extensions (transitively).
    todo = list(kept)
    while todo:
        for dep in by_id[todo.pop()].deps:
            if dep in by_id and dep not in kept and not by_id[dep].is_relation:
                kept.add(dep)
                todo.append(dep)
    # The comments and privileges of what is kept come along.
    for item in items:
        if item.entry.text.startswith(QUIET) and item.deps and set(item.deps) <= kept:
            kept.add(item.entry.dump_id)
    entries = tuple(
        i.entry for i in items if i.entry.dump_id in kept or i.entry.text.startswith(SETTINGS_KINDS)
    )
    return Selection(
        tables=tuple(chosen),
        entries=entries,
        foreign_keys_left_out=tuple(fks),
        left_out=tuple(left),
    )
