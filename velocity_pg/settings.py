"""Settings, built once per run: command line > environment > .env file > defaults.

The .env file is read with :func:`dotenv.dotenv_values`, which returns a dict
and never touches ``os.environ``: nothing read from it leaks into other
processes unless velocity-pg hands it to pg_dump/pg_restore on purpose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from velocity_pg.errors import ConfigError
from velocity_pg.postgres import compression as compressions
from velocity_pg.postgres import database_url
from velocity_pg.postgres.compression import Compression

# Defined below the settings (postgres/ takes them and never imports the settings);
# also known by the settings' name: ``from velocity_pg.settings import Connection``.
from velocity_pg.postgres.connection import DEFAULT_TCP_TIMEOUT as DEFAULT_TCP_TIMEOUT
from velocity_pg.postgres.connection import Connection as Connection
from velocity_pg.store.retention import TIERS, Tiers

DEFAULT_BACKUP_DIR = "/backups"
DEFAULT_MAX_AGE_DAYS = 30
DEFAULT_MAX_COUNT = 50
DEFAULT_MIN_KEEP = 1
#: Every tier (BACKUP_KEEP_DAILY ... _YEARLY) is off by default: 0 = that tier keeps
#: nothing of its own, so the age, count and floor alone decide, as before tiers.
DEFAULT_TIERS = Tiers()
DEFAULT_DUMP_NICE = 10
#: A backup is suspect when a table of at least this many rows lost more than
#: BACKUP_ANOMALY_DROP percent of them (store/anomaly.py).
DEFAULT_ANOMALY_MIN_ROWS = 1000
DEFAULT_ANOMALY_DROP = 50
#: BACKUP_TCP_TIMEOUT's range, in seconds (its default: DEFAULT_TCP_TIMEOUT, above).
MIN_TCP_TIMEOUT = 4
MAX_TCP_TIMEOUT = 86400
DEFAULT_SCHEDULE = "@daily"
DEFAULT_VERIFY = "checksum"
#: The largest whole number any setting takes unless it says less (C's INT_MAX, which
#: pg_restore's --jobs also stops at): "no limit" is written as a big number, never as
#: one that overflows.
MAX_WHOLE = 2**31 - 1
#: The longest age any setting takes (about 273 years): day counts and durations alike,
#: so every date computed from one stays within the calendar.
MAX_DAYS = 100_000

#: Each setting and its names, the preferred name first (the official postgres
#: image's names are the fallbacks). A higher layer wins over every name of a
#: setting in a lower layer: POSTGRES_DB in the environment beats PGDATABASE in .env.
SETTING_NAMES: dict[str, tuple[str, ...]] = {
    "BACKUP_DIR": ("BACKUP_DIR",),
    "BACKUP_MAX_AGE_DAYS": ("BACKUP_MAX_AGE_DAYS",),
    "BACKUP_MAX_COUNT": ("BACKUP_MAX_COUNT",),
    "BACKUP_MIN_KEEP": ("BACKUP_MIN_KEEP",),
    "BACKUP_NICE": ("BACKUP_NICE",),
    "PGHOST": ("PGHOST",),
    "PGPORT": ("PGPORT",),
    "PGUSER": ("PGUSER", "POSTGRES_USER"),
    "PGPASSWORD": ("PGPASSWORD", "POSTGRES_PASSWORD"),
    "PGDATABASE": ("PGDATABASE", "POSTGRES_DB"),
    "PGSERVICE": ("PGSERVICE",),
}

#: The command-line option that sets a setting: messages name what the user typed.
OPTION_NAMES: dict[str, str] = {
    "BACKUP_DIR": "--backup-dir",
    "BACKUP_MAX_AGE_DAYS": "--max-age-days",
    "BACKUP_MAX_COUNT": "--max-count",
    "BACKUP_MIN_KEEP": "--min-keep",
    "PGHOST": "--host",
    "PGPORT": "--port",
    "PGUSER": "--user",
    "PGDATABASE": "--dbname",
}


ENVIRONMENT = "the environment"


@dataclass(frozen=True)
class Layer:
    """One source of settings: the command line, the environment, a .env file."""

    values: Mapping[str, str]
    #: ``None`` for the command line (values are named by their option), else where
    #: the variables come from: :data:`ENVIRONMENT` or the .env file's path.
    origin: str | None


@dataclass(frozen=True)
class Value:
    """A setting's value and where it came from, so messages name what the user wrote."""

    text: str
    #: The option (``--max-count``) or the variable (``POSTGRES_DB``) that gave it.
    source: str
    origin: str | None

    @property
    def command_line(self) -> bool:
        return self.origin is None

    def named(self) -> str:
        """``--max-count '0'``, ``BACKUP_MAX_COUNT='0'`` or ``PGPORT='x' (in ./.env)``."""
        if self.origin is None:
            return f"{self.source} {self.text!r}"
        where = "" if self.origin == ENVIRONMENT else f" (in {self.origin})"
        return f"{self.source}={self.text!r}{where}"


