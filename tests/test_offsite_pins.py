"""Pins for real (issue 21): ``velocity-pg pin``/``unpin``/``backup --pin`` as processes,
against the test server and real S3 servers (moto's and Swift's, see conftest.py).

A pinned backup outlives ``cleanup --max-count 1`` here and off-site, with the pin as
the dry run's reason; an unpinned one goes; the pin travels with a push; a backup that
is only off-site is pinned there; an off-site update that fails leaves the local pin
and exits 1; a manifest from before pins reads as unpinned.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    fake_backup,
    free_port,
    local_files,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.store import catalog, manifest

REASON = "before the 3.2 upgrade"
#: Retention that keeps only the newest backup, here and off-site.
ONE = {"BACKUP_MAX_COUNT": "1", "BACKUP_MAX_AGE_DAYS": "365"}


def name_days_ago(days: float) -> str:
    return catalog.format_name(datetime.now(UTC) - timedelta(days=days), "velocity")


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if catalog.is_backup_name(p.name))


def pin_of(folder: Path, name: str) -> manifest.Pin | None:
    record = manifest.read(folder / name)
    assert record is not None
    return record.pin


def remote_record(bucket: Bucket, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(bucket.read(f"db/{name}.json"))
    return data


def remote_pin(bucket: Bucket, name: str) -> object:
    dump = remote_record(bucket, name)["dump"]
    assert isinstance(dump, dict)
    return dump.get("pin")


def three(target: Target) -> list[str]:
    names = [name_days_ago(d) for d in (3, 2, 1)]
    for each in names:
        fake_backup(target.backup_dir, each)
        manifest.path_for(target.backup_dir / each).chmod(0o600)  # as velocity-pg writes it
    return names


def test_pin_keeps_a_backup_through_cleanup_and_unpin_lets_it_go(target: Target) -> None:
    oldest, middle, newest = three(target)
    sha = manifest.read(target.backup_dir / oldest).sha256  # type: ignore[union-attr]
    env = target.env(**ONE)

    result = target.run("pin", oldest, "--reason", REASON, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{oldest} pinned in {target.backup_dir}: pinned: {REASON}" in result.stdout
    pin = pin_of(target.backup_dir, oldest)
    assert pin is not None and pin.reason == REASON and not pin.auto
    # The manifest was rewritten privately, and the backup's identity did not change.
    info = manifest.path_for(target.backup_dir / oldest).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert manifest.read(target.backup_dir / oldest).sha256 == sha  # type: ignore[union-attr]

    dry = target.run("cleanup", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    (kept,) = [ln for ln in dry.stdout.splitlines() if ln.startswith("keep") and oldest in ln]
    assert f"pinned: {REASON} although" in kept
    assert f"would delete {middle}" in dry.stdout
    data = json.loads(target.run("cleanup", "--dry-run", "--json", env=env).stdout)
    (decision,) = [d for d in data["keep"] if d["name"] == oldest]
    assert {"rule": "pinned", "label": f"pinned: {REASON}"} in decision["kept_by"]
    (gone,) = data["delete"]
    assert {"rule": "pinned", "why": "not pinned"} in gone["not_kept_by"]

    result = target.run("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert backups_in(target.backup_dir) == sorted([oldest, newest])

    listed = target.run("list", env=env)
    assert f"yes: {REASON}" in listed.stdout and "PINNED" in listed.stdout
    assert "1 pinned" in listed.stdout
    rows = {
        b["name"]: b for b in json.loads(target.run("list", "--json", env=env).stdout)["backups"]
    }
    assert rows[oldest]["pin"]["reason"] == REASON and rows[newest]["pin"] is None
    status = target.run("status", env=env)
    assert "Pinned:        1 (4.0 KiB)" in status.stdout
    assert json.loads(target.run("status", "--json", env=env).stdout)["pinned"] == {
        "count": 1,
        "bytes": 4096,
    }

    # Pinning again: the reason is updated, and said so; without --reason it stays.
    again = target.run("pin", oldest, "--reason", "keep for the audit", env=env)
    assert again.returncode == 0, again.stderr
    assert "was already pinned" in again.stdout and f"it was: pinned: {REASON}" in again.stdout
    same = target.run("pin", oldest, "--json", env=env)
    assert json.loads(same.stdout)["local"] == "already pinned"
    assert pin_of(target.backup_dir, oldest).reason == "keep for the audit"  # type: ignore[union-attr]

    result = target.run("unpin", oldest, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{oldest} unpinned" in result.stdout
    assert pin_of(target.backup_dir, oldest) is None
    result = target.run("unpin", oldest, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{oldest} was not pinned" in result.stdout

    result = target.run("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert backups_in(target.backup_dir) == [newest]


def test_pin_needs_a_readable_manifest(target: Target) -> None:
    oldest, middle, _ = three(target)
    manifest.path_for(target.backup_dir / oldest).unlink()
    manifest.path_for(target.backup_dir / middle).write_text("{ not json")
    before = local_files(target.backup_dir)
    for each, words in ((oldest, "has no manifest"), (middle, "is damaged")):
        result = target.run("pin", each, "--reason", REASON)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
        assert f"cannot pin {each}" in result.stderr
    missing = target.run("pin", name_days_ago(10))
    assert missing.returncode == 1 and "there is no backup" in missing.stderr
    assert target.run("pin", "not-a-backup").returncode == 2
    bad = target.run("pin", oldest, "--reason", "two\nlines")
    assert bad.returncode == 2 and "one line" in bad.stderr
    assert local_files(target.backup_dir) == before
    # A backup whose manifest cannot be read may be pinned: cleanup keeps it.
    result = target.run("cleanup", "--dry-run", env=target.env(**ONE))
    (kept,) = [ln for ln in result.stdout.splitlines() if ln.startswith("keep") and middle in ln]
    assert "pin unknown" in kept


def test_a_manifest_from_before_pins_reads_as_unpinned(target: Target) -> None:
    _, _, newest = three(target)
    path = manifest.path_for(target.backup_dir / newest)
    raw = json.loads(path.read_text())
    raw.pop("pin")
    path.write_text(json.dumps(raw))
    rows = json.loads(target.run("list", "--json").stdout)["backups"]
    assert [r["pin"] for r in rows] == [None, None, None]
    assert all(r["problem"] is None for r in rows)
    assert target.run("pin", newest).returncode == 0
    assert pin_of(target.backup_dir, newest) == manifest.Pin(
        at=pin_of(target.backup_dir, newest).at  # type: ignore[union-attr]
    )


def test_backup_pin_records_the_pin_as_the_manifest_is_written(target: Target) -> None:
    result = target.run("backup", "--pin", "--reason", "before the migration")
    assert result.returncode == 0, result.stderr
    assert "pinned: before the migration" in result.stdout
    (name,) = backups_in(target.backup_dir)
    pin = pin_of(target.backup_dir, name)
    assert pin is not None and pin.reason == "before the migration"
    result = target.run("backup", "--json")
    assert json.loads(result.stdout)["pin"] is None
    result = target.run("backup", "--reason", "x")
    assert result.returncode == 2 and "--reason goes with --pin" in result.stderr
    assert len(backups_in(target.backup_dir)) == 2


def test_the_pin_travels_off_site_and_off_site_cleanup_keeps_it(
    target: Target, bucket: Bucket
) -> None:
    oldest, middle, newest = three(target)
    env = target.env(**offsite_env(bucket), **ONE)
    assert target.run("pin", oldest, "--reason", REASON, env=env).returncode == 0
    result = target.run("push", "--all", env=env)
    assert result.returncode == 0, result.stderr
    assert remote_pin(bucket, oldest) == manifest.Pin("", REASON).to_json() | {
        "at": pin_of(target.backup_dir, oldest).at  # type: ignore[union-attr]
    }
    assert remote_pin(bucket, middle) is None
    objects = {k: bucket.read(k) for k in bucket.names() if not k.endswith(".json")}

    dry = target.run("cleanup", "--dry-run", "--json", env=env)
    offsite = json.loads(dry.stdout)["offsite"]
    (decision,) = [d for d in offsite["keep"] if d["name"] == oldest]
    assert {"rule": "pinned", "label": f"pinned: {REASON}"} in decision["kept_by"]
    result = target.run("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert bucket.names() == sorted(f"db/{n}{s}" for n in (oldest, newest) for s in ("", ".json"))
    listed = target.run("list", "--remote", env=env)
    assert f"yes: {REASON}" in listed.stdout
    rows = json.loads(target.run("list", "--remote", "--json", env=env).stdout)["backups"]
    assert {r["name"]: (r["pin"] or {}).get("reason") for r in rows} == {
        oldest: REASON,
        newest: None,
    }
    status = json.loads(target.run("status", "--json", env=env).stdout)
    assert status["offsite"]["pinned"]["count"] == 1

    # unpin rewrites both manifests; the copy's object is untouched.
    result = target.run("unpin", oldest, env=env)
    assert result.returncode == 0, result.stderr
    assert "unpinned off-site in s3://" in result.stdout
    assert remote_pin(bucket, oldest) is None
    assert all(bucket.read(k) == v for k, v in objects.items() if k in bucket.names())

    # Pinned locally while the copy was already off-site: the next push brings the pin.
    assert target.run("pin", newest, env=target.env(**ONE)).returncode == 0
    result = target.run("push", newest, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "pin updated" in result.stdout
    assert remote_pin(bucket, newest) is not None


def test_pin_of_a_backup_only_off_site(target: Target, bucket: Bucket) -> None:
    oldest, middle, newest = three(target)
    env = target.env(**offsite_env(bucket), **ONE)
    assert target.run("push", "--all", env=env).returncode == 0
    (target.backup_dir / oldest).unlink()
    manifest.path_for(target.backup_dir / oldest).unlink()
    before = bucket.read(f"db/{oldest}")

    result = target.run("pin", oldest, "--reason", REASON, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{oldest} pinned off-site in s3://" in result.stdout
    assert remote_pin(bucket, oldest)["reason"] == REASON  # type: ignore[index]
    assert bucket.read(f"db/{oldest}") == before
    assert backups_in(target.backup_dir) == [middle, newest]
    result = target.run("cleanup", env=env)
    assert result.returncode == 0, result.stderr
    assert f"db/{oldest}.json" in bucket.names() and f"db/{middle}.json" not in bucket.names()
    # Pulled back, it is pinned here too.
    assert target.run("pull", oldest, env=env).returncode == 0
    assert pin_of(target.backup_dir, oldest).reason == REASON  # type: ignore[union-attr]
    missing = target.run("pin", name_days_ago(20), env=env)
    assert missing.returncode == 1 and "nor off-site" in missing.stderr


def test_a_failed_off_site_update_leaves_the_local_pin_and_exits_1(
    target: Target, bucket: Bucket
) -> None:
    _, _, newest = three(target)
    env = target.env(**offsite_env(bucket), **ONE)
    assert target.run("push", newest, env=env).returncode == 0
    down = env | {"BACKUP_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    result = target.run("pin", newest, "--reason", REASON, env=down)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "off-site copy" in result.stderr and "NOT pinned yet" in result.stderr
    assert f"retry with `velocity-pg pin {newest}`" in result.stderr
    assert pin_of(target.backup_dir, newest).reason == REASON  # type: ignore[union-attr]
    assert remote_pin(bucket, newest) is None
    # The retry the message names: the local pin stays as it is, the copy gets it.
    result = target.run("pin", newest, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{newest} pinned off-site" in result.stdout
    assert remote_pin(bucket, newest)["reason"] == REASON  # type: ignore[index]
    assert os.path.exists(target.backup_dir / newest)
