"""``velocity-pg list``: the backups in BACKUP_DIR (of every database), newest first;
with ``--remote``, the off-site copies and whose each is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from velocity_pg.report import describe_check, describe_verification, format_table
from velocity_pg.settings import Settings
from velocity_pg.store import anomaly, catalog, remote
from velocity_pg.store.catalog import Backup, human_age, human_size
from velocity_pg.store.manifest import Manifest, Pin
from velocity_pg.store.offsite import UNKNOWN_OWNER, owners, prepare
from velocity_pg.store.remote import RemoteBackup
from velocity_pg.verbs.status import read_state

#: What :func:`velocity_pg.verbs.status.read_state` says of a backup: its manifest, and
#: (reason, detail) of a problem.
State = tuple[Manifest | None, tuple[str, str] | None]


@dataclass(frozen=True)
class Listing:
    """The local backups, newest first, each with its manifest's state."""

    backup_dir: Path
    backups: list[Backup]
    states: list[State]
    now: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_dir": str(self.backup_dir),
            "backups": [
                {
                    "name": b.name,
                    "database": b.database,
                    "path": str(b.path),
                    "size_bytes": b.size,
                    "created_at": b.created.isoformat(),
                    "modified_at": b.mtime.isoformat(),
                    "age_seconds": int((self.now - b.created).total_seconds()),
                    "manifest": "unreadable"
                    if problem and problem[0] == "manifest_unreadable"
                    else (rec is not None),
                    "readable": not (problem and problem[0] == "dump_unreadable"),
                    "manifest_problem": problem[1]
                    if problem and problem[0] == "manifest_unreadable"
                    else None,
                    "problem": problem[1] if problem else None,
                    "sha256": rec.sha256 if rec is not None else None,
                    "compression": rec.compression if rec is not None else None,
                    "last_verification": vars(rec.last_verification)
                    if rec is not None and rec.last_verification
                    else None,
                    "pin": rec.pin.to_json() if rec is not None and rec.pin else None,
                    "has_statistics": rec is not None and rec.statistics is not None,
                    "suspect": anomaly.to_json(rec.suspect if rec is not None else None),
                    "accepted": vars(rec.accepted) if rec is not None and rec.accepted else None,
                    "migrations": rec.migrations.to_json()
                    if rec is not None and rec.migrations is not None
                    else None,
                }
                for b, (rec, problem) in zip(self.backups, self.states, strict=True)
            ],
        }

    def lines(self) -> list[str]:
        if not self.backups:
            return [f"No backups yet in {self.backup_dir}. Create one with `velocity-pg backup`."]
        rows = [
            (
                b.name,
                b.database if b.database.isprintable() else repr(b.database),
                human_size(b.size),
                b.created.strftime("%Y-%m-%d %H:%M:%S"),
                human_age(self.now - b.created),
                describe_pin(rec.pin if rec is not None else None),
                contents(rec),
                problem[1].split(" (", 1)[0] if problem else describe_verification(rec),
            )
            for b, (rec, problem) in zip(self.backups, self.states, strict=True)
        ]
        header = (
            "NAME", "DATABASE", "SIZE", "CREATED (UTC)", "AGE", "PINNED", "CONTENTS", "VERIFIED",
        )  # fmt: skip
        total = sum(b.size for b in self.backups)
        pinned = [
            b for b, (rec, _) in zip(self.backups, self.states, strict=True) if rec and rec.pin
        ]
        count = f"{len(self.backups)} backup(s), {human_size(total)} in {self.backup_dir}"
        if pinned:
            count += f"; {len(pinned)} pinned ({human_size(sum(b.size for b in pinned))})"
        lines = [format_table(header, rows, right=(2, 4)), count]
        lines += marks((b.name, rec) for b, (rec, _problem) in zip(
            self.backups, self.states, strict=True
        ))  # fmt: skip
        return lines


def marks(backups: Iterable[tuple[str, Manifest | None]]) -> list[str]:
    """Below the table: each suspect backup's reasons, and each automatic pin's whole reason
    (the last good backup before an anomaly, named)."""
    lines = []
    for name, rec in backups:
        if rec is not None and rec.suspect is not None and anomaly.is_suspect(rec):
            lines.append(f"SUSPECT {name}: {anomaly.describe(rec.suspect)}")
        if rec is not None and rec.pin is not None and rec.pin.auto:
            lines.append(f"PINNED {name}: {rec.pin.describe()}")
    return lines


def contents(record: Manifest | None) -> str:
    """The CONTENTS column: ``SUSPECT``, ``ok``, ``no statistics``, or ``-`` (no manifest)."""
    if record is None:
        return "-"
    if anomaly.is_suspect(record):
        return "SUSPECT"
    return "ok" if record.statistics is not None else "no statistics"


