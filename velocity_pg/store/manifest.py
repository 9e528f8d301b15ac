"""The manifest: a small JSON file beside each backup that says what it holds.

``<database>_YYYY-MM-DD_HHMMSS.dump.json`` sits beside
``<database>_YYYY-MM-DD_HHMMSS.dump``. It is put in place *before* the dump gets
its name, so every named dump made by velocity-pg has its manifest; dumps
without one (made by the old bash scripts, copied in by hand) are still
backups, just unverifiable by checksum.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from velocity_pg.errors import ManifestUnreadable, OperationFailed
from velocity_pg.store import catalog
from velocity_pg.store import migrations as django_migrations

T = TypeVar("T")

FORMAT = "velocity-pg-manifest/1"
SUFFIX = ".json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Verification:
    at: str  # ISO 8601, UTC
    method: str  # "checksum" or "restore"
    ok: bool
    detail: str = ""
    #: A restore drill's exact rows of each table it restored (``schema.table``: rows);
    #: None for a checksum verification and in manifests written before.
    restored_rows: dict[str, int] | None = None


@dataclass(frozen=True)
class TableStatistics:
    """One table's size as the server's statistics estimate it at backup time (no scan)."""

    schema: str
    name: str
    rows: int
    size_bytes: int
    #: Where ``rows`` comes from: ``reltuples`` (pg_class, kept by ANALYZE and VACUUM),
    #: or ``n_live_tup`` (pg_stat_user_tables) for a table never analyzed.
    rows_source: str

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Statistics:
    """What the database held when it was backed up, from the server's statistics."""

    at: str  # ISO 8601, UTC
    database_bytes: int
    tables: tuple[TableStatistics, ...] = ()


@dataclass(frozen=True)
class Suspect:
    """Why a backup looks wrong next to the previous good backup of the same database."""

    at: str  # ISO 8601, UTC: when the verdict was reached
    compared_with: str  # the previous good backup's name
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Accepted:
    """``velocity-pg accept NAME``: a person said a suspect backup's new state is intended;
    it no longer counts as suspect (its ``suspect`` mark stays, as a record)."""

    at: str  # ISO 8601, UTC
    by: str  # who: the user name velocity-pg ran as

    def describe(self) -> str:
        return f"accepted by {self.by} at {self.at}"


@dataclass(frozen=True)
class Pin:
    """A pin: the backup is kept whatever the retention rules say (``velocity-pg pin``).

    ``auto`` says who set it: a person (``pin``, ``backup --pin``) or velocity-pg itself
    (the last good backup before an anomaly); ``unpin`` releases either kind.
    """

    at: str  # ISO 8601, UTC: when it was set
    reason: str = ""
    auto: bool = False

    def describe(self) -> str:
        """``pinned: before the 3.2 upgrade``, ``pinned automatically: ...``, ``pinned``."""
        head = "pinned automatically" if self.auto else "pinned"
        return f"{head}: {self.reason}" if self.reason else head

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RolesRecord:
    """The backup's roles file (store/roles.py), always ``NAME.roles.sql`` beside the dump
    ``NAME`` (the manifest is written before the dump's name is final, so it does not hold
    the name): its size, SHA-256, whether it holds password hashes, and the roles in it."""

    sha256: str
    size_bytes: int
    passwords: bool = False
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseSetting:
    """One ``ALTER DATABASE ... SET`` (``role`` None) or ``ALTER ROLE role IN DATABASE ...
    SET`` of the backed-up database, as ``pg_db_role_setting`` stores it: ``name=value``."""

    role: str | None
    setting: str


@dataclass(frozen=True)
class DatabaseGrant:
    """One privilege on the backed-up database (``grantee`` None: PUBLIC)."""

    grantor: str
    grantee: str | None
    privilege: str
    grantable: bool = False


@dataclass(frozen=True)
class DatabaseProperties:
    """The backed-up database's own properties, which ``pg_dump`` without ``--create``
    leaves out of the archive: its settings (also per role), comment, grants (None: the
    default privileges) and connection limit. Flat, to stay within :data:`MAX_DEPTH`."""

    settings: tuple[DatabaseSetting, ...] = ()
    comment: str | None = None
    grants: tuple[DatabaseGrant, ...] | None = None
    connection_limit: int = -1

    def is_empty(self) -> bool:
        return (
            not self.settings
            and self.comment is None
            and self.grants is None
            and self.connection_limit == -1
        )


