"""``velocity-pg status``: is there a recent backup, and was it verified?

With ``--max-age`` it is a monitor: exit 1 when the newest backup is older than
that, or there is none, so it can serve as a container healthcheck, a cron
monitor or a CI gate. Only a real backup counts (see :func:`judge`): a file
named in the future, an empty or unreadable one, or one that disagrees with
its manifest is reported as "not counted" and never makes a folder look fresh.

"Newest" means the newest backup **of the configured database** (PGDATABASE,
else POSTGRES_DB, ...): the folder may hold backups of other databases (an old
project's, a second database's), and their fresh backups must not hide that
this database's backups stopped. The other databases are shown too. With no
database configured at all, the newest backup of any database counts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from velocity_pg.errors import ManifestUnreadable, OperationFailed
from velocity_pg.settings import Settings
from velocity_pg.store import anomaly, catalog, manifest, remote
from velocity_pg.store.offsite import (
    foreign_warning,
    newest_remote,
    offsite_of,
    prepare,
    split_owned,
)
from velocity_pg.store.remote import RemoteBackup
from velocity_pg.verbs import Failure, Say

if TYPE_CHECKING:  # without importing psycopg before it is needed
    from velocity_pg.restore import copies


def parse_duration(text: str, option: str = "--max-age") -> timedelta:
    """``90m``, ``26h``, ``2d``, ``1h30m`` (units s m h d w) as a timedelta, within range."""
    from velocity_pg.scheduling.timetable import parse_duration as parse

    return parse(text, option)


#: How far in the future a backup's name may be and still count (clocks disagree a little).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Ignored:
    """A file named like a backup that ``status`` does not count as one, and why."""

    name: str
    reason: str  # future, empty, size_mismatch, manifest_unreadable, dump_unreadable
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason, "detail": self.detail}


def judge(
    backup: catalog.Backup,
    record: manifest.Manifest | None,
    problem: tuple[str, str] | None,
    now: datetime,
) -> Ignored | None:
    """Whether a backup counts as a real one for ``status``; the reason if it does not.

    Pure (the manifest and the readability problem are given), so every rule is
    tested without files: a real backup is not named in the future beyond
    :data:`CLOCK_SKEW`, is not empty, can be read, has a readable manifest if it
    has one at all, and is as large as that manifest says.
    """
    if backup.created > now + CLOCK_SKEW:
        ahead = catalog.human_age(backup.created - now)
        return Ignored(
            backup.name,
            "future",
            f"named {ahead} in the future (a clock that ran ahead, or a copied file)",
        )
    if backup.size == 0:
        return Ignored(backup.name, "empty", "an empty file (0 bytes)")
    if problem is not None:
        return Ignored(backup.name, *problem)
    if record is not None and record.size_bytes != backup.size:
        return Ignored(
            backup.name,
            "size_mismatch",
            f"{backup.size} bytes, its manifest says {record.size_bytes}: cut or changed",
        )
    return None


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
    ignored: tuple[Ignored, ...] = ()
    #: The other databases with backups in the folder, by name.
    others: tuple[Other, ...] = ()
    #: The pinned backups in the folder (of every database) and their space.
    pinned_count: int = 0
    pinned_bytes: int = 0
    #: The newest backup's suspect mark (store/anomaly.py), and whether it has statistics.
    newest_suspect: manifest.Suspect | None = None
    newest_has_statistics: bool = False
    #: How many of the database's backups that count are suspect.
    suspect_count: int = 0
    #: The newest backup that counts and is not suspect: what --max-age judges.
    newest_good: catalog.Backup | None = None
    #: Its pin (the automatic one of the last good backup before an anomaly, say).
    newest_good_pin: manifest.Pin | None = None

    @property
    def newest_good_age(self) -> timedelta | None:
        if self.newest_good is None:
            return None
        return max(self.now - self.newest_good.created, timedelta(0))

    @property
    def stale(self) -> bool:
        """True when a max age is set and the newest good backup (real and not suspect)
        is older, or there is none."""
        if self.max_age is None:
            return False
        age = self.newest_good_age
        return age is None or age > self.max_age

    def stale_reason(self, limit: str) -> str:
        """Why ``--max-age`` fails, in one line."""
        of = "" if self.database is None else f" of database {self.database!r}"
        if self.newest is None:
            why = (
                f"there is no backup{of}"
                if not self.ignored
                else f"no file here counts as a backup{of}"
            )
        elif self.newest_suspect is not None:
            looks = (
                f"the newest backup{of}, {self.newest.name}, looks wrong "
                f"({anomaly.describe(self.newest_suspect, 1)})"
            )
            if self.newest_good is None:
                why = f"{looks} and no other backup is good"
            else:
                why = f"{looks} and the newest good one is older than {limit}: "
                why += self.newest_good.name
        else:
            why = f"the newest backup{of} is older than {limit}: {self.newest.name}"
        if self.ignored:
            shown = "; ".join(f"{i.name}: {i.detail}" for i in self.ignored[:3])
            more = f" and {len(self.ignored) - 3} more" if len(self.ignored) > 3 else ""
            why += f" (not counted: {shown}{more})"
        return why

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
                "has_statistics": self.newest_has_statistics,
                "suspect": anomaly.to_json(self.newest_suspect),
            },
            "suspect_count": self.suspect_count,
            "newest_good": None
            if self.newest_good is None
            else {
                "name": self.newest_good.name,
                "created_at": self.newest_good.created.isoformat(),
                "age_seconds": int(self.newest_good_age.total_seconds())
                if self.newest_good_age
                else 0,
                "pin": None if self.newest_good_pin is None else self.newest_good_pin.to_json(),
            },
            "last_good_verification": None
            if self.last_good_verification is None
            else {"name": self.last_good_verification[0], **vars(self.last_good_verification[1])},
            "max_age_seconds": None if self.max_age is None else int(self.max_age.total_seconds()),
            "stale": self.stale,
            "ignored": [i.to_json() for i in self.ignored],
            "future": [i.name for i in self.ignored if i.reason == "future"],
            "other_databases": [other.to_json(self.now) for other in self.others],
            "pinned": {"count": self.pinned_count, "bytes": self.pinned_bytes},
        }


def read_state(
    backup: catalog.Backup,
) -> tuple[manifest.Manifest | None, tuple[str, str] | None]:
    """(its manifest, a problem as (reason, detail)) for one backup, never raising.

    The dump is opened (not read) to prove it can be; only a regular file is.
    """
    try:
        record = manifest.read(backup.path)
    except ManifestUnreadable as exc:
        return None, ("manifest_unreadable", f"manifest unreadable ({exc.message})")
    try:
        catalog.check_readable(backup.path)
    except catalog.UnreadableFile as exc:
        return record, ("dump_unreadable", f"dump unreadable ({exc.message})")
    except FileNotFoundError:
        return record, ("dump_unreadable", "dump unreadable (it vanished)")
    return record, None


def gather(
    folder: Path, now: datetime, max_age: timedelta | None, database: str | None = None
) -> Status:
    """The folder's state; ``newest`` and the verifications are of ``database``'s backups
    (of any database's when it is None) that count (:func:`judge`), ``count`` and
    ``total_bytes`` of the whole folder."""
    every = catalog.list_backups(folder)
    backups = [b for b in every if database is None or b.database == database]
    by_database: dict[str, list[catalog.Backup]] = {}
    for backup in every:
        if database is not None and backup.database != database:
            by_database.setdefault(backup.database, []).append(backup)
    others = tuple(
        Other(database=name, count=len(found), newest=found[0])
        for name, found in sorted(by_database.items())
    )
    newest: catalog.Backup | None = None
    newest_verification = None
    newest_has_manifest = False
    last_good: tuple[str, manifest.Verification] | None = None
    ignored: list[Ignored] = []
    newest_suspect: manifest.Suspect | None = None
    newest_has_statistics = False
    suspect_count = 0
    newest_good: catalog.Backup | None = None
    newest_good_pin: manifest.Pin | None = None
    for backup in backups:
        record, problem = read_state(backup)
        verdict = judge(backup, record, problem, now)
        if verdict is not None:
            ignored.append(verdict)
            continue
        mark = record.suspect if record is not None and anomaly.is_suspect(record) else None
        if newest is None:
            newest = backup
            newest_has_manifest = record is not None
            newest_verification = record.last_verification if record else None
            newest_suspect = mark
            newest_has_statistics = record is not None and record.statistics is not None
        if mark is not None:
            suspect_count += 1
        elif newest_good is None:
            newest_good = backup
            newest_good_pin = record.pin if record is not None else None
        check = record.last_verification if record else None
        if check is not None and check.ok and (last_good is None or check.at > last_good[1].at):
            last_good = (backup.name, check)
    pinned = [b for b in every if _pinned(b)]
    usage = shutil.disk_usage(folder)
    return Status(
        backup_dir=folder,
        database=database,
        now=now,
        count=len(every),
        total_bytes=sum(b.size for b in every),
        free_bytes=usage.free,
        newest=newest,
        # A name a little ahead of our clock (within CLOCK_SKEW) is a backup made just now.
        newest_age=None if newest is None else max(now - newest.created, timedelta(0)),
        newest_verification=newest_verification,
        newest_has_manifest=newest_has_manifest,
        last_good_verification=last_good,
        max_age=max_age,
        ignored=tuple(ignored),
        others=others,
        pinned_count=len(pinned),
        pinned_bytes=sum(b.size for b in pinned),
        newest_suspect=newest_suspect,
        newest_has_statistics=newest_has_statistics,
        suspect_count=suspect_count,
        newest_good=newest_good,
        newest_good_pin=newest_good_pin,
    )


def _pinned(backup: catalog.Backup) -> bool:
    try:
        record = manifest.read(backup.path)
    except ManifestUnreadable:
        return False  # said as "not counted" when it is the configured database's
    return record is not None and record.pin is not None


def render(status: Status) -> str:
    """The human-readable status report."""
    lines = [
        f"Backup folder: {status.backup_dir}",
        f"Backups:       {status.count} ({catalog.human_size(status.total_bytes)}); "
        f"{catalog.human_size(status.free_bytes)} free",
    ]
    if status.pinned_count:
        lines.append(
            f"Pinned:        {status.pinned_count} ({catalog.human_size(status.pinned_bytes)}); "
            "cleanup never deletes them"
        )
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
        if status.newest_suspect is not None:
            lines.append(f"Contents:      SUSPECT: {anomaly.describe(status.newest_suspect)}")
            good = status.newest_good
            if good is None or status.newest_good_age is None:
                lines.append("Newest good:   none")
            else:
                pin = status.newest_good_pin
                lines.append(
                    f"Newest good:   {good.name} ({catalog.human_age(status.newest_good_age)} old"
                    + ("" if pin is None else f"; {pin.describe()}")
                    + ")"
                )
        elif status.newest_has_statistics:
            lines.append("Contents:      not suspect")
        elif status.newest_has_manifest:
            lines.append("Contents:      no statistics (made before velocity-pg recorded them)")
    if status.suspect_count:
        lines.append(
            f"Suspect:       {status.suspect_count} backup(s) look wrong "
            "(`velocity-pg list` names them)"
        )
    if status.last_good_verification is not None:
        name, check = status.last_good_verification
        lines.append(f"Last good verification: {name} ({check.method}, {check.at})")
    for item in status.ignored:
        lines.append(f"Not counted:   {item.name}: {item.detail}")
    for other in status.others:
        age = catalog.human_age(status.now - other.newest.created)
        lines.append(
            f"Other database: {other.database!r}: {other.count} backup(s), newest "
            f"{other.newest.name} ({age} old)"
        )
    return "\n".join(lines)


# -- off-site --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteStatus:
    where: str
    count: int
    newest: RemoteBackup | None
    newest_age: timedelta | None
    problem: str = ""
    #: (name, owner) of the copies under the prefix that are not this folder's.
    foreign: tuple[tuple[str, str], ...] = ()
    #: This folder's pinned copies and their space (their objects' sizes).
    pinned_count: int = 0
    pinned_bytes: int = 0

    def warning(self) -> str | None:
        return foreign_warning(self.where, list(self.foreign))

    def to_json(self) -> dict[str, object]:
        return {
            "where": self.where,
            "count": self.count,
            "problem": self.problem or None,
            "foreign": [{"name": n, "owner": o} for n, o in self.foreign],
            "pinned": {"count": self.pinned_count, "bytes": self.pinned_bytes},
            "newest": None
            if self.newest is None or self.newest_age is None
            else {
                "name": self.newest.name,
                "created_at": self.newest.created.isoformat(),
                "age_seconds": int(self.newest_age.total_seconds()),
                "encrypted": self.newest.record.encrypted if self.newest.record else None,
            },
        }

    def lines(self) -> list[str]:
        if self.problem:
            return [f"Off-site:      cannot be read ({self.problem})"]
        if self.newest is None or self.newest_age is None:
            others = f" (but {len(self.foreign)} not this folder's)" if self.foreign else ""
            return [f"Off-site:      none of this folder's in {self.where}{others}"]
        enc = (
            "encrypted" if self.newest.record and self.newest.record.encrypted else "not encrypted"
        )
        others = f" (and {len(self.foreign)} not this folder's)" if self.foreign else ""
        if self.pinned_count:
            others += f"; {self.pinned_count} pinned ({catalog.human_size(self.pinned_bytes)})"
        return [
            f"Off-site:      {self.count} in {self.where}{others}",
            f"Newest off-site: {self.newest.name} "
            f"({catalog.human_age(self.newest_age)} old, {enc})",
        ]


def remote_status(settings: Settings, now: datetime) -> RemoteStatus:
    offsite = offsite_of(settings)
    try:
        ctx = prepare(settings, for_upload=False)
        listing = remote.list_backups(ctx.store)
        good, foreign = split_owned(settings.backup_dir, listing.backups)
    except OperationFailed as exc:
        return RemoteStatus(offsite.url, 0, None, None, exc.message)
    ranked = newest_remote(good, settings.database)
    newest = ranked[0] if ranked else None
    pinned = [b.record for b in good if b.record is not None and b.record.pin is not None]
    return RemoteStatus(
        ctx.store.describe(),
        len(good),
        newest,
        None if newest is None else now - newest.created,
        foreign=tuple(foreign),
        pinned_count=len(pinned),
        pinned_bytes=sum(r.object_size for r in pinned),
    )


# -- the verb -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """``velocity-pg status``: the backup folder, the restore's copies beside the database,
    and the off-site copies when configured; with a limit, whether they are fresh."""

    local: Status
    kept: copies.Report
    remote: RemoteStatus | None
    now: datetime
    #: --max-age as shown in the STALE message (the allowance and its source for "auto").
    max_age_shown: str | None = None
    remote_limit: timedelta | None = None
    remote_max_age: str | None = None

    def lines(self) -> list[str]:
        lines = [render(self.local), *self.kept.lines(self.now)]
        if self.remote is not None:
            lines += self.remote.lines()
        return ["\n".join(lines)]

    def to_json(self) -> dict[str, object]:
        payload = self.local.to_json()
        payload["restore"] = self.kept.to_json(self.now)
        if self.remote is not None:
            payload["offsite"] = self.remote.to_json() | {
                "max_age_seconds": None
                if self.remote_limit is None
                else int(self.remote_limit.total_seconds())
            }
        return payload

    def failure(self) -> Failure | None:
        problems = []
        if self.local.stale:
            assert self.max_age_shown is not None
            problems.append(self.local.stale_reason(self.max_age_shown))
        off_site = self.remote
        if self.remote_limit is not None and off_site is not None:
            if off_site.problem:
                problems.append(f"the off-site copies cannot be read: {off_site.problem}")
            elif off_site.newest_age is None:
                problems.append("there is no off-site copy")
            elif off_site.newest_age > self.remote_limit:
                problems.append(f"the newest off-site copy is older than {self.remote_max_age}")
        if not problems:
            return None
        return Failure(stderr=f"velocity-pg: status: STALE: {'; '.join(problems)}")


@dataclass(frozen=True)
class Limits:
    """``--max-age`` and ``--remote-max-age``, read (before anything is looked at)."""

    now: datetime
    limit: timedelta | None = None
    #: --max-age as the STALE message shows it (the allowance and its source for "auto").
    shown: str | None = None
    remote_limit: timedelta | None = None
    remote_max_age: str | None = None


def limits(settings: Settings, max_age: str | None, remote_max_age: str | None) -> Limits:
    """Read the limits: a duration, or ``auto`` (BACKUP_HEALTH_MAX_AGE, else the longest
    gap of BACKUP_SCHEDULE plus a tenth); ConfigError (exit 2) when one is not valid."""
    now = datetime.now(UTC)
    shown = max_age
    limit: timedelta | None
    if max_age is not None and max_age.strip().lower() == "auto":
        from velocity_pg.scheduling.config import health_allowance
        from velocity_pg.scheduling.timetable import human_duration

        limit, source = health_allowance(settings, now)
        shown = f"{human_duration(limit)} ({source})"
    else:
        limit = parse_duration(max_age) if max_age is not None else None
    remote_limit = (
        parse_duration(remote_max_age, "--remote-max-age") if remote_max_age is not None else None
    )
    return Limits(now, limit, shown, remote_limit, remote_max_age)


def run(settings: Settings, limits: Limits, warn: Say) -> Report:
    """``velocity-pg status``; a warning about the off-site copies goes to ``warn``."""
    from velocity_pg.postgres import endpoint
    from velocity_pg.restore import copies

    now = limits.now
    local = gather(settings.backup_dir, now, limits.limit, settings.database)
    off_site = None
    if settings.offsite is not None:
        off_site = remote_status(settings, now)
        if (warning := off_site.warning()) is not None:
            warn(f"velocity-pg: warning: {warning}")
    # What a restore keeps beside the database (a server we cannot reach is said, not fatal).
    kept = copies.report(settings, endpoint.database_name(settings.connection) or "")
    return Report(
        local, kept, off_site, now, limits.shown, limits.remote_limit, limits.remote_max_age
    )
