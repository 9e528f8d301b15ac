"""``velocity-pg schedule``'s settings, checked before anything runs (a bad one: exit 2)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from velocity_pg.errors import ConfigError
from velocity_pg.scheduling import notify
from velocity_pg.scheduling.notify import NotifyConfig
from velocity_pg.scheduling.timetable import (
    Timetable,
    parse_duration,
    parse_schedule,
    parse_timezone,
)
from velocity_pg.settings import Settings


class VerifyMode(StrEnum):
    """What each scheduled run checks after the backup (``BACKUP_VERIFY``)."""

    CHECKSUM = "checksum"  # checksum and archive of the new backup
    RESTORE = "restore"  # plus a restore drill into a throwaway database
    NONE = "none"


@dataclass(frozen=True)
class ScheduleConfig:
    timetable: Timetable
    verify: VerifyMode
    ping_url: str | None = field(repr=False)
    metrics_file: Path | None
    health_max_age: timedelta | None
    #: Messages through Apprise (BACKUP_NOTIFY_URLS); None when none are configured.
    notify: NotifyConfig | None = None


def load(settings: Settings, now: datetime) -> ScheduleConfig:
    """Parse and check every scheduling setting; raise :class:`ConfigError` on the first bad one."""
    zone = parse_timezone(settings.timezone)
    timetable = parse_schedule(settings.schedule, zone, probe=now)
    try:
        verify = VerifyMode(settings.verify_mode.strip().lower())
    except ValueError:
        raise ConfigError(
            f"BACKUP_VERIFY={settings.verify_mode!r} is not one of checksum, restore, none"
        ) from None
    ping_url = ping_url_setting(settings.ping_url)
    if settings.metrics_file is not None and not settings.metrics_file.strip():
        raise ConfigError(
            "BACKUP_METRICS_FILE is blank; name the file, or leave it empty to write no metrics"
        )
    metrics_file = Path(settings.metrics_file).expanduser() if settings.metrics_file else None
    if metrics_file is not None:
        check_metrics_folder(metrics_file)
    notify_config = notify.load(settings, now)
    if settings.offsite is not None:
        from velocity_pg.store import offsite

        offsite.prepare(settings)  # boto3, credentials, age: fail closed before any run
    return ScheduleConfig(
        notify=notify_config,
        timetable=timetable,
        verify=verify,
        ping_url=ping_url,
        metrics_file=metrics_file,
        health_max_age=health_max_age_setting(settings),
    )


def ping_url_setting(text: str | None) -> str | None:
    """BACKUP_PING_URL checked; messages never show it whole (its path may be a secret).

    A user name or password in it (``https://user:password@host/...``) is refused:
    monitors put their token in the path, and credentials there would only be sent
    in the clear of a URL and fail later as a name lookup of ``user``.
    """
    if text is None:
        return None
    url = text.strip()
    if not url:
        raise ConfigError(
            "BACKUP_PING_URL is blank; set it to your monitor's URL, or leave it empty "
            "to send no pings"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ConfigError(
            "BACKUP_PING_URL is not a valid URL (its host or port is malformed); "
            "copy it again from your monitor"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"BACKUP_PING_URL ({mask_url(url)}) is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ConfigError(
            f"BACKUP_PING_URL ({mask_url(url)}) holds a user name or password "
            "(user:password@host), which velocity-pg does not send; use the URL your "
            "monitor gives (Healthchecks, Uptime Kuma and Cronitor put the token in the path)"
        )
    return url


def health_max_age_setting(settings: Settings) -> timedelta | None:
    if not settings.health_max_age:
        return None
    return parse_duration(settings.health_max_age, "BACKUP_HEALTH_MAX_AGE")


def health_allowance(settings: Settings, now: datetime) -> tuple[timedelta, str]:
    """``status --max-age auto``: BACKUP_HEALTH_MAX_AGE, else derived from BACKUP_SCHEDULE.

    Returns the allowance and where it came from, for messages.
    """
    explicit = health_max_age_setting(settings)
    if explicit is not None:
        return explicit, "BACKUP_HEALTH_MAX_AGE"
    timetable = parse_schedule(settings.schedule, parse_timezone(settings.timezone), probe=now)
    return timetable.health_allowance(now, now), f"BACKUP_SCHEDULE={timetable.expression}"


def check_metrics_folder(path: Path) -> None:
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"BACKUP_METRICS_FILE {path} is a folder; name a file in it")
    if not folder.is_dir():
        raise ConfigError(
            f"BACKUP_METRICS_FILE {path}: the folder {folder} does not exist; create it"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"BACKUP_METRICS_FILE {path}: the folder {folder} is not writable")


def mask_url(url: str) -> str:
    """A ping URL fit for logs: scheme and host only; the path may be a secret token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port is not None:
        host += f":{parts.port}"
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{hidden}"
