"""Off-site faults, each with the local backups and the bucket checked afterwards.

Real S3 APIs (moto's server and Swift's S3 layer; a moto that checks credentials), the
real age, a real kill of the velocity-pg process during an upload.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Target, load_varied_schema
from offsite_support import (  # noqa: F401 (fixtures)
    AWS_KEY_ID,
    AWS_SECRET,
    AuthServer,
    Bucket,
    Keys,
    age_keys,
    auth_server,
    aws_env,
    bucket,
    fake_backup,
    free_port,
    local_files,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.settings import load_settings
from velocity_pg.store import catalog, offsite

OLD = "velocity_2026-01-01_000000.dump"


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if catalog.is_backup_name(p.name))


def assert_push_failed_but_local_kept(target: Target, result: object, reason: str) -> str:
    assert result.returncode == 1, result.stderr  # type: ignore[attr-defined]
    err: str = result.stderr  # type: ignore[attr-defined]
    (line,) = err.strip().splitlines()
    assert reason in line
    names = backups_in(target.backup_dir)
    new = [n for n in names if n != OLD]
    assert len(new) == 1
    assert "was created locally" in line and f"velocity-pg push {new[0]}" in line
    assert (target.backup_dir / (new[0] + ".json")).exists()
    return new[0]


def test_bucket_missing(target: Target, bucket: Bucket) -> None:
    load_varied_schema(target)
    fake_backup(target.backup_dir, OLD)
    env = target.env(**offsite_env(bucket))
    env["BACKUP_S3_URL"] = f"s3://vpg-missing-{uuid.uuid4().hex[:8]}/db"
    result = target.run("backup", env=env)
    assert_push_failed_but_local_kept(target, result, "does not exist; create it")
    assert bucket.names() == []


def test_endpoint_down(target: Target, bucket: Bucket) -> None:
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket))
    env["BACKUP_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = target.run("backup", env=env)
    assert time.monotonic() - started < 60  # bounded retries, no hang
    assert_push_failed_but_local_kept(target, result, "cannot connect to http://127.0.0.1:")
    # status --remote-max-age cannot read the bucket: that is not fresh either.
    status = target.run("status", "--remote-max-age", "1d", env=env)
    assert status.returncode == 1
    assert "cannot be read" in status.stderr


def test_wrong_credentials(target: Target, auth_server: AuthServer) -> None:
    load_varied_schema(target)
    name = f"vpg-{uuid.uuid4().hex[:12]}"
    client = auth_server.client(auth_server.full)
    client.create_bucket(Bucket=name)
    env = target.env(**auth_server.env(("AKIAWRONGKEY0000", "not-the-secret"), name))
    result = target.run("backup", env=env)
    assert_push_failed_but_local_kept(target, result, "refused the credentials")
    assert "not-the-secret" not in result.stdout + result.stderr
    assert client.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
    # With the right keys the same backup goes off-site.
    (local,) = backups_in(target.backup_dir)
    pushed = target.run("push", local, env=target.env(**auth_server.env(auth_server.full, name)))
    assert pushed.returncode == 0, pushed.stderr


@pytest.mark.s3_only(
    "swift", reason="moto's plain server takes any credentials (test_wrong_credentials: its IAM)"
)
@pytest.mark.parametrize(
    "keys",
    [(AWS_KEY_ID, "not-the-secret"), ("velocity:nobody", AWS_SECRET)],
    ids=["wrong secret", "unknown user"],
)
def test_swift_refuses_wrong_credentials(
    target: Target, bucket: Bucket, keys: tuple[str, str]
) -> None:
    load_varied_schema(target)
    env = target.env(**offsite_env(bucket)) | {
        "AWS_ACCESS_KEY_ID": keys[0],
        "AWS_SECRET_ACCESS_KEY": keys[1],
    }
    result = target.run("backup", env=env)
    assert_push_failed_but_local_kept(target, result, "refused the credentials")
    assert keys[1] not in result.stdout + result.stderr
    assert bucket.names() == []


def test_no_credentials_at_all_is_a_configuration_error(target: Target, bucket: Bucket) -> None:
    env = target.env(**offsite_env(bucket))
    env.pop("AWS_ACCESS_KEY_ID")
    env.pop("AWS_SECRET_ACCESS_KEY")
    result = target.run("backup", env=env)
    assert result.returncode == 2
    assert "no S3 credentials" in result.stderr
    assert backups_in(target.backup_dir) == []


def test_upload_killed_halfway(target: Target, bucket: Bucket) -> None:
    """SIGKILL during a large upload: nothing counts; the next push completes it."""
    name = "velocity_2026-11-30_120000.dump"
    fake_backup(target.backup_dir, name, size=96 * 1024 * 1024)
    before = local_files(target.backup_dir)
    env = target.env(**offsite_env(bucket))
    proc = target.popen("push", name, env=env)
    deadline = time.monotonic() + 60
    while True:  # until the multipart upload has parts in the bucket
        uploads = bucket.uploads()
        if uploads:
            parts = bucket.client.list_parts(
                Bucket=bucket.name, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
            ).get("Parts", [])
            if parts:
                break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Nothing that looks like a backup: no manifest, not listed.
    assert f"db/{name}.json" not in bucket.names()
    listed = target.run("list", "--remote", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"backups": []' in listed.stdout
    assert local_files(target.backup_dir) == before
    assert bucket.uploads()  # the unfinished upload is still there...
    # ... and for an hour after its last part it may be a live push: never touched.
    soon = target.run("push", name, env=env)
    assert soon.returncode == 1
    assert f"another push of {name} is uploading it" in soon.stdout
    assert len(bucket.uploads()) == 1 and f"db/{name}" not in bucket.names()
    # An hour later it is a killed push's leftover: the next push aborts it.
    settings = load_settings(environ=env)
    store = offsite.prepare(settings).store
    later = datetime.now(UTC) + offsite.LEFTOVER_MIN_AGE + timedelta(minutes=1)
    offsite.clear_stale_uploads(store, name, name, now=lambda: later)
    assert bucket.uploads() == []
    again = target.run("push", name, env=env)
    assert again.returncode == 0, again.stderr
    assert bucket.names() == [f"db/{name}", f"db/{name}.json"]
    assert bucket.read(f"db/{name}") == (target.backup_dir / name).read_bytes()
    assert local_files(target.backup_dir) == before


def test_object_deleted_or_damaged_in_the_bucket(
    target: Target, bucket: Bucket, age_keys: Keys
) -> None:
    env = target.env(**offsite_env(bucket, age_keys))
    damaged, deleted = "velocity_2026-11-30_120000.dump", "velocity_2026-11-29_120000.dump"
    for name in (damaged, deleted):
        fake_backup(target.backup_dir, name, size=300_000)
    pushed = target.run("push", "--all", env=env)
    assert pushed.returncode == 0, pushed.stderr
    good = target.run("verify", "--remote", "--all", env=env)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("ok ") == 2
    # Damage one object (same size, one byte flipped); delete the other.
    data = bytearray(bucket.read(f"db/{damaged}.age"))
    data[len(data) // 2] ^= 0xFF
    bucket.write(f"db/{damaged}.age", bytes(data))
    bucket.client.delete_object(Bucket=bucket.name, Key=f"db/{deleted}.age")
    for name in (damaged, deleted):
        for path in (target.backup_dir / name, target.backup_dir / (name + ".json")):
            path.unlink()
    before_local = local_files(target.backup_dir)
    before_bucket = bucket.names()

    bad = target.run("verify", "--remote", "--all", env=env)
    assert bad.returncode == 1
    assert f"FAILED  {damaged} (off-site)" in bad.stdout
    assert f"FAILED  {deleted} (off-site)" in bad.stdout
    assert "damaged" in bad.stdout and "download" in bad.stdout
    for name in (damaged, deleted):
        pulled = target.run("pull", name, env=env)
        assert pulled.returncode == 1
        assert len(pulled.stderr.strip().splitlines()) == 1
    assert local_files(target.backup_dir) == before_local  # no temporary file left
    assert bucket.names() == before_bucket
    listed = target.run("list", "--remote", env=env)
    assert "FAILED" in listed.stdout  # the last verification says so


def test_wrong_identity(target: Target, bucket: Bucket, age_keys: Keys) -> None:
    env = target.env(**offsite_env(bucket, age_keys))
    name = "velocity_2026-11-30_120000.dump"
    fake_backup(target.backup_dir, name, size=200_000)
    assert target.run("push", name, env=env).returncode == 0
    (target.backup_dir / name).unlink()
    (target.backup_dir / (name + ".json")).unlink()
    before_bucket = bucket.snapshot()
    env["BACKUP_AGE_IDENTITY_FILE"] = str(age_keys.other_identity)
    pulled = target.run("pull", name, env=env)
    assert pulled.returncode == 1
    assert "cannot decrypt" in pulled.stderr and "wrong identity" in pulled.stderr
    assert local_files(target.backup_dir) == {}
    verified = target.run("verify", "--remote", name, env=env)
    assert verified.returncode == 1
    assert "cannot decrypt" in verified.stdout
    # No identity at all: a configuration error before downloading.
    env.pop("BACKUP_AGE_IDENTITY_FILE")
    pulled = target.run("pull", name, env=env)
    assert pulled.returncode == 2
    assert "BACKUP_AGE_IDENTITY_FILE" in pulled.stderr
    assert local_files(target.backup_dir) == {}
    snapshot = bucket.snapshot()
    # verify wrote its verdict into the manifest; the object itself is untouched.
    assert {k: v for k, v in snapshot.items() if not k.endswith(".json")} == {
        k: v for k, v in before_bucket.items() if not k.endswith(".json")
    }


def test_failed_deletion_off_site_is_reported(target: Target, auth_server: AuthServer) -> None:
    name = f"vpg-{uuid.uuid4().hex[:12]}"
    client = auth_server.client(auth_server.full)
    client.create_bucket(Bucket=name)
    old, new = "velocity_2026-01-01_000000.dump", "velocity_2026-11-30_120000.dump"
    for backup in (old, new):
        fake_backup(target.backup_dir, backup)
    full = target.env(**auth_server.env(auth_server.full, name), BACKUP_MAX_AGE_DAYS="365")
    assert target.run("push", "--all", env=full).returncode == 0
    keys_before = sorted(o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"])
    env = target.env(
        **auth_server.env(auth_server.no_delete, name),
        BACKUP_MAX_AGE_DAYS="365",
        BACKUP_S3_MAX_AGE_DAYS="30",
    )
    result = target.run("cleanup", env=env)
    assert result.returncode == 1
    assert f"NOT DELETED  {old}" in result.stdout
    assert "off-site cleanup was partial" in result.stderr
    keys_after = sorted(o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"])
    assert keys_after == keys_before  # the manifest goes first: nothing was half-deleted
    assert backups_in(target.backup_dir) == [old, new]  # local retention kept both


def test_a_backup_that_is_a_symlink_is_not_pushed(
    target: Target, bucket: Bucket, tmp_path: Path
) -> None:
    """A dump replaced by a symbolic link (its manifest still beside it) is not a backup of
    the folder: push refuses it by name and never follows it out of the folder."""
    env = target.env(**offsite_env(bucket))
    name = "velocity_2026-11-30_120000.dump"
    fake_backup(target.backup_dir, name, size=50_000)
    elsewhere = tmp_path / "elsewhere.dump"
    (target.backup_dir / name).rename(elsewhere)
    (target.backup_dir / name).symlink_to(elsewhere)
    named = target.run("push", name, env=env)
    assert named.returncode == 2, named.stderr
    assert f"{name!r} is not a file in the backup folder" in named.stderr
    for args in (["push"], ["push", "--all"]):
        result = target.run(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert "Nothing to push: no backups in" in result.stdout
    assert bucket.names() == []
