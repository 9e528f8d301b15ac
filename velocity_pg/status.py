"""``velocity-pg status``: is there a recent backup, and was it verified?

With ``--max-age`` it is a monitor: exit 1 when the newest backup is older than
that, or there is none, so it can serve as a container healthcheck, a cron
monitor or a CI gate.

"Newest" means the newest backup **of the configured database** (PGDATABASE,
else POSTGRES_DB, ...): the folder may hold backups of other databases (an old
project's, a second database's), and their fresh backups must not hide that
this database's backups stopped. The other databases are shown too. With no
database configured at all, the newest backup of any database counts.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from velocity_pg.errors import ConfigError, ManifestUnreadable
from velocity_pg.store import catalog, manifest

_DURATION_RE = re.compile(r"\A\s*(\d+)\s*([smhdw])\s*\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "--max-age") -> timedelta:
    """``90m``, ``26h``, ``2d`` (also ``s`` and ``w``) as a timedelta; > 0."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ConfigError(
            f"{option} {text!r} is not a duration; use a number and a unit, e.g. 90m, 26h, 2d"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{option} {text!r} must be more than zero")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Other:
    """The backups of a database other than the configured one."""

    database: str
    count: int
    newest: catalog.Backup

    def to_json(self, now: datetime) -> dict[str, object]:
        return {
            "database": self.database,
            "count": self.count,
            "newest": self.newest.name,
            "created_at": self.newest.created.isoformat(),
            "age_seconds": int((now - self.newest.created).total_seconds()),
        }


@dataclass(frozen=True)
class Status:
    backup_dir: Path
    #: The configured database whose backups "newest" is about; None: any database.
    database: str | None
    now: datetime
    count: int
    total_bytes: int
    free_bytes: int
    newest: catalog.Backup | None
    newest_age: timedelta | None
    newest_verification: manifest.Verification | None
    newest_has_manifest: bool
    last_good_verification: tuple[str, manifest.Verification] | None
    max_age: timedelta | None
    #: The other databases with backups in the folder, by name.
    others: tuple[Other, ...] = ()

    @property
    def stale(self) -> bool:
        """True when a max age is set and the newest backup is older, or there is none."""
        if self.max_age is None:
            return False
        return self.newest_age is None or self.newest_age > self.max_age

    def to_json(self) -> dict[str, object]:
        return {
            "backup_dir": str(self.backup_dir),
            "database": self.database,
            "count": self.count,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "newest": None
            if self.newest is None
            else {
                "name": self.newest.name,
                "created_at": self.newest.created.isoformat(),
                "age_seconds": int(self.newest_age.total_seconds()) if self.newest_age else 0,
                "size_bytes": self.newest.size,
                "has_manifest": self.newest_has_manifest,
                "last_verification": None
                if self.newest_verification is None
                else vars(self.newest_verification),
            },
            "last_good_verification": None
            if self.last_good_verification is None
            else {"name": self.last_good_verification[0], **vars(self.last_good_verification[1])},
            "max_age_seconds": None if self.max_age is None else int(self.max_age.total_seconds()),
            "stale": self.stale,
            "other_databases": [other.to_json(self.now) for other in self.others],
        }


def gather(
    folder: Path, now: datetime, max_age: timedelta | None, database: str | None = None
) -> Status:
    """The folder's state; ``newest`` and the verifications are of ``database``'s backups
    (of any database's when it is None), ``count`` and ``total_bytes`` of the whole folder."""
    every = catalog.list_backups(folder)
    backups = [b for b in every if database is None or b.database == database]
    newest = backups[0] if backups else None
    by_database: dict[str, list[catalog.Backup]] = {}
    for backup in every:
        if database is not None and backup.database != database:
            by_database.setdefault(backup.database, []).append(backup)
    others = tuple(
        Other(database=name, count=len(found), newest=found[0])
        for name, found in sorted(by_database.items())
    )
    newest_verification = None
    newest_has_manifest = False
    last_good: tuple[str, manifest.Verification] | None = None
    for backup in backups:
        try:
            record = manifest.read(backup.path)
        except ManifestUnreadable:
            continue
        if backup is newest and record is not None:
            newest_has_manifest = True
            newest_verification = record.last_verification
        check = record.last_verification if record else None
        if check is not None and check.ok and (last_good is None or check.at > last_good[1].at):
            last_good = (backup.name, check)
    usage = shutil.disk_usage(folder)
    return Status(
        backup_dir=folder,
        database=database,
        now=now,
        count=len(every),
        total_bytes=sum(b.size for b in every),
        free_bytes=usage.free,
        newest=newest,
        newest_age=None if newest is None else now - newest.created,
        newest_verification=newest_verification,
        newest_has_manifest=newest_has_manifest,
        last_good_verification=last_good,
        max_age=max_age,
        others=others,
    )


def render(status: Status) -> str:
    """The human-readable status report."""
    lines = [
        f"Backup folder: {status.backup_dir}",
        f"Backups:       {status.count} ({catalog.human_size(status.total_bytes)}); "
        f"{catalog.human_size(status.free_bytes)} free",
    ]
    if status.database is not None:
        lines.insert(1, f"Database:      {status.database}")
    if status.newest is None or status.newest_age is None:
        of = "" if status.database is None else f" of database {status.database!r}"
        lines.append(f"Newest:        none{of}")
    else:
        lines.append(
            f"Newest:        {status.newest.name} ({catalog.human_age(status.newest_age)} old, "
            f"{catalog.human_size(status.newest.size)})"
        )
        check = status.newest_verification
        if not status.newest_has_manifest:
            lines.append("Verified:      no manifest (made outside velocity-pg)")
        elif check is None:
            lines.append("Verified:      not yet (run `velocity-pg verify`)")
        else:
            verdict = "ok" if check.ok else "FAILED"
            lines.append(f"Verified:      {verdict} by {check.method} at {check.at}")
    if status.last_good_verification is not None:
        name, check = status.last_good_verification
        lines.append(f"Last good verification: {name} ({check.method}, {check.at})")
    for other in status.others:
        age = catalog.human_age(status.now - other.newest.created)
        lines.append(
            f"Other database: {other.database!r}: {other.count} backup(s), newest "
            f"{other.newest.name} ({age} old)"
        )
    return "\n".join(lines)
