"""Retention tiers (daily, weekly, monthly, yearly; issue 21), pure: no clock, no files.

Generated calendars (gaps, leap days, year boundaries, ISO week 53, several
databases) are planned and checked against a small independent model of
restic's rule; then hand-made cases pin the labels and the reasons.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from velocity_pg.errors import ConfigError
from velocity_pg.settings import settings_from_values
from velocity_pg.store.catalog import Backup, format_name
from velocity_pg.store.retention import TIERS, Keep, Policy, Rule, Tiers, period, plan

DAY = timedelta(days=1)
#: Limits that keep almost nothing (1 backup), so what else is kept is the tiers' doing.
TIGHT = (1, 1, 1)


def made(created: datetime, *, database: str = "velocity", mtime: datetime | None = None) -> Backup:
    """A backup named after ``created`` (UTC); its mtime a minute later unless given."""
    name = format_name(created, database)
    return Backup(
        name=name,
        path=Path("/backups") / name,
        created=created.replace(microsecond=0),
        mtime=mtime if mtime is not None else created + timedelta(minutes=1),
        size=100,
        database=database,
    )


def at(day: str, hour: int = 3, minute: int = 0) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).replace(
        hour=hour, minute=minute
    )


def daily(first: str, last: str, hour: int = 3, database: str = "velocity") -> list[Backup]:
    """One backup a day, ``first`` to ``last`` inclusive."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [
        made(at((start + i * DAY).isoformat(), hour), database=database)
        for i in range((end - start).days + 1)
    ]


def labels(result_plan: object, name: str) -> list[str]:
    for decision in (*result_plan.keep, *result_plan.delete):  # type: ignore[attr-defined]
        if decision.backup.name == name:
            return [k.label for k in decision.kept_by]
    raise KeyError(name)


def tier_labels(result_plan: object) -> dict[str, list[str]]:
    """Each kept backup's tier labels (not floor or limits)."""
    found: dict[str, list[str]] = {}
    for decision in result_plan.keep:  # type: ignore[attr-defined]
        tiers = [k.label for k in decision.kept_by if k.rule in TIERS]
        if tiers:
            found[decision.backup.name] = tiers
    return found


def policy(daily: int = 0, weekly: int = 0, monthly: int = 0, yearly: int = 0) -> Policy:
    return Policy(*TIGHT, tiers=Tiers(daily, weekly, monthly, yearly))


# -- periods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at("2024-02-29"), ("2024-02-29", "2024-W09", "2024-02", "2024")),
        (at("2026-12-27", 23, 59), ("2026-12-27", "2026-W52", "2026-12", "2026")),
        (at("2026-12-28", 0, 0), ("2026-12-28", "2026-W53", "2026-12", "2026")),
        (at("2027-01-03", 23, 59), ("2027-01-03", "2026-W53", "2027-01", "2027")),
        (at("2027-01-04"), ("2027-01-04", "2027-W01", "2027-01", "2027")),
        # ISO week-year 2026 starts in 2025: its first week holds 2025-12-29.
        (at("2025-12-29"), ("2025-12-29", "2026-W01", "2025-12", "2025")),
        # Periods are UTC: 23:30 at UTC-2 on New Year's Eve is already the next year.
        (
            datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
            ("2027-01-01", "2026-W53", "2027-01", "2027"),
        ),
    ],
)
def test_periods_are_utc_days_iso_weeks_months_years(
    moment: datetime, expected: tuple[str, ...]
) -> None:
    assert tuple(period(tier, moment) for tier in TIERS) == expected


def test_iso_week_53_holds_seven_days_across_the_new_year() -> None:
    days = daily("2026-12-28", "2027-01-03")
    assert {period(Rule.WEEKLY, b.created) for b in days} == {"2026-W53"}
    assert len({period(Rule.YEARLY, b.created) for b in days}) == 2


# -- an independent model of the rule, checked on generated calendars -----------------


def model(backups: list[Backup], tier: Rule, count: int) -> dict[str, str]:
    """Tier ``tier`` of ``count`` by its definition: name -> label of what it keeps."""
    if count == 0 or not backups:
        return {}
    newest_of: dict[str, Backup] = {}
    for backup in backups:
        key = period(tier, backup.created)
        best = newest_of.get(key)
        if best is None or (backup.created, backup.name) > (best.created, best.name):
            newest_of[key] = backup
    last = sorted(newest_of, reverse=True)[:count]  # labels sort like their periods
    kept = {newest_of[p].name: f"{tier} {p}" for p in last}
    if len(newest_of) < count:
        oldest = min(backups, key=lambda b: (b.created, b.name))
        kept.setdefault(oldest.name, f"{tier} {period(tier, oldest.created)} (oldest")
    return kept


