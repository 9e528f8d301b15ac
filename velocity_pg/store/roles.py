"""The roles file: ``<database>_YYYY-MM-DD_HHMMSS.dump.roles.sql`` beside each backup.

It holds the roles the backup's archive needs (its objects' owners and the grantees of
their privileges) and the roles those are members of, as ``pg_dumpall --roles-only``
writes them (``CREATE ROLE``, ``ALTER ROLE ... WITH``, their settings, comments and
memberships among them; see :mod:`velocity_pg.postgres.roles`), after a short header.
Without password hashes unless BACKUP_ROLE_PASSWORDS=true. It is written like the dump
(temporary name, fsync, mode 0600), linked to its name before the manifest, and its
size and SHA-256 are in the manifest (:class:`velocity_pg.store.manifest.RolesRecord`).
A backup made before velocity-pg wrote it has none: its roles are unknown.

It is plain SQL a person can read, and run with psql on a new server; velocity-pg
itself never runs it as it is (``restore --create-missing-roles`` builds its own
statements from it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from velocity_pg.errors import OperationFailed
from velocity_pg.postgres import roles as pgroles
from velocity_pg.store import catalog, manifest

SUFFIX = ".roles.sql"
FORMAT = "velocity-pg-roles/1"
#: A roles file is a few KiB; more than this is not one.
MAX_BYTES = 16 * 1024 * 1024


def path_for(dump: Path) -> Path:
    return dump.with_name(dump.name + SUFFIX)


def is_roles_name(name: str) -> bool:
    return name.endswith(SUFFIX) and catalog.is_backup_name(name[: -len(SUFFIX)])


def render(body: str, *, passwords: bool, roles: list[str]) -> bytes:
    """The file's bytes: a header, then the filtered pg_dumpall statements."""
    kept = "kept (BACKUP_ROLE_PASSWORDS=true)" if passwords else "not kept"
    header = (
        f"-- {FORMAT}: the roles this backup's objects need (owners, grantees, and the\n"
        "-- roles they are members of), from pg_dumpall --roles-only.\n"
        f"-- Password hashes: {kept}.\n"
        f"-- Roles: {', '.join(roles) if roles else '(none)'}\n"
        "-- `velocity-pg restore NAME --create-missing-roles` creates the missing ones.\n\n"
    )
    return (header + body).encode("utf-8")


def write_temp(folder: Path, data: bytes) -> tuple[int, Path]:
    """A complete, fsynced, private (0600) temporary file holding ``data`` (fd kept open)."""
    fd, temp = catalog.temp_path_for(folder)
    try:
        manifest.write_all(fd, data)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    return fd, temp


def record_for(data: bytes, *, passwords: bool, roles: list[str]) -> manifest.RolesRecord:
    return manifest.RolesRecord(
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        passwords=passwords,
        roles=tuple(roles),
    )


@dataclass(frozen=True)
class Recorded:
    """A backup's roles file, read and checked against its manifest."""

    record: manifest.RolesRecord
    text: str

    @property
    def definitions(self) -> pgroles.Definitions:
        return pgroles.parse_dumpall(self.text)


def data_problem(data: bytes, record: manifest.RolesRecord) -> str | None:
    """Why these bytes are not the roles file the manifest describes; None if they are."""
    if len(data) != record.size_bytes:
        return f"its size is {len(data)} bytes, the manifest says {record.size_bytes}"
    if hashlib.sha256(data).hexdigest() != record.sha256:
        return "its SHA-256 does not match the manifest: the file is damaged"
    return None


def read_checked(dump: Path, record: manifest.Manifest | None) -> Recorded | None:
    """The backup's roles file, checked by the manifest's SHA-256; None when the backup
    has none (made before roles were recorded, or without a manifest). OperationFailed when
    the manifest names one that is missing, unreadable or damaged."""
    if record is None or record.roles is None:
        return None
    path = path_for(dump)
    problem = file_problem(path, record.roles)
    if problem is not None:
        raise OperationFailed(f"the roles file of {dump.name} {problem}")
    data = path.read_bytes()
    return Recorded(record.roles, data.decode("utf-8", "replace"))


def file_problem(path: Path, record: manifest.RolesRecord) -> str | None:
    """Why the roles file at ``path`` is not the one the manifest describes; None if it is."""
    try:
        fd = catalog.open_regular(path, f"roles file {path.name}")
    except FileNotFoundError:
        return f"({path.name}) is missing"
    except catalog.UnreadableFile as exc:
        return f"cannot be read: {exc.message}"
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    problem = data_problem(data, record)
    return None if problem is None else f"({path.name}) does not match the manifest: {problem}"


def passwords_problem(superuser: bool, user: str) -> str | None:
    """Why BACKUP_ROLE_PASSWORDS=true cannot be honoured by this user (None when it can)."""
    if superuser:
        return None
    return (
        f"BACKUP_ROLE_PASSWORDS=true needs a superuser to read the roles' password hashes "
        f"(pg_authid), and user {user!r} is not one; back up as a superuser "
        "(POSTGRES_USER) or set BACKUP_ROLE_PASSWORDS=false; no backup was written"
    )


def capture(
    archive: Path,
    server_num: int,
    conninfo: str,
    database: str,
    env: dict[str, str | None],
    *,
    passwords: bool,
) -> tuple[bytes, list[str]]:
    """The roles file for a new archive (its bytes) and the roles in it: the archive's
    owners and grantees (pg_restore --schema-only) and the roles they are members of,
    from pg_dumpall --roles-only. OperationFailed when either program fails, or when
    password hashes were asked for and none came (fail closed)."""
    from velocity_pg.errors import CommandFailed
    from velocity_pg.postgres import pgtools

    major = pgtools.server_major(server_num)
    restore = pgtools.find_program("pg_restore", major)
    dumpall = pgtools.find_program("pg_dumpall", major)
    try:
        needed = pgroles.run_script_roles(restore.path, archive)
    except CommandFailed as exc:
        raise OperationFailed(
            f"the new dump's roles cannot be read ({exc.message}); no backup was written"
        ) from exc
    try:
        cmd = pgroles.dumpall_cmd(dumpall.path, conninfo, database, passwords=passwords)
        script = pgtools.capture(cmd, env)
    except CommandFailed as exc:
        hint = (
            " (BACKUP_ROLE_PASSWORDS=true needs a superuser: set it to false to record the "
            "roles without their password hashes)"
            if passwords
            else ""
        )
        raise OperationFailed(
            f"the roles could not be recorded: {exc.message}{hint}; no backup was written"
        ) from exc
    body, kept = pgroles.filter_dumpall(script, needed.all)
    return render(body, passwords=passwords, roles=kept), kept
