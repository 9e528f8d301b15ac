"""verify --remote, off-site cleanup and status, against real S3 servers (moto's and
Swift's) and the real age."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Target, load_varied_schema
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    Keys,
    age_keys,
    bucket,
    fake_backup,
    local_files,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.settings import load_settings
from velocity_pg.store import catalog
from velocity_pg.verbs import cleanup


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if catalog.is_backup_name(p.name))


def name_days_ago(days: float, database: str = "velocity") -> str:
    return catalog.format_name(datetime.now(UTC) - timedelta(days=days), database)


def test_verify_remote_with_and_without_identity_and_the_drill(
    target: Target, bucket: Bucket, age_keys: Keys
) -> None:
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket, age_keys))
    assert target.run("backup", env=env).returncode == 0
    (name,) = backups_in(target.backup_dir)

    without = target.env(**offsite_env(bucket, age_keys, identity=False))
    result = target.run("verify", "--remote", env=without)
    assert result.returncode == 0, result.stderr
    assert "checksum of the encrypted object" in result.stdout
    assert "set BACKUP_AGE_IDENTITY_FILE" in result.stdout

    result = target.run("verify", "--remote", name, env=env)
    assert result.returncode == 0, result.stderr
    assert "decrypted dump checksum" in result.stdout

    # The local copy is not needed: the drill restores from the off-site one.
    (target.backup_dir / name).unlink()
    result = target.run("verify", "--remote", "--restore", "--json", env=env)
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads(result.stdout)["backups"]
    assert outcome["ok"] and any("restore drill" in c for c in outcome["checks"])
    assert backups_in(target.backup_dir) == []  # the downloaded copy is gone again
    assert [p for p in target.backup_dir.iterdir() if p.name.endswith(".partial")] == []
    listed = json.loads(target.run("list", "--remote", "--json", env=env).stdout)
    assert listed["backups"][0]["last_verification"]["method"] == "restore"
    assert listed["backups"][0]["last_verification"]["ok"] is True
    with target.connect("postgres") as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'velocity_pg_verify_%'"
        ).fetchone()
    assert left == (0,)


def test_cleanup_off_site_ages_from_the_backups_own_time(target: Target, bucket: Bucket) -> None:
    # Uploaded just now (LastModified = now), made long ago: ages come from the backup.
    names = [name_days_ago(d) for d in (100, 60, 40, 2, 1)]
    for name in names:
        fake_backup(target.backup_dir, name)
    env = target.env(**offsite_env(bucket), BACKUP_MAX_AGE_DAYS="365")
    assert target.run("push", "--all", env=env).returncode == 0
    env["BACKUP_S3_MAX_AGE_DAYS"] = "30"
    before = local_files(target.backup_dir)
    keys = bucket.names()

    dry = target.run("cleanup", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"cleanup of {target.backup_dir}" in dry.stdout  # the local plan
    assert "off-site cleanup of s3://" in dry.stdout  # and the off-site plan
    for name in names[:3]:
        assert f"would delete {name}" in dry.stdout
    assert bucket.names() == keys and local_files(target.backup_dir) == before

    result = target.run("cleanup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(d["name"] for d in data["offsite"]["delete"]) == sorted(names[:3])
    assert all(d["status"] == "deleted" for d in data["offsite"]["delete"])
    assert bucket.names() == sorted(f"db/{n}{s}" for n in names[3:] for s in ("", ".json"))
    assert local_files(target.backup_dir) == before  # local retention: 365 days


def test_cleanup_off_site_keeps_the_floor(target: Target, bucket: Bucket) -> None:
    names = [name_days_ago(d) for d in (300, 200, 100)]
    for name in names:
        fake_backup(target.backup_dir, name)
    env = target.env(**offsite_env(bucket), BACKUP_MAX_AGE_DAYS="365")
    assert target.run("push", "--all", env=env).returncode == 0
    env |= {"BACKUP_S3_MAX_AGE_DAYS": "1", "BACKUP_S3_MIN_KEEP": "2"}
    result = target.run("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert f"deleted      {names[0]}" in result.stdout
    assert bucket.names() == sorted(f"db/{n}{s}" for n in names[1:] for s in ("", ".json"))
    # The defaults: off-site retention follows the local settings.
    env.pop("BACKUP_S3_MAX_AGE_DAYS")
    env.pop("BACKUP_S3_MIN_KEEP")
    env["BACKUP_MAX_AGE_DAYS"] = "1"
    result = target.run("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    # Local: 1 day, floor 1; off-site the same: the newest is always kept on both sides.
    assert backups_in(target.backup_dir) == [names[2]]
    assert bucket.names() == [f"db/{names[2]}", f"db/{names[2]}.json"]


def test_cleanup_removes_unfinished_uploads_after_an_hour(target: Target, bucket: Bucket) -> None:
    name = name_days_ago(1, target.dbname)
    fake_backup(target.backup_dir, name)
    env = target.env(**offsite_env(bucket))
    assert target.run("push", env=env).returncode == 0
    # What killed pushes leave: an object without manifest, multipart uploads killed
    # before their first part and after it.
    orphan, silent, parted = name_days_ago(2), name_days_ago(3), name_days_ago(4)
    bucket.write(f"db/{orphan}", b"half an upload")
    bucket.client.create_multipart_upload(Bucket=bucket.name, Key=f"db/{silent}")
    upload = bucket.client.create_multipart_upload(Bucket=bucket.name, Key=f"db/{parted}")
    bucket.client.upload_part(
        Bucket=bucket.name,
        Key=f"db/{parted}",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    settings = load_settings(environ=env)
    soon = cleanup.cleanup_remote(settings, now=lambda: datetime.now(UTC))
    # The object and the part are minutes old: a push may be writing them right now.
    # (moto reports every multipart upload as initiated in 2010, so there the one without
    # a part counts as old already; Swift tells the truth, and it goes only later.)
    assert {d.name for d in soon.leftovers} <= {silent}
    later = cleanup.cleanup_remote(settings, now=lambda: datetime.now(UTC) + timedelta(hours=2))
    gone = sorted((d.name, d.status) for d in [*soon.leftovers, *later.leftovers])
    assert gone == sorted((n, "deleted") for n in (orphan, silent, parted))
    assert bucket.uploads() == []
    assert bucket.names() == [f"db/{name}", f"db/{name}.json"]


def test_status_shows_the_newest_off_site_copy(target: Target, bucket: Bucket) -> None:
    env = target.env(**offsite_env(bucket))
    none = target.run("status", "--remote-max-age", "1d", env=env)
    assert none.returncode == 1
    assert "there is no off-site copy" in none.stderr
    old = name_days_ago(3, target.dbname)
    fake_backup(target.backup_dir, old)
    assert target.run("push", env=env).returncode == 0
    stale = target.run("status", "--remote-max-age", "2d", env=env)
    assert stale.returncode == 1
    assert "the newest off-site copy is older than 2d" in stale.stderr
    fresh = target.run("status", "--remote-max-age", "4d", "--json", env=env)
    assert fresh.returncode == 0, fresh.stderr
    data = json.loads(fresh.stdout)
    assert data["offsite"]["newest"]["name"] == old
    assert 3 * 86400 - 120 < data["offsite"]["newest"]["age_seconds"] < 3 * 86400 + 120
    text = target.run("status", env=env)
    assert f"Newest off-site: {old} (3d 0h old, not encrypted)" in text.stdout
    plain = target.run("status", "--remote-max-age", "1d", env=target.env())
    assert plain.returncode == 2 and "BACKUP_S3_URL" in plain.stderr


def test_offsite_bench_runs_to_completion(tmp_path: Path) -> None:
    """The memory benchmark, at a tiny size (it asserts no timing)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(repo / "bench" / "offsite_bench.py"), "--size-mib", "4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and "peak RSS of `push`" in result.stdout
