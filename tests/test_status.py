"""``velocity-pg status`` and the manifest as list/status show it (files only, no database)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import clean_env

from velocity_pg.errors import ConfigError
from velocity_pg.status import parse_duration
from velocity_pg.store import catalog, manifest


def run(
    *args: str, folder: Path, cwd: Path | None = None, **extra: str
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
        timeout=60,
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
