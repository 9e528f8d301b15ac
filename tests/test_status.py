"""``velocity-pg status`` and the manifest as list/status show it (files only, no database)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import clean_env

from velocity_pg.errors import ConfigError
from velocity_pg.store import catalog, manifest
from velocity_pg.verbs.status import CLOCK_SKEW, judge, parse_duration


def run(
    *args: str,
    folder: Path,
    cwd: Path | None = None,
    timeout: float = 60,
    preexec_fn: Callable[[], None] | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    env = clean_env(**extra)
    env["BACKUP_DIR"] = str(folder)
    return subprocess.run(
        [sys.executable, "-m", "velocity_pg", *args],
        cwd=cwd or folder,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def make_backup(
    folder: Path, age: timedelta, *, with_manifest: bool = True, database: str = "velocity"
) -> Path:
    created = datetime.now(UTC) - age
    path = folder / catalog.format_name(created, database)
    path.write_bytes(b"PGDMP fake dump body")
    if with_manifest:
        sha, size = manifest.sha256_file(path)
        record = manifest.Manifest(
            sha256=sha,
            size_bytes=size,
            started_at=created.isoformat(),
            finished_at=created.isoformat(),
            duration_seconds=1.0,
            database="app",
            server_version="15.18",
            pg_dump_version="15.18",
            velocity_pg_version="0.1.0",
            toc_entries=3,
        )
        manifest.path_for(path).write_bytes(manifest.dumps(record))
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("26h", 93600), ("2d", 172800), ("45s", 45), ("1w", 604800), (" 3h ", 10800)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "26", "h", "-1h", "1.5h", "0h", "2 days", "1y"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_fresh_backup_passes_max_age(tmp_path: Path) -> None:
    make_backup(tmp_path, timedelta(hours=30))
    newest = make_backup(tmp_path, timedelta(hours=2))
    result = run("status", "--max-age", "26h", folder=tmp_path)
    assert result.returncode == 0, result.stderr
    assert newest.name in result.stdout
    assert "Backups:       2" in result.stdout
    assert "not yet" in result.stdout


def test_stale_backup_fails_max_age(tmp_path: Path) -> None:
    make_backup(tmp_path, timedelta(hours=27))
    result = run("status", "--max-age", "26h", folder=tmp_path)
    assert result.returncode == 1
    assert "STALE" in result.stderr
    assert "older than 26h" in result.stderr
    # Without --max-age, the same folder is just reported.
    assert run("status", folder=tmp_path).returncode == 0


def test_empty_folder_fails_max_age(tmp_path: Path) -> None:
    result = run("status", "--max-age", "1d", folder=tmp_path)
    assert result.returncode == 1
    assert "there is no backup" in result.stderr
    data = json.loads(run("status", "--json", folder=tmp_path).stdout)
    assert data["count"] == 0
    assert data["newest"] is None
    assert data["stale"] is False


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    result = run("status", "--max-age", "1d", folder=tmp_path / "missing", cwd=tmp_path)
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_status_json_reports_verification(tmp_path: Path) -> None:
    path = make_backup(tmp_path, timedelta(minutes=5))
    record = manifest.read(path)
    assert record is not None
    check = manifest.Verification(at="2026-11-25T10:00:00+00:00", method="restore", ok=True)
    manifest.replace_manifest(path, record.with_verification(check))
    result = run("status", "--json", "--max-age", "1h", folder=tmp_path)
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["newest"]["name"] == path.name
    assert data["newest"]["last_verification"]["method"] == "restore"
    assert data["last_good_verification"]["name"] == path.name
    assert data["stale"] is False
    assert data["free_bytes"] > 0


def test_list_shows_manifest_state(tmp_path: Path) -> None:
    old_style = make_backup(tmp_path, timedelta(days=3), with_manifest=False)
    verified = make_backup(tmp_path, timedelta(days=2))
    record = manifest.read(verified)
    assert record is not None
    manifest.replace_manifest(
        verified,
        record.with_verification(
            manifest.Verification(at="2026-11-20T08:00:00+00:00", method="checksum", ok=True)
        ),
    )
    fresh = make_backup(tmp_path, timedelta(days=1))
    broken = make_backup(tmp_path, timedelta(hours=1))
    manifest.path_for(broken).write_text("{not json")
    result = run("list", folder=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert lines[old_style.name].endswith("no manifest")
    assert lines[verified.name].endswith("ok (checksum, 2026-11-20 08:00)")
    assert lines[fresh.name].endswith("not yet")
    assert lines[broken.name].endswith("manifest unreadable")
    # Manifests are not backups: four rows, no .json row.
    assert len(lines) == 4
    data = json.loads(run("list", "--json", folder=tmp_path).stdout)
    by_name = {b["name"]: b for b in data["backups"]}
    assert by_name[old_style.name]["manifest"] is False
    assert by_name[fresh.name]["sha256"] == manifest.read(fresh).sha256  # type: ignore[union-attr]
    assert by_name[broken.name]["manifest"] == "unreadable"


def test_manifest_round_trip_and_damage(tmp_path: Path) -> None:
    path = make_backup(tmp_path, timedelta(0))
    record = manifest.read(path)
    assert record is not None
    assert manifest.loads(manifest.dumps(record)) == record
    manifest.path_for(path).write_text('{"format": "something-else"}')
    with pytest.raises(manifest.ManifestUnreadable, match="damaged"):
        manifest.read(path)
    assert manifest.read(tmp_path / "velocity_2020-01-01_000000.dump") is None
    assert manifest.is_manifest_name(path.name + ".json")
    assert not manifest.is_manifest_name(path.name)


# -- only a real backup counts (issue 10, item 7) -------------------------------------------


def test_future_named_file_alone_is_stale_and_reported(tmp_path: Path) -> None:
    future = make_backup(tmp_path, -timedelta(days=2))  # a clock that ran two days ahead
    result = run("status", "--max-age", "26h", folder=tmp_path)
    assert result.returncode == 1
    assert "STALE: no file here counts as a backup" in result.stderr
    assert f"{future.name}: named 1d 23h in the future" in result.stderr
    assert "Newest:        none" in result.stdout
    assert f"Not counted:   {future.name}: named 1d 23h in the future" in result.stdout
    data = json.loads(run("status", "--json", "--max-age", "26h", folder=tmp_path).stdout)
    assert data["stale"] is True
    assert data["newest"] is None
    assert data["future"] == [future.name]
    assert data["ignored"][0]["reason"] == "future"


def test_empty_file_with_a_current_name_is_stale(tmp_path: Path) -> None:
    empty = tmp_path / catalog.format_name(datetime.now(UTC) - timedelta(minutes=1))
    empty.write_bytes(b"")
    result = run("status", "--max-age", "26h", folder=tmp_path)
    assert result.returncode == 1
    assert f"{empty.name}: an empty file (0 bytes)" in result.stderr
    data = json.loads(run("status", "--json", folder=tmp_path).stdout)
    assert data["ignored"] == [
        {"name": empty.name, "reason": "empty", "detail": "an empty file (0 bytes)"}
    ]


def test_real_backup_is_judged_beside_a_future_one(tmp_path: Path) -> None:
    real = make_backup(tmp_path, timedelta(hours=30))
    future = make_backup(tmp_path, -timedelta(days=365))
    result = run("status", "--max-age", "26h", folder=tmp_path)
    assert result.returncode == 1  # the real one is 30 h old; the future one does not help
    assert f"the newest backup is older than 26h: {real.name}" in result.stderr
    assert future.name in result.stderr
    assert f"Newest:        {real.name}" in result.stdout
    assert run("status", "--max-age", "31h", folder=tmp_path).returncode == 0
    data = json.loads(run("status", "--json", "--max-age", "31h", folder=tmp_path).stdout)
    assert data["newest"]["name"] == real.name
    assert data["future"] == [future.name]
    assert data["count"] == 2


def test_backup_cut_short_of_its_manifest_does_not_count(tmp_path: Path) -> None:
    older = make_backup(tmp_path, timedelta(hours=2))
    cut = make_backup(tmp_path, timedelta(minutes=10))
    cut.write_bytes(cut.read_bytes()[:5])
    result = run("status", "--max-age", "1h", folder=tmp_path)
    assert result.returncode == 1
    assert f"{cut.name}: 5 bytes, its manifest says 20: cut or changed" in result.stdout
    assert f"Newest:        {older.name}" in result.stdout


def test_a_name_within_the_clock_skew_counts(tmp_path: Path) -> None:
    ahead = make_backup(tmp_path, -timedelta(minutes=3))
    result = run("status", "--max-age", "1h", "--json", folder=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["newest"]["name"] == ahead.name
    assert data["newest"]["age_seconds"] == 0


def _backup(name_time: datetime, size: int) -> catalog.Backup:
    name = catalog.format_name(name_time)
    return catalog.Backup(name, Path(name), name_time, name_time, size)


def test_judge_rules() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    ok = _backup(now - timedelta(hours=1), 10)
    assert judge(ok, None, None, now) is None
    assert judge(_backup(now + CLOCK_SKEW, 10), None, None, now) is None  # at the limit
    late = judge(_backup(now + CLOCK_SKEW + timedelta(seconds=1), 10), None, None, now)
    assert late is not None and late.reason == "future"
    empty = judge(_backup(now, 0), None, None, now)
    assert empty is not None and empty.reason == "empty"
    broken = judge(ok, None, ("manifest_unreadable", "manifest unreadable (x)"), now)
    assert broken is not None and broken.reason == "manifest_unreadable"
    record = manifest.Manifest(
        sha256="0" * 64,
        size_bytes=11,
        started_at=now.isoformat(),
        finished_at=now.isoformat(),
        duration_seconds=1.0,
        database="app",
        server_version="15",
        pg_dump_version="15",
        velocity_pg_version="0",
        toc_entries=1,
    )
    mismatch = judge(ok, record, None, now)
    assert mismatch is not None and mismatch.reason == "size_mismatch"
    assert judge(ok, dataclasses.replace(record, size_bytes=10), None, now) is None


def test_newest_is_of_the_configured_database(tmp_path: Path) -> None:
    """Another database's fresh backups must not hide that this database's stopped."""
    mine = make_backup(tmp_path, timedelta(hours=30), database="velocity")
    theirs = make_backup(tmp_path, timedelta(hours=1), database="my_app")
    result = run("status", "--max-age", "26h", folder=tmp_path, PGDATABASE="velocity")
    assert result.returncode == 1
    assert "STALE: the newest backup of database 'velocity' is older than 26h" in result.stderr
    assert f"Newest:        {mine.name}" in result.stdout
    assert "Database:      velocity" in result.stdout
    assert f"Other database: 'my_app': 1 backup(s), newest {theirs.name}" in result.stdout
    assert "Backups:       2" in result.stdout  # the folder's count

    # The other database's view of the same folder: fresh.
    result = run("status", "--max-age", "26h", "--json", folder=tmp_path, POSTGRES_DB="my_app")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    found = (data["database"], data["newest"]["name"], data["stale"])
    assert found == ("my_app", theirs.name, False)
    assert [(o["database"], o["count"], o["newest"]) for o in data["other_databases"]] == [
        ("velocity", 1, mine.name)
    ]


def test_no_backup_of_the_configured_database_is_stale(tmp_path: Path) -> None:
    make_backup(tmp_path, timedelta(hours=1), database="my_app")
    result = run("status", "--max-age", "26h", folder=tmp_path, PGDATABASE="velocity")
    assert result.returncode == 1
    assert "STALE: there is no backup of database 'velocity'" in result.stderr
    assert "Newest:        none of database 'velocity'" in result.stdout


def test_no_database_configured_means_any_database(tmp_path: Path) -> None:
    make_backup(tmp_path, timedelta(hours=30), database="velocity")
    theirs = make_backup(tmp_path, timedelta(hours=1), database="my_app")
    result = run("status", "--max-age", "26h", "--json", folder=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["database"], data["newest"]["name"]) == (None, theirs.name)