@dataclass(frozen=True)
class Manifest:
    sha256: str
    size_bytes: int
    started_at: str
    finished_at: str
    duration_seconds: float
    database: str
    server_version: str
    pg_dump_version: str
    velocity_pg_version: str
    toc_entries: int
    format: str = FORMAT
    #: pg_dump's --compress method (gzip, zstd, lz4, none) and level; None in manifests
    #: written before velocity-pg recorded it (those dumps are gzip:9).
    compression_method: str | None = None
    compression_level: int | None = None
    last_verification: Verification | None = field(default=None)
    #: The pin (``velocity-pg pin``); None when unpinned, and in manifests written before
    #: pins existed.
    pin: Pin | None = None
    #: The server's statistics at backup time; None in manifests written before
    #: velocity-pg recorded them (or when the server would not give them).
    statistics: Statistics | None = None
    #: Set when the backup looks wrong next to the previous good one (store/anomaly.py).
    suspect: Suspect | None = None
    #: Set by ``accept NAME``: the suspect mark no longer counts (store/anomaly.py).
    accepted: Accepted | None = None
    #: The database's Django migration state (its django_migrations table) at backup
    #: time; None for a database that is not Django's, and in manifests written before.
    migrations: django_migrations.MigrationState | None = None
    #: The roles file (store/roles.py); None in manifests written before roles were recorded.
    roles: RolesRecord | None = None
    #: The database's own settings, comment, grants and connection limit (read just
    #: before pg_dump); None in manifests written before, or when they could not be read.
    database_properties: DatabaseProperties | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # Written only when present: a manifest without them reads as before.
        for key in (
            "statistics",
            "suspect",
            "accepted",
            "migrations",
            "roles",
            "database_properties",
        ):
            if data[key] is None:
                del data[key]
        if self.migrations is not None:
            data["migrations"] = self.migrations.to_json()
        return data

    @property
    def compression(self) -> str | None:
        """``zstd:3``, ``gzip:9``, ``none``; None when the manifest does not say."""
        if self.compression_method is None:
            return None
        if self.compression_method == "none" or self.compression_level is None:
            return self.compression_method
        return f"{self.compression_method}:{self.compression_level}"

    def with_verification(self, verification: Verification) -> Manifest:
        return replace(self, last_verification=verification)

    def with_pin(self, pin: Pin | None) -> Manifest:
        return replace(self, pin=pin)

    def with_suspect(self, suspect: Suspect | None) -> Manifest:
        return replace(self, suspect=suspect)

    def with_accepted(self, accepted: Accepted | None) -> Manifest:
        return replace(self, accepted=accepted)


def path_for(dump: Path) -> Path:
    """The manifest's path beside a dump."""
    return dump.with_name(dump.name + SUFFIX)


