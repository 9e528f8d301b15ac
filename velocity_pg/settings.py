"""Settings, built once per run: command line > environment > .env file > defaults.

The .env file is read with :func:`dotenv.dotenv_values`, which returns a dict
and never touches ``os.environ``: nothing read from it leaks into other
processes unless velocity-pg hands it to pg_dump/pg_restore on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from velocity_pg.errors import ConfigError
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres.compression import Compression

DEFAULT_BACKUP_DIR = "/backups"
DEFAULT_MAX_AGE_DAYS = 30
DEFAULT_MAX_COUNT = 50
DEFAULT_MIN_KEEP = 1
DEFAULT_DUMP_NICE = 10

#: The connection variables, each with its libpq name first and the official
#: postgres image's name as a fallback.
_CONNECTION_KEYS: dict[str, tuple[str, ...]] = {
    "host": ("PGHOST",),
    "port": ("PGPORT",),
    "user": ("PGUSER", "POSTGRES_USER"),
    "password": ("PGPASSWORD", "POSTGRES_PASSWORD"),
    "dbname": ("PGDATABASE", "POSTGRES_DB", "POSTGRES_USER"),
}


@dataclass(frozen=True)
class Connection:
    """Where the database is. Unset fields fall back to libpq's own defaults."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    password: str | None = field(default=None, repr=False)

    def libpq_env(self) -> dict[str, str]:
        """The PG* variables for a client program; the password travels here, never in argv."""
        env: dict[str, str] = {"PGAPPNAME": "velocity-pg"}
        for key, value in (
            ("PGHOST", self.host),
            ("PGPORT", None if self.port is None else str(self.port)),
            ("PGUSER", self.user),
            ("PGDATABASE", self.dbname),
            ("PGPASSWORD", self.password),
        ):
            if value is not None:
                env[key] = value
        return env

    def connect_kwargs(self, dbname: str | None = None) -> dict[str, str | int]:
        """Keyword arguments for ``psycopg.connect`` (unset ones left to libpq)."""
        kwargs: dict[str, str | int] = {"application_name": "velocity-pg"}
        for key, value in (
            ("host", self.host),
            ("port", self.port),
            ("user", self.user),
            ("password", self.password),
            ("dbname", dbname if dbname is not None else self.dbname),
        ):
            if value is not None:
                kwargs[key] = value
        return kwargs

    def describe(self) -> str:
        """Human description without the password, for messages."""
        where = self.host or "the local socket"
        if self.port is not None:
            where += f":{self.port}"
        who = f" as {self.user}" if self.user else ""
        return f"database {self.dbname or '(libpq default)'!r} on {where}{who}"


@dataclass(frozen=True)
class Settings:
    """Everything a verb needs to know, validated."""

    backup_dir: Path
    connection: Connection
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    max_count: int = DEFAULT_MAX_COUNT
    min_keep: int = DEFAULT_MIN_KEEP
    #: Added to pg_dump's niceness: its gzip work yields the CPU to the application.
    dump_nice: int = DEFAULT_DUMP_NICE
    #: pg_dump's --compress method and level (BACKUP_COMPRESSION).
    compression: Compression = compressions.DEFAULT


def read_env_file(path: Path | None, *, required: bool) -> dict[str, str]:
    """Read a .env file into a dict without changing ``os.environ``."""
    if path is None:
        return {}
    if not path.exists():
        if required:
            raise ConfigError(f"env file {path} does not exist; fix --env-file or create the file")
        return {}
    if not path.is_file():
        raise ConfigError(f"env file {path} is not a regular file; fix --env-file")
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read env file {path}: {exc}") from exc
    return {key: value for key, value in values.items() if value is not None}


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    env_file_required: bool = False,
    overrides: Mapping[str, str | int | None] | None = None,
) -> Settings:
    """Build the settings from the layers, highest first: overrides, environ, env file.

    ``overrides`` uses the variable names (``BACKUP_DIR``, ``PGHOST``, ...);
    ``None`` values are ignored so unset CLI options fall through.
    """
    environ = os.environ if environ is None else environ
    layered: dict[str, str] = dict(read_env_file(env_file, required=env_file_required))
    layered.update({key: value for key, value in environ.items() if value != ""})
    for key, value in (overrides or {}).items():
        if value is not None:
            layered[key] = str(value)
    return settings_from_values(layered)


def settings_from_values(values: Mapping[str, str]) -> Settings:
    """Validate already layered values into :class:`Settings` (pure)."""

    def lookup(*names: str) -> str | None:
        for name in names:
            value = values.get(name)
            if value is not None and value != "":
                return value
        return None

    port_text = lookup(*_CONNECTION_KEYS["port"])
    connection = Connection(
        host=lookup(*_CONNECTION_KEYS["host"]),
        port=None
        if port_text is None
        else parse_int("PGPORT", port_text, minimum=1, maximum=65535),
        user=lookup(*_CONNECTION_KEYS["user"]),
        dbname=lookup(*_CONNECTION_KEYS["dbname"]),
        password=lookup(*_CONNECTION_KEYS["password"]),
    )
    backup_dir_text = lookup("BACKUP_DIR") or DEFAULT_BACKUP_DIR
    backup_dir = Path(backup_dir_text).expanduser()
    if backup_dir.exists() and not backup_dir.is_dir():
        raise ConfigError(
            f"BACKUP_DIR {backup_dir} is not a directory; point BACKUP_DIR at a folder"
        )
    return Settings(
        backup_dir=backup_dir,
        connection=connection,
        max_age_days=parse_int(
            "BACKUP_MAX_AGE_DAYS", lookup("BACKUP_MAX_AGE_DAYS"), DEFAULT_MAX_AGE_DAYS, minimum=1
        ),
        max_count=parse_int(
            "BACKUP_MAX_COUNT", lookup("BACKUP_MAX_COUNT"), DEFAULT_MAX_COUNT, minimum=1
        ),
        min_keep=parse_int(
            "BACKUP_MIN_KEEP", lookup("BACKUP_MIN_KEEP"), DEFAULT_MIN_KEEP, minimum=1
        ),
        dump_nice=parse_int(
            "BACKUP_NICE", lookup("BACKUP_NICE"), DEFAULT_DUMP_NICE, minimum=0, maximum=19
        ),
        compression=compressions.parse(compression_text)
        if (compression_text := lookup("BACKUP_COMPRESSION")) is not None
        else compressions.DEFAULT,
    )


def parse_int(
    name: str,
    text: str | None,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """Parse a whole-number setting, refusing anything ambiguous with a clear message."""
    if text is None:
        if default is None:
            raise ConfigError(f"{name} is not set")
        return default
    stripped = text.strip()
    try:
        value = int(stripped, 10)
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a whole number; set it to e.g. {default or 1}"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"{name}={text!r} is out of range; it must be {bound}")
    return value
