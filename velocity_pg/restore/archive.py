"""An archive's entries as ``pg_restore --list`` prints them, and what a restore does with them.

Each entry is one line, ``<dump id>; <catalog tableoid> <oid> <type> <schema> <name> <owner>``,
for example ``216; 1259 16388 TABLE public ev_2026 app`` (a table),
``3237; 0 0 TABLE ATTACH public ev_2026 app`` (attaching a partition) or
``3392; 0 16411 MATERIALIZED VIEW DATA public mv app`` (a refresh).

Names are not quoted, may hold spaces, and pg_restore prints a newline or carriage return
in a name as a space. So names are never split out of a line: an entry is known by its
dump id, its catalog ids (a table's tableoid is pg_class's, 1259; a TABLE DATA or TABLE
ATTACH entry's is 0) and the type the line starts with; a name is only *compared*, as the
prefix ``<schema> <name> `` the catalog gives, spelled the way pg_restore spells it.

A restore leaves out the ``MATERIALIZED VIEW DATA`` entries (a ``--use-list`` file of the
other dump ids, in their order), then refreshes each materialized view in its own
pg_restore run, so a view whose refresh fails (a ``FORCE ROW LEVEL SECURITY`` table under
it, a function that errors) stays unpopulated and is reported, instead of failing the
whole restore.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from velocity_pg.errors import CommandFailed, first_error_line
from velocity_pg.postgres import pgtools

#: ``pg_class``'s own oid: the catalog of every relation's TOC entry.
PG_CLASS_OID = 1259
_LINE_RE = re.compile(r"\A(\d+); (\d+) (\d+) (.*)\Z")
MATVIEW_DATA = "MATERIALIZED VIEW DATA "
_QUERY_FAILED = "pg_restore: error: could not execute query: "


@dataclass(frozen=True)
class Entry:
    """One entry of the archive's table of contents."""

    dump_id: int
    tableoid: int
    oid: int
    text: str  # "<type> <schema> <name> <owner>", names as pg_restore prints them

    @property
    def is_table(self) -> bool:
        """A table (plain, partitioned, partition, inheritance child): not its data or attach."""
        return self.tableoid == PG_CLASS_OID and self.text.startswith("TABLE ")

    @property
    def is_matview_data(self) -> bool:
        """The refresh of a materialized view (a view made WITH NO DATA has none)."""
        return self.tableoid == 0 and self.text.startswith(MATVIEW_DATA)

    def label(self) -> str:
        """``<schema> <name> <owner>`` after the type (for tables and materialized views)."""
        for kind in (MATVIEW_DATA, "TABLE "):
            if self.text.startswith(kind):
                return self.text[len(kind) :]
        return self.text

    def shown_name(self) -> str:
        """``schema name`` for a message (the owner, last, cut off)."""
        return self.label().rsplit(" ", 1)[0]


def parse_entries(listing: str) -> list[Entry]:
    """The entries of a ``pg_restore --list`` listing, in its order (comments skipped)."""
    entries = []
    for line in listing.splitlines():
        match = _LINE_RE.match(line)
        if match:
            entries.append(
                Entry(
                    dump_id=int(match.group(1)),
                    tableoid=int(match.group(2)),
                    oid=int(match.group(3)),
                    text=match.group(4),
                )
            )
    return entries


def listed_name(schema: str, name: str) -> str:
    """``schema name `` as a listing spells them: newlines and carriage returns as spaces."""
    return f"{schema} {name} ".replace("\n", " ").replace("\r", " ")


def missing_tables(entries: Sequence[Entry], present: Sequence[tuple[str, str]]) -> list[str]:
    """The archive's tables (as ``schema name``) that ``present`` (schema, name) lacks.

    Also fails, naming no table, when the restored copy has fewer tables than the archive
    (two archive tables that only one catalog name could match).
    """
    prefixes = [listed_name(schema, name) for schema, name in present]
    tables = [e for e in entries if e.is_table]
    missing = [e.shown_name() for e in tables if not any(e.label().startswith(p) for p in prefixes)]
    if not missing and len(prefixes) < len(tables):
        missing = [f"{len(tables) - len(prefixes)} of {len(tables)} (by count)"]
    return missing


def use_list(entries: Sequence[Entry]) -> str:
    """A ``pg_restore --use-list`` file: one dump id a line, in this order."""
    return "".join(f"{e.dump_id}\n" for e in entries)


@contextmanager
def list_file(entries: Sequence[Entry]) -> Iterator[Path]:
    """A private temporary ``--use-list`` file for these entries, removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="velocity-pg-", suffix=".list")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(use_list(entries))
        yield path
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Unrefreshed:
    """A materialized view left unpopulated, and why."""

    name: str  # "schema name", as the listing shows it
    error: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "error": self.error}

    def describe(self) -> str:
        return (
            f"materialized view {self.name} could not be refreshed and is left unpopulated "
            f"(REFRESH MATERIALIZED VIEW it once the cause is fixed): {self.error}"
        )


def restore_all_but_matviews(
    program: Path,
    archive: Path,
    dbname: str,
    entries: Sequence[Entry],
    env: Mapping[str, str | None],
    *,
    jobs: int = 1,
    verbose: bool = False,
    on_stderr_line: Callable[[str], None] | None = None,
    extra: Sequence[str] = (),
) -> None:
    """pg_restore every entry but the materialized views' data (raises CommandFailed).

    ``dbname``: the database's name, or a connection string (``Endpoint.conninfo``).
    """
    kept = [e for e in entries if not e.is_matview_data]
    with list_file(kept) as listed:
        cmd = pgtools.pg_restore_cmd(
            program, archive, dbname, jobs=jobs, verbose=verbose, use_list=listed, extra=extra
        )
        pgtools.run(cmd, env, on_stderr_line=on_stderr_line)


def refresh_matviews(
    program: Path,
    archive: Path,
    dbname: str,
    entries: Sequence[Entry],
    env: Mapping[str, str | None],
    extra: Sequence[str] = (),
) -> list[Unrefreshed]:
    """Refresh each materialized view that has data in the archive, one pg_restore each,
    in the archive's order (a view over another comes after it); the failures."""
    failed = []
    for entry in entries:
        if not entry.is_matview_data:
            continue
        with list_file([entry]) as listed:
            cmd = pgtools.pg_restore_cmd(program, archive, dbname, use_list=listed, extra=extra)
            try:
                pgtools.run(cmd, env)
            except CommandFailed as exc:
                if exc.returncode < 0 or pgtools.went_silent(exc.stderr):
                    raise  # killed, or the server went silent: not the view's fault
                reason = first_error_line(exc.stderr).removeprefix(_QUERY_FAILED)
                failed.append(
                    Unrefreshed(entry.shown_name(), reason or f"exit status {exc.returncode}")
                )
    return failed