def is_manifest_name(name: str) -> bool:
    return name.endswith(SUFFIX) and catalog.is_backup_name(name[: -len(SUFFIX)])


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size) of a file, read in 1 MiB chunks (memory stays flat).

    Only a regular file is read (a FIFO or a symlink put in its place is
    refused, see :func:`catalog.open_regular`).
    """
    digest = hashlib.sha256()
    size = 0
    fd = catalog.open_regular(path)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def checksum_problem(dump: Path, record: Manifest) -> str | None:
    """Why a dump does not match its manifest (size, then SHA-256); None if it does."""
    digest, size = sha256_file(dump)
    if size != record.size_bytes:
        return f"size is {size} bytes, the manifest says {record.size_bytes}: the file changed"
    if digest != record.sha256:
        return "SHA-256 does not match the manifest: the file is damaged"
    return None


def dumps(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()


#: A manifest is about 1 KiB plus about 200 bytes a table for its statistics (at most
#: MAX_TABLES of them, some 4 MiB); anything larger is not one (and is not read further).
MAX_BYTES = 8 * 1024 * 1024
#: The deepest a manifest nests: an off-site manifest (1) holds the dump's manifest (2),
#: its ``statistics`` (3), their ``tables`` (4), each table (5). Nothing deeper is written.
MAX_DEPTH = 5
_MAX_TEXT = 64 * 1024
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_METHODS = ("checksum", "restore")


def parse_document(data: bytes, what: str = "manifest") -> dict[str, Any]:
    """The JSON object in ``data``, read with care; ValueError says what is wrong.

    The size and the nesting depth are checked before ``json.loads`` runs, so a
    hostile file costs neither memory nor a RecursionError. Off-site manifests
    (:mod:`velocity_pg.store.remote`) are read through it too.
    """
    if len(data) > MAX_BYTES:
        raise ValueError(f"it is larger than {MAX_BYTES} bytes")
    depth = 0
    for token in _TOKENS.finditer(data):
        char = token.group()[:1]
        if char in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"it is nested deeper than {MAX_DEPTH} levels")
        elif char in (b"]", b"}"):
            depth -= 1
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"not a velocity-pg {what}")
    return raw


def loads(data: bytes) -> Manifest:
    """Parse and validate a manifest, field by field; ValueError says what is wrong."""
    return from_json(parse_document(data))


def from_json(raw: object, where: str = "") -> Manifest:
    """Validate a manifest's parsed JSON object (``where``: its place in a larger one)."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{where.rstrip('.') + ' is ' if where else ''}not a velocity-pg manifest")
    manifest = Manifest(
        sha256=text(raw, "sha256", where=where, pattern=_SHA256),
        size_bytes=count(raw, "size_bytes", where),
        started_at=moment(raw, "started_at", where=where),
        finished_at=moment(raw, "finished_at", where=where),
        duration_seconds=_seconds(raw, "duration_seconds", where),
        database=text(raw, "database", where=where),
        server_version=text(raw, "server_version", where=where),
        pg_dump_version=text(raw, "pg_dump_version", where=where),
        velocity_pg_version=text(raw, "velocity_pg_version", where=where),
        toc_entries=count(raw, "toc_entries", where),
        compression_method=_optional(raw, "compression_method", text),
        compression_level=_optional(raw, "compression_level", count),
    )
    verification = verification_from(raw, where)
    return replace(
        manifest,
        last_verification=verification,
        statistics=statistics_from(raw, where),
        suspect=suspect_from(raw, where),
        accepted=accepted_from(raw, where),
        pin=pin_from(raw, where),
        migrations=migrations_from(raw, where),
        roles=roles_from(raw, where),
        database_properties=database_properties_from(raw, where),
    )


_MAX_DATABASE_ENTRIES = 1000
_DATABASE_PRIVILEGES = ("CREATE", "TEMPORARY", "CONNECT")


def _role_name(value: object, where: str, *, public: bool = False) -> str | None:
    if value is None and public:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ValueError(f"field {where} is not a role name")
    return value


def optional_object(raw: dict[str, Any], key: str, where: str) -> tuple[dict[str, Any], str] | None:
    """An optional object field of a parsed manifest: ``(raw[key], where it is)`` for the
    messages of its own fields, None when absent (manifests written before it); ValueError
    when it is there but not an object."""
    value = raw.get(key)
    if value is None:
        return None
    where += f"{key}."
    if not isinstance(value, dict):
        raise ValueError(f"{where.rstrip('.')} is not an object")
    return value, where