def calendar(rng: random.Random, database: str) -> list[Backup]:
    """Some years of backups around leap days and ISO week 53, with gaps and bursts."""
    start = datetime(rng.choice([2023, 2024, 2026]), rng.randint(1, 12), 1, tzinfo=UTC)
    found: dict[str, Backup] = {}
    moment = start
    for _ in range(rng.randint(0, 400)):
        step = rng.choice(
            [DAY, DAY, DAY, timedelta(hours=rng.randint(1, 12)), DAY * rng.randint(2, 90)]
        )
        moment += step + timedelta(seconds=rng.randint(0, 3599))
        backup = made(moment, database=database)
        found[backup.name] = backup
    return list(found.values())


@pytest.mark.parametrize("seed", range(120))
def test_tiers_match_the_model_on_generated_calendars(seed: int) -> None:
    rng = random.Random(seed)
    databases = rng.sample(["velocity", "my_app", "a/b"], rng.randint(1, 3))
    backups = [b for db in databases for b in calendar(rng, db)]
    tiers = Tiers(*(rng.choice([0, 1, 2, 3, 7, 12, 53]) for _ in TIERS))
    limits = (rng.randint(1, 400), rng.randint(1, 60), rng.randint(1, 3))
    result = plan(backups, Policy(*limits, tiers=tiers), at("2029-06-01"))

    decisions = {d.backup.name: d for d in (*result.keep, *result.delete)}
    assert sorted(decisions) == sorted(b.name for b in backups)
    for database in databases:
        mine = [b for b in backups if b.database == database]
        for tier, count in ((t, getattr(tiers, t.value)) for t in TIERS):
            expected = model(mine, tier, count)
            got = {
                b.name: k.label for b in mine for k in decisions[b.name].kept_by if k.rule is tier
            }
            assert set(got) == set(expected), (database, tier, count)
            for name, label in expected.items():
                assert got[name].startswith(label)
    for decision in result.delete:
        # Deleted only when no rule keeps it, and each rule says why not.
        assert not decision.kept_by
        rules = {m.rule for m in decision.not_kept_by}
        assert rules == {Rule.MIN_KEEP, Rule.LIMITS, Rule.PINNED} | {t for t, _ in tiers.active()}
    for decision in result.keep:
        assert decision.kept_by
        # The limits and the floor decide as without tiers; tiers only add.
    without = plan(backups, Policy(*limits), at("2029-06-01"))
    assert {d.backup.name for d in without.keep} <= {d.backup.name for d in result.keep}
    tiered = {name for name, d in decisions.items() if any(k.rule in TIERS for k in d.kept_by)}
    assert {d.backup.name for d in result.keep} == ({d.backup.name for d in without.keep} | tiered)


# -- hand-made calendars --------------------------------------------------------------


def test_periods_without_a_backup_do_not_count() -> None:
    """Seven dailies reach back past a ten-day gap; three monthlies skip empty months."""
    backups = [*daily("2026-03-01", "2026-03-04"), *daily("2026-03-15", "2026-03-17")]
    backups += [made(at("2026-01-10")), made(at("2025-09-30"))]
    result = plan(backups, policy(daily=7, monthly=3), at("2026-03-17", 4))
    assert tier_labels(result) == {
        format_name(at("2026-03-17"), "velocity"): ["daily 2026-03-17", "monthly 2026-03"],
        format_name(at("2026-03-16"), "velocity"): ["daily 2026-03-16"],
        format_name(at("2026-03-15"), "velocity"): ["daily 2026-03-15"],
        format_name(at("2026-03-04"), "velocity"): ["daily 2026-03-04"],
        format_name(at("2026-03-03"), "velocity"): ["daily 2026-03-03"],
        format_name(at("2026-03-02"), "velocity"): ["daily 2026-03-02"],
        format_name(at("2026-03-01"), "velocity"): ["daily 2026-03-01"],
        format_name(at("2026-01-10"), "velocity"): ["monthly 2026-01"],
        format_name(at("2025-09-30"), "velocity"): ["monthly 2025-09"],
    }
    assert [d.backup.name for d in result.delete] == []


