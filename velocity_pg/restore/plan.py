"""What a restore checks before it touches anything, and the plan those checks make.

Step 1 of a restore (see :mod:`velocity_pg.verbs.restore`): refuse a name that is
not a backup, a dump that does not match its manifest or that pg_restore cannot
read, a server or user that cannot do the swap, a restore already running, a copy
that would not fit; take the per-database restore lock; and return the
:class:`Plan` every later step (and ``--check``) works from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocity_pg.errors import (
    CommandFailed,
    ConfigError,
    LockBusy,
    ManifestUnreadable,
    OperationFailed,
    describe_failure,
)
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres import db, endpoint, pgtools
from velocity_pg.restore import archive, copies, space, staging, swap
from velocity_pg.restore.copies import Copy
from velocity_pg.restore.drift import MigrationDrift
from velocity_pg.restore.progress import Toc, parse_toc
from velocity_pg.restore.properties import DatabaseProps, Merged
from velocity_pg.restore.roles import RolesPlan
from velocity_pg.store import catalog, manifest

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

SYSTEM_DATABASES = ("template0", "template1")


@dataclass(frozen=True)
class Plan:
    """Everything checked before anything is touched."""

    backup: Path
    size: int
    toc: Toc
    #: The database the backup was made of (manifest, else archive), when known.
    source: str | None
    #: The server and database (``endpoint.dbname`` is ``target``).
    where: endpoint.Endpoint
    target: str
    live: DatabaseProps | None
    role: swap.Role
    program: pgtools.Program
    server_version: str
    jobs: int
    staging: str
    aside: str
    lock_key: int
    leftovers: tuple[str, ...]
    #: The rollback point's name, and the one there is (kept by an earlier restore).
    previous: str = ""
    rollback: Copy | None = None
    #: A complete staged copy (``restore --stage``) found in the staging name.
    staged: Copy | None = None
    #: Swap that staged copy in (it is of this very file) instead of restoring.
    reuse: bool = False
    #: Why the staged copy is dropped first (another backup, a changed file).
    stale_reason: str | None = None
    keep_previous: bool = True
    #: SHA-256 of the backup file, when it was needed (staging, judging a staged copy).
    sha256: str | None = None
    server_num: int = 0
    entries: tuple[archive.Entry, ...] = ()
    slots: tuple[str, ...] = ()  # logical replication slots of the live database
    subscriptions: tuple[str, ...] = ()  # logical replication subscriptions in it
    leftover_stories: tuple[str, ...] = ()  # per leftover: who left it (staging.leftover_story)
    room: space.Space | None = None  # the free-space check, where the disk is visible
    #: The Django migration drift of the backup (or staged copy) from the live database.
    migrations: MigrationDrift | None = None
    #: The backup's roles next to the target's (restore/roles.py); None until assessed.
    roles: RolesPlan | None = None
    #: The backup's own database properties (its manifest; None in older ones), and the
    #: live database's with the gaps filled from them (what the restored copy gets).
    recorded: manifest.DatabaseProperties | None = None
    from_backup: Merged | None = None

    @property
    def other_source(self) -> bool:
        """The backup was made of another database than the one it would replace."""
        return self.source is not None and self.source != self.target

    def source_warning(self) -> str | None:
        """The loud line for a backup of database A restored into database B."""
        if not self.other_source:
            return None
        return (
            f"WARNING: {self.backup.name} is a backup of database {self.source!r}, "
            f"not of {self.target!r}: the restore replaces {self.target!r} with "
            f"the contents of {self.source!r}"
        )


def refuse_target(target: str) -> None:
    if target in SYSTEM_DATABASES:
        raise ConfigError(f"refusing to restore into {target}, a system database; set PGDATABASE")
    if staging.is_internal_name(target):
        raise ConfigError(
            f"refusing to restore into {target}, a name velocity-pg uses for its own "
            "temporary databases; set PGDATABASE"
        )


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_against_manifest(path: Path) -> manifest.Manifest | None:
    """Refuse a dump that does not match its manifest (a dump without one is not checked)."""
    try:
        record = manifest.read(path)
    except ManifestUnreadable as exc:
        raise OperationFailed(f"{exc.message}; nothing was changed") from exc
    if record is None:
        return None
    problem = manifest.checksum_problem(path, record)
    if problem is not None:
        raise OperationFailed(
            f"{path.name} does not match its manifest ({problem}); "
            "restore another backup (`velocity-pg list`); nothing was changed"
        )
    return record


def check_compression(program: pgtools.Program, path: Path) -> None:
    """Refuse, with the reason, a zstd/lz4 dump (per its manifest) this pg_restore cannot read."""
    record = manifest.read(path)  # already read and checked by check_against_manifest
    method = record.compression_method if record is not None else None
    problem = compressions.restore_problem(method, program.major, program.version)
    if problem is not None:
        raise OperationFailed(
            f"{path.name} cannot be restored here: {problem}; nothing was changed"
        )


def read_listing(program: pgtools.Program, path: Path, *, verbose: bool = False) -> str:
    """The archive's ``pg_restore --list`` (``verbose``: with each entry's dependencies,
    see :mod:`velocity_pg.restore.tables`); refuses what pg_restore cannot read."""
    cmd = pgtools.pg_restore_list_cmd(program.path, path)
    try:
        return pgtools.capture([cmd[0], "--verbose", *cmd[1:]] if verbose else cmd, {})
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is not a backup pg_restore {program.version} can read: "
            f"{describe_failure(exc.returncode, exc.stderr)}; nothing was changed"
        ) from exc


def read_every_block(program: pgtools.Program, path: Path) -> None:
    """Refuse a truncated or damaged dump that has no manifest to compare with.

    ``pg_restore --list`` reads only the table of contents, which sits at the
    start: the first 3,000 bytes of a dump list as well as the whole. So every
    data block is read and decompressed too (``pg_restore --data-only`` into
    nothing, streamed), as a restore would, before anything is staged or stopped.
    A dump with a manifest is checked by its size and SHA-256 instead.
    """
    try:
        pgtools.count_output(pgtools.pg_restore_data_cmd(program.path, path), {})
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is truncated or damaged: pg_restore cannot read its data "
            f"({describe_failure(exc.returncode, exc.stderr)}); it has no manifest to "
            "compare with; restore another backup (`velocity-pg list`); nothing was changed"
        ) from exc


def prepare(
    where: endpoint.Endpoint, admin: Conn, path: Path, target: str, jobs: int | None
) -> Plan:
    """Every check that can refuse, in order; takes the per-database restore lock."""
    server_num = db.server_version_num(admin)
    row = admin.execute("SHOW server_version").fetchone()
    server_version = str(row[0]) if row else str(server_num)
    program = pgtools.find_program("pg_restore", pgtools.server_major(server_num))
    record = check_against_manifest(path)
    check_compression(program, path)
    listing = read_listing(program, path)
    if record is None:
        read_every_block(program, path)
    toc = parse_toc(listing)
    # The database the backup was made of: as recorded by `backup`, else the archive's.
    source = record.database if record is not None and record.database else toc.dbname
    size = path.stat().st_size

    role = swap.current_role(admin)
    live = swap.read_props(admin, target)
    if not role.superuser:
        if not role.createdb:
            raise OperationFailed(
                f"user {role.name!r} may not create databases, which a restore needs; "
                "restore as a superuser (POSTGRES_USER) or grant it CREATEDB; nothing was changed"
            )
        if live is not None and not swap.is_member_of(admin, live.owner):
            raise OperationFailed(
                f"user {role.name!r} does not own database {target!r} (owner: {live.owner!r}); "
                "restore as a superuser or as the owner; nothing was changed"
            )
    # The backup's own settings, comment and grants fill what the live database (or, on a
    # fresh server, the database about to be created) does not set.
    recorded = record.database_properties if record is not None else None
    base = live or DatabaseProps(
        oid=0, name=target, owner=role.name, encoding="", collate="", ctype="", tablespace=""
    )
    from_backup = swap.merged_props(admin, base, recorded)
    if live is not None:
        rehearse_on_live(admin, role, from_backup.props)
    subs = swap.subscriptions(admin, target) if live is not None else []
    if not role.superuser:
        foreign = sorted({owner for _, owner, _ in subs if not swap.is_member_of(admin, owner)})
        if foreign:
            raise OperationFailed(
                f"database {target!r} has subscriptions owned by {', '.join(foreign)}, which "
                "a restore must detach before it drops the current contents; restore as a "
                "superuser; nothing was changed"
            )
    slots = swap.logical_slots(admin, target) if live is not None else []
    if live is not None and swap.prepared_transactions(admin, target):
        raise OperationFailed(
            f"database {target!r} has prepared transactions, which would block the swap; "
            "COMMIT PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts); "
            "nothing was changed"
        )

    key = staging.lock_key(target)
    if not swap.try_lock(admin, key):
        raise LockBusy(
            f"a restore of database {target!r} is already running on this server; "
            "wait for it to finish; nothing was changed"
        )
    swap.keep_session_alive(admin)
    others = swap.velocity_admin_sessions(admin, target)
    if others:  # a restore of postgres, where other runs keep their admin sessions
        raise LockBusy(
            f"another velocity-pg restore or verify is running on this server, connected to "
            f"database {target!r} for its own work (session {', '.join(map(str, others))}), "
            f"which a restore of {target!r} would end; wait for it to finish; "
            "nothing was changed"
        )
    staging_db, aside_db = staging.staging_name(target), staging.aside_name(target)
    leftovers = tuple(swap.existing(admin, [staging_db, aside_db]))
    stories = tuple(
        staging.leftover_story(name, swap.database_comment(admin, name)) for name in leftovers
    )
    if aside_db in leftovers and live is None:
        raise OperationFailed(
            f"database {aside_db!r} holds what {target!r} contained before an earlier "
            f"restore, and {target!r} does not exist; rename it back (ALTER DATABASE "
            f"{aside_db} RENAME TO ...) or drop it, then restore again; nothing was changed"
        )
    # What a killed or failed run left is dropped first: its space counts as free. So
    # does a staged copy's: either it is swapped in (no new copy is built) or, when it
    # is not a copy of this very file, it is dropped before the new one is built.
    reclaimed = leftovers
    # A staged copy (complete, marked) is judged by stage.judge, not dropped as a leftover.
    staged = copies.staged_copy(admin, target) if staging_db in leftovers else None
    if staged is not None and staged.staged is not None:
        kept = [(n, st) for n, st in zip(leftovers, stories, strict=True) if n != staging_db]
        leftovers = tuple(n for n, _ in kept)
        stories = tuple(st for _, st in kept)
    else:
        staged = None
    room = check_space(admin, program, path, target, live, reclaimed=reclaimed)
    return Plan(
        backup=path,
        size=size,
        toc=toc,
        source=source,
        where=where,
        target=target,
        live=live,
        recorded=recorded,
        from_backup=from_backup,
        role=role,
        program=program,
        server_version=server_version,
        jobs=jobs or default_jobs(),
        staging=staging_db,
        aside=aside_db,
        lock_key=key,
        leftovers=leftovers,
        previous=staging.previous_name(target),
        rollback=copies.rollback_point(admin, target),
        staged=staged,
        server_num=server_num,
        entries=tuple(archive.parse_entries(listing)),
        slots=tuple(slots),
        subscriptions=tuple(name for name, _, _ in subs),
        leftover_stories=stories,
        room=room,
    )


def check_space(
    admin: Conn,
    program: pgtools.Program,
    path: Path,
    target: str,
    live: DatabaseProps | None,
    *,
    reclaimed: tuple[str, ...] = (),
) -> space.Space | None:
    """Refuse a restore whose copy would not fit on the server's disk (where visible);
    the ``reclaimed`` databases (leftovers, dropped first) count as free space."""
    tablespace = live.tablespace if live is not None else "pg_default"
    try:
        room = space.measure(
            admin,
            program.path,
            path,
            live=None if live is None else live.name,
            tablespace=tablespace,
            reclaimed=reclaimed,
        )
    except CommandFailed as exc:
        raise OperationFailed(
            f"{path.name} is not a backup pg_restore {program.version} can read: "
            f"{describe_failure(exc.returncode, exc.stderr)}; nothing was changed"
        ) from exc
    if room is not None and not room.enough:
        raise OperationFailed(
            f"not enough free space for the restored copy: {catalog.human_size(room.free)} "
            f"free in {room.location} (tablespace {room.tablespace}), and the restore needs "
            f"about {catalog.human_size(room.needed)} while the current database still "
            "exists; free space there (or restore on a server with more room); "
            "nothing was changed"
        )
    return room


def rehearse_on_live(admin: Conn, role: swap.Role, live: DatabaseProps) -> None:
    """Apply the live database's own settings and grants to itself and roll back: what
    the restored copy cannot be given (a per-role setting a non-superuser may not make)
    is refused now, by ``--check`` too, not after the whole pg_restore."""
    try:
        swap.rehearse_properties(admin, live.name, live, as_grantors=role.superuser)
    except swap.PropertyRefused as exc:
        raise OperationFailed(
            f"user {role.name!r} cannot give the restored copy database {live.name!r}'s "
            f"settings and grants: `{exc.statement}` fails ({exc.reason}); restore as a "
            "superuser (POSTGRES_USER), or remove that setting; nothing was changed"
        ) from exc