def database_properties_from(raw: dict[str, Any], where: str = "") -> DatabaseProperties | None:
    """The ``database_properties`` of a parsed manifest, validated; None when it has none."""
    found = optional_object(raw, "database_properties", where)
    if found is None:
        return None
    props, where = found
    settings_raw = props.get("settings", [])
    if not isinstance(settings_raw, list) or len(settings_raw) > _MAX_DATABASE_ENTRIES:
        raise ValueError(f"field {where}settings is not a list of settings")
    settings: list[DatabaseSetting] = []
    for i, item in enumerate(settings_raw):
        at = f"{where}settings[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"field {at} is not an object")
        entry = text(item, "setting", where=at + ".")
        name, sep, _ = entry.partition("=")
        if not sep or not name:
            raise ValueError(f"field {at}.setting is not name=value")
        settings.append(
            DatabaseSetting(
                role=_role_name(item.get("role"), at + ".role", public=True), setting=entry
            )
        )
    grants: list[DatabaseGrant] | None = None
    grants_raw = props.get("grants")
    if grants_raw is not None:
        if not isinstance(grants_raw, list) or len(grants_raw) > _MAX_DATABASE_ENTRIES:
            raise ValueError(f"field {where}grants is not a list of grants")
        grants = []
        for i, item in enumerate(grants_raw):
            at = f"{where}grants[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"field {at} is not an object")
            privilege = text(item, "privilege", where=at + ".")
            if privilege not in _DATABASE_PRIVILEGES:
                raise ValueError(f"field {at}.privilege is not a database privilege")
            grantable = item.get("grantable", False)
            if not isinstance(grantable, bool):
                raise ValueError(f"field {at}.grantable is not true or false")
            grantor = _role_name(item.get("grantor"), at + ".grantor")
            assert grantor is not None
            grants.append(
                DatabaseGrant(
                    grantor=grantor,
                    grantee=_role_name(item.get("grantee"), at + ".grantee", public=True),
                    privilege=privilege,
                    grantable=grantable,
                )
            )
    comment = props.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > _MAX_TEXT):
        raise ValueError(f"field {where}comment is not a valid value")
    limit = props.get("connection_limit", -1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < -1:
        raise ValueError(f"field {where}connection_limit is not a connection limit")
    return DatabaseProperties(
        settings=tuple(settings),
        comment=comment,
        grants=None if grants is None else tuple(grants),
        connection_limit=limit,
    )


def roles_from(raw: dict[str, Any], where: str = "") -> RolesRecord | None:
    """The ``roles`` record of a parsed manifest, validated; None when it has none."""
    found = optional_object(raw, "roles", where)
    if found is None:
        return None
    mark, where = found
    passwords = mark.get("passwords", False)
    if not isinstance(passwords, bool):
        raise ValueError(f"field {where}passwords is not true or false")
    names = mark.get("roles", [])
    if not isinstance(names, list) or not all(
        isinstance(n, str) and 0 < len(n) <= 256 for n in names
    ):
        raise ValueError(f"field {where}roles is not a list of role names")
    return RolesRecord(
        sha256=text(mark, "sha256", where=where, pattern=_SHA256),
        size_bytes=count(mark, "size_bytes", where),
        passwords=passwords,
        roles=tuple(names),
    )


def migrations_from(
    raw: dict[str, Any], where: str = ""
) -> django_migrations.MigrationState | None:
    """The ``migrations`` of a parsed manifest, validated; None when it has none."""
    state = raw.get("migrations")
    if state is None:
        return None
    return django_migrations.from_json(state, f"{where}migrations")


_ROW_SOURCES = ("reltuples", "n_live_tup")
#: The most tables a manifest's statistics hold: a database with more gets none recorded
#: (see velocity_pg.verbs.backup.read_statistics), so the manifest stays within MAX_BYTES.
MAX_TABLES = 20_000


def statistics_from(raw: dict[str, Any], where: str = "") -> Statistics | None:
    """The ``statistics`` of a parsed manifest, validated; None when it has none."""
    found = optional_object(raw, "statistics", where)
    if found is None:
        return None
    stats, where = found
    tables = stats.get("tables", [])
    if not isinstance(tables, list) or len(tables) > MAX_TABLES:
        raise ValueError(f"{where}tables is not a list")
    parsed = []
    for number, table in enumerate(tables):
        at = f"{where}tables[{number}]."
        if not isinstance(table, dict):
            raise ValueError(f"{at.rstrip('.')} is not an object")
        source = text(table, "rows_source", where=at)
        if source not in _ROW_SOURCES:
            raise ValueError(f"{at}rows_source {source!r} is not one of {_ROW_SOURCES}")
        parsed.append(
            TableStatistics(
                schema=text(table, "schema", where=at),
                name=text(table, "name", where=at),
                rows=count(table, "rows", at),
                size_bytes=count(table, "size_bytes", at),
                rows_source=source,
            )
        )
    return Statistics(
        at=moment(stats, "at", where=where),
        database_bytes=count(stats, "database_bytes", where),
        tables=tuple(parsed),
    )


def suspect_from(raw: dict[str, Any], where: str = "") -> Suspect | None:
    """The ``suspect`` mark of a parsed manifest, validated; None when it has none."""
    found = optional_object(raw, "suspect", where)
    if found is None:
        return None
    mark, where = found
    reasons = mark.get("reasons")
    if (
        not isinstance(reasons, list)
        or not reasons
        or not all(isinstance(r, str) and len(r) <= _MAX_TEXT for r in reasons)
    ):
        raise ValueError(f"{where}reasons is not a list of reasons")
    return Suspect(
        at=moment(mark, "at", where=where),
        compared_with=text(mark, "compared_with", where=where),
        reasons=tuple(reasons),
    )


def accepted_from(raw: dict[str, Any], where: str = "") -> Accepted | None:
    """The ``accepted`` mark of a parsed manifest, validated; None when it has none."""
    found = optional_object(raw, "accepted", where)
    if found is None:
        return None
    mark, where = found
    return Accepted(at=moment(mark, "at", where=where), by=text(mark, "by", where=where))


def verification_from(raw: dict[str, Any], where: str = "") -> Verification | None:
    """The ``last_verification`` of a parsed manifest (local or off-site), validated."""
    found = optional_object(raw, "last_verification", where)
    if found is None:
        return None
    verification, where = found
    method = text(verification, "method", where=where)
    if method not in _METHODS:
        raise ValueError(f"{where}method {method!r} is not one of {_METHODS}")
    ok = verification.get("ok")
    if not isinstance(ok, bool):
        raise ValueError(f"{where}ok is not true or false")
    detail = verification.get("detail", "")
    if not isinstance(detail, str) or len(detail) > _MAX_TEXT:
        raise ValueError(f"{where}detail is not a string")
    rows = verification.get("restored_rows")
    if rows is not None and (
        not isinstance(rows, dict)
        or len(rows) > MAX_TABLES
        or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in rows.items()
        )
    ):
        raise ValueError(f"{where}restored_rows is not a table of row counts")
    return Verification(
        at=moment(verification, "at", where=where),
        method=method,
        ok=ok,
        detail=detail,
        restored_rows=rows,
    )