def test_the_newest_backup_of_a_day_is_its_daily() -> None:
    burst = [made(at("2026-05-05", h)) for h in (1, 9, 17)] + [made(at("2026-05-04", 23))]
    result = plan(burst, policy(daily=2), at("2026-05-05", 18))
    assert tier_labels(result) == {
        burst[2].name: ["daily 2026-05-05"],
        burst[3].name: ["daily 2026-05-04"],
    }
    gone = {d.backup.name: d for d in result.delete}
    assert set(gone) == {burst[0].name, burst[1].name}
    (miss,) = [m for m in gone[burst[0].name].not_kept_by if m.rule is Rule.DAILY]
    assert miss.why == "not the newest of 2026-05-05 (BACKUP_KEEP_DAILY)"


def test_leap_day_is_a_day_of_its_own() -> None:
    backups = daily("2024-02-27", "2024-03-01")
    result = plan(backups, policy(daily=3, monthly=2), at("2024-03-01", 5))
    assert tier_labels(result) == {
        backups[3].name: ["daily 2024-03-01", "monthly 2024-03"],
        backups[2].name: ["daily 2024-02-29", "monthly 2024-02"],
        backups[1].name: ["daily 2024-02-28"],
    }
    (gone,) = result.delete
    assert gone.backup is backups[0]
    assert "2024-02-27 is not among the last 3 days with a backup (BACKUP_KEEP_DAILY)" in (
        gone.reason
    )
    assert "not the newest of 2024-02 (BACKUP_KEEP_MONTHLY)" in gone.reason


def test_week_53_and_the_year_boundary() -> None:
    backups = daily("2026-12-20", "2027-01-05")
    result = plan(backups, policy(weekly=3, yearly=2), at("2027-01-05", 4))
    by_day = {b.created.date().isoformat(): b.name for b in backups}
    assert tier_labels(result) == {
        by_day["2027-01-05"]: ["weekly 2027-W01", "yearly 2027"],
        by_day["2027-01-03"]: ["weekly 2026-W53"],
        by_day["2026-12-31"]: ["yearly 2026"],
        by_day["2026-12-27"]: ["weekly 2026-W52"],
    }
    gone = {d.backup.name: d.reason for d in result.delete}
    assert (
        "2026-W51 is not among the last 3 weeks with a backup (BACKUP_KEEP_WEEKLY)"
        in (gone[by_day["2026-12-20"]])
    )


def test_a_young_project_keeps_its_oldest_backup() -> None:
    """Fewer months than asked for: the very first backup stays as well."""
    backups = daily("2026-11-20", "2026-12-05")
    result = plan(backups, policy(monthly=12, yearly=3), at("2026-12-05", 4))
    first, last_november, newest = backups[0], backups[10], backups[-1]
    assert tier_labels(result) == {
        newest.name: ["monthly 2026-12", "yearly 2026"],
        last_november.name: ["monthly 2026-11"],
        first.name: [
            "monthly 2026-11 (oldest; 2 of 12 months so far)",
            "yearly 2026 (oldest; 1 of 3 years so far)",
        ],
    }
    assert len(result.keep) == 3
    # Once the tier is full, the oldest goes like any other backup.
    grown = daily("2026-01-01", "2026-12-05")
    result = plan(grown, policy(monthly=12), at("2026-12-05", 4))
    assert grown[0].name not in tier_labels(result)
    assert len(result.keep) == 12


def test_a_single_period_short_of_n_keeps_the_oldest_too() -> None:
    """restic's rule: the oldest is kept while the tier has counts left."""
    backups = daily("2026-06-01", "2026-06-03")
    result = plan(backups, policy(weekly=2), at("2026-06-03", 4))
    assert tier_labels(result) == {
        backups[2].name: ["weekly 2026-W23"],
        backups[0].name: ["weekly 2026-W23 (oldest; 1 of 2 weeks so far)"],
    }
    # Exactly N periods: no extra backup.
    backups = [*daily("2026-05-31", "2026-05-31"), *backups]  # a Sunday: week 22
    result = plan(backups, policy(weekly=2), at("2026-06-03", 4))
    assert tier_labels(result) == {
        backups[3].name: ["weekly 2026-W23"],
        backups[0].name: ["weekly 2026-W22"],
    }


