"""The retention plan, table-driven: a fixed "now", no clock, no files, no database."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from velocity_pg.store.catalog import Backup, format_name
from velocity_pg.store.retention import Policy, Rule, plan

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def backup(
    age: timedelta,
    *,
    created_age: timedelta | None = None,
    size: int = 100,
    database: str = "velocity",
) -> Backup:
    """A backup of ``database`` modified ``age`` ago; named (by default) one minute before."""
    mtime = NOW - age
    created = (NOW - created_age) if created_age is not None else mtime - timedelta(minutes=1)
    name = format_name(created, database)
    return Backup(
        name=name,
        path=Path("/backups") / name,
        created=created.replace(microsecond=0),
        mtime=mtime,
        size=size,
        database=database,
    )


def ages(*days: float) -> list[Backup]:
    return [backup(timedelta(days=d)) for d in days]


def d(days: float) -> timedelta:
    return timedelta(days=days)


@dataclass(frozen=True)
class Case:
    id: str
    backups: list[Backup]
    policy: Policy
    #: Ages (as given) of the backups to delete, in deletion order, with their rules.
    delete: list[tuple[timedelta, set[Rule]]]
    #: Ages of the kept backups the floor saved from a limit.
    floor_saved: list[timedelta]


P = Policy  # (max_age_days, max_count, min_keep)

CASES = [
    Case("empty folder", [], P(30, 50, 1), [], []),
    Case("one fresh backup", ages(0.5), P(30, 50, 1), [], []),
    Case(
        "age only",
        ages(1, 10, 29, 31, 45),
        P(30, 50, 1),
        [(d(45), {Rule.MAX_AGE}), (d(31), {Rule.MAX_AGE})],
        [],
    ),
    Case(
        "count only",
        ages(1, 2, 3, 4, 5),
        P(365, 3, 1),
        [(d(5), {Rule.MAX_COUNT}), (d(4), {Rule.MAX_COUNT})],
        [],
    ),
    Case(
        "age and count together",
        ages(1, 2, 3, 40, 50, 60),
        P(30, 4, 1),
        [
            (d(60), {Rule.MAX_AGE, Rule.MAX_COUNT}),
            (d(50), {Rule.MAX_AGE, Rule.MAX_COUNT}),
            (d(40), {Rule.MAX_AGE}),
        ],
        [],
    ),
    Case(
        "floor keeps the newest when all are too old (a stopped backup job)",
        ages(40, 50, 60),
        P(30, 50, 1),
        [(d(60), {Rule.MAX_AGE}), (d(50), {Rule.MAX_AGE})],
        [d(40)],
    ),
    Case(
        "floor of two",
        ages(40, 50, 60),
        P(30, 50, 2),
        [(d(60), {Rule.MAX_AGE})],
        [d(40), d(50)],
    ),
    Case(
        "floor larger than the count wins over the count",
        ages(1, 2, 3, 4, 5),
        P(365, 2, 4),
        [(d(5), {Rule.MAX_COUNT})],
        [d(3), d(4)],
    ),
    Case(
        "floor larger than the folder keeps everything",
        ages(100, 200),
        P(1, 1, 5),
        [],
        [d(100), d(200)],
    ),
    Case(
        "exactly at the age limit is kept; a microsecond more is deleted",
        [
            backup(d(0.1)),
            backup(d(30) - US, created_age=d(31)),  # distinct names: the same second otherwise
            backup(d(30), created_age=d(32)),
            backup(d(30) + US, created_age=d(33)),
        ],
        P(30, 50, 1),
        [(d(30) + US, {Rule.MAX_AGE})],
        [],
    ),
    Case(
        "one day means 24 h: 24 h is kept, 24 h + 1 s is not",
        [backup(d(0.5)), backup(timedelta(hours=24)), backup(timedelta(hours=24, seconds=1))],
        P(1, 50, 1),
        [(timedelta(hours=24, seconds=1), {Rule.MAX_AGE})],
        [],
    ),
    Case(
        "exactly at the count is kept",
        ages(1, 2, 3),
        P(30, 3, 1),
        [],
        [],
    ),
    Case(
        "one over the count: the oldest goes",
        ages(1, 2, 3, 4),
        P(30, 3, 1),
        [(d(4), {Rule.MAX_COUNT})],
        [],
    ),
    Case(
        "count of one with the default floor",
        ages(1, 2, 3),
        P(30, 1, 1),
        [(d(3), {Rule.MAX_COUNT}), (d(2), {Rule.MAX_COUNT})],
        [],
    ),
    Case(
        "mtime in the future is never too old and counts as newest",
        [backup(-timedelta(hours=2)), *ages(40, 50)],
        P(30, 50, 1),
        [(d(50), {Rule.MAX_AGE}), (d(40), {Rule.MAX_AGE})],
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    result = plan(case.backups, case.policy, NOW)
    by_name = {b.name: NOW - b.mtime for b in case.backups}
    assert [(by_name[x.backup.name], set(x.rules)) for x in result.delete] == case.delete
    assert all(x.delete for x in result.delete)
    assert not any(x.delete for x in result.keep)
    saved = [by_name[x.backup.name] for x in result.keep if x.rules == (Rule.MIN_KEEP,)]
    assert saved == case.floor_saved
    # Every backup gets exactly one decision.
    decided = [x.backup.name for x in (*result.keep, *result.delete)]
    assert sorted(decided) == sorted(by_name)
    # Keep is newest first, delete oldest first.
    assert [x.backup.mtime for x in result.keep] == sorted(
        (x.backup.mtime for x in result.keep), reverse=True
    )
    assert [x.backup.mtime for x in result.delete] == sorted(x.backup.mtime for x in result.delete)


def test_ties_in_mtime_are_broken_by_name() -> None:
    """Same mtime (e.g. copied in one go): the later name is the newer backup."""
    mtime_age = d(40)
    same = [backup(mtime_age, created_age=d(40 + i)) for i in (3, 1, 2, 4)]
    for order in (same, list(reversed(same)), sorted(same, key=lambda b: b.name)):
        result = plan(order, P(30, 50, 1), NOW)
        assert [x.backup.name for x in result.keep] == [max(b.name for b in same)]
        assert [x.backup.name for x in result.delete] == sorted(b.name for b in same)[:-1]
        assert [x.rank for x in result.delete] == [4, 3, 2]
    # The count rule uses the same order.
    result = plan(same, P(365, 2, 1), NOW)
    assert sorted(x.backup.name for x in result.keep) == sorted(b.name for b in same)[2:]


def test_floor_judges_newest_by_name_and_by_mtime() -> None:
    """A file whose mtime disagrees with its name cannot push the real newest out."""
    made_yesterday_old_mtime = backup(d(40), created_age=d(1))  # e.g. `touch -d` or cp -p
    made_long_ago_fresh_mtime = backup(timedelta(hours=1), created_age=d(50))  # cp without -p
    ordinary_old = backup(d(45))
    result = plan(
        [made_yesterday_old_mtime, made_long_ago_fresh_mtime, ordinary_old], P(30, 50, 1), NOW
    )
    kept = {x.backup.name for x in result.keep}
    assert kept == {made_yesterday_old_mtime.name, made_long_ago_fresh_mtime.name}
    assert [x.backup.name for x in result.delete] == [ordinary_old.name]
    saved = next(x for x in result.keep if x.backup is made_yesterday_old_mtime)
    assert saved.rules == (Rule.MIN_KEEP,)
    assert "BACKUP_MIN_KEEP" in saved.reason and "older than 30 day(s)" in saved.reason


def test_future_mtime_does_not_steal_the_floor_from_the_newest_by_name() -> None:
    """A stray file dated in the future and a stopped backup job: the real newest stays."""
    future = backup(-d(365), created_age=d(400))  # named a year ago, mtime a year ahead
    real = ages(35, 40, 50)
    result = plan([future, *real], P(30, 50, 1), NOW)
    kept = {x.backup.name for x in result.keep}
    assert kept == {future.name, real[0].name}
    fut = next(x for x in result.keep if x.backup is future)
    assert "in the future" in fut.reason
    assert fut.age < timedelta(0)


def test_reasons_name_the_setting() -> None:
    result = plan(ages(1, 2, 40), P(30, 2, 1), NOW)
    (gone,) = result.delete
    assert gone.reason == (
        "older than 30 day(s) (modified 40d 0h ago, BACKUP_MAX_AGE_DAYS) and "
        "beyond the newest 2 (number 3, BACKUP_MAX_COUNT); "
        "not one of the newest 1 (BACKUP_MIN_KEEP)"
    )
    newest, second = result.keep
    # Every rule that keeps it: the floor and the limits.
    assert newest.reason == (
        "one of the newest 1, always kept (BACKUP_MIN_KEEP); "
        "within the limits: modified 1d 0h ago, number 1 of at most 2"
    )
    assert [k.label for k in newest.kept_by] == ["floor", "newest 2, within 30 days"]
    assert [m.rule for m in gone.not_kept_by] == [Rule.MIN_KEEP, Rule.LIMITS, Rule.PINNED]
    assert second.reason == "within the limits: modified 2d 0h ago, number 2 of at most 2"
    assert result.bytes_to_free == 100


def test_off_site_reasons_name_the_off_site_settings() -> None:
    result = plan(ages(1, 2, 40), Policy(30, 2, 1, settings_prefix="BACKUP_S3_"), NOW)
    (gone,) = result.delete
    assert "BACKUP_S3_MAX_AGE_DAYS" in gone.reason and "BACKUP_S3_MAX_COUNT" in gone.reason
    assert "(BACKUP_S3_MIN_KEEP)" in result.keep[0].reason


@pytest.mark.parametrize(
    "values", [(0, 50, 1), (30, 0, 1), (30, 50, 0), (-1, 50, 1), (30, 50, True)]
)
def test_policy_refuses_zero_and_negative(values: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        Policy(*values)


def test_plan_refuses_naive_now_and_duplicates() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan([], P(30, 50, 1), NOW.replace(tzinfo=None))
    one = backup(d(1))
    with pytest.raises(ValueError, match="same backup twice"):
        plan([one, one], P(30, 50, 1), NOW)


def test_plan_is_pure_and_independent_of_input_order() -> None:
    rng = random.Random(7)
    items = ages(*(rng.uniform(0, 90) for _ in range(40)))
    first = plan(items, P(20, 15, 3), NOW)
    for _ in range(5):
        rng.shuffle(items)
        assert plan(items, P(20, 15, 3), NOW) == first


@pytest.mark.parametrize("seed", range(200))
def test_invariants_on_random_folders(seed: int) -> None:
    """Whatever the settings, the clock and the files: the floor and the limits hold."""
    rng = random.Random(seed)
    n = rng.randint(0, 30)
    items: list[Backup] = []
    names: set[str] = set()
    for _ in range(n):
        mtime_age = timedelta(hours=rng.choice([rng.uniform(-200, 2000), 24 * rng.randint(0, 60)]))
        created_age = rng.choice([None, timedelta(hours=rng.uniform(-100, 2000))])
        item = backup(mtime_age, created_age=created_age)
        if item.name not in names:
            names.add(item.name)
            items.append(item)
    policy = P(rng.randint(1, 60), rng.randint(1, 40), rng.randint(1, 10))
    result = plan(items, policy, NOW)

    ranked = sorted(items, key=lambda b: (b.mtime, b.name), reverse=True)
    by_name = sorted(items, key=lambda b: b.name, reverse=True)
    must_keep = {b.name for b in ranked[: policy.min_keep]} | {
        b.name for b in by_name[: policy.min_keep]
    }
    kept = {x.backup.name for x in result.keep}
    assert must_keep <= kept
    assert len(result.keep) >= min(policy.min_keep, len(items))
    for x in result.delete:
        too_old = NOW - x.backup.mtime > policy.max_age
        beyond = x.rank > policy.max_count
        assert too_old or beyond
        assert set(x.rules) == {
            r for r, on in ((Rule.MAX_AGE, too_old), (Rule.MAX_COUNT, beyond)) if on
        }
    for x in result.keep:
        if x.backup.name not in must_keep:
            assert NOW - x.backup.mtime <= policy.max_age
            assert x.rank <= policy.max_count


def test_each_database_is_planned_on_its_own() -> None:
    """Count, age and floor apply per database: one's backups never push another's out."""
    busy = [backup(d(i), database="velocity") for i in range(1, 6)]  # 5 fresh ones
    quiet = [backup(d(i), database="my_app") for i in (2, 40, 50)]  # one fresh, two old
    rare = [backup(d(100), database="a/b")]  # one, very old: the floor keeps it
    result = plan([*busy, *quiet, *rare], P(30, 3, 1), NOW)

    assert [g.database for g in result.groups] == ["a/b", "my_app", "velocity"]
    by_db = {g.database: g for g in result.groups}
    assert [x.backup for x in by_db["velocity"].keep] == busy[:3]
    assert [x.backup for x in by_db["velocity"].delete] == [busy[4], busy[3]]
    assert [x.backup for x in by_db["my_app"].keep] == [quiet[0]]
    assert [x.backup for x in by_db["my_app"].delete] == [quiet[2], quiet[1]]
    assert [x.backup for x in by_db["a/b"].keep] == rare
    assert by_db["a/b"].keep[0].rules == (Rule.MIN_KEEP,)
    assert not by_db["a/b"].delete
    # Ranks count within the database: my_app's second backup is its number 2.
    assert {x.backup.name: x.rank for x in by_db["my_app"].delete} == {
        quiet[1].name: 2,
        quiet[2].name: 3,
    }
    # The whole plan: every group's keeps, and every deletion oldest first.
    assert [x.backup for x in result.keep] == [*rare, quiet[0], *busy[:3]]
    assert [x.backup for x in result.delete] == [quiet[2], quiet[1], busy[4], busy[3]]
    assert result.groups[1].to_json() == {
        "database": "my_app",
        "kept": 1,
        "planned_deletions": 2,
        "bytes_to_free": 200,
        "keep": [quiet[0].name],
        "delete": [quiet[2].name, quiet[1].name],
    }
    assert result.delete[0].to_json()["database"] == "my_app"


def test_one_database_alone_plans_as_before() -> None:
    items = ages(1, 2, 3, 40, 50)
    alone = plan(items, P(30, 4, 1), NOW)
    (group,) = alone.groups
    assert (group.keep, group.delete) == (alone.keep, alone.delete)


@pytest.mark.parametrize("seed", range(50))
def test_many_databases_equal_each_planned_alone(seed: int) -> None:
    rng = random.Random(seed)
    items: dict[str, Backup] = {}
    for _ in range(rng.randint(0, 40)):
        item = backup(
            timedelta(hours=rng.uniform(-50, 2000)),
            database=rng.choice(["velocity", "my_app", "x_2026-01-01_000000", ".h"]),
        )
        items[item.name] = item
    policy = P(rng.randint(1, 60), rng.randint(1, 10), rng.randint(1, 4))
    whole = plan(items.values(), policy, NOW)
    for group in whole.groups:
        alone = plan([b for b in items.values() if b.database == group.database], policy, NOW)
        assert (alone.keep, alone.delete) == (group.keep, group.delete)
    assert sorted(x.backup.name for x in (*whole.keep, *whole.delete)) == sorted(items)
