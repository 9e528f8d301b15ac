"""``velocity-pg backup``: pg_dump -Fc into a new, complete, private backup file.

Order of work, so that nothing is ever lost:
1. check the folder, reach the server, check that our pg_dump can dump it and
   write the configured compression (BACKUP_COMPRESSION; zstd and lz4 need
   pg_dump 16+: refused here, exit 2);
2. pg_dump writes into a fresh temporary file (``.velocity-tmp-*.partial``),
   which we hold locked so ``cleanup`` can tell it belongs to a live backup;
3. only after pg_dump succeeded: fsync, mode 0600, checksum, read the table of
   contents back with ``pg_restore --list``, write the manifest (with the server's
   statistics, read just before pg_dump started, and the suspect mark when they look
   wrong next to the previous good backup's, see :mod:`velocity_pg.store.anomaly`), then link the
   manifest and the dump to the first free ``<database>_YYYY-MM-DD_HHMMSS.dump``
   name (named after the database the server says it dumped; never
   overwriting; manifest first), fsync the folder;
4. on any failure or interruption the temporary file is removed;
5. a suspect backup: the good backup it was compared with is pinned automatically
   (:func:`velocity_pg.verbs.pin.pin_before_anomaly`, here and off-site), unless it is
   pinned already; when that fails the backup still stands, and its WARNING says the
   good one is NOT pinned and how to pin it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from velocity_pg import __version__
from velocity_pg.errors import (
    CommandFailed,
    ConfigError,
    Interrupted,
    OperationFailed,
    VelocityError,
)
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres import db, endpoint, migrations, pgtools
from velocity_pg.settings import Settings
from velocity_pg.store import anomaly, catalog, lock, manifest
from velocity_pg.store import roles as backup_roles
from velocity_pg.store.migrations import MigrationState, state_from
from velocity_pg.store.offsite import Context, PushResult, prepare, push_backup
from velocity_pg.verbs import Failure, Say
from velocity_pg.verbs.pin import AutoPin, pin_before_anomaly


@dataclass(frozen=True)
class BackupResult:
    name: str
    path: Path
    size: int
    started: datetime
    duration: float
    database: str
    server_version: str
    pg_dump_version: str
    sha256: str
    toc_entries: int
    compression: str = compressions.DEFAULT.spec
    #: ``backup --pin``: the pin recorded in its manifest as it was written.
    pin: manifest.Pin | None = None
    #: Set when the backup looks wrong next to the previous good one (store/anomaly.py).
    suspect: manifest.Suspect | None = None
    #: Why no statistics were recorded ("" when they were).
    statistics_problem: str = ""
    #: A suspect backup: the automatic pin of the good backup it was compared with.
    autopin: AutoPin | None = None
    #: The database's Django migrations (None: not a Django database).
    migrations: MigrationState | None = None
    #: Why the database's own properties were not recorded ("" when they were).
    properties_problem: str = ""

    def warnings(self) -> list[str]:
        """For stderr: a suspect backup's WARNING (it is a valid backup still: exit 0), or
        why it has no statistics."""
        lines = []
        if self.suspect is not None:
            lines.append(
                f"velocity-pg: WARNING: backup {self.name} looks wrong: "
                f"{anomaly.describe(self.suspect)}; it is kept like any backup: check the "
                "database"
                + ("" if self.autopin is None else f"; {self.autopin.sentence()}")
                + f" (`velocity-pg accept {self.name}` if the change was intended)"
            )
        if self.statistics_problem:
            lines.append(
                f"velocity-pg: warning: {self.statistics_problem}; this backup cannot be "
                "compared with the previous one"
            )
        if self.migrations is not None and self.migrations.unreadable:
            lines.append(
                f"velocity-pg: warning: the migration state was not recorded: "
                f"{self.migrations.unreadable}"
            )
        if self.properties_problem:
            lines.append(
                f"velocity-pg: warning: {self.properties_problem}; a restore on a fresh "
                "server will not bring back the database's own settings, comment and grants"
            )
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size,
            "started_at": self.started.isoformat(),
            "duration_seconds": round(self.duration, 3),
            "database": self.database,
            "server_version": self.server_version,
            "pg_dump_version": self.pg_dump_version,
            "sha256": self.sha256,
            "toc_entries": self.toc_entries,
            "compression": self.compression,
            "manifest": str(manifest.path_for(self.path)),
            "pin": None if self.pin is None else self.pin.to_json(),
            "suspect": anomaly.to_json(self.suspect),
            "autopin": None if self.autopin is None else self.autopin.to_json(),
            "statistics_problem": self.statistics_problem or None,
            "migrations": None if self.migrations is None else self.migrations.to_json(),
            "properties_problem": self.properties_problem or None,
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


def pin_for(reason: str | None, now: Callable[[], datetime] = utcnow) -> manifest.Pin:
    """``backup --pin [--reason]``'s pin; a reason that cannot be recorded is bad usage."""
    if reason is not None and (problem := manifest.reason_problem(reason)) is not None:
        raise ConfigError(f"the pin's reason cannot be recorded: {problem}")
    return manifest.Pin(at=manifest.now_iso(now()), reason=reason or "")


