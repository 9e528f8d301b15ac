"""A backup that looks wrong: compare a backup's statistics with the previous good one's.

Every backup records what the server's statistics say the database held (rows and
size of each table, the database's size; see :class:`manifest.Statistics`). A new
backup is **suspect** next to the previous good backup of the same database when

* a table of the previous one is gone;
* a table of at least ``min_rows`` rows (BACKUP_ANOMALY_MIN_ROWS) lost more than
  ``drop`` percent (BACKUP_ANOMALY_DROP) of them;
* the database shrank by more than ``drop`` percent.

A suspect backup is still a valid backup: it is kept, listed and restorable, only
marked. :func:`compare` is pure; :func:`previous_good` reads the folder's manifests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from velocity_pg.errors import ManifestUnreadable
from velocity_pg.store import catalog, manifest

DEFAULT_MIN_ROWS = 1000
DEFAULT_DROP = 50  # percent


@dataclass(frozen=True)
class Rule:
    """BACKUP_ANOMALY_MIN_ROWS and BACKUP_ANOMALY_DROP."""

    min_rows: int = DEFAULT_MIN_ROWS
    drop: int = DEFAULT_DROP  # percent; 100 turns the shrink rules off

    def dropped(self, before: int, after: int) -> bool:
        """Whether ``after`` lost more than ``drop`` percent of ``before``."""
        return (before - after) * 100 > self.drop * before


def number(value: int) -> str:
    """120400 as ``120,400``."""
    return f"{value:,}"


def compare(
    new: manifest.Statistics, previous: manifest.Statistics, rule: Rule = Rule()
) -> list[str]:
    """Why ``new`` looks wrong next to ``previous`` (empty: it does not), table by table."""
    reasons: list[str] = []
    now = {(t.schema, t.name): t for t in new.tables}
    for before in previous.tables:
        after = now.get((before.schema, before.name))
        if after is None:
            reasons.append(f"table {before.shown} is gone (it had {number(before.rows)} rows)")
        elif before.rows >= rule.min_rows and rule.dropped(before.rows, after.rows):
            reasons.append(
                f"table {before.shown} {number(before.rows)} -> {number(after.rows)} rows"
            )
    if rule.dropped(previous.database_bytes, new.database_bytes):
        reasons.append(
            f"database {catalog.human_size(previous.database_bytes)} -> "
            f"{catalog.human_size(new.database_bytes)}"
        )
    return reasons


def is_suspect(record: manifest.Manifest | None) -> bool:
    """Whether a backup counts as suspect wherever that matters (``list``, ``status``,
    ``status --max-age``, retention, the comparison of the next backup): it has a suspect
    mark and nobody accepted its new state (``velocity-pg accept NAME``)."""
    return record is not None and record.suspect is not None and record.accepted is None


def suspect_reason(record: manifest.Manifest | None) -> str | None:
    """Why a backup is suspect, in one line for the retention plan; None when it is not
    (no mark, or accepted)."""
    if record is None or record.suspect is None or not is_suspect(record):
        return None
    return describe(record.suspect, 1)


def counts_as_good(record: manifest.Manifest) -> bool:
    """Whether a backup can be the one the next is compared with: it has statistics and
    is not suspect."""
    return record.statistics is not None and not is_suspect(record)


@dataclass(frozen=True)
class Previous:
    name: str
    record: manifest.Manifest


#: How far a backup's name can be ahead of its start: a backup started in a second that
#: already has one takes the next free second (catalog.candidate_names).
NAME_AHEAD = timedelta(seconds=3600)


def previous_good(
    backups: Iterable[catalog.Backup],
    database: str,
    before: datetime,
    *,
    skip: str = "",
    read: Callable[[Path], manifest.Manifest | None] = manifest.read,
) -> Previous | None:
    """The newest backup of ``database`` that started before ``before`` and counts as good
    (``backups`` newest first, as :func:`catalog.list_backups` gives them). A backup
    whose manifest cannot be read is passed over, never an error.

    When it started is its manifest's ``started_at``, not its name's time: two backups
    started within one second have consecutive seconds in their names, so the name of
    the one just before can be *later* than ``before``."""
    for backup in backups:
        if backup.database != database or backup.name == skip:
            continue
        if backup.created >= before + NAME_AHEAD:
            continue
        try:
            record = read(backup.path)
        except (ManifestUnreadable, OSError):
            continue
        if record is None or not counts_as_good(record):
            continue
        if datetime.fromisoformat(record.started_at) < before:
            return Previous(backup.name, record)
    return None


def judge(
    new: manifest.Statistics | None,
    previous: Previous | None,
    at: str,
    rule: Rule = Rule(),
) -> manifest.Suspect | None:
    """The suspect mark for a backup with statistics ``new``; None when it looks right
    (or there is nothing to compare: no statistics, no previous good backup)."""
    if new is None or previous is None or previous.record.statistics is None:
        return None
    reasons = compare(new, previous.record.statistics, rule)
    if not reasons:
        return None
    return manifest.Suspect(at=at, compared_with=previous.name, reasons=tuple(reasons))


def to_json(mark: manifest.Suspect | None) -> dict[str, object] | None:
    """A suspect mark for --json: ``{"at", "compared_with", "reasons"}``, or None."""
    if mark is None:
        return None
    return {"at": mark.at, "compared_with": mark.compared_with, "reasons": list(mark.reasons)}


def pin_reason(suspect: manifest.Suspect) -> str:
    """The automatic pin's reason on the good backup a suspect one was compared with:
    ``last backup before the anomaly of 2026-12-05: table shop.orders 120,400 -> 0 rows``
    (one line, within a pin reason's length)."""
    day = suspect.at[:10]
    text = f"last backup before the anomaly of {day}: " + "; ".join(suspect.reasons)
    text = "".join(c if c.isprintable() else " " for c in text)
    if len(text) > manifest.MAX_REASON:
        text = text[: manifest.MAX_REASON - 3] + "..."
    return text


def describe(suspect: manifest.Suspect, limit: int = 3) -> str:
    """``table shop.orders 120,400 -> 0 rows; ... (next to NAME)``, a few reasons."""
    shown = "; ".join(suspect.reasons[:limit])
    more = len(suspect.reasons) - limit
    if more > 0:
        shown += f" (and {more} more)"
    return f"{shown} (next to {suspect.compared_with})"