def pick(layers: Sequence[Layer], setting: str, names: Sequence[str] | None = None) -> Value | None:
    """The setting from the highest layer that has any of its names (empty values skipped)."""
    for layer in layers:
        for name in names or SETTING_NAMES.get(setting, (setting,)):
            text = layer.values.get(name)
            if text is not None and text != "":
                source = name if layer.origin is not None else OPTION_NAMES.get(setting, name)
                return Value(text, source, layer.origin)
    return None


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
    #: BACKUP_S3_KEEP_DAILY ... _YEARLY, each defaulting to the local value.
    tiers: Tiers = DEFAULT_TIERS
    #: The standard AWS_* variables as layered here (a .env file never reaches
    #: os.environ, so boto3 would not see them otherwise); hidden from repr.
    aws: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients) or self.recipients_file is not None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


#: The Django Velocity template's migrate, run in its ``web`` service.
DEFAULT_MIGRATE_COMMAND = "uv run python manage.py migrate --noinput"
DEFAULT_MIGRATE_SERVICE = "web"


@dataclass(frozen=True)
class Settings:
    """Everything a verb needs to know, validated."""

    backup_dir: Path
    connection: Connection
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    max_count: int = DEFAULT_MAX_COUNT
    min_keep: int = DEFAULT_MIN_KEEP
    #: BACKUP_KEEP_DAILY, _WEEKLY, _MONTHLY, _YEARLY (store/retention.py, rule 5).
    tiers: Tiers = DEFAULT_TIERS
    #: Added to pg_dump's niceness: its gzip work yields the CPU to the application.
    dump_nice: int = DEFAULT_DUMP_NICE
    #: A restore keeps the database's previous contents as a rollback point.
    keep_previous: bool = True
    #: BACKUP_ROLE_PASSWORDS: the roles file keeps the roles' password hashes (superuser).
    role_passwords: bool = False
    #: pg_dump's --compress method and level (BACKUP_COMPRESSION).
    compression: Compression = compressions.DEFAULT
    #: BACKUP_ANOMALY_MIN_ROWS and BACKUP_ANOMALY_DROP (percent): when a backup is suspect.
    anomaly_min_rows: int = DEFAULT_ANOMALY_MIN_ROWS
    anomaly_drop: int = DEFAULT_ANOMALY_DROP
    #: ``velocity-pg schedule``'s settings, as given: parsed and checked by
    #: :mod:`velocity_pg.scheduling.config` (only the verbs that use them refuse
    #: a bad value, so a typo there never stops a manual backup).
    schedule: str = DEFAULT_SCHEDULE
    timezone: str | None = None
    verify_mode: str = DEFAULT_VERIFY
    #: BACKUP_MIGRATE_COMMAND and BACKUP_MIGRATE_SERVICE: what migrates a restored Django
    #: database (`just db-restore` runs it on the staged copy; a plain restore names it).
    migrate_command: str = DEFAULT_MIGRATE_COMMAND
    migrate_service: str = DEFAULT_MIGRATE_SERVICE
    ping_url: str | None = field(default=None, repr=False)  # may hold a secret token
    metrics_file: str | None = None
    health_max_age: str | None = None
    #: The status page's address (``serve``, and ``schedule`` when set): host:port as given,
    #: checked by :func:`velocity_pg.scheduling.http.parse_addr`.
    http_addr: str | None = None
    #: Messages through Apprise (BACKUP_NOTIFY_*), as given: checked by
    #: :func:`velocity_pg.scheduling.notify.load` in the verbs that send them
    #: (``schedule``, ``notify``, a manual verb given ``--notify``). The URLs hold
    #: secrets (tokens, SMTP passwords): hidden from repr.
    notify_urls: str | None = field(default=None, repr=False)
    notify_on: str | None = None
    notify_repeat: str | None = None
    notify_digest: str | None = None
    notify_name: str | None = None
    #: Off-site copies; None when BACKUP_S3_URL is not set.
    offsite: OffSite | None = None

    @cached_property
    def database(self) -> str | None:
        """The database these settings name, as libpq resolves it (service file, conninfo
        string or URI), found without reaching the server; None when nothing names one.

        What ``status`` and ``verify`` judge "the newest backup" of; ``backup`` and
        ``restore`` work on the same database (through a connection, see
        :mod:`velocity_pg.postgres.endpoint`).
        """
        from velocity_pg.postgres import endpoint

        return endpoint.database_name(self.connection)


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
    """age public keys separated by commas or white space; each must look like ``age1...``.

    A value that holds no key at all (blanks, commas) is refused: taken as "no
    recipients", it would switch encryption off and upload plaintext (an empty
    value never gets here: it means unset, see :func:`pick`).
    """
    keys = tuple(key for key in re.split(r"[\s,]+", text.strip()) if key)
    if not keys:
        raise ConfigError(
            f"BACKUP_AGE_RECIPIENTS={text!r} holds no age public key; set it to the keys "
            "printed by `age-keygen -y` (or leave it empty to unset it); nothing was done"
        )
    for key in keys:
        if not _RECIPIENT_RE.match(key):
            shown = key if len(key) <= 16 else key[:12] + "..."
            raise ConfigError(
                f"BACKUP_AGE_RECIPIENTS holds {shown!r}, which is not an age public key "
                "(age1...); give the public keys printed by `age-keygen -y`"
            )
    return keys


