"""BACKUP_SCHEDULE as pure functions: every form, month ends, leap days, DST, bad input.

No database, no clock: every function is given the moment it is asked about.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from velocity_pg.errors import ConfigError, ExitStatus
from velocity_pg.scheduling.timetable import (
    Timetable,
    human_duration,
    parse_duration,
    parse_schedule,
    parse_timezone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


def following(table: Timetable, start: datetime, count: int, anchor: datetime = ANCHOR) -> list:
    out, moment = [], start
    for _ in range(count):
        moment = table.next_after(moment, anchor)
        out.append(moment)
    return out


# -- every form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("@hourly", utc(2026, 5, 1, 10, 0, 0), utc(2026, 5, 1, 11)),
        ("@hourly", utc(2026, 5, 1, 10, 59, 59), utc(2026, 5, 1, 11)),
        ("@daily", utc(2026, 5, 1, 0, 0, 0), utc(2026, 5, 2)),
        ("@midnight", utc(2026, 5, 1, 23, 0), utc(2026, 5, 2)),
        ("@weekly", utc(2026, 5, 1, 12), utc(2026, 5, 3)),  # Friday -> Sunday 00:00
        ("@monthly", utc(2026, 5, 1, 0, 0, 1), utc(2026, 6, 1)),
        ("@yearly", utc(2026, 5, 1), utc(2027, 1, 1)),
        ("@annually", utc(2026, 5, 1), utc(2027, 1, 1)),
        ("0 3 * * *", utc(2026, 5, 1, 2, 59), utc(2026, 5, 1, 3)),
        ("0 3 * * *", utc(2026, 5, 1, 3, 0, 0), utc(2026, 5, 2, 3)),  # strictly after
        ("*/15 * * * *", utc(2026, 5, 1, 10, 7), utc(2026, 5, 1, 10, 15)),
        ("30 2 * * 1-5", utc(2026, 5, 1, 3), utc(2026, 5, 4, 2, 30)),  # Fri -> Mon
        ("0 4 1,15 * *", utc(2026, 5, 2), utc(2026, 5, 15, 4)),
        ("0 0 * * SUN", utc(2026, 5, 1), utc(2026, 5, 3)),
        ("0 0 1 JAN *", utc(2026, 5, 1), utc(2027, 1, 1)),
    ],
)
def test_cron_forms_in_utc(text: str, after: datetime, expected: datetime) -> None:
    table = parse_schedule(text, UTC)
    assert table.next_after(after, ANCHOR) == expected


def test_shorthands_are_cron_expressions() -> None:
    assert parse_schedule("@DAILY", UTC).cron == "0 0 * * *"
    assert parse_schedule("  @hourly ", UTC).cron == "0 * * * *"
    assert parse_schedule("@weekly", UTC).cron == "0 0 * * 0"
    assert parse_schedule("@monthly", UTC).cron == "0 0 1 * *"
    assert parse_schedule("0   3  * * *", UTC).expression == "0 3 * * *"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("@every 30s", 30), ("@every 6h", 21600), ("@every 1h30m", 5400), ("@every 2d", 172800),
     ("@every 1w", 604800), ("@every 90m", 5400), ("@EVERY 2s", 2), ("@every 1h 30m", 5400)],
)  # fmt: skip
def test_every_forms(text: str, seconds: int) -> None:
    table = parse_schedule(text, UTC)
    assert table.every == timedelta(seconds=seconds)
    assert table.cron is None


def test_every_counts_from_the_start_never_piles_up() -> None:
    table = parse_schedule("@every 2s", BERLIN)
    start = utc(2026, 3, 29, 0, 59, 59)  # across Berlin's spring-forward: no effect
    assert table.next_after(start, start) == start + timedelta(seconds=2)
    # Asked late (a run outlasted several periods): the next one from the clock.
    late = start + timedelta(seconds=7.5)
    assert table.next_after(late, start) == start + timedelta(seconds=8)
    assert table.due_between(start, late, start) == [
        start + timedelta(seconds=s) for s in (2, 4, 6)
    ]
    assert table.due_between(start, start + timedelta(seconds=1), start) == []
    assert table.previous_at_or_before(late, start) == start + timedelta(seconds=6)
    assert table.period(late, start) == timedelta(seconds=2)


def test_due_between_for_cron() -> None:
    table = parse_schedule("*/10 * * * *", UTC)
    missed = table.due_between(utc(2026, 5, 1, 10), utc(2026, 5, 1, 10, 35), ANCHOR)
    assert missed == [utc(2026, 5, 1, 10, m) for m in (10, 20, 30)]


# -- month ends and leap days -----------------------------------------------------------


def test_month_ends() -> None:
    table = parse_schedule("0 3 31 * *", UTC)  # only months with 31 days
    assert following(table, utc(2026, 1, 31, 4), 4) == [
        utc(2026, 3, 31, 3), utc(2026, 5, 31, 3), utc(2026, 7, 31, 3), utc(2026, 8, 31, 3),
    ]  # fmt: skip
    last = parse_schedule("0 3 L * *", UTC)  # cronsim's "last day of the month"
    assert following(last, utc(2026, 1, 1), 3) == [
        utc(2026, 1, 31, 3), utc(2026, 2, 28, 3), utc(2026, 3, 31, 3),
    ]  # fmt: skip
    monthly = parse_schedule("@monthly", UTC)
    assert monthly.next_after(utc(2026, 12, 31, 23, 59), ANCHOR) == utc(2027, 1, 1)


def test_leap_days() -> None:
    table = parse_schedule("0 0 29 2 *", UTC)
    assert table.next_after(utc(2026, 1, 1), ANCHOR) == utc(2028, 2, 29)
    assert table.next_after(utc(2028, 2, 29), ANCHOR) == utc(2032, 2, 29)
    daily = parse_schedule("@daily", UTC)
    assert following(daily, utc(2028, 2, 27, 12), 3) == [
        utc(2028, 2, 28), utc(2028, 2, 29), utc(2028, 3, 1),
    ]  # fmt: skip
    # Its gap is four years: a freshness check derived from it allows that.
    assert table.longest_gap(utc(2026, 1, 1), ANCHOR) >= timedelta(days=365 * 2)


# -- daylight saving, as Debian's cron -------------------------------------------------


def test_spring_forward_a_missing_time_runs_right_after_the_gap() -> None:
    table = parse_schedule("30 2 * * *", BERLIN)  # 02:30 does not exist on 2026-03-29
    runs = following(table, local(BERLIN, 2026, 3, 28, 12), 3)
    assert [r.astimezone(BERLIN).replace(tzinfo=None) for r in runs] == [
        datetime(2026, 3, 29, 3, 0), datetime(2026, 3, 30, 2, 30), datetime(2026, 3, 31, 2, 30),
    ]  # fmt: skip
    assert runs[0] == utc(2026, 3, 29, 1, 0)


def test_fall_back_a_repeated_time_runs_once() -> None:
    table = parse_schedule("30 2 * * *", BERLIN)  # 02:30 happens twice on 2026-10-25
    runs = following(table, local(BERLIN, 2026, 10, 24, 12), 2)
    assert runs == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # The 25-hour day is the longest gap, and the health allowance covers it.
    assert table.longest_gap(utc(2026, 10, 1), ANCHOR) == timedelta(hours=25)
    assert table.health_allowance(utc(2026, 10, 1), ANCHOR) == timedelta(hours=27, minutes=30)


def test_interval_jobs_keep_real_time_across_dst() -> None:
    table = parse_schedule("*/30 * * * *", NEW_YORK)  # fall back on 2026-11-01 at 02:00
    runs = following(table, utc(2026, 11, 1, 5, 15), 4)
    assert [r - runs[0] for r in runs] == [timedelta(minutes=30 * i) for i in range(4)]


def test_daily_in_a_named_zone_is_local_time() -> None:
    table = parse_schedule("0 3 * * *", BERLIN)
    assert table.next_after(utc(2026, 7, 1), ANCHOR) == utc(2026, 7, 1, 1)  # CEST, UTC+2
    assert table.next_after(utc(2026, 12, 1), ANCHOR) == utc(2026, 12, 1, 2)  # CET, UTC+1


# -- periods and the health allowance ---------------------------------------------------


def test_period_and_allowance() -> None:
    daily = parse_schedule("@daily", UTC)
    assert daily.period(utc(2026, 5, 1, 10), ANCHOR) == timedelta(days=1)
    assert daily.health_allowance(utc(2026, 5, 1), ANCHOR) == timedelta(hours=26, minutes=24)
    hourly = parse_schedule("@hourly", UTC)
    assert hourly.health_allowance(utc(2026, 5, 1), ANCHOR) == timedelta(minutes=66)
    every = parse_schedule("@every 2s", UTC)
    assert every.health_allowance(utc(2026, 5, 1), ANCHOR) == timedelta(seconds=62)
    weekdays = parse_schedule("0 3 * * 1-5", UTC)
    assert weekdays.period(utc(2026, 5, 2, 12), ANCHOR) == timedelta(days=3)  # a Saturday
    assert weekdays.period(utc(2026, 5, 5, 12), ANCHOR) == timedelta(days=1)  # a Tuesday
    assert weekdays.longest_gap(utc(2026, 5, 5), ANCHOR) == timedelta(days=3)
    previous = weekdays.previous_at_or_before(utc(2026, 5, 4, 3), ANCHOR)
    assert previous == utc(2026, 5, 4, 3)  # at or before: that very moment counts


# -- bad input: exit 2 with the reason ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("0 3 * *", "has 4 field(s)"),
        ("0 0 3 * * *", "has 6 field(s)"),  # seconds: not a five-field expression
        ("61 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 32 * *", "Bad day-of-month"),
        ("0 0 30 2 *", "Bad day-of-month"),  # never: there is no February 30
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("a b c d e", "not a cron expression"),
        ("@reboot", "not a known shorthand"),
        ("@sometimes", "not a known shorthand"),
        ("@every", "lacks a duration"),
        ("@every 0s", "must be more than zero"),
        ("@every 5x", "is not a duration"),
        ("@every -5m", "is not a duration"),
        ("@every 1.5h", "is not a duration"),
    ],
)
def test_invalid_schedules(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_schedule(text, UTC)
    assert reason in raised.value.message
    assert raised.value.exit_status == ExitStatus.USAGE
    assert "BACKUP_SCHEDULE" in raised.value.message


def test_time_zones() -> None:
    assert parse_timezone(None) is UTC
    assert parse_timezone("") is UTC
    assert parse_timezone("Europe/Berlin") == BERLIN
    assert parse_timezone(":Europe/Berlin") == BERLIN
    assert parse_timezone("UTC").utcoffset(None) == timedelta(0)  # type: ignore[union-attr]
    for bad in ("Mars/Olympus", "../etc/passwd", "/nonexistent/zone"):
        with pytest.raises(ConfigError, match="is not a time zone"):
            parse_timezone(bad)


def test_durations() -> None:
    assert parse_duration("26h", "x") == timedelta(hours=26)
    assert parse_duration("1d12h", "x") == timedelta(hours=36)
    with pytest.raises(ConfigError):
        parse_duration("soon", "x")
    assert human_duration(timedelta(seconds=62)) == "62s"
    assert human_duration(timedelta(hours=26, minutes=24)) == "1d 2h 24m"
    assert human_duration(timedelta(minutes=66)) == "1h 6m"
