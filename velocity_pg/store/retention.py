"""Retention: which backups to keep and which to delete. Pure: no clock, no files.

:func:`plan` decides, for every backup, keep or delete, and why. A folder can
hold the backups of several databases (``<database>_YYYY-MM-DD_HHMMSS.dump``):
the rules below apply to **each database's backups separately**, so the
backups of one database never push another's out (its count, its age limit,
its floor, its tiers). The rules, for the backups of one database, exactly:

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
   (rank > M) is *beyond the count*. Rules 2 and 3 together are **the limits**:
   a backup neither too old nor beyond the count is kept by them.
4. **Floor** (``BACKUP_MIN_KEEP`` = K). The K newest backups are always kept,
   whatever their age or the count, where "newest" is judged both ways: the K
   newest by mtime (rule 1) and the K newest by the creation time in their name.
   A file whose mtime disagrees with its name (touched, copied without its
   times, written under a wrong clock) therefore cannot push the most recently
   made backups out of the floor; the floor may keep up to 2 x K backups then.
5. **Tiers** (``BACKUP_KEEP_DAILY``, ``_WEEKLY``, ``_MONTHLY``, ``_YEARLY``; 0 =
   that tier is off, the default), restic's ``--keep-daily`` etc.: each backup
   falls in one day, one ISO week (``2026-W53`` runs from 2026-12-28 to
   2027-01-03), one month and one year, taken in UTC from the **creation time in
   its name** (off-site: its manifest), never from the mtime. Going from the
   newest backup (by that time, ties by name) to the oldest, a tier of N keeps
   the newest backup of each of the last N periods **that have a backup**: a
   period without one does not count, so a week without backups does not use up
   a weekly. While a tier has found fewer than N periods, it also keeps the
   oldest backup, so a young project keeps its very first backup ("oldest").
   One backup can be kept by several tiers at once (daily, weekly, monthly).
   A backup named in the future (clock skew) counts like any other: it is the
   newest of its day.
6. **Pins** (``velocity-pg pin``, ``backup --pin``; the pin is in the backup's
   manifest, off-site in the copy's). A pinned backup is always kept, by a person's
   pin or an automatic one, whatever its age, rank or period; a pinned backup still
   counts towards the count and the floor like any other. A backup whose manifest
   cannot be read may be pinned: it is kept too ("pin unknown"), so a damaged
   manifest never lets a pinned backup go.
7. **Decision.** A backup is kept when **any** rule keeps it: the limits (rules
   2-3), the floor, a tier, a pin. It is deleted only when no rule keeps it. So a
   backup too old or beyond the count is still kept by the floor or a tier. Each
   decision names every rule that keeps the backup (:attr:`Decision.kept_by`),
   or, for a deletion, why each rule does not (:attr:`Decision.not_kept_by`).
8. **Order of deletion**: oldest first (the reverse of rule 1), so a run that
   is interrupted has removed the least valuable backups.

Every limit must be at least 1: zero would mean "keep nothing" (or "keep no
day"), which is never what a user wants from a backup tool; :func:`plan`
refuses it even if a caller bypassed the settings' validation. A tier of 0 is
off (a tier only ever keeps backups, never deletes one).

Suspect backups (``plan(..., suspects=...)``; a backup that looks wrong next to the
previous good one and that nobody accepted, see :mod:`velocity_pg.store.anomaly`) do
not count towards the floor or the count: rules 3 and 4 rank the **good** backups
only, so a run of suspect backups never pushes the last good ones out. A suspect
backup gets a :class:`Miss` from the floor (``suspect: ...``), and is kept by the
limits only while it is one of the ``max_count`` newest of *all* the database's
backups and not too old (the newest backup is never thrown away for looking wrong;
the suspect ones are kept beside the good ones, not instead of them), else a
:class:`Miss` ``suspect: ...`` from the limits too. The tiers and pins treat it like
any other backup.

Adding a rule (a pin, say) means: a function giving each backup of a database a
:class:`Keep` or a :class:`Miss` (see :func:`floor_verdicts`,
:func:`tier_verdicts`), and its place in :func:`plan_database`'s list; the
decision and its reasons follow from the verdicts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from velocity_pg.store.catalog import Backup, human_age
from velocity_pg.store.manifest import Pin

DAY = timedelta(days=1)


class Rule(StrEnum):
    """A rule of the plan: the limits a deleted backup broke (``MAX_AGE``, ``MAX_COUNT``),
    and the rules that keep a backup (``MIN_KEEP`` the floor, ``LIMITS`` within both
    limits, the tiers ``DAILY`` ... ``YEARLY``, ``PINNED`` a pin)."""

    MAX_AGE = "max_age"
    MAX_COUNT = "max_count"
    MIN_KEEP = "min_keep"
    LIMITS = "limits"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    PINNED = "pinned"


#: The tiers, shortest period first, and what one period is called.
TIERS: tuple[Rule, ...] = (Rule.DAILY, Rule.WEEKLY, Rule.MONTHLY, Rule.YEARLY)
_UNITS = {Rule.DAILY: "day", Rule.WEEKLY: "week", Rule.MONTHLY: "month", Rule.YEARLY: "year"}


def period(tier: Rule, created: datetime) -> str:
    """The period of ``tier`` a backup made at ``created`` falls in, in UTC: ``2026-12-05``,
    ``2026-W53`` (ISO week), ``2026-12``, ``2026``. Labels sort like the periods."""
    return _period_of_day(tier, created.astimezone(UTC).date())


@functools.lru_cache(maxsize=8192)
def _period_of_day(tier: Rule, day: date) -> str:
    if tier is Rule.DAILY:
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    if tier is Rule.WEEKLY:
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if tier is Rule.MONTHLY:
        return f"{day.year:04d}-{day.month:02d}"
    if tier is Rule.YEARLY:
        return f"{day.year:04d}"
    raise ValueError(f"{tier!r} is not a tier")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Tiers:
    """How many periods each tier keeps (rule 5 of the module docstring); 0 = off."""

    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for tier in TIERS:
            value = getattr(self, tier.value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"retention tier {tier} must be a whole number >= 0, not {value!r}"
                )

    def active(self) -> tuple[tuple[Rule, int], ...]:
        """The tiers that are on, shortest period first, with their counts."""
        return tuple((t, n) for t in TIERS if (n := getattr(self, t.value)) > 0)

    def describe(self) -> str:
        """``7 days, 4 weeks and 12 months``; "" when every tier is off."""
        parts = [_count(n, _UNITS[tier]) for tier, n in self.active()]
        if len(parts) <= 1:
            return "".join(parts)
        return ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class Policy:
    """The retention limits and tiers; see the module docstring for what each means."""

    max_age_days: int
    max_count: int
    min_keep: int
    #: The settings' names, as reasons show them: ``BACKUP_MIN_KEEP`` locally,
    #: ``BACKUP_S3_MIN_KEEP`` off-site.
    settings_prefix: str = "BACKUP_"
    tiers: Tiers = Tiers()

    def __post_init__(self) -> None:
        for name in ("max_age_days", "max_count", "min_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"retention {name} must be a whole number >= 1, not {value!r}")
        if not isinstance(self.tiers, Tiers):
            raise ValueError(f"retention tiers must be Tiers, not {self.tiers!r}")

    @property
    def max_age(self) -> timedelta:
        return self.max_age_days * DAY

    def setting(self, rule: Rule) -> str:
        """The setting behind a rule: ``BACKUP_MIN_KEEP``, ``BACKUP_S3_KEEP_DAILY`` ..."""
        if rule in TIERS:
            return f"{self.settings_prefix}KEEP_{rule.value.upper()}"
        suffix = "MAX_AGE_DAYS" if rule is Rule.MAX_AGE else rule.value.upper()
        return f"{self.settings_prefix}{suffix}"

    def describe(self) -> str:
        """One line for humans: what will be kept."""
        text = (
            f"keep backups modified within {self.max_age_days} day(s) "
            f"({self.max_age_days * 24} h), at most {self.max_count}, "
            f"and always the newest {self.min_keep}"
        )
        if self.tiers.active():
            text += (
                f"; also the newest backup of each of the last {self.tiers.describe()} "
                "that have one (UTC, by the time in its name)"
            )
        return text

    def to_json(self) -> dict[str, int]:
        return {
            "max_age_days": self.max_age_days,
            "max_count": self.max_count,
            "min_keep": self.min_keep,
            **{f"keep_{tier.value}": getattr(self.tiers, tier.value) for tier in TIERS},
        }


@dataclass(frozen=True)
class Keep:
    """One rule that keeps a backup: ``label`` says which, as a person says it
    (``daily 2026-12-05``, ``weekly 2026-W48``, ``floor``, ``newest 50, within 30 days``);
    ``text`` is how the reason line says it (with the setting's name)."""

    rule: Rule
    label: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"rule": str(self.rule), "label": self.label}