def offsite_from_values(
    lookup: Callable[[str], str | None],
    number: Callable[..., int],
    local: tuple[int, int, int],
    local_tiers: Tiers = DEFAULT_TIERS,
) -> OffSite | None:
    """The off-site settings, or None when BACKUP_S3_URL is unset (pure but for file checks).

    ``lookup`` gives a setting's text, ``number`` a validated whole number (see
    :func:`settings_from_layers`).
    """
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
    recipients_text = lookup("BACKUP_AGE_RECIPIENTS")
    recipients = () if recipients_text is None else parse_recipients(recipients_text)
    recipients_file = _existing_file("BACKUP_AGE_RECIPIENTS_FILE", lookup)
    if recipients_file is not None and not file_recipients(recipients_file):
        raise ConfigError(
            f"BACKUP_AGE_RECIPIENTS_FILE {recipients_file} holds no recipient (only blank or "
            "# lines); add the public keys, one a line, or unset BACKUP_AGE_RECIPIENTS_FILE; "
            "nothing was done"
        )
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
        max_age_days=number("BACKUP_S3_MAX_AGE_DAYS", max_age, minimum=1, maximum=MAX_DAYS),
        max_count=number("BACKUP_S3_MAX_COUNT", max_count, minimum=1),
        min_keep=number("BACKUP_S3_MIN_KEEP", min_keep, minimum=1),
        tiers=tiers_from(number, "BACKUP_S3_", local_tiers),
    )


def tiers_from(number: Callable[..., int], prefix: str, default: Tiers) -> Tiers:
    """``{prefix}KEEP_DAILY`` ... ``_YEARLY``: whole numbers, 0 (the tier off) and up."""
    return Tiers(
        **{
            tier.value: number(
                f"{prefix}KEEP_{tier.value.upper()}", getattr(default, tier.value), minimum=0
            )
            for tier in TIERS
        }
    )


