"""Settings, built once per run: command line > environment > .env file > defaults.

The .env file is read with :func:`dotenv.dotenv_values`, which returns a dict
and never touches ``os.environ``: nothing read from it leaks into other
processes unless velocity-pg hands it to pg_dump/pg_restore on purpose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from velocity_pg.errors import ConfigError

DEFAULT_BACKUP_DIR = "/backups"
DEFAULT_MAX_AGE_DAYS = 30
DEFAULT_MAX_COUNT = 50
DEFAULT_MIN_KEEP = 1
DEFAULT_DUMP_NICE = 10
DEFAULT_SCHEDULE = "@daily"
DEFAULT_VERIFY = "checksum"

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


#: Read for boto3 from every layer (options, environment, .env).
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)
_BUCKET_RE = re.compile(r"\A[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]\Z", re.ASCII)
_RECIPIENT_RE = re.compile(r"\Aage1[0-9a-z]{20,}\Z", re.ASCII)


@dataclass(frozen=True)
class OffSite:
    """Where off-site copies go (``BACKUP_S3_URL``) and how they are encrypted and pruned.

    Credentials are not here: boto3 reads them the standard way (AWS_* variables,
    the AWS config and credentials files), so they never pass through velocity-pg.
    """

    bucket: str
    #: "" or a prefix ending in "/": every key of velocity-pg starts with it.
    prefix: str
    endpoint_url: str | None = None
    #: age public keys (``age1...``) given in BACKUP_AGE_RECIPIENTS.
    recipients: tuple[str, ...] = ()
    recipients_file: Path | None = None
    identity_file: Path | None = None
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    max_count: int = DEFAULT_MAX_COUNT
    min_keep: int = DEFAULT_MIN_KEEP
    #: The standard AWS_* variables as layered here (a .env file never reaches
    #: os.environ, so boto3 would not see them otherwise); hidden from repr.
    aws: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients) or self.recipients_file is not None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


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
    #: ``velocity-pg schedule``'s settings, as given: parsed and checked by
    #: :mod:`velocity_pg.scheduling.config` (only the verbs that use them refuse
    #: a bad value, so a typo there never stops a manual backup).
    schedule: str = DEFAULT_SCHEDULE
    timezone: str | None = None
    verify_mode: str = DEFAULT_VERIFY
    ping_url: str | None = field(default=None, repr=False)  # may hold a secret token
    metrics_file: str | None = None
    health_max_age: str | None = None
    #: Off-site copies; None when BACKUP_S3_URL is not set.
    offsite: OffSite | None = None


def parse_s3_url(text: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` as (bucket, prefix), the prefix "" or ending in "/"."""
    stripped = text.strip()
    if not stripped.startswith("s3://"):
        raise ConfigError(
            f"BACKUP_S3_URL={text!r} is not an s3:// URL; set it to s3://BUCKET or s3://BUCKET/PREFIX"
        )
    bucket, _, prefix = stripped[len("s3://") :].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise ConfigError(
            f"BACKUP_S3_URL={text!r} does not name a valid bucket "
            "(3-63 lowercase letters, digits, dots and hyphens); fix BACKUP_S3_URL"
        )
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") for part in parts) or "\x00" in prefix:
        raise ConfigError(f"BACKUP_S3_URL={text!r} has a prefix with . or ..; fix BACKUP_S3_URL")
    return bucket, "".join(f"{part}/" for part in parts)


def parse_recipients(text: str) -> tuple[str, ...]:
    """age public keys separated by commas or white space; each must look like ``age1...``."""
    keys = tuple(key for key in re.split(r"[\s,]+", text.strip()) if key)
    for key in keys:
        if not _RECIPIENT_RE.match(key):
            shown = key if len(key) <= 16 else key[:12] + "..."
            raise ConfigError(
                f"BACKUP_AGE_RECIPIENTS holds {shown!r}, which is not an age public key "
                "(age1...); give the public keys printed by `age-keygen -y`"
            )
    return keys


def offsite_from_values(
    lookup: Callable[[str], str | None], local: tuple[int, int, int]
) -> OffSite | None:
    """The off-site settings, or None when BACKUP_S3_URL is unset (pure but for file checks)."""
    url = lookup("BACKUP_S3_URL")
    if url is None:
        return None
    bucket, prefix = parse_s3_url(url)
    endpoint = lookup("BACKUP_S3_ENDPOINT_URL")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"BACKUP_S3_ENDPOINT_URL={endpoint!r} is not an http(s):// URL; "
            "set it to your provider's S3 endpoint, e.g. https://s3.example.com"
        )
    recipients = parse_recipients(lookup("BACKUP_AGE_RECIPIENTS") or "")
    recipients_file = _existing_file("BACKUP_AGE_RECIPIENTS_FILE", lookup)
    identity_text = lookup("BACKUP_AGE_IDENTITY_FILE")
    max_age, max_count, min_keep = local
    aws = {name: value for name in AWS_VARIABLES if (value := lookup(name)) is not None}
    return OffSite(
        aws=aws,
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        recipients=recipients,
        recipients_file=recipients_file,
        identity_file=None if identity_text is None else Path(identity_text).expanduser(),
        max_age_days=parse_int(
            "BACKUP_S3_MAX_AGE_DAYS", lookup("BACKUP_S3_MAX_AGE_DAYS"), max_age, minimum=1
        ),
        max_count=parse_int(
            "BACKUP_S3_MAX_COUNT", lookup("BACKUP_S3_MAX_COUNT"), max_count, minimum=1
        ),
        min_keep=parse_int("BACKUP_S3_MIN_KEEP", lookup("BACKUP_S3_MIN_KEEP"), min_keep, minimum=1),
    )


def _existing_file(name: str, lookup: Callable[[str], str | None]) -> Path | None:
    text = lookup(name)
    if text is None:
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={text!r} is not a readable file; fix {name}")
    return path


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
    max_age_days = parse_int(
        "BACKUP_MAX_AGE_DAYS", lookup("BACKUP_MAX_AGE_DAYS"), DEFAULT_MAX_AGE_DAYS, minimum=1
    )
    max_count = parse_int(
        "BACKUP_MAX_COUNT", lookup("BACKUP_MAX_COUNT"), DEFAULT_MAX_COUNT, minimum=1
    )
    min_keep = parse_int("BACKUP_MIN_KEEP", lookup("BACKUP_MIN_KEEP"), DEFAULT_MIN_KEEP, minimum=1)
    return Settings(
        backup_dir=backup_dir,
        connection=connection,
        max_age_days=max_age_days,
        max_count=max_count,
        min_keep=min_keep,
        dump_nice=parse_int(
            "BACKUP_NICE", lookup("BACKUP_NICE"), DEFAULT_DUMP_NICE, minimum=0, maximum=19
        ),
        schedule=lookup("BACKUP_SCHEDULE") or DEFAULT_SCHEDULE,
        timezone=lookup("TZ"),
        verify_mode=lookup("BACKUP_VERIFY") or DEFAULT_VERIFY,
        ping_url=lookup("BACKUP_PING_URL"),
        metrics_file=lookup("BACKUP_METRICS_FILE"),
        health_max_age=lookup("BACKUP_HEALTH_MAX_AGE"),
        offsite=offsite_from_values(lookup, (max_age_days, max_count, min_keep)),
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