#: A pin's reason is one line of at most this many characters.
MAX_REASON = 500


def pin_from(raw: dict[str, Any], where: str = "") -> Pin | None:
    """The ``pin`` of a parsed manifest (local, or the dump's in an off-site one), validated;
    None when absent (a manifest from before pins reads as unpinned)."""
    found = optional_object(raw, "pin", where)
    if found is None:
        return None
    pin, where = found
    reason = pin.get("reason", "")
    if not isinstance(reason, str) or reason_problem(reason) is not None:
        raise ValueError(f"field {where}reason is not a valid reason")
    auto = pin.get("auto", False)
    if not isinstance(auto, bool):
        raise ValueError(f"field {where}auto is not true or false")
    return Pin(at=moment(pin, "at", where=where), reason=reason, auto=auto)


def reason_problem(reason: str) -> str | None:
    """Why a pin's reason cannot be recorded (it must be one printable line); None if it can."""
    if len(reason) > MAX_REASON:
        return f"it is longer than {MAX_REASON} characters"
    if not reason.isprintable():
        return "it must be one line of printable text"
    return None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a manifest holds")


def _field(raw: dict[str, Any], key: str, where: str) -> object:
    if key not in raw:
        raise ValueError(f"field {where}{key} is missing")
    return raw[key]


def text(
    raw: dict[str, Any], key: str, *, where: str = "", pattern: re.Pattern[str] | None = None
) -> str:
    value = _field(raw, key, where)
    if not isinstance(value, str):
        raise ValueError(f"field {where}{key} is {type(value).__name__}, not a string")
    if len(value) > _MAX_TEXT or (pattern is not None and not pattern.match(value)):
        raise ValueError(f"field {where}{key} is not a valid value")
    return value


def moment(raw: dict[str, Any], key: str, *, where: str = "") -> str:
    value = text(raw, key, where=where)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"field {where}{key} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"field {where}{key} has no time zone")
    return value


