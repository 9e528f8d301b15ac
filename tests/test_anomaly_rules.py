"""A backup that looks wrong: the comparison, the manifest fields and the settings (pure,
no database; the real server's side is in tests/test_anomaly.py)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_status import run

from velocity_pg.errors import ConfigError
from velocity_pg.settings import settings_from_values
from velocity_pg.store import anomaly, catalog, manifest

AT = "2026-12-07T00:00:00+00:00"


def stats(database_bytes: int = 10_000_000, **tables: int) -> manifest.Statistics:
    """``orders=120400``: table public.orders with that many rows."""
    return manifest.Statistics(
        at=AT,
        database_bytes=database_bytes,
        tables=tuple(
            manifest.TableStatistics("public", name, rows, rows * 100, "reltuples")
            for name, rows in tables.items()
        ),
    )


def test_a_normal_change_is_not_suspect() -> None:
    before = stats(orders=120_400, users=50)
    after = stats(orders=119_000, users=0, coupons=3)  # a small table may empty
    assert anomaly.compare(after, before) == []


def test_an_emptied_table_is_named_with_its_numbers() -> None:
    reasons = anomaly.compare(stats(orders=0), stats(orders=120_400))
    assert reasons == ["table public.orders 120,400 -> 0 rows"]


def test_the_drop_must_be_more_than_the_limit() -> None:
    assert anomaly.compare(stats(t=1000), stats(t=2000)) == []  # exactly 50 %
    assert anomaly.compare(stats(t=999), stats(t=2000)) == ["table public.t 2,000 -> 999 rows"]
    strict = anomaly.Rule(min_rows=1000, drop=10)
    assert anomaly.compare(stats(t=1700), stats(t=2000), strict) != []


def test_small_tables_are_left_alone_by_the_drop_rule() -> None:
    assert anomaly.compare(stats(t=0), stats(t=999)) == []
    assert anomaly.compare(stats(t=0), stats(t=999), anomaly.Rule(min_rows=10)) != []


def test_a_table_that_disappeared_is_suspect_whatever_its_size() -> None:
    reasons = anomaly.compare(stats(a=5), stats(a=5, b=3))
    assert reasons == ["table public.b is gone (it had 3 rows)"]


def test_a_database_that_shrank_is_suspect() -> None:
    reasons = anomaly.compare(stats(4_000_000), stats(10_000_000))
    assert reasons == ["database 9.5 MiB -> 3.8 MiB"]
    assert anomaly.compare(stats(6_000_000), stats(10_000_000)) == []


def test_drop_100_leaves_only_a_vanished_table() -> None:
    rule = anomaly.Rule(drop=100)
    assert anomaly.compare(stats(0, t=0), stats(10_000_000, t=10**6), rule) == []


def record(**extra: object) -> manifest.Manifest:
    fields: dict[str, object] = {
        "sha256": "0" * 64,
        "size_bytes": 10,
        "started_at": AT,
        "finished_at": AT,
        "duration_seconds": 1.0,
        "database": "app",
        "server_version": "16.4",
        "pg_dump_version": "16.4",
        "velocity_pg_version": "0.1.0",
        "toc_entries": 3,
    }
    fields.update(extra)
    return manifest.Manifest(**fields)  # type: ignore[arg-type]


def put(
    folder: Path,
    when: datetime,
    rec: manifest.Manifest | None,
    db: str = "app",
    started: datetime | None = None,
) -> Path:
    """A backup named for ``when`` whose manifest says it started then (or at ``started``:
    a name bumped to a later second)."""
    path = folder / catalog.format_name(when, db)
    path.write_bytes(b"PGDMP")
    if rec is not None:
        at = (started or when).isoformat()
        rec = dataclasses.replace(rec, started_at=at, finished_at=at)
        manifest.path_for(path).write_bytes(manifest.dumps(rec))
    return path


def test_previous_good_skips_suspect_unmeasured_other_and_newer(tmp_path: Path) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    mark = manifest.Suspect(at=AT, compared_with="x", reasons=("table a 1 -> 0 rows",))
    good = put(tmp_path, now - timedelta(days=4), record(statistics=stats(t=1)))
    put(tmp_path, now - timedelta(days=3), record(statistics=stats(t=2), suspect=mark))
    put(tmp_path, now - timedelta(days=2), record())  # made before statistics existed
    put(tmp_path, now - timedelta(days=1, hours=1), None)  # no manifest at all
    damaged = put(tmp_path, now - timedelta(days=1), None)
    manifest.path_for(damaged).write_text("{")
    put(tmp_path, now - timedelta(hours=1), record(statistics=stats(t=3)), db="other")
    put(tmp_path, now + timedelta(hours=1), record(statistics=stats(t=4)))
    found = anomaly.previous_good(catalog.list_backups(tmp_path), "app", now)
    assert found is not None and found.name == good.name
    assert anomaly.previous_good(catalog.list_backups(tmp_path), "app", good_time(good)) is None


def test_previous_good_goes_by_when_a_backup_started_not_its_bumped_name(
    tmp_path: Path,
) -> None:
    """Two backups started within one second: the later one's name takes the next second,
    which can be after the next backup's start. It is still the previous good one (not the
    backup before it), because its manifest says when it started."""
    now = datetime(2026, 12, 7, 4, 0, 5, 900_000, tzinfo=UTC)
    first = put(tmp_path, now - timedelta(seconds=1), record(statistics=stats(t=1)))
    bumped = put(
        tmp_path,
        now + timedelta(seconds=1),  # named 04:00:07, after the new backup's start
        record(statistics=stats(t=2)),
        started=now - timedelta(seconds=0.5),
    )
    found = anomaly.previous_good(catalog.list_backups(tmp_path), "app", now)
    assert found is not None and found.name == bumped.name, (found, first.name)


def good_time(path: Path) -> datetime:
    parsed = catalog.parse_name(path.name)
    assert parsed is not None
    return parsed


def test_judge_needs_statistics_on_both_sides() -> None:
    previous = anomaly.Previous("app_x.dump", record(statistics=stats(t=5000)))
    assert anomaly.judge(None, previous, AT) is None
    assert anomaly.judge(stats(t=0), None, AT) is None
    mark = anomaly.judge(stats(t=0), previous, AT)
    assert mark is not None and mark.compared_with == "app_x.dump"
    assert anomaly.describe(mark) == "table public.t 5,000 -> 0 rows (next to app_x.dump)"


def test_manifest_round_trip_with_and_without_the_new_fields() -> None:
    mark = manifest.Suspect(at=AT, compared_with="app_x.dump", reasons=("a", "b"))
    full = record(statistics=stats(t=5), suspect=mark)
    assert manifest.loads(manifest.dumps(full)) == full
    plain = record()
    data = json.loads(manifest.dumps(plain))
    assert "statistics" not in data and "suspect" not in data  # written as before
    assert manifest.loads(manifest.dumps(plain)) == plain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["statistics"].update(database_bytes=-1), "negative"),
        (lambda d: d["statistics"]["tables"][0].update(rows_source="guess"), "rows_source"),
        (lambda d: d["statistics"]["tables"][0].update(rows="5"), "not a whole number"),
        (lambda d: d["suspect"].update(reasons=[]), "reasons"),
        (lambda d: d.update(suspect="yes"), "not an object"),
    ],
)
def test_damaged_new_fields_are_refused(change: object, message: str) -> None:
    mark = manifest.Suspect(at=AT, compared_with="n", reasons=("r",))
    data = json.loads(manifest.dumps(record(statistics=stats(t=5), suspect=mark)))
    change(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        manifest.loads(json.dumps(data).encode())


def test_settings_defaults_and_values() -> None:
    plain = settings_from_values({})
    assert (plain.anomaly_min_rows, plain.anomaly_drop) == (1000, 50)
    given = settings_from_values({"BACKUP_ANOMALY_MIN_ROWS": "0", "BACKUP_ANOMALY_DROP": "30%"})
    assert (given.anomaly_min_rows, given.anomaly_drop) == (0, 30)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("BACKUP_ANOMALY_MIN_ROWS", "-1", "out of range"),
        ("BACKUP_ANOMALY_MIN_ROWS", "1k", "not a whole number"),
        ("BACKUP_ANOMALY_DROP", "0", "out of range"),
        ("BACKUP_ANOMALY_DROP", "101", "out of range"),
        ("BACKUP_ANOMALY_DROP", "half", "not a whole number"),
        ("BACKUP_ANOMALY_DROP", "0.5", "not a whole number"),
    ],
)
def test_bad_anomaly_settings_are_config_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        settings_from_values({key: value})
    assert key in info.value.message
    assert info.value.exit_status == 2


def test_a_bad_anomaly_setting_stops_the_backup_with_exit_2(tmp_path: Path) -> None:
    result = run("backup", folder=tmp_path, BACKUP_ANOMALY_DROP="200")
    assert result.returncode == 2, result.stderr
    assert "BACKUP_ANOMALY_DROP='200' is out of range" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_restored_rows_round_trip_and_damage() -> None:
    check = manifest.Verification(at=AT, method="restore", ok=True, restored_rows={"a.b": 3})
    full = record(last_verification=check)
    assert manifest.loads(manifest.dumps(full)) == full
    data = json.loads(manifest.dumps(full))
    data["last_verification"]["restored_rows"] = {"a.b": -1}
    with pytest.raises(ValueError, match="restored_rows"):
        manifest.loads(json.dumps(data).encode())