def list_local(settings: Settings) -> Listing:
    """``velocity-pg list``."""
    backups = catalog.list_backups(settings.backup_dir)
    now = datetime.now(UTC)
    return Listing(settings.backup_dir, backups, [read_state(b) for b in backups], now)


@dataclass(frozen=True)
class RemoteListing:
    """The off-site copies under BACKUP_S3_URL, and whose each is."""

    where: str
    listing: remote.Listing
    owner: dict[str, str]
    now: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "backups": [
                remote_backup_json(b, self.now, self.owner[b.name]) for b in self.listing.backups
            ],
            "unfinished_uploads": [o.key for o in self.listing.orphans],
        }

    def lines(self) -> list[str]:
        listing, where, now = self.listing, self.where, self.now
        lines = []
        if not listing.backups:
            lines.append(f"No off-site backups in {where}. Copy one with `velocity-pg push`.")
        else:
            rows = []
            for b in listing.backups:
                rec = b.record
                rows.append(
                    (
                        b.name,
                        human_size(rec.object_size) if rec else "?",
                        b.created.strftime("%Y-%m-%d %H:%M:%S"),
                        human_age(now - b.created),
                        ("age" if rec.encrypted else "no") if rec else "?",
                        self.owner[b.name] if rec else "?",
                        describe_pin(rec.pin) if rec else "?",
                        contents(rec.dump) if rec else "?",
                        describe_check(rec.last_verification) if rec else f"DAMAGED: {b.problem}",
                    )
                )
            header = (
                "NAME",
                "SIZE",
                "CREATED (UTC)",
                "AGE",
                "ENCRYPTED",
                "WHOSE",
                "PINNED",
                "CONTENTS",
                "VERIFIED",
            )
            lines.append(format_table(header, rows, right=(1, 3)))
            pinned = [b.record for b in listing.backups if b.record and b.record.pin]
            lines.append(
                f"{len(listing.backups)} off-site backup(s) in {where}"
                + (
                    f"; {len(pinned)} pinned ({human_size(sum(r.object_size for r in pinned))})"
                    if pinned
                    else ""
                )
            )
            lines += marks((b.name, b.record.dump if b.record else None) for b in listing.backups)
        if listing.orphans:
            lines.append(
                f"{len(listing.orphans)} unfinished upload(s) without a manifest (not backups; "
                "cleanup removes them after an hour)"
            )
        return lines


def list_remote(settings: Settings) -> RemoteListing:
    """``velocity-pg list --remote``."""
    ctx = prepare(settings, for_upload=False)
    listing = remote.list_backups(ctx.store)
    owner = owners(settings.backup_dir, listing.backups)
    return RemoteListing(ctx.store.describe(), listing, owner, datetime.now(UTC))


def remote_backup_json(
    backup: RemoteBackup, now: datetime, owner: str = UNKNOWN_OWNER
) -> dict[str, object]:
    record = backup.record
    return {
        "name": backup.name,
        "ok": record is not None,
        "owner": owner,
        "origin": record.origin if record else None,
        "problem": backup.problem,
        "created_at": backup.created.isoformat(),
        "age_seconds": int((now - backup.created).total_seconds()),
        "object_key": record.object_key if record else None,
        "size_bytes": record.object_size if record else None,
        "object_sha256": record.object_sha256 if record else None,
        "dump_sha256": record.dump.sha256 if record else None,
        "encrypted": record.encrypted if record else None,
        "recipients": list(record.recipients) if record else [],
        "uploaded_at": record.uploaded_at if record else None,
        "last_verification": vars(record.last_verification)
        if record and record.last_verification
        else None,
        "pin": record.pin.to_json() if record and record.pin else None,
        "has_statistics": record is not None and record.dump.statistics is not None,
        "suspect": anomaly.to_json(record.dump.suspect if record else None),
        "accepted": vars(record.dump.accepted) if record and record.dump.accepted else None,
        "migrations": record.dump.migrations.to_json()
        if record and record.dump.migrations is not None
        else None,
    }


#: A pin's reason is cut to this many characters in the table (``--json`` has it whole).
PIN_WIDTH = 40


def describe_pin(pin: Pin | None) -> str:
    """The PINNED column: ``-``, ``yes``, ``yes: REASON`` (``auto: REASON`` for an automatic
    pin), the reason cut to :data:`PIN_WIDTH`."""
    if pin is None:
        return "-"
    head = "auto" if pin.auto else "yes"
    if not pin.reason:
        return head
    reason = pin.reason if len(pin.reason) <= PIN_WIDTH else pin.reason[: PIN_WIDTH - 3] + "..."
    return f"{head}: {reason}"