def file_recipients(path: Path) -> list[str]:
    """The recipients in a BACKUP_AGE_RECIPIENTS_FILE, one a line (blanks and # lines skipped)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise ConfigError(f"cannot read BACKUP_AGE_RECIPIENTS_FILE {path}: {reason}") from exc
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


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

    ``overrides`` are the command-line options, by the setting they set
    (``BACKUP_DIR``, ``PGHOST``, ...); ``None`` values are ignored so unset
    options fall through.
    """
    environ = os.environ if environ is None else environ
    layers = [
        Layer({k: str(v) for k, v in (overrides or {}).items() if v is not None}, None),
        Layer(environ, ENVIRONMENT),
    ]
    if env_file is not None:
        file_values = read_env_file(env_file, required=env_file_required)
        if file_values:
            layers.append(Layer(file_values, str(env_file)))
    return settings_from_layers(layers)


def settings_from_values(values: Mapping[str, str]) -> Settings:
    """Validate the values of one layer (the environment) into :class:`Settings` (pure)."""
    return settings_from_layers([Layer(values, ENVIRONMENT)])


def settings_from_layers(layers: Sequence[Layer]) -> Settings:
    """Validate layered values (highest first) into :class:`Settings` (pure)."""

    def number(setting: str, default: int, *, minimum: int, maximum: int = MAX_WHOLE) -> int:
        value = pick(layers, setting)
        if value is None:
            return default
        return parse_int(
            value.named(), value.text, minimum=minimum, maximum=maximum, example=default
        )

    def text(setting: str) -> str | None:
        value = pick(layers, setting)
        return None if value is None else value.text

    port = pick(layers, "PGPORT")
    # DATABASE_URL: the lowest layer, each of its parts under every PG*/POSTGRES_* name.
    url = url_layer(layers)
    # Without a database name, the official image's default: the one named after POSTGRES_USER.
    dbname = pick(layers, "PGDATABASE")
    fallback = pick(layers, "PGDATABASE", ["POSTGRES_USER"])
    fields = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    connection = Connection(
        host=text("PGHOST") or url.host,
        port=url.port
        if port is None
        else parse_int(port.named(), port.text, minimum=1, maximum=65535, example=5432),
        user=text("PGUSER") or url.user,
        dbname=dbname.text
        if dbname is not None
        else url.dbname or (None if fallback is None else fallback.text),
        password=text("PGPASSWORD") or url.password,
        service=text("PGSERVICE"),
        url_options=url.options,
        command_line=frozenset(
            key
            for key, setting in fields.items()
            if (value := pick(layers, setting)) is not None and value.command_line
        ),
        tcp_timeout=number(
            "BACKUP_TCP_TIMEOUT",
            DEFAULT_TCP_TIMEOUT,
            minimum=MIN_TCP_TIMEOUT,
            maximum=MAX_TCP_TIMEOUT,
        ),
    )
    backup_dir_value = pick(layers, "BACKUP_DIR")
    backup_dir = Path(
        DEFAULT_BACKUP_DIR if backup_dir_value is None else backup_dir_value.text
    ).expanduser()
    if backup_dir.exists() and not backup_dir.is_dir():
        source = "BACKUP_DIR" if backup_dir_value is None else backup_dir_value.source
        raise ConfigError(f"{source} {backup_dir} is not a directory; point {source} at a folder")
    max_age_days = number("BACKUP_MAX_AGE_DAYS", DEFAULT_MAX_AGE_DAYS, minimum=1, maximum=MAX_DAYS)
    max_count = number("BACKUP_MAX_COUNT", DEFAULT_MAX_COUNT, minimum=1)
    min_keep = number("BACKUP_MIN_KEEP", DEFAULT_MIN_KEEP, minimum=1)
    tiers = tiers_from(number, "BACKUP_", DEFAULT_TIERS)
    return Settings(
        backup_dir=backup_dir,
        connection=connection,
        max_age_days=max_age_days,
        max_count=max_count,
        min_keep=min_keep,
        tiers=tiers,
        dump_nice=number("BACKUP_NICE", DEFAULT_DUMP_NICE, minimum=0, maximum=19),
        keep_previous=parse_bool("BACKUP_KEEP_PREVIOUS", text("BACKUP_KEEP_PREVIOUS"), True),
        role_passwords=parse_bool("BACKUP_ROLE_PASSWORDS", text("BACKUP_ROLE_PASSWORDS"), False),
        compression=compressions.parse(compression_text)
        if (compression_text := text("BACKUP_COMPRESSION")) is not None
        else compressions.DEFAULT,
        anomaly_min_rows=number("BACKUP_ANOMALY_MIN_ROWS", DEFAULT_ANOMALY_MIN_ROWS, minimum=0),
        anomaly_drop=percent(pick(layers, "BACKUP_ANOMALY_DROP"), DEFAULT_ANOMALY_DROP),
        schedule=text("BACKUP_SCHEDULE") or DEFAULT_SCHEDULE,
        timezone=text("TZ"),
        verify_mode=text("BACKUP_VERIFY") or DEFAULT_VERIFY,
        migrate_command=text("BACKUP_MIGRATE_COMMAND") or DEFAULT_MIGRATE_COMMAND,
        migrate_service=text("BACKUP_MIGRATE_SERVICE") or DEFAULT_MIGRATE_SERVICE,
        ping_url=text("BACKUP_PING_URL"),
        metrics_file=text("BACKUP_METRICS_FILE"),
        health_max_age=text("BACKUP_HEALTH_MAX_AGE"),
        http_addr=text("BACKUP_HTTP_ADDR"),
        notify_urls=text("BACKUP_NOTIFY_URLS"),
        notify_on=text("BACKUP_NOTIFY_ON"),
        notify_repeat=text("BACKUP_NOTIFY_REPEAT"),
        notify_digest=text("BACKUP_NOTIFY_DIGEST"),
        notify_name=text("BACKUP_NOTIFY_NAME"),
        offsite=offsite_from_values(text, number, (max_age_days, max_count, min_keep), tiers),
    )