def count(raw: dict[str, Any], key: str, where: str = "") -> int:
    value = _field(raw, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {where}{key} is {type(value).__name__}, not a whole number")
    if value < 0:
        raise ValueError(f"field {where}{key} is negative")
    return value


def _seconds(raw: dict[str, Any], key: str, where: str = "") -> float:
    value = _field(raw, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {where}{key} is {type(value).__name__}, not a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"field {where}{key} is not a duration")
    return float(value)


def _optional(raw: dict[str, Any], key: str, parse: Callable[[dict[str, Any], str], T]) -> T | None:
    """A field that manifests written before it existed lack (absent or null: None)."""
    if raw.get(key) is None:
        return None
    return parse(raw, key)


def read(dump: Path) -> Manifest | None:
    """The manifest of a dump, None if it has none; ManifestUnreadable if it is unreadable.

    Only a regular file is opened (a FIFO would block the read forever), and no
    more than :data:`MAX_BYTES` (+1) bytes are read.
    """
    path = path_for(dump)
    try:
        fd = catalog.open_regular(path, f"manifest {path.name}")
    except FileNotFoundError:
        return None
    except catalog.UnreadableFile as exc:
        raise ManifestUnreadable(exc.message) from exc
    try:
        data = _read_at_most(fd, MAX_BYTES + 1)
    except OSError as exc:
        raise ManifestUnreadable(f"cannot read manifest {path.name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    try:
        return loads(data)
    except ValueError as exc:
        raise ManifestUnreadable(
            f"manifest {path.name} is damaged ({exc}); the dump itself may still be fine: "
            "move the .json aside to use the dump without its checksum"
        ) from exc


def _read_at_most(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, min(_CHUNK, limit - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer), fsync, and check the file's size.

    A short write (a file-size limit, a full disk) raises OSError instead of
    leaving a cut file behind a good name.
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "the write made no progress")
        view = view[written:]
    os.fsync(fd)
    size = os.fstat(fd).st_size
    if size != len(data):
        raise OSError(errno.EIO, f"wrote {size} of {len(data)} bytes")


def write_temp(folder: Path, manifest: Manifest) -> tuple[int, Path]:
    """A complete, fsynced temporary manifest file in ``folder`` (fd kept open)."""
    fd, temp = catalog.temp_path_for(folder)
    try:
        write_all(fd, dumps(manifest))
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    return fd, temp


class NotRecorded(OperationFailed):
    """A manifest could not be rewritten; the old one is still in place, unchanged."""


def replace_manifest(dump: Path, manifest: Manifest) -> None:
    """Atomically replace a dump's manifest (after a verification), whole or not at all.

    The new file gets the old one's owner, group and mode (a run as root must
    not leave a manifest the folder's owner cannot read). Any failure raises
    :class:`NotRecorded`, and the old manifest stays exactly as it was.
    """
    path = path_for(dump)
    try:
        old = path.lstat()
    except OSError as exc:
        raise NotRecorded(f"its manifest {path.name} is gone ({exc.strerror})") from exc
    if not stat.S_ISREG(old.st_mode):
        raise NotRecorded(f"its manifest {path.name} is not a regular file")
    try:
        fd, temp = catalog.temp_path_for(dump.parent)
    except OSError as exc:
        raise NotRecorded(f"cannot create a file in {dump.parent}: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            now = os.fstat(fd)
            if (now.st_uid, now.st_gid) != (old.st_uid, old.st_gid):
                os.fchown(fd, old.st_uid, old.st_gid)
        except OSError as exc:
            raise NotRecorded(
                f"cannot keep the owner ({catalog.user_name(old.st_uid)}) and mode "
                f"({stat.S_IMODE(old.st_mode):04o}) of {path.name}: {exc.strerror}; "
                f"run velocity-pg as {catalog.user_name(old.st_uid)}"
            ) from exc
        try:
            write_all(fd, dumps(manifest))
            os.close(fd)
            fd = -1
            temp.replace(path)
            catalog.fsync_path(dump.parent)
        except OSError as exc:
            raise NotRecorded(f"cannot write {path.name}: {exc.strerror}") from exc
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temp.unlink(missing_ok=True)
        raise


def now_iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