def test_each_database_has_its_own_tiers() -> None:
    busy = daily("2026-10-01", "2026-12-05", database="velocity")
    rare = [made(at(day), database="legacy") for day in ("2026-06-01", "2026-06-30", "2026-08-15")]
    result = plan([*busy, *rare], policy(monthly=3), at("2026-12-05", 4))
    groups = {g.database: g for g in result.groups}
    assert sorted(d.backup.name for d in groups["legacy"].keep) == sorted(b.name for b in rare)
    assert [labels(result, d.backup.name) for d in groups["legacy"].keep] == [
        ["floor", "monthly 2026-08"],
        ["monthly 2026-06"],
        ["monthly 2026-06 (oldest; 2 of 3 months so far)"],
    ]
    assert [labels(result, d.backup.name) for d in groups["velocity"].keep] == [
        ["floor", "newest 1, within 1 days", "monthly 2026-12"],
        ["monthly 2026-11"],
        ["monthly 2026-10"],
    ]


def test_periods_come_from_the_name_never_the_mtime() -> None:
    """Copied in one go (every mtime the same): each day still has its daily."""
    copied = at("2026-12-06", 12)
    backups = [made(at(day), mtime=copied) for day in ("2026-12-01", "2026-12-03", "2026-12-05")]
    result = plan(backups, policy(daily=3), at("2026-12-06", 13))
    assert sorted(name for name in tier_labels(result)) == sorted(b.name for b in backups)


def test_a_tier_overrides_the_limits_and_says_so() -> None:
    backups = daily("2026-11-01", "2026-12-05")
    result = plan(backups, Policy(30, 5, 1, tiers=Tiers(weekly=4)), at("2026-12-05", 4))
    kept = {d.backup.created.date().isoformat(): d for d in result.keep}
    assert sorted(kept) == [
        "2026-11-15",
        "2026-11-22",
        "2026-11-29",
        "2026-12-01",
        "2026-12-02",
        "2026-12-03",
        "2026-12-04",
        "2026-12-05",
    ]
    sunday = kept["2026-11-22"]
    assert sunday.rules == (Rule.WEEKLY,)
    assert sunday.reason == (
        "weekly 2026-W47 (BACKUP_KEEP_WEEKLY) although beyond the newest 5 "
        "(number 14, BACKUP_MAX_COUNT)"
    )
    newest = kept["2026-12-05"]
    assert [k.label for k in newest.kept_by] == [
        "floor",
        "newest 5, within 30 days",
        "weekly 2026-W49",
    ]
    assert newest.rules == ()  # within the limits: nothing had to save it
    assert newest.reason.endswith("number 1 of at most 5; weekly 2026-W49 (BACKUP_KEEP_WEEKLY)")
    gone = result.delete[-1]
    assert gone.backup.created.date().isoformat() == "2026-11-30"
    assert gone.reason == (
        "beyond the newest 5 (number 6, BACKUP_MAX_COUNT); "
        "not one of the newest 1 (BACKUP_MIN_KEEP); "
        "not the newest of 2026-W49 (BACKUP_KEEP_WEEKLY)"
    )
    assert gone.to_json()["not_kept_by"] == [
        {"rule": "min_keep", "why": "not one of the newest 1 (BACKUP_MIN_KEEP)"},
        {"rule": "limits", "why": "beyond the newest 5 (number 6, BACKUP_MAX_COUNT)"},
        {"rule": "weekly", "why": "not the newest of 2026-W49 (BACKUP_KEEP_WEEKLY)"},
        {"rule": "pinned", "why": "not pinned"},
    ]
    assert sunday.to_json()["kept_by"] == [{"rule": "weekly", "label": "weekly 2026-W47"}]
    assert sunday.to_json()["created_at"] == "2026-11-22T03:00:00+00:00"


def test_off_site_reasons_name_the_off_site_tier_settings() -> None:
    backups = daily("2026-11-01", "2026-12-05")
    off = Policy(1, 1, 1, settings_prefix="BACKUP_S3_", tiers=Tiers(monthly=2))
    result = plan(backups, off, at("2026-12-05", 4))
    assert "(BACKUP_S3_KEEP_MONTHLY)" in result.keep[1].reason
    assert "BACKUP_KEEP" not in " ".join(d.reason for d in (*result.keep, *result.delete))


def test_tiers_off_plan_exactly_as_before() -> None:
    rng = random.Random(3)
    backups = calendar(rng, "velocity")
    assert plan(backups, Policy(20, 15, 2, tiers=Tiers()), at("2029-01-01")) == plan(
        backups, Policy(20, 15, 2), at("2029-01-01")
    )


