"""Pins in the retention plan (issue 21), pure: no clock, no files, no database.

A pinned backup is kept whatever its age, rank or period; it still counts towards
the count and the floor; the plan names the pin among the rules that keep it; a
backup whose manifest cannot be read is kept too ("pin unknown"). The pin itself
(manifest field, old manifests read as unpinned) is checked at the end.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from test_retention_tiers import at, calendar, daily

from velocity_pg.store import manifest, remote
from velocity_pg.store.manifest import Pin
from velocity_pg.store.retention import Policy, Rule, Tiers, plan

NOW = at("2026-12-06")
UPGRADE = Pin(at="2026-11-01T03:00:00+00:00", reason="before the 3.2 upgrade")


def test_a_pinned_backup_outlives_count_age_and_tiers() -> None:
    days = daily("2026-10-01", "2026-12-05")
    old = days[0]
    result = plan(days, Policy(30, 3, 1), NOW, pins={old.name: UPGRADE})
    kept = {d.backup.name: d for d in result.keep}
    assert old.name in kept
    decision = kept[old.name]
    assert [k.label for k in decision.kept_by] == ["pinned: before the 3.2 upgrade"]
    assert decision.reason.startswith("pinned: before the 3.2 upgrade although older than 30")
    assert decision.rules == (Rule.PINNED,)
    assert decision.to_json()["kept_by"] == [
        {"rule": "pinned", "label": "pinned: before the 3.2 upgrade"}
    ]
    # The pinned one still counts: the newest 3 by the limits, plus the pin.
    assert len(result.keep) == 4
    without = plan(days, Policy(30, 3, 1), NOW)
    assert {d.backup.name for d in result.keep} == {d.backup.name for d in without.keep} | {
        old.name
    }


def test_a_deletion_says_it_is_not_pinned_in_json_only() -> None:
    days = daily("2026-12-01", "2026-12-05")
    result = plan(days, Policy(30, 2, 1), NOW)
    gone = result.delete[0]
    assert {"rule": "pinned", "why": "not pinned"} in gone.to_json()["not_kept_by"]
    assert "pinned" not in gone.reason


def test_pin_labels_without_reason_and_automatic() -> None:
    days = daily("2026-11-01", "2026-12-05")
    pins = {
        days[0].name: Pin(at="2026-11-02T00:00:00+00:00"),
        days[1].name: Pin(
            at="2026-11-02T00:00:00+00:00",
            reason="last backup before the anomaly of 2026-11-03",
            auto=True,
        ),
    }
    result = plan(days, Policy(7, 7, 1), NOW, pins=pins)
    labels = {d.backup.name: [k.label for k in d.kept_by] for d in result.keep}
    assert labels[days[0].name] == ["pinned"]
    assert labels[days[1].name] == [
        "pinned automatically: last backup before the anomaly of 2026-11-03"
    ]


def test_pin_comes_after_the_other_rules_that_keep_it() -> None:
    days = daily("2026-12-01", "2026-12-05")
    newest = days[-1]
    result = plan(days, Policy(30, 5, 1, tiers=Tiers(daily=7)), NOW, pins={newest.name: UPGRADE})
    assert [k.rule for k in result.keep[0].kept_by] == [
        Rule.MIN_KEEP,
        Rule.LIMITS,
        Rule.DAILY,
        Rule.PINNED,
    ]
    assert result.keep[0].reason.endswith("; pinned: before the 3.2 upgrade")


def test_an_unreadable_manifest_keeps_its_backup() -> None:
    days = daily("2026-10-01", "2026-12-05")
    result = plan(days, Policy(30, 3, 1), NOW, pin_unknown={days[5].name: "manifest damaged"})
    (decision,) = [d for d in result.keep if d.backup.name == days[5].name]
    assert [k.label for k in decision.kept_by] == ["pin unknown"]
    assert "manifest damaged" in decision.reason


def test_pins_of_one_database_do_not_touch_another() -> None:
    mine = daily("2026-10-01", "2026-12-05")
    theirs = daily("2026-10-01", "2026-12-05", database="other")
    result = plan([*mine, *theirs], Policy(30, 2, 1), NOW, pins={theirs[0].name: UPGRADE})
    kept = {d.backup.name for d in result.keep}
    assert theirs[0].name in kept and mine[0].name not in kept
    assert len([n for n in kept if n.startswith("other_")]) == 3


@pytest.mark.parametrize("seed", range(40))
def test_pins_only_add_to_what_is_kept_on_generated_calendars(seed: int) -> None:
    rng = random.Random(seed)
    backups = [b for db in ("velocity", "my_app") for b in calendar(rng, db)]
    if not backups:
        return
    tiers = Tiers(*(rng.choice([0, 1, 3, 7]) for _ in range(4)))
    policy = Policy(rng.randint(1, 400), rng.randint(1, 30), rng.randint(1, 3), tiers=tiers)
    pinned = {b.name for b in rng.sample(backups, rng.randint(0, min(10, len(backups))))}
    now = at("2029-06-01")
    result = plan(backups, policy, now, pins={n: UPGRADE for n in pinned})
    without = plan(backups, policy, now)
    kept = {d.backup.name for d in result.keep}
    assert kept == {d.backup.name for d in without.keep} | pinned
    for decision in result.delete:
        assert decision.backup.name not in pinned
        assert Rule.PINNED in {m.rule for m in decision.not_kept_by}
    for decision in result.keep:
        assert (decision.backup.name in pinned) == any(
            k.rule is Rule.PINNED for k in decision.kept_by
        )


# -- the pin in the manifest --------------------------------------------------------------


def record(**more: object) -> dict[str, object]:
    base: dict[str, object] = {
        "format": manifest.FORMAT,
        "sha256": "0" * 64,
        "size_bytes": 10,
        "started_at": "2026-12-05T03:00:00+00:00",
        "finished_at": "2026-12-05T03:00:01+00:00",
        "duration_seconds": 1.0,
        "database": "velocity",
        "server_version": "17.2",
        "pg_dump_version": "17.2",
        "velocity_pg_version": "1.0",
        "toc_entries": 3,
    }
    return base | more


def test_a_manifest_from_before_pins_reads_as_unpinned() -> None:
    assert manifest.loads(json.dumps(record()).encode()).pin is None
    assert manifest.loads(json.dumps(record(pin=None)).encode()).pin is None


def test_a_pin_round_trips_through_the_manifest() -> None:
    pinned = manifest.loads(json.dumps(record()).encode()).with_pin(UPGRADE)
    again = manifest.loads(manifest.dumps(pinned))
    assert again.pin == UPGRADE and again == pinned
    auto = pinned.with_pin(Pin(at=UPGRADE.at, reason="anomaly", auto=True))
    assert manifest.loads(manifest.dumps(auto)).pin == auto.pin


@pytest.mark.parametrize(
    "pin",
    [
        "yes",
        {"reason": "x"},  # no time
        {"at": "2026-12-05", "reason": "x"},  # no time zone
        {"at": UPGRADE.at, "reason": 3},
        {"at": UPGRADE.at, "reason": "two\nlines"},
        {"at": UPGRADE.at, "reason": "x" * 501},
        {"at": UPGRADE.at, "auto": "yes"},
    ],
)
def test_a_bad_pin_makes_the_manifest_unreadable(pin: object) -> None:
    with pytest.raises(ValueError, match="pin"):
        manifest.loads(json.dumps(record(pin=pin)).encode())


def test_the_pin_travels_in_the_off_site_manifest_without_changing_the_copy() -> None:
    dump = manifest.loads(json.dumps(record()).encode())
    copy = remote.RemoteManifest(
        name="velocity_2026-12-05_030000.dump",
        object_key="velocity_2026-12-05_030000.dump",
        object_size=10,
        object_sha256="1" * 64,
        encryption=None,
        recipients=(),
        uploaded_at="2026-12-05T04:00:00+00:00",
        dump=dump,
    )
    assert copy.pin is None
    pinned = remote.loads(remote.dumps(copy.with_pin(UPGRADE)))
    assert pinned.pin == UPGRADE
    assert (pinned.object_sha256, pinned.object_size, pinned.dump.sha256) == (
        copy.object_sha256,
        copy.object_size,
        copy.dump.sha256,
    )
    assert pinned.with_pin(None) == copy


def test_reasons_that_cannot_be_recorded() -> None:
    assert manifest.reason_problem("before the 3.2 upgrade") is None
    assert manifest.reason_problem("a\tb") is not None
    assert manifest.reason_problem("x" * 501) is not None
    assert datetime.fromisoformat(UPGRADE.at).tzinfo is not None
    assert UPGRADE.describe() == "pinned: before the 3.2 upgrade"
    assert timedelta(0) < NOW - datetime(2026, 1, 1, tzinfo=UTC)
