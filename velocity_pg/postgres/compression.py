"""The dump's compression (``BACKUP_COMPRESSION``): parsing, checks and pg_dump's option. Pure.

``BACKUP_COMPRESSION`` takes pg_dump's ``--compress`` method and level:

============  ===========  ====================================================
value         levels       notes
============  ===========  ====================================================
``gzip:N``    0-9          the default, ``gzip:9``, is the seed's ``-Z9``;
                           ``gzip:0`` is ``none``
``zstd:N``    1-22         needs pg_dump 16 or newer
``lz4:N``     1-12         needs pg_dump 16 or newer
``none``                   no compression
``N``         0-9          pg_dump's old ``-Z N``: ``gzip:N``
``gzip``,     default      pg_dump's default level of that method:
``zstd``,     level        ``gzip:6``, ``zstd:3``, ``lz4:1``
``lz4``
============  ===========  ====================================================

pg_dump 15 and older know only ``--compress=N`` (gzip, 0 = none), so the
option is built for the local pg_dump's major version; a method it cannot
write is refused before anything runs. pg_restore reads every method its own
version can (the method is in the archive's header), so restoring a zstd or
lz4 dump needs pg_restore 16 or newer too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from velocity_pg.errors import ConfigError

SETTING = "BACKUP_COMPRESSION"

#: method -> (lowest level, highest level, pg_dump's default level)
LEVELS: dict[str, tuple[int, int, int]] = {
    "gzip": (0, 9, 6),
    "zstd": (1, 22, 3),
    "lz4": (1, 12, 1),
}
#: The first pg_dump (and pg_restore) major version that knows each method.
FIRST_MAJOR: dict[str, int] = {"gzip": 8, "none": 8, "zstd": 16, "lz4": 16}
#: pg_dump's ``method[:detail]`` syntax arrived with these methods.
METHOD_SYNTAX_MAJOR = 16

_VALUE_RE = re.compile(r"\A(?:(?P<method>[a-z0-9]+)(?::(?P<level>-?[0-9]{1,9}))?)\Z", re.ASCII)


@dataclass(frozen=True)
class Compression:
    """A compression method and level, as validated (``none`` has level 0)."""

    method: str
    level: int

    @property
    def spec(self) -> str:
        """The canonical text: ``zstd:3``, ``gzip:9``, ``none``."""
        return "none" if self.method == "none" else f"{self.method}:{self.level}"

    @property
    def needs_major(self) -> int:
        """The oldest pg_dump/pg_restore major version that can write and read it."""
        return FIRST_MAJOR[self.method]

    def __str__(self) -> str:
        return self.spec


DEFAULT = Compression("gzip", 9)
NONE = Compression("none", 0)


def parse(text: str, name: str = SETTING) -> Compression:
    """Validate a ``BACKUP_COMPRESSION`` value (see the module docstring); ConfigError if bad."""
    value = text.strip().lower()
    match = _VALUE_RE.match(value)
    hint = "use gzip:0-9, zstd:1-22, lz4:1-12 or none (e.g. zstd:3)"
    if match is None:
        raise ConfigError(f"{name}={text!r} is not a compression method and level; {hint}")
    method, level_text = match.group("method"), match.group("level")
    if method.isdigit() and level_text is None:  # pg_dump's old -Z N: gzip
        method, level_text = "gzip", method
    if method == "none":
        if level_text is not None:
            raise ConfigError(f"{name}={text!r}: none takes no level; write none")
        return NONE
    if method not in LEVELS:
        raise ConfigError(f"{name}={text!r}: unknown compression method {method!r}; {hint}")
    low, high, default = LEVELS[method]
    level = default if level_text is None else int(level_text)
    if not low <= level <= high:
        raise ConfigError(f"{name}={text!r}: the {method} level must be between {low} and {high}")
    if method == "gzip" and level == 0:
        return NONE
    return Compression(method, level)


def dump_problem(compression: Compression, pg_dump_major: int, pg_dump_version: str) -> str | None:
    """Why this pg_dump cannot write ``compression`` (one line), or None if it can."""
    if pg_dump_major >= compression.needs_major:
        return None
    return (
        f"{SETTING}={compression.spec} needs pg_dump {compression.needs_major} or newer; "
        f"this pg_dump is {pg_dump_version}: use gzip:N (e.g. gzip:9) or run velocity-pg "
        f"with PostgreSQL {compression.needs_major}+ client programs (set PG_BINDIR)"
    )


def restore_problem(
    method: str | None, pg_restore_major: int, pg_restore_version: str
) -> str | None:
    """Why this pg_restore cannot read a dump compressed with ``method`` (from its manifest),
    or None if it can (or the method is not known)."""
    needs = FIRST_MAJOR.get(method or "")
    if needs is None or pg_restore_major >= needs:
        return None
    return (
        f"it is compressed with {method}, which needs pg_restore {needs} or newer; "
        f"this pg_restore is {pg_restore_version} (set PG_BINDIR to PostgreSQL {needs}+ "
        "client programs, or run velocity-pg in the db container)"
    )


def pg_dump_option(compression: Compression, pg_dump_major: int) -> str:
    """pg_dump's ``--compress=`` option for this compression and pg_dump major version."""
    if pg_dump_major >= METHOD_SYNTAX_MAJOR:
        return f"--compress={compression.spec}"
    problem = dump_problem(compression, pg_dump_major, str(pg_dump_major))
    if problem is not None:
        raise ConfigError(problem)
    return f"--compress={compression.level}"  # gzip:N -> N, none -> 0
