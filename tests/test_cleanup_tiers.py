"""Retention tiers for real (issue 21): ``velocity-pg cleanup`` as a process, on files
named at chosen times, and off-site against moto's S3 server.

The limits are set so they keep only the newest backup (``MAX_COUNT=1``) and no age
ever matters (``MAX_AGE_DAYS=100000``): what else remains is the tiers' doing, the
same whatever day the tests run on.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    fake_backup,
    local_files,
    offsite_env,
    s3_endpoint,
)
from test_cleanup import Folder

from velocity_pg.store import catalog

ONLY_THE_NEWEST = {"BACKUP_MAX_COUNT": "1", "BACKUP_MAX_AGE_DAYS": "100000"}


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Folder(backup_dir, workdir)


def name(day: str, database: str = "velocity", hour: int = 3) -> str:
    moment = datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)
    return catalog.format_name(moment, database)


def add(folder: Folder, names: list[str]) -> None:
    """Backups with these names, every mtime the same (copied in one go): the tiers must
    go by the names."""
    copied = time.time() - 3600
    for each in names:
        path = folder.backup_dir / each
        path.write_bytes(os.urandom(500))
        os.utime(path, (copied, copied))


def test_local_cleanup_keeps_the_tiers_and_explains_every_decision(folder: Folder) -> None:
    days = [f"2025-12-{d:02d}" for d in range(20, 32)] + [f"2026-01-{d:02d}" for d in range(1, 6)]
    velocity = [name(day) for day in ["2025-06-15", *days]] + [name("2026-01-04", hour=1)]
    legacy = [name("2025-03-01", "legacy"), name("2025-03-02", "legacy")]
    add(folder, velocity + legacy)
    env = ONLY_THE_NEWEST | {
        "BACKUP_KEEP_DAILY": "3",
        "BACKUP_KEEP_WEEKLY": "3",
        "BACKUP_KEEP_MONTHLY": "2",
        "BACKUP_KEEP_YEARLY": "2",
    }
    expected = {
        # 2026-01-05 is a Monday (2026-W02); 2025-12-29..2026-01-04 is 2026-W01.
        name("2026-01-05"): [
            "floor",
            "newest 1, within 100000 days",
            "daily 2026-01-05",
            "weekly 2026-W02",
            "monthly 2026-01",
            "yearly 2026",
        ],
        name("2026-01-04"): ["daily 2026-01-04", "weekly 2026-W01"],
        name("2026-01-03"): ["daily 2026-01-03"],
        name("2025-12-31"): ["monthly 2025-12", "yearly 2025"],
        name("2025-12-28"): ["weekly 2025-W52"],
        # One week, month and year so far, fewer than asked: the oldest stays too.
        name("2025-03-02", "legacy"): [
            "floor",
            "newest 1, within 100000 days",
            "daily 2025-03-02",
            "weekly 2025-W09",
            "monthly 2025-03",
            "yearly 2025",
        ],
        name("2025-03-01", "legacy"): [
            "daily 2025-03-01",
            "weekly 2025-W09 (oldest; 1 of 3 weeks so far)",
            "monthly 2025-03 (oldest; 1 of 2 months so far)",
            "yearly 2025 (oldest; 1 of 2 years so far)",
        ],
    }

    dry = folder.run("cleanup", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert (
        "also the newest backup of each of the last 3 days, 3 weeks, 2 months and 2 years"
        in (lines[0])
    )
    keep = {ln.split()[1]: ln for ln in lines if ln.startswith("keep ")}
    assert sorted(keep) == sorted(expected)
    assert keep[name("2025-12-28")].endswith(
        "weekly 2025-W52 (BACKUP_KEEP_WEEKLY) although beyond the newest 1 "
        "(number 10, BACKUP_MAX_COUNT)"
    )
    assert "daily 2026-01-05 (BACKUP_KEEP_DAILY), weekly" not in keep[name("2026-01-05")]
    assert (
        "; daily 2026-01-05 (BACKUP_KEEP_DAILY); weekly 2026-W02 (BACKUP_KEEP_WEEKLY)"
        in (keep[name("2026-01-05")])
    )
    would = {ln.split()[2]: ln for ln in lines if ln.startswith("would delete")}
    assert sorted(would) == sorted(set(velocity + legacy) - set(expected))
    early = would[name("2026-01-04", hour=1)]
    assert "not the newest of 2026-01-04 (BACKUP_KEEP_DAILY)" in early
    assert "not the newest of 2026-W01 (BACKUP_KEEP_WEEKLY)" in early
    june = would[name("2025-06-15")]
    assert "2025-06 is not among the last 2 months with a backup (BACKUP_KEEP_MONTHLY)" in june
    assert "not the newest of 2025 (BACKUP_KEEP_YEARLY)" in june
    assert "not one of the newest 1 (BACKUP_MIN_KEEP)" in june
    assert sorted(folder.backups()) == sorted(velocity + legacy)  # a dry run deletes nothing

    result = folder.run("cleanup", "--json", **env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["policy"] == {
        "max_age_days": 100000,
        "max_count": 1,
        "min_keep": 1,
        "keep_daily": 3,
        "keep_weekly": 3,
        "keep_monthly": 2,
        "keep_yearly": 2,
    }
    assert {d["name"]: [k["label"] for k in d["kept_by"]] for d in data["keep"]} == expected
    for deleted in data["delete"]:
        assert deleted["status"] == "deleted" and deleted["kept_by"] == []
        assert {m["rule"] for m in deleted["not_kept_by"]} == {
            "min_keep",
            "limits",
            "daily",
            "weekly",
            "monthly",
            "yearly",
            "pinned",
        }
    assert folder.backups() == sorted(expected)

    # Tiers off (the default): the limits alone, the newest of each database.
    again = folder.run("cleanup", **ONLY_THE_NEWEST)
    assert again.returncode == 0, again.stderr
    assert folder.backups() == sorted([name("2026-01-05"), name("2025-03-02", "legacy")])


def test_a_bad_tier_setting_deletes_nothing(folder: Folder) -> None:
    add(folder, [name("2025-01-01"), name("2025-01-02")])
    before = folder.backups()
    result = folder.run("cleanup", BACKUP_MAX_COUNT="1", BACKUP_KEEP_WEEKLY="-1")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "BACKUP_KEEP_WEEKLY='-1' is out of range; it must be a whole number between 0 and "
        "2147483647"
    )
    assert folder.backups() == before


def test_off_site_cleanup_keeps_its_own_tiers(
    target: Target,
    bucket: Bucket,  # noqa: F811 (the fixture)
) -> None:
    days = ["2025-10-10", "2025-11-05", "2025-11-20", "2025-12-01", "2025-12-02"]
    days += ["2025-12-10", "2025-12-14", "2025-12-15"]  # Wed and Sun of W50, Mon of W51
    names = [name(day) for day in days]
    for each in names:
        fake_backup(target.backup_dir, each)
    env = target.env(**offsite_env(bucket), BACKUP_MAX_AGE_DAYS="100000")
    assert target.run("push", "--all", env=env).returncode == 0
    before = local_files(target.backup_dir)
    # Locally: weekly 2 within generous limits (nothing goes). Off-site: the newest by
    # count, the weekly tier taken from the local setting, and its own monthly 3.
    env |= {
        "BACKUP_KEEP_WEEKLY": "2",
        "BACKUP_S3_MAX_COUNT": "1",
        "BACKUP_S3_KEEP_MONTHLY": "3",
    }
    expected = {
        name("2025-12-15"): [
            "floor",
            "newest 1, within 100000 days",
            "weekly 2025-W51",
            "monthly 2025-12",
        ],
        name("2025-12-14"): ["weekly 2025-W50"],
        name("2025-11-20"): ["monthly 2025-11"],
        name("2025-10-10"): ["monthly 2025-10"],
    }

    dry = target.run("cleanup", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    offsite_part = dry.stdout[dry.stdout.index("off-site cleanup of") :]
    assert "the last 2 weeks and 3 months" in offsite_part
    assert "weekly 2025-W50 (BACKUP_S3_KEEP_WEEKLY) although beyond the newest 1" in offsite_part
    assert "BACKUP_KEEP_" not in offsite_part
    assert (
        f"would delete {name('2025-12-10')}" in offsite_part
        and "not the newest of 2025-W50 (BACKUP_S3_KEEP_WEEKLY)" in offsite_part
    )

    result = target.run("cleanup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["offsite"]
    assert data["policy"]["keep_weekly"] == 2 and data["policy"]["keep_monthly"] == 3
    assert {d["name"]: [k["label"] for k in d["kept_by"]] for d in data["keep"]} == expected
    assert sorted(d["name"] for d in data["delete"]) == sorted(set(names) - set(expected))
    assert all(d["status"] == "deleted" for d in data["delete"])
    assert bucket.names() == sorted(f"db/{n}{s}" for n in expected for s in ("", ".json"))
    assert local_files(target.backup_dir) == before  # locally every backup stays
