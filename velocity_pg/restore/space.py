"""Is there room for the restored copy? Checked where the server's disk is visible from here.

A restore builds a whole second copy of the database before the old one is dropped. When
the tablespace's filesystem fills up halfway, PostgreSQL may not even be able to drop the
unfinished copy (DROP DATABASE needs a checkpoint, and a checkpoint needs to write). So,
before anything changes, and only where this is certain to be the server's own disk (the
tool runs on the database host or in its container: ``SHOW data_directory`` is readable,
that folder exists here, and its ``global/pg_control`` holds the running server's system
identifier), the free space of the filesystem that holds the database's tablespace must be
at least :func:`needed_bytes`::

    1.25 x max(size of the live database, 8 MiB + 1.5 x the archive's table data) + 16 MiB

The archive's table data is measured uncompressed (``pg_restore --data-only`` to a byte
counter), unless the free space is so large that no archive of that size could need it
(more than the rule gives for 50 times the archive's size). Where the disk is not visible
(another host, a user who may not read the server's settings), there is no check.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity_pg.postgres import pgtools

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

MIB = 1024 * 1024
#: A new database's own catalogs (an empty database is about 7.5 MiB).
EMPTY_DATABASE = 8 * MIB
MARGIN = 16 * MIB
#: Table data as COPY text to table plus index size.
DATA_FACTOR = 1.5
FACTOR = 1.25
#: No -Z9 archive of table data realistically shrinks more than this.
MAX_COMPRESSION = 50


def needed_bytes(live_size: int, data_size: int) -> int:
    """The free space a restore needs (the rule of the module docstring)."""
    return int(FACTOR * max(live_size, EMPTY_DATABASE + DATA_FACTOR * data_size)) + MARGIN


@dataclass(frozen=True)
class Space:
    """What the check found."""

    location: Path
    tablespace: str
    free: int
    needed: int

    @property
    def enough(self) -> bool:
        return self.free >= self.needed

    def to_json(self) -> dict[str, object]:
        return {
            "location": str(self.location),
            "tablespace": self.tablespace,
            "free_bytes": self.free,
            "needed_bytes": self.needed,
        }


def read_system_identifier(data_directory: Path) -> int | None:
    """The system identifier in a data directory's ``global/pg_control`` (its first field)."""
    try:
        with (data_directory / "global" / "pg_control").open("rb") as control:
            head = control.read(8)
    except OSError:
        return None
    if len(head) != 8:
        return None
    import sys

    return int.from_bytes(head, sys.byteorder)


def local_location(admin: Conn, tablespace: str) -> Path | None:
    """The local folder of ``tablespace`` if this machine sees the server's own disk."""
    import psycopg

    try:
        row = admin.execute("SHOW data_directory").fetchone()
        ident = admin.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        location_row = admin.execute(
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = %s",
            (tablespace,),
        ).fetchone()
    except psycopg.Error:  # not allowed to read them: not our disk to judge
        return None
    if not row or not ident or not location_row:
        return None
    data_directory = Path(str(row[0]))
    if read_system_identifier(data_directory) != int(ident[0]):
        return None  # another machine's folder of that name, or unreadable
    located = str(location_row[0] or "")
    folder = Path(located) if located else data_directory / "base"
    return folder if folder.is_dir() else None


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def database_size(admin: Conn, name: str) -> int:
    row = admin.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def measure(
    admin: Conn,
    program: Path,
    archive: Path,
    *,
    live: str | None,
    tablespace: str,
    reclaimed: tuple[str, ...] = (),
) -> Space | None:
    """The check's numbers, or None where the server's disk is not visible from here.

    ``reclaimed``: databases dropped before the copy is made (a failed run's leftovers,
    maybe what filled the disk): their size counts as free.
    """
    import psycopg

    location = local_location(admin, tablespace)
    if location is None:
        return None
    try:
        live_size = database_size(admin, live) if live is not None else 0
    except psycopg.Error:
        return None
    free = free_bytes(location)
    for name in reclaimed:
        # An invalid leftover may not be measurable: then it is not counted.
        with contextlib.suppress(psycopg.Error):
            free += database_size(admin, name)
    archive_size = archive.stat().st_size
    if free >= needed_bytes(live_size, MAX_COMPRESSION * archive_size):
        return Space(location, tablespace, free, needed_bytes(live_size, archive_size))
    data = pgtools.count_output(pgtools.pg_restore_data_cmd(program, archive), {})
    return Space(location, tablespace, free, needed_bytes(live_size, data))