def test_policy_describes_and_serialises_its_tiers() -> None:
    both = Policy(30, 50, 1, tiers=Tiers(7, 4, 12, 0))
    assert both.describe().endswith(
        "; also the newest backup of each of the last 7 days, 4 weeks and 12 months "
        "that have one (UTC, by the time in its name)"
    )
    assert "also" not in Policy(30, 50, 1).describe()
    assert Tiers(yearly=1).describe() == "1 year"
    assert both.to_json() == {
        "max_age_days": 30,
        "max_count": 50,
        "min_keep": 1,
        "keep_daily": 7,
        "keep_weekly": 4,
        "keep_monthly": 12,
        "keep_yearly": 0,
    }


@pytest.mark.parametrize("bad", [-1, True, 1.5, "7"])
def test_tiers_refuse_what_is_not_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a whole number >= 0"):
        Tiers(daily=bad)  # type: ignore[arg-type]


def test_keep_is_what_the_json_says() -> None:
    assert Keep(Rule.DAILY, "daily 2026-12-05", "x").to_json() == {
        "rule": "daily",
        "label": "daily 2026-12-05",
    }


# -- settings -------------------------------------------------------------------------


def test_tier_settings_default_to_off_and_off_site_to_the_local_values() -> None:
    plain = settings_from_values({})
    assert plain.tiers == Tiers()
    values = {
        "BACKUP_KEEP_DAILY": "7",
        "BACKUP_KEEP_WEEKLY": "4",
        "BACKUP_KEEP_MONTHLY": "012",
        "BACKUP_S3_URL": "s3://bucket",
        "BACKUP_S3_KEEP_WEEKLY": "0",
        "BACKUP_S3_KEEP_YEARLY": "5",
    }
    settings = settings_from_values(values)
    assert settings.tiers == Tiers(7, 4, 12, 0)
    assert settings.offsite is not None
    assert settings.offsite.tiers == Tiers(7, 0, 12, 5)


@pytest.mark.parametrize("name", ["BACKUP_KEEP_MONTHLY", "BACKUP_S3_KEEP_DAILY"])
@pytest.mark.parametrize(("text", "problem"), [("-1", "out of range"), ("7d", "not a whole")])
def test_bad_tier_settings_are_refused_before_anything_runs(
    name: str, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_values({"BACKUP_S3_URL": "s3://bucket", name: text})
    assert info.value.message.startswith(f"{name}={text!r} ")
    assert problem in info.value.message and "between 0 and" in info.value.message
    assert info.value.exit_status == 2


# -- docs/retention.md's numbers ------------------------------------------------------


def a_year_of_dailies(policy: Policy, days: int = 730) -> tuple[int, int, int]:
    """Back up at 03:00 UTC each day (the template's @daily), the dump finished 2 min later,
    cleanup a minute after that. Returns (most backups kept at once in the second year,
    kept at its end, age in days of the oldest kept then)."""
    start = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    kept: list[Backup] = []
    most = 0
    for day in range(days):
        created = start + day * DAY
        kept.append(made(created, mtime=created + timedelta(minutes=2)))
        result = plan(kept, policy, created + timedelta(minutes=3))
        gone = {d.backup.name for d in result.delete}
        kept = [b for b in kept if b.name not in gone]
        if day >= 365:
            most = max(most, len(kept))
    oldest = min(b.created for b in kept)
    return most, len(kept), (start + (days - 1) * DAY - oldest).days


@pytest.mark.parametrize(
    ("limits", "tiers", "expected"),
    [
        ((30, 50, 1), Tiers(), (30, 30, 29)),  # today's defaults
        ((30, 50, 1), Tiers(7, 4, 12), (41, 41, 334)),  # defaults plus tiers
        ((30, 7, 1), Tiers(7, 4, 12), (21, 20, 334)),  # BACKUP_MAX_COUNT=7 plus tiers
        # Yearly 3, at the end of the second year: 2026's last backup, and (2 of 3 years
        # so far) the very first one.
        ((30, 7, 1), Tiers(7, 4, 12, 3), (23, 22, 729)),
    ],
)
def test_the_readme_numbers_for_a_daily_schedule(
    limits: tuple[int, int, int], tiers: Tiers, expected: tuple[int, int, int]
) -> None:
    assert a_year_of_dailies(Policy(*limits, tiers=tiers)) == expected