@dataclass(frozen=True)
class Miss:
    """Why one rule does not keep a backup."""

    rule: Rule
    why: str

    def to_json(self) -> dict[str, str]:
        return {"rule": str(self.rule), "why": self.why}


Verdict = Keep | Miss


@dataclass(frozen=True)
class Decision:
    """What happens to one backup, and why."""

    backup: Backup
    delete: bool
    #: For a deletion: the limits it broke. For a keep: the rules that saved it from
    #: a limit it broke (``(MIN_KEEP,)`` for the floor alone, tiers too), else empty.
    rules: tuple[Rule, ...]
    reason: str
    rank: int  # 1 = newest by mtime among its database's backups
    age: timedelta  # now - mtime; negative when the mtime is in the future
    #: Every rule that keeps it (empty for a deletion), in the order floor, limits, tiers,
    #: pin.
    kept_by: tuple[Keep, ...] = ()
    #: For a deletion: why each rule does not keep it.
    not_kept_by: tuple[Miss, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.backup.name,
            "database": self.backup.database,
            "size_bytes": self.backup.size,
            "created_at": self.backup.created.isoformat(),
            "modified_at": self.backup.mtime.isoformat(),
            "age_seconds": int(self.age.total_seconds()),
            "rank": self.rank,
            "action": "delete" if self.delete else "keep",
            "rules": [str(rule) for rule in self.rules],
            "kept_by": [keep.to_json() for keep in self.kept_by],
            "not_kept_by": [miss.to_json() for miss in self.not_kept_by],
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


def plan(
    backups: Iterable[Backup],
    policy: Policy,
    now: datetime,
    *,
    pins: Mapping[str, Pin] | None = None,
    pin_unknown: Mapping[str, str] | None = None,
    suspects: Mapping[str, str] | None = None,
) -> Plan:
    """Decide keep/delete for each backup at the moment ``now``: each database's backups
    on their own (see the module docstring). ``pins``: the pinned backups' pins, by name;
    ``pin_unknown``: the backups whose pin cannot be known (why), by name: both kept;
    ``suspects``: the suspect backups (why, one line), by name: they do not count towards
    the floor or the count."""
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
        plan_database(
            database,
            by_database[database],
            policy,
            now,
            pins=pins,
            pin_unknown=pin_unknown,
            suspects=suspects,
        )
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


def plan_database(
    database: str,
    backups: Iterable[Backup],
    policy: Policy,
    now: datetime,
    *,
    pins: Mapping[str, Pin] | None = None,
    pin_unknown: Mapping[str, str] | None = None,
    suspects: Mapping[str, str] | None = None,
) -> Group:
    """Rules 1-8 for the backups of one database."""
    ranked = sorted(backups, key=newest_first_key, reverse=True)
    suspect = suspects or {}
    # The floor and the count see the good backups only.
    good = [b for b in ranked if b.name not in suspect]
    good_rank = {b.name: n for n, b in enumerate(good, start=1)}
    floor = floor_verdicts(good, policy)
    for backup in ranked:
        if backup.name in suspect:
            floor[backup.name] = Miss(
                Rule.MIN_KEEP,
                f"suspect: not counted in the floor ({policy.setting(Rule.MIN_KEEP)})",
            )
    # Each rule's verdict on each backup, in the order reasons name them.
    rules: list[Mapping[str, Verdict]] = [floor]
    limits: dict[str, Verdict] = {}
    rules.append(limits)
    rules.extend(tier_verdicts(ranked, tier, n, policy) for tier, n in policy.tiers.active())
    rules.append(pin_verdicts(ranked, pins or {}, pin_unknown or {}))

    keep: list[Decision] = []
    delete: list[Decision] = []
    for rank, backup in enumerate(ranked, start=1):
        age = now - backup.mtime
        broken: list[Rule] = []
        # A good backup's number among the good ones; a suspect one's among all.
        counted = good_rank.get(backup.name, rank)
        if age > policy.max_age:
            broken.append(Rule.MAX_AGE)
        if counted > policy.max_count:
            broken.append(Rule.MAX_COUNT)
        broken_text = _describe_limits(broken, policy, counted, age)
        why_suspect = suspect.get(backup.name)
        if why_suspect is not None:
            broken_text = f"suspect: {why_suspect}; {broken_text}"
        if broken:
            limits[backup.name] = Miss(Rule.LIMITS, broken_text)
        elif why_suspect is not None:
            limits[backup.name] = Keep(
                Rule.LIMITS,
                f"newest {policy.max_count} of all, within {policy.max_age_days} days "
                "(suspect, not counted)",
                f"within the limits: {_describe_fresh(age)}, number {rank} of the "
                f"{policy.max_count} newest of all (suspect: {why_suspect}; not counted "
                "against the good ones)",
            )
        else:
            limits[backup.name] = Keep(
                Rule.LIMITS,
                f"newest {policy.max_count}, within {policy.max_age_days} days",
                f"within the limits: {_describe_fresh(age)}, "
                f"number {counted} of at most {policy.max_count}"
                + (" good backups" if suspect else ""),
            )
        verdicts = [rule[backup.name] for rule in rules]
        kept_by = tuple(v for v in verdicts if isinstance(v, Keep))
        if kept_by:
            reason = "; ".join(k.text for k in kept_by)
            if broken:
                reason += f" although {broken_text}"
            saved_by = tuple(k.rule for k in kept_by) if broken else ()
            keep.append(Decision(backup, False, saved_by, reason, rank, age, kept_by=kept_by))
        else:
            missed = tuple(v for v in verdicts if isinstance(v, Miss))
            # The limits first (what today's reasons said), then every other rule; "not
            # pinned" goes without saying in the text (``not_kept_by`` has it).
            ordered = sorted(missed, key=lambda m: m.rule is not Rule.LIMITS)
            reason = "; ".join(m.why for m in ordered if m.rule is not Rule.PINNED)
            delete.append(
                Decision(backup, True, tuple(broken), reason, rank, age, not_kept_by=missed)
            )
    delete.reverse()  # oldest first
    return Group(database=database, keep=tuple(keep), delete=tuple(delete))


def floor_verdicts(ranked: Sequence[Backup], policy: Policy) -> dict[str, Verdict]:
    """Rule 4: the ``min_keep`` newest by mtime (``ranked``, rule 1) and by name's time."""
    by_creation = sorted(ranked, key=lambda b: (b.created, b.name), reverse=True)
    floor = {b.name for b in ranked[: policy.min_keep]}
    floor |= {b.name for b in by_creation[: policy.min_keep]}
    setting = policy.setting(Rule.MIN_KEEP)
    kept = Keep(
        Rule.MIN_KEEP, "floor", f"one of the newest {policy.min_keep}, always kept ({setting})"
    )
    missed = Miss(Rule.MIN_KEEP, f"not one of the newest {policy.min_keep} ({setting})")
    return {b.name: kept if b.name in floor else missed for b in ranked}


def pin_verdicts(
    backups: Iterable[Backup], pins: Mapping[str, Pin], unknown: Mapping[str, str]
) -> dict[str, Verdict]:
    """Rule 6: a pinned backup is kept (``pinned: REASON``), and one whose pin cannot be
    known (an unreadable manifest) too."""
    missed = Miss(Rule.PINNED, "not pinned")
    verdicts: dict[str, Verdict] = {}
    for backup in backups:
        pin = pins.get(backup.name)
        why = unknown.get(backup.name)
        if pin is not None:
            label = pin.describe()
            verdicts[backup.name] = Keep(Rule.PINNED, label, label)
        elif why is not None:
            verdicts[backup.name] = Keep(
                Rule.PINNED,
                "pin unknown",
                f"pin unknown: {why}; kept until its manifest is readable",
            )
        else:
            verdicts[backup.name] = missed
    return verdicts


def tier_verdicts(
    backups: Iterable[Backup], tier: Rule, count: int, policy: Policy
) -> dict[str, Verdict]:
    """Rule 5 for one tier of ``count`` periods (restic's ``--keep-daily`` and so on)."""
    order = sorted(backups, key=lambda b: (b.created, b.name), reverse=True)
    setting = policy.setting(tier)
    unit = _UNITS[tier]
    verdicts: dict[str, Verdict] = {}
    misses: dict[str, Miss] = {}  # one per period: thousands of backups share a few
    last: str | None = None
    found = 0
    for backup in order:
        label = period(tier, backup.created)
        if label == last:
            miss = misses.get(f"in {label}")
            if miss is None:
                miss = misses[f"in {label}"] = Miss(tier, f"not the newest of {label} ({setting})")
            verdicts[backup.name] = miss
        elif found < count:
            found += 1
            last = label
            verdicts[backup.name] = Keep(tier, f"{tier} {label}", f"{tier} {label} ({setting})")
        else:
            miss = misses.get(label)
            if miss is None:
                why = f"{label} is not among the last {_count(count, unit)} with a backup"
                miss = misses[label] = Miss(tier, f"{why} ({setting})")
            verdicts[backup.name] = miss
    if order and found < count and isinstance(verdicts[order[-1].name], Miss):
        oldest = order[-1]
        label = f"{tier} {period(tier, oldest.created)}"
        so_far = f"oldest; {found} of {_count(count, unit)} so far"
        verdicts[oldest.name] = Keep(tier, f"{label} ({so_far})", f"{label} ({so_far}, {setting})")
    return verdicts


def _describe_fresh(age: timedelta) -> str:
    if age < timedelta(0):
        return f"modified {human_age(-age)} in the future (check the clock); not too old"
    return f"modified {human_age(age)} ago"


def _describe_limits(broken: list[Rule], policy: Policy, rank: int, age: timedelta) -> str:
    parts = []
    if Rule.MAX_AGE in broken:
        parts.append(
            f"older than {policy.max_age_days} day(s) (modified {human_age(age)} ago, "
            f"{policy.setting(Rule.MAX_AGE)})"
        )
    if Rule.MAX_COUNT in broken:
        parts.append(
            f"beyond the newest {policy.max_count} (number {rank}, "
            f"{policy.setting(Rule.MAX_COUNT)})"
        )
    return " and ".join(parts)