def create_backup(
    settings: Settings,
    *,
    now: Callable[[], datetime] = utcnow,
    pin: manifest.Pin | None = None,
) -> BackupResult:
    """Take one backup of the configured database (``pin``: pinned, in its manifest as it
    is written); see the module docstring."""
    folder = settings.backup_dir
    catalog.require_dir(folder, writable=True)
    # The database libpq reaches with the user's settings (service file, URI, ...).
    where = endpoint.resolve(settings.connection)
    dbname = where.dbname
    with db.connect(where) as connection:
        server_num = db.server_version_num(connection)
        server_version = str(connection.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        # Just before pg_dump starts: what the database holds by the server's statistics.
        statistics, statistics_problem = read_statistics(connection, now())
        # A Django database's applied migrations (None when it is not Django's).
        migration_state = state_from(migrations.read_applied(connection))
        # The database's own settings, comment and grants, which pg_dump leaves out.
        properties, properties_problem = read_database_properties(connection)
        role = connection.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    if settings.role_passwords and (
        problem := backup_roles.passwords_problem(bool(role and role[1]), str(role and role[0]))
    ):
        raise OperationFailed(problem)
    program = pgtools.find_program("pg_dump", pgtools.server_major(server_num))
    pgtools.check_can_dump(program, server_num)
    compression = settings.compression
    problem = compressions.dump_problem(compression, program.major, program.version)
    if problem is not None:
        raise ConfigError(problem)

    started = now()
    catalog.format_name(started, dbname)  # a database no file can be named after: refuse now
    clock = time.monotonic()
    try:
        fd, temp = catalog.temp_path_for(folder)
    except OSError as exc:
        raise OperationFailed(f"cannot create a file in {folder}: {exc.strerror}") from exc
    side_fd: int | None = None
    side_temp: Path | None = None
    roles_fd: int | None = None
    roles_temp: Path | None = None
    named: list[Path] = []  # the backup's name, once it has one
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # pg_dump gets the same parameters through PG* variables, password included.
        env = where.libpq_env()
        try:
            cmd = pgtools.pg_dump_cmd(
                program.path,
                temp,
                compression=compression,
                pg_dump_major=program.major,
                conninfo=where.conninfo(),
            )
            pgtools.run(cmd, env, nice=settings.dump_nice)
        except CommandFailed as exc:
            why = exc.message
            if pgtools.went_silent(exc.stderr):
                why = f"{why} ({pgtools.silence_note(settings.connection.tcp_timeout)})"
            raise OperationFailed(f"{why}; no backup was written") from exc
        try:
            os.fsync(fd)
            os.fchmod(fd, catalog.FILE_MODE)
            sha256, size = manifest.sha256_file(temp)
            toc_entries = read_back(temp, server_num)
            roles_data, kept = backup_roles.capture(
                temp,
                server_num,
                where.conninfo(),
                dbname,
                env,
                passwords=settings.role_passwords,
            )
            roles_fd, roles_temp = backup_roles.write_temp(folder, roles_data)
            # Locked like the manifest: cleanup never takes it for an orphan meanwhile.
            fcntl.flock(roles_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finished = now()
            suspect, unjudged = judge_new(settings, dbname, started, statistics, finished)
            statistics_problem = statistics_problem or unjudged
            record = manifest.Manifest(
                sha256=sha256,
                size_bytes=size,
                started_at=manifest.now_iso(started),
                finished_at=manifest.now_iso(finished),
                duration_seconds=round(time.monotonic() - clock, 3),
                database=dbname,
                server_version=server_version,
                pg_dump_version=program.version,
                velocity_pg_version=__version__,
                toc_entries=toc_entries,
                compression_method=compression.method,
                compression_level=compression.level,
                pin=pin,
                statistics=statistics,
                suspect=suspect,
                migrations=migration_state,
                database_properties=properties,
                roles=backup_roles.record_for(
                    roles_data,
                    passwords=settings.role_passwords,
                    roles=kept,
                ),
            )
            side_fd, side_temp = manifest.write_temp(folder, record)
            fcntl.flock(side_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            final = catalog.publish(
                temp,
                folder,
                catalog.candidate_names(started, dbname),
                side_temp,
                on_named=named.append,
                extras=((roles_temp, backup_roles.SUFFIX),),
            )
        except OSError as exc:
            if named:  # it has its name: only the folder's fsync failed
                raise OperationFailed(
                    catalog.unsynced(
                        named[0], f"the folder could not be synced ({exc.strerror or exc})"
                    )
                ) from exc
            raise OperationFailed(
                f"cannot finish the backup in {folder}: {exc.strerror}; no backup was written"
            ) from exc
    except BaseException as exc:
        # Once named, the temporary names are only other links to the backup.
        temp.unlink(missing_ok=True)
        if side_temp is not None:
            side_temp.unlink(missing_ok=True)
        if roles_temp is not None:
            roles_temp.unlink(missing_ok=True)
        if isinstance(exc, KeyboardInterrupt | pgtools.Terminated):
            word = pgtools.stop_word(exc)
            if named:
                raise Interrupted(
                    f"{word}: {catalog.unsynced(named[0], 'the stop came')}"
                ) from None
            raise Interrupted(f"{word}; no backup was written") from None
        raise
    finally:
        os.close(fd)
        if side_fd is not None:
            os.close(side_fd)
        if roles_fd is not None:
            os.close(roles_fd)
    autopin = None if record.suspect is None else pin_before_anomaly(settings, record.suspect)
    return BackupResult(
        name=final.name,
        path=final,
        size=size,
        started=started,
        duration=time.monotonic() - clock,
        database=dbname,
        server_version=server_version,
        pg_dump_version=program.version,
        sha256=sha256,
        toc_entries=toc_entries,
        pin=pin,
        compression=compression.spec,
        suspect=record.suspect,
        statistics_problem=statistics_problem,
        autopin=autopin,
        migrations=migration_state,
        properties_problem=properties_problem,
    )


#: The most a manifest records of a database's own properties (JSON characters): a
#: database with more (a huge comment, thousands of settings) gets none recorded.
MAX_PROPERTIES_CHARS = 256 * 1024


def read_database_properties(
    connection: db.Conn,
) -> tuple[manifest.DatabaseProperties | None, str]:
    """The connected database's settings (also per role), comment, grants and connection
    limit, or None and why not: a backup never fails for want of them."""
    import json

    import psycopg

    from velocity_pg.restore import swap

    try:
        name = str(connection.info.dbname)
        live = swap.read_props(connection, name)
    except psycopg.Error as exc:
        return None, f"the database's own properties could not be read ({db.one_line(exc)})"
    if live is None:
        return None, "the database's own properties could not be read (no catalog row)"
    props = manifest.DatabaseProperties(
        settings=tuple(
            manifest.DatabaseSetting(role=s.role, setting=entry)
            for s in live.settings
            for entry in s.config
        ),
        comment=live.comment,
        grants=None
        if live.acl is None
        else tuple(
            manifest.DatabaseGrant(
                grantor=g.grantor, grantee=g.grantee, privilege=g.privilege, grantable=g.grantable
            )
            for g in live.acl
        ),
        connection_limit=live.conn_limit,
    )
    written = json.dumps(asdict(props))
    if len(written) > MAX_PROPERTIES_CHARS:
        return None, (
            "the database's own properties are larger than the "
            f"{MAX_PROPERTIES_CHARS // 1024} KiB a manifest holds of them; none were recorded"
        )
    try:  # what the manifest would refuse to load is not written
        manifest.database_properties_from({"database_properties": json.loads(written)})
    except ValueError as exc:
        return None, f"the database's own properties were not recorded ({exc})"
    return props, ""


def read_statistics(connection: db.Conn, at: datetime) -> tuple[manifest.Statistics | None, str]:
    """The server's statistics (no scan), or None and why not: a backup never fails
    for want of them."""
    import psycopg

    try:
        database_bytes, tables = db.table_statistics(connection)
    except psycopg.Error as exc:
        return None, f"the server's statistics could not be read ({db.one_line(exc)})"
    if len(tables) > manifest.MAX_TABLES:
        return None, (
            f"the database has {len(tables)} tables, more than the {manifest.MAX_TABLES} "
            "whose statistics a manifest holds; none were recorded"
        )
    return manifest.Statistics(
        at=manifest.now_iso(at),
        database_bytes=database_bytes,
        tables=tuple(manifest.TableStatistics(*row) for row in tables),
    ), ""


def rule_of(settings: Settings) -> anomaly.Rule:
    return anomaly.Rule(min_rows=settings.anomaly_min_rows, drop=settings.anomaly_drop)


def judge_new(
    settings: Settings,
    database: str,
    started: datetime,
    statistics: manifest.Statistics | None,
    at: datetime,
) -> tuple[manifest.Suspect | None, str]:
    """The new backup's suspect mark, next to the previous good backup in the folder
    (written into its manifest before it gets its name: no backup looks good first), and
    why it could not be judged ("" when it could). The judgement never costs the backup:
    a folder that cannot be listed (or a manifest that cannot be read) leaves it unjudged."""
    if statistics is None:
        return None, ""
    try:
        backups = catalog.list_backups(settings.backup_dir)
        previous = anomaly.previous_good(backups, database, started)
    except (OSError, VelocityError, ValueError) as exc:
        reason = exc.message if isinstance(exc, VelocityError) else str(exc)
        return None, f"the earlier backups could not be read ({reason})"
    return anomaly.judge(statistics, previous, manifest.now_iso(at), rule_of(settings)), ""


def read_back(dump: Path, server_num: int) -> int:
    """Read the new archive's table of contents back before it gets a name."""
    program = pgtools.find_program("pg_restore", pgtools.server_major(server_num))
    try:
        listing = pgtools.capture(pgtools.pg_restore_list_cmd(program.path, dump))
    except CommandFailed as exc:
        raise OperationFailed(
            f"the new dump does not read back ({exc.message}); no backup was written"
        ) from exc
    return pgtools.count_toc_entries(listing)


# -- the verb: the backup, then its off-site copy when configured ----------------------------


def push_new(settings: Settings, ctx: Context, backup: BackupResult) -> PushResult:
    """Copy a backup just made off-site, holding the folder lock shared like ``push``: an
    off-site cleanup never cuts this upload."""
    with lock.shared(settings.backup_dir, f"push {backup.name}"):
        return push_backup(ctx, backup.path)


@dataclass(frozen=True)
class BackedUp:
    """``velocity-pg backup``: the new backup, and its off-site copy when configured."""

    backup: BackupResult
    backup_dir: Path
    pushed: PushResult | None = None
    where: str = ""
    #: Why the off-site copy failed ("" when it did not).
    offsite_problem: str = ""
    #: The first line was said as soon as the backup was made.
    said: bool = False

    def lines(self) -> list[str]:
        lines = [] if self.said else [created_line(self.backup)]
        pushed = self.pushed
        if pushed is not None:
            how = "encrypted" if pushed.encrypted else "not encrypted"
            lines.append(
                f"Off-site copy checked: {pushed.object_key} ({catalog.human_size(pushed.size)}, "
                f"{how}) in {self.where}"
                + (f"; it replaced {pushed.replaced}" if pushed.replaced else "")
            )
        return lines

    def to_json(self) -> dict[str, object]:
        payload = self.backup.to_json()
        if self.offsite_problem:
            payload["offsite"] = {"status": "failed", "problem": self.offsite_problem}
        elif self.pushed is not None:
            payload["offsite"] = self.pushed.to_json() | {"where": self.where}
        return payload

    def failure(self) -> Failure | None:
        if not self.offsite_problem:
            return None
        name = self.backup.name
        return Failure.error(
            f"{name} was created locally in {self.backup_dir} but NOT copied off-site: "
            f"{self.offsite_problem}; retry with `velocity-pg push {name}`",
            offsite=True,
        )


def created_line(result: BackupResult) -> str:
    return (
        f"Backup created: {result.name} ({catalog.human_size(result.size)}, "
        f"{result.compression}) of database {result.database!r} in {result.duration:.1f} s"
        + ("" if result.pin is None else f"; {result.pin.describe()}")
    )


def run(settings: Settings, say: Say | None = None, pin: manifest.Pin | None = None) -> BackedUp:
    """Back up, then copy the backup off-site when BACKUP_S3_URL is set (everything that
    needs is checked before the dump starts). The first line goes to ``say`` as soon as
    the backup is made."""
    ctx = prepare(settings) if settings.offsite is not None else None
    result = create_backup(settings, pin=pin)
    if say is not None:
        say(created_line(result))
    done = BackedUp(result, settings.backup_dir, said=say is not None)
    if ctx is None:
        return done
    try:
        pushed = push_new(settings, ctx, result)
    except OperationFailed as exc:
        return replace(done, offsite_problem=exc.message)
    return replace(done, pushed=pushed, where=ctx.store.describe())
