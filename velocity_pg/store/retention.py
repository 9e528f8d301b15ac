"""Retention: which backups to keep and which to delete. Pure: no clock, no files.

:func:`plan` decides, for every backup, keep or delete, and why. A folder can
hold the backups of several databases (``<database>_YYYY-MM-DD_HHMMSS.dump``):
the rules below apply to **each database's backups separately**, so the
backups of one database never push another's out (its count, its age limit,
its floor). The rules, for the backups of one database, exactly:

1. **Order.** Backups are ranked newest first by file modification time (mtime);
   equal mtimes are ordered by name, and since a name holds its creation time
   (``<database>_YYYY-MM-DD_HHMMSS.dump``, fixed width), the later name counts as
   newer. Rank 1 is the newest. The ranking is total and deterministic.
2. **Age** (``BACKUP_MAX_AGE_DAYS`` = N). A backup is *too old* when
   ``now - mtime`` is **greater than** N x 24 h (N x 86 400 s; UTC, so no
   daylight-saving days), compared to the microsecond. A backup exactly N x 24 h
   old is kept. A backup whose mtime lies in the future (clock skew, a copied
   file) has a negative age and is never too old.
3. **Count** (``BACKUP_MAX_COUNT`` = M). A backup ranked after the M newest
   (rank > M) is *beyond the count*.
4. **Floor** (``BACKUP_MIN_KEEP`` = K). The K newest backups are never deleted,
   whatever their age or the count, where "newest" is judged both ways: the K
   newest by mtime (rule 1) and the K newest by the creation time in their name.
   A file whose mtime disagrees with its name (touched, copied without its
   times, written under a wrong clock) therefore cannot push the most recently
   made backups out of the floor; the floor may keep up to 2 x K backups then.
   The floor wins over both limits, so more than M backups remain when K > M.
5. **Decision.** A backup is deleted when it is too old or beyond the count (or
   both) and not in the floor; every other backup is kept.
6. **Order of deletion**: oldest first (the reverse of rule 1), so a run that
   is interrupted has removed the least valuable backups.

Every limit must be at least 1: zero would mean "keep nothing" (or "keep no
day"), which is never what a user wants from a backup tool; :func:`plan`
refuses it even if a caller bypassed the settings' validation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from velocity_pg.store.catalog import Backup, human_age

DAY = timedelta(days=1)


class Rule(StrEnum):
    """Why a backup is deleted (``MAX_AGE``, ``MAX_COUNT``) or kept (``MIN_KEEP``)."""

    MAX_AGE = "max_age"
    MAX_COUNT = "max_count"
    MIN_KEEP = "min_keep"


@dataclass(frozen=True)
class Policy:
    """The retention limits; see the module docstring for what each means."""

    max_age_days: int
    max_count: int
    min_keep: int
    #: The settings' names, as reasons show them: ``BACKUP_MIN_KEEP`` locally,
    #: ``BACKUP_S3_MIN_KEEP`` off-site.
    settings_prefix: str = "BACKUP_"

    def __post_init__(self) -> None:
        for name in ("max_age_days", "max_count", "min_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"retention {name} must be a whole number >= 1, not {value!r}")

    @property
    def max_age(self) -> timedelta:
        return self.max_age_days * DAY

    def describe(self) -> str:
        """One line for humans: what will be kept."""
        return (
            f"keep backups modified within {self.max_age_days} day(s) "
            f"({self.max_age_days * 24} h), at most {self.max_count}, "
            f"and always the newest {self.min_keep}"
        )

    def to_json(self) -> dict[str, int]:
        return {
            "max_age_days": self.max_age_days,
            "max_count": self.max_count,
            "min_keep": self.min_keep,
        }


@dataclass(frozen=True)
class Decision:
    """What happens to one backup, and why."""

    backup: Backup
    delete: bool
    #: For a deletion: the limits it broke. For a keep: ``(MIN_KEEP,)`` when only
    #: the floor saved it from a limit it broke, else empty.
    rules: tuple[Rule, ...]
    reason: str
    rank: int  # 1 = newest by mtime among its database's backups
    age: timedelta  # now - mtime; negative when the mtime is in the future

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.backup.name,
            "database": self.backup.database,
            "size_bytes": self.backup.size,
            "modified_at": self.backup.mtime.isoformat(),
            "age_seconds": int(self.age.total_seconds()),
            "rank": self.rank,
            "action": "delete" if self.delete else "keep",
            "rules": [str(rule) for rule in self.rules],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Group:
    """The decisions for one database's backups: ``keep`` newest first, ``delete`` oldest
    first."""

    database: str
    keep: tuple[Decision, ...]
    delete: tuple[Decision, ...]

    @property
    def bytes_to_free(self) -> int:
        return sum(d.backup.size for d in self.delete)

    def to_json(self) -> dict[str, object]:
        return {
            "database": self.database,
            "kept": len(self.keep),
            "planned_deletions": len(self.delete),
            "bytes_to_free": self.bytes_to_free,
            "keep": [d.backup.name for d in self.keep],
            "delete": [d.backup.name for d in self.delete],
        }


@dataclass(frozen=True)
class Plan:
    """Every backup's decision, grouped by database (``groups``, by database name).

    ``keep`` is every group's keeps in group order, each newest first;
    ``delete`` is every deletion, oldest first across all databases.
    """

    policy: Policy
    now: datetime
    keep: tuple[Decision, ...]
    delete: tuple[Decision, ...]
    groups: tuple[Group, ...] = ()

    @property
    def bytes_to_free(self) -> int:
        return sum(d.backup.size for d in self.delete)


def newest_first_key(backup: Backup) -> tuple[datetime, str]:
    """Sort key of rule 1 (use with ``reverse=True`` for newest first)."""
    return (backup.mtime, backup.name)


def plan(backups: Iterable[Backup], policy: Policy, now: datetime) -> Plan:
    """Decide keep/delete for each backup at the moment ``now``: each database's backups
    on their own (see the module docstring)."""
    if now.tzinfo is None:
        raise ValueError("plan() needs an aware datetime for now")
    every = list(backups)
    names = [b.name for b in every]
    if len(set(names)) != len(names):
        raise ValueError("plan() was given the same backup twice")
    by_database: dict[str, list[Backup]] = {}
    for backup in every:
        by_database.setdefault(backup.database, []).append(backup)
    groups = tuple(
        plan_database(database, by_database[database], policy, now)
        for database in sorted(by_database)
    )
    keep = tuple(d for group in groups for d in group.keep)
    delete = tuple(
        sorted(
            (d for group in groups for d in group.delete),
            key=lambda d: newest_first_key(d.backup),
        )
    )
    return Plan(policy=policy, now=now, keep=keep, delete=delete, groups=groups)


def plan_database(database: str, backups: Iterable[Backup], policy: Policy, now: datetime) -> Group:
    """Rules 1-6 for the backups of one database."""
    ranked = sorted(backups, key=newest_first_key, reverse=True)
    by_creation = sorted(ranked, key=lambda b: (b.created, b.name), reverse=True)
    floor = {b.name for b in ranked[: policy.min_keep]}
    floor |= {b.name for b in by_creation[: policy.min_keep]}

    keep: list[Decision] = []
    delete: list[Decision] = []
    for rank, backup in enumerate(ranked, start=1):
        age = now - backup.mtime
        broken: list[Rule] = []
        if age > policy.max_age:
            broken.append(Rule.MAX_AGE)
        if rank > policy.max_count:
            broken.append(Rule.MAX_COUNT)
        limits = _describe_limits(broken, policy, rank, age)
        if backup.name in floor:
            why = (
                f"one of the newest {policy.min_keep}, always kept "
                f"({policy.settings_prefix}MIN_KEEP)"
            )
            reason = f"{why} although {limits}" if broken else f"{why}; {_describe_fresh(age)}"
            rules = (Rule.MIN_KEEP,) if broken else ()
            keep.append(Decision(backup, False, rules, reason, rank, age))
        elif broken:
            delete.append(Decision(backup, True, tuple(broken), limits, rank, age))
        else:
            reason = (
                f"within the limits: {_describe_fresh(age)}, "
                f"number {rank} of at most {policy.max_count}"
            )
            keep.append(Decision(backup, False, (), reason, rank, age))
    delete.reverse()  # oldest first
    return Group(database=database, keep=tuple(keep), delete=tuple(delete))


def _describe_fresh(age: timedelta) -> str:
    if age < timedelta(0):
        return f"modified {human_age(-age)} in the future (check the clock); not too old"
    return f"modified {human_age(age)} ago"


def _describe_limits(broken: list[Rule], policy: Policy, rank: int, age: timedelta) -> str:
    parts = []
    if Rule.MAX_AGE in broken:
        parts.append(
            f"older than {policy.max_age_days} day(s) (modified {human_age(age)} ago, "
            f"{policy.settings_prefix}MAX_AGE_DAYS)"
        )
    if Rule.MAX_COUNT in broken:
        parts.append(
            f"beyond the newest {policy.max_count} (number {rank}, "
            f"{policy.settings_prefix}MAX_COUNT)"
        )
    return " and ".join(parts)