def url_layer(layers: Sequence[Layer]) -> database_url.DatabaseUrl:
    """``DATABASE_URL`` from the highest layer that has it, parsed; empty when none has."""
    value = pick(layers, "DATABASE_URL")
    if value is None:
        return database_url.DatabaseUrl()
    where = "" if value.origin in (None, ENVIRONMENT) else f" (in {value.origin})"
    # Named without its text: it holds the password.
    return database_url.parse(value.text, name=f"DATABASE_URL{where}")


_WHOLE_RE = re.compile(r"\A-?[0-9]+\Z")


def parse_int(
    named: str,
    text: str,
    *,
    minimum: int = 0,
    maximum: int = MAX_WHOLE,
    example: int = 1,
) -> int:
    """Parse a whole-number setting: plain ASCII decimal digits, within a range, else refused.

    Python's other literal forms (``3_0``, ``+5``, `` 5``, ``٣``) are refused: a typo must
    not silently become another number. ``named`` is how the message names the value
    (see :meth:`Value.named`); the message gives the range.
    """
    bound = f"it must be a whole number between {minimum} and {maximum}"
    if not _WHOLE_RE.match(text):
        raise ConfigError(
            f"{named} is not a whole number (digits 0-9 only); {bound}, e.g. {example}"
        )
    digits = text.removeprefix("-").lstrip("0") or "0"
    if text.startswith("-") and digits != "0":
        value = -1  # below every minimum; never converted, however long
    elif len(digits) > len(str(maximum)):
        value = maximum + 1
    else:
        value = int(digits)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{named} is out of range; {bound}")
    return value


def percent(value: Value | None, default: int) -> int:
    """A percentage setting: ``50`` or ``50%``, a whole number from 1 to 100."""
    if value is None:
        return default
    digits = value.text.strip()
    digits = digits.removesuffix("%").rstrip() if digits.endswith("%") else digits
    return parse_int(value.named(), digits, minimum=1, maximum=100, example=default)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, text: str | None, default: bool) -> bool:
    """``true``/``false`` (also yes/no, on/off, 1/0, any case); anything else is refused."""
    if text is None:
        return default
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{name}={text!r} is not true or false; set it to true or false")
