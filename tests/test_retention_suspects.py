"""Suspect backups in the retention plan (issue 21), pure: no clock, no files, no database.

A suspect backup (it looks wrong next to the previous good one, and nobody accepted
it) does not count towards the floor or the count: a run of suspect backups never
pushes the last good ones out. It gets a Miss from the floor and is kept by the
limits only while it is one of the newest ``max_count`` of all.
"""

from __future__ import annotations

import random

from test_retention_tiers import at, calendar, daily

from velocity_pg.store.manifest import Pin
from velocity_pg.store.retention import Policy, Rule, Tiers, plan

NOW = at("2026-12-09", 4)
WHY = "table shop.orders 120,400 -> 0 rows (next to velocity_2026-12-01_030000.dump)"


def test_seven_suspects_after_a_good_one_keep_the_good_one() -> None:
    days = daily("2026-11-20", "2026-12-08")
    good = next(b for b in days if b.name.startswith("velocity_2026-12-01"))
    suspects = {b.name: WHY for b in days if b.created > good.created}
    assert len(suspects) == 7
    result = plan(days, Policy(30, 7, 1), NOW, suspects=suspects)
    kept = {d.backup.name: d for d in result.keep}
    # The good one: the floor and the count (it is the newest good backup), nothing else.
    assert good.name in kept
    assert [k.rule for k in kept[good.name].kept_by] == [Rule.MIN_KEEP, Rule.LIMITS]
    # The six good ones before it keep their places in the count too.
    older_good = [b.name for b in days if b.created < good.created][-6:]
    assert set(older_good) <= set(kept)
    # The suspects: kept by the limits as the newest 7 of all, never by the floor.
    for name in suspects:
        decision = kept[name]
        assert [k.rule for k in decision.kept_by] == [Rule.LIMITS]
        assert "suspect" in decision.kept_by[0].label
        assert "suspect: table shop.orders" in decision.reason
    assert len(result.keep) == 14


def test_and_with_its_automatic_pin_the_good_one_is_kept_by_that_too() -> None:
    days = daily("2026-11-30", "2026-12-08")
    good = days[1]
    suspects = {b.name: WHY for b in days[2:]}
    auto = Pin(at="2026-12-02T03:00:00+00:00", reason="last backup before the anomaly", auto=True)
    result = plan(days, Policy(30, 7, 1), NOW, suspects=suspects, pins={good.name: auto})
    decision = next(d for d in result.keep if d.backup.name == good.name)
    assert [k.rule for k in decision.kept_by] == [Rule.MIN_KEEP, Rule.LIMITS, Rule.PINNED]
    assert decision.kept_by[-1].label == "pinned automatically: last backup before the anomaly"


def test_sixty_suspect_days_after_the_good_one_with_max_count_7() -> None:
    days = daily("2026-10-10", "2026-12-08")
    good = days[0]
    suspects = {b.name: WHY for b in days[1:]}
    result = plan(days, Policy(90, 7, 1), NOW, suspects=suspects)
    kept = [d.backup.name for d in result.keep]
    assert good.name in kept
    assert set(kept) == {good.name, *(b.name for b in days[-7:])}
    for gone in result.delete:
        assert gone.backup.name in suspects
        misses = {m.rule: m.why for m in gone.not_kept_by}
        assert misses[Rule.MIN_KEEP] == "suspect: not counted in the floor (BACKUP_MIN_KEEP)"
        assert misses[Rule.LIMITS].startswith("suspect: table shop.orders")
        assert "beyond the newest 7" in misses[Rule.LIMITS]
        assert gone.reason.startswith("suspect: ")


def test_a_suspect_too_old_is_not_kept_by_the_limits() -> None:
    days = daily("2026-11-01", "2026-12-08")
    suspects = {days[-1].name: WHY}
    result = plan(days, Policy(1, 7, 1), at("2026-12-20"), suspects=suspects)
    decision = next(d for d in result.delete if d.backup.name == days[-1].name)
    assert decision.reason.startswith("suspect: ")
    assert "older than 1 day" in decision.reason


def test_without_suspects_the_plan_is_as_before() -> None:
    rng = random.Random(21)
    for _ in range(20):
        backups = calendar(rng, "velocity") + calendar(rng, "shop")
        if not backups:
            continue
        policy = Policy(
            rng.randint(1, 400), rng.randint(1, 30), rng.randint(1, 5), tiers=Tiers(7, 4)
        )
        moment = max(b.mtime for b in backups)
        before = plan(backups, policy, moment)
        after = plan(backups, policy, moment, suspects={})
        assert before == after


def test_suspects_never_reduce_what_good_backups_keep() -> None:
    rng = random.Random(2126)
    for _ in range(30):
        backups = calendar(rng, "velocity")
        if not backups:
            continue
        policy = Policy(rng.randint(1, 400), rng.randint(1, 10), rng.randint(1, 3))
        moment = max(b.mtime for b in backups)
        suspects = {b.name: WHY for b in backups if rng.random() < 0.5}
        good = [b for b in backups if b.name not in suspects]
        alone = {d.backup.name for d in plan(good, policy, moment).keep}
        mixed = {d.backup.name for d in plan(backups, policy, moment, suspects=suspects).keep}
        # Every good backup kept without the suspects is kept beside them.
        assert alone <= mixed
