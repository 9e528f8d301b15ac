"""Numbers and durations in settings: plain ASCII digits, within a stated range (issue 17).

Item 10: an oversized duration or number was an "unexpected OverflowError", exit 1.
Unclear messages: ``BACKUP_MAX_COUNT=3_0`` was read as 30 (also ``+5``, `` 5``, ``٣``).
Now each is refused before anything runs, exit 2, in one line that names the setting
and its range. Pure checks of the parsers, then real velocity-pg processes.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import clean_env

from velocity_pg.errors import ConfigError, ExitStatus
from velocity_pg.postgres import compression
from velocity_pg.scheduling.timetable import parse_duration, parse_schedule
from velocity_pg.settings import MAX_DAYS, MAX_WHOLE, parse_int, settings_from_values
from velocity_pg.verbs.status import parse_duration as status_duration

HUGE = "99999999999999999999"
#: Every whole-number setting, with a value it takes.
INTEGER_SETTINGS = {
    "BACKUP_MAX_AGE_DAYS": "30",
    "BACKUP_MAX_COUNT": "30",
    "BACKUP_MIN_KEEP": "3",
    "BACKUP_NICE": "5",
    "PGPORT": "5432",
    "BACKUP_S3_MAX_AGE_DAYS": "30",
    "BACKUP_S3_MAX_COUNT": "30",
    "BACKUP_S3_MIN_KEEP": "3",
    "BACKUP_KEEP_DAILY": "7",
    "BACKUP_KEEP_WEEKLY": "4",
    "BACKUP_KEEP_MONTHLY": "12",
    "BACKUP_KEEP_YEARLY": "10",
    "BACKUP_S3_KEEP_DAILY": "7",
    "BACKUP_S3_KEEP_WEEKLY": "4",
    "BACKUP_S3_KEEP_MONTHLY": "12",
    "BACKUP_S3_KEEP_YEARLY": "10",
}


def load(name: str, value: str) -> object:
    return settings_from_values({"BACKUP_S3_URL": "s3://bucket", name: value})


@pytest.mark.parametrize("name", sorted(INTEGER_SETTINGS))
def test_every_integer_setting_takes_plain_digits(name: str) -> None:
    load(name, INTEGER_SETTINGS[name])  # no error
    good = INTEGER_SETTINGS[name]
    for bad in (good[0] + "_" + good[1:], "+" + good, " " + good, good + " ", "٣", "3.0", "0x1f"):
        with pytest.raises(ConfigError) as info:
            load(name, bad)
        message = info.value.message
        assert message.startswith(f"{name}={bad!r} is not a whole number (digits 0-9 only)")
        assert "between" in message
        assert info.value.exit_status == ExitStatus.USAGE


@pytest.mark.parametrize("name", sorted(INTEGER_SETTINGS))
def test_every_integer_setting_has_a_range(name: str) -> None:
    for bad in (HUGE, "9" * 5000, "-1", "-" + HUGE):
        with pytest.raises(ConfigError) as info:
            load(name, bad)
        message = info.value.message
        assert "is out of range; it must be a whole number between" in message
        assert name in message and "\n" not in message


def test_parse_int_limits() -> None:
    assert parse_int("x", "007") == 7
    assert parse_int("x", str(MAX_WHOLE)) == MAX_WHOLE
    with pytest.raises(ConfigError, match="out of range"):
        parse_int("x", str(MAX_WHOLE + 1))
    assert parse_int("x", str(MAX_DAYS), maximum=MAX_DAYS) == MAX_DAYS
    with pytest.raises(ConfigError, match=f"between 1 and {MAX_DAYS}"):
        load("BACKUP_MAX_AGE_DAYS", str(MAX_DAYS + 1))


def test_compression_levels_are_plain_digits() -> None:
    assert compression.parse("zstd:03").level == 3
    for bad in ("zstd:+3", "gzip:٣", "gzip:1_0", "٣"):
        with pytest.raises(ConfigError, match="is not a compression method and level"):
            compression.parse(bad)
    with pytest.raises(ConfigError, match="between 1 and 22"):
        compression.parse("zstd:99999")


@pytest.mark.parametrize("parse", [lambda t: parse_duration(t, "--max-age"), status_duration])
def test_durations_have_a_range(parse: object) -> None:
    assert parse(f"{MAX_DAYS}d") == timedelta(days=MAX_DAYS)  # type: ignore[operator]
    assert parse("1h30m") == timedelta(minutes=90)  # type: ignore[operator]
    for bad in (f"{HUGE}d", f"{MAX_DAYS}d1s", "9" * 5000 + "s", f"{HUGE}w"):
        with pytest.raises(ConfigError) as info:
            parse(bad)  # type: ignore[operator]
        assert info.value.message == (
            f"--max-age {bad!r} is out of range; it must be between 1s and {MAX_DAYS}d"
        )
    for bad in ("٣h", "+3h"):
        with pytest.raises(ConfigError, match="is not a duration"):
            parse(bad)  # type: ignore[operator]


def test_every_has_a_range() -> None:
    from datetime import UTC

    with pytest.raises(ConfigError, match=r"BACKUP_SCHEDULE=.* is out of range; .* 1s and "):
        parse_schedule(f"@every {HUGE}d", UTC)


# -- real processes -----------------------------------------------------------------------


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    variables = clean_env(**env)
    variables["BACKUP_DIR"] = str(tmp_path)
    variables["PGHOST"] = str(tmp_path / "no-server")  # nothing may need a server
    return subprocess.run(
        [sys.executable, "-m", "velocity_pg", *args],
        cwd=tmp_path,
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("status", "--max-age", f"{HUGE}d"), {}, f"--max-age '{HUGE}d'"),
        (("status", "--remote-max-age", f"{HUGE}d"), {}, f"--remote-max-age '{HUGE}d'"),
        (
            ("status", "--max-age", "auto"),
            {"BACKUP_HEALTH_MAX_AGE": f"{HUGE}d"},
            f"BACKUP_HEALTH_MAX_AGE '{HUGE}d'",
        ),
        (
            ("status", "--max-age", "auto"),
            {"BACKUP_SCHEDULE": f"@every {HUGE}d"},
            f"BACKUP_SCHEDULE='@every {HUGE}d'",
        ),
        (
            ("schedule", "--once"),
            {"BACKUP_SCHEDULE": f"@every {HUGE}d"},
            f"BACKUP_SCHEDULE='@every {HUGE}d'",
        ),
        (
            ("schedule", "--once"),
            {"BACKUP_HEALTH_MAX_AGE": f"{HUGE}d"},
            f"BACKUP_HEALTH_MAX_AGE '{HUGE}d'",
        ),
        (("cleanup", "--max-age-days", HUGE), {}, f"--max-age-days '{HUGE}'"),
        (("cleanup",), {"BACKUP_MAX_AGE_DAYS": HUGE}, f"BACKUP_MAX_AGE_DAYS='{HUGE}'"),
        (("cleanup", "--max-count", HUGE), {}, f"--max-count '{HUGE}'"),
        (("list",), {"PGPORT": HUGE}, f"PGPORT='{HUGE}'"),
        (("restore", "x.dump", "--jobs", HUGE), {}, f"--jobs '{HUGE}'"),
    ],
)
def test_oversized_values_exit_2_naming_the_setting_and_its_range(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    result = run(tmp_path, *args, **env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"velocity-pg: error: {named}"), lines[0]
    assert "is out of range; it must be " in lines[0] and "between" in lines[0]
    assert "unexpected" not in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("cleanup",), {"BACKUP_MAX_COUNT": "3_0"}, "BACKUP_MAX_COUNT='3_0'"),
        (("cleanup", "--max-count", "+5"), {}, "--max-count '+5'"),
        (("cleanup", "--min-keep", "٣"), {}, "--min-keep '٣'"),
        (("restore", "x.dump", "--jobs", "3_0"), {}, "--jobs '3_0'"),
    ],
)
def test_python_number_literals_are_refused(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    result = run(tmp_path, *args, **env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"velocity-pg: error: {named} is not a whole number"), lines[0]
