"""A bucket and prefix shared, and what else lies in it: two backup folders ("hosts")
pushing the same database, a hostile off-site manifest, pushes and cleanups at once
(issue 17, items 4, 6 and 16), against moto's real S3 server."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    fake_backup,
    offsite_env,
    s3_endpoint,
)

from velocity_pg.settings import load_settings
from velocity_pg.store import catalog, identity, lock, offsite
from velocity_pg.verbs import cleanup


def name_ago(hours: float, database: str) -> str:
    return catalog.format_name(datetime.now(UTC) - timedelta(hours=hours), database)


def test_two_folders_share_a_prefix(target: Target, bucket: Bucket, tmp_path: Path) -> None:
    host_b = tmp_path / "host-b"
    host_b.mkdir(mode=0o700)
    db = target.dbname
    env_a = target.env(**offsite_env(bucket), BACKUP_S3_MAX_COUNT="2", BACKUP_MAX_AGE_DAYS="365")
    env_b = env_a | {"BACKUP_DIR": str(host_b)}
    a_names = [name_ago(h, db) for h in (72, 48)]  # host A: its newest is two days old
    b_names = [name_ago(h, db) for h in (2, 1)]  # host B: fresh copies of the same database
    for name in a_names:
        fake_backup(target.backup_dir, name, database=db)
    for name in b_names:
        fake_backup(host_b, name, database=db)
    assert target.run("push", "--all", env=env_a).returncode == 0
    assert target.run("push", "--all", env=env_b).returncode == 0

    # Each folder got its identity once: 32 hex digits, mode 0600, never a backup.
    id_file = target.backup_dir / identity.NAME
    id_a = id_file.read_text().strip()
    id_b = (host_b / identity.NAME).read_text().strip()
    assert identity.PATTERN.match(id_a) and identity.PATTERN.match(id_b) and id_a != id_b
    assert stat.S_IMODE(id_file.stat().st_mode) == 0o600
    assert id_file.stat().st_uid == target.backup_dir.stat().st_uid
    assert [b.name for b in catalog.list_backups(target.backup_dir)] == a_names[::-1]
    manifests = {n: json.loads(bucket.read(f"db/{n}.json")) for n in a_names + b_names}
    assert {n: m["origin"] for n, m in manifests.items()} == {
        **dict.fromkeys(a_names, id_a),
        **dict.fromkeys(b_names, id_b),
    }

    # A copy pushed before identities existed (no origin): B's by its local manifest,
    # of unknown owner for A.
    legacy = b_names[0]
    old_style = {k: v for k, v in manifests[legacy].items() if k != "origin"}
    bucket.write(f"db/{legacy}.json", json.dumps(old_style).encode())

    listed = target.run("list", "--remote", "--json", env=env_a)
    assert listed.returncode == 0, listed.stderr
    owners = {b["name"]: b["owner"] for b in json.loads(listed.stdout)["backups"]}
    assert owners == {
        a_names[0]: "this folder",
        a_names[1]: "this folder",
        b_names[0]: "unknown",
        b_names[1]: id_b[:8],
    }
    table = target.run("list", "--remote", env=env_a).stdout
    assert "WHOSE" in table and "this folder" in table and id_b[:8] in table

    # A's status counts only A's copies: two days old is stale for 1d.
    status = target.run("status", "--remote-max-age", "1d", env=env_a)
    assert status.returncode == 1, status.stdout
    assert "the newest off-site copy is older than 1d" in status.stderr
    assert "2 off-site copy(ies)" in status.stderr and "not this backup folder's" in status.stderr

    # A's cleanup (at most 2) keeps both of its own and never touches B's.
    before = bucket.names()
    result = target.run("cleanup", env=env_a)
    assert result.returncode == 0, result.stderr
    assert bucket.names() == before
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert f"{b_names[1]} (folder {id_b[:8]})" in warning
    assert f"{legacy} (owner unknown)" in warning
    data = json.loads(target.run("cleanup", "--json", env=env_a).stdout)
    assert sorted(d["name"] for d in data["offsite"]["keep"]) == sorted(a_names)
    assert sorted(f["name"] for f in data["offsite"]["foreign"]) == sorted(b_names)

    # B, with at most 1: deletes its own older copy (the legacy one, matched by its local
    # manifest), never A's.
    env_b["BACKUP_S3_MAX_COUNT"] = "1"
    result = target.run("cleanup", env=env_b)
    assert result.returncode == 0, result.stderr
    assert f"deleted      {legacy}" in result.stdout
    assert bucket.names() == sorted(
        f"db/{n}{s}" for n in [*a_names, b_names[1]] for s in ("", ".json")
    )
    assert "BACKUP_S3_MAX_COUNT" in result.stdout  # the off-site setting that applied
    offsite_part = result.stdout[result.stdout.index("off-site cleanup of") :]
    assert "BACKUP_MAX_COUNT" not in offsite_part and "BACKUP_MIN_KEEP" not in offsite_part
    assert "BACKUP_S3_MIN_KEEP" in offsite_part
    assert id_file.read_text().strip() == id_a  # made once, kept


def test_a_nested_off_site_manifest_is_that_copy_s_problem_only(
    target: Target, bucket: Bucket
) -> None:
    db = target.dbname
    good, bad = name_ago(3, db), name_ago(5, db)
    fake_backup(target.backup_dir, good, database=db)
    env = target.env(**offsite_env(bucket))
    assert target.run("push", good, env=env).returncode == 0
    bucket.write(f"db/{bad}", b"whatever")
    bucket.write(f"db/{bad}.json", b"[" * 1000 + b"]" * 1000)  # 2 KB, 1,000 levels

    listed = target.run("list", "--remote", env=env)
    assert listed.returncode == 0, listed.stderr
    assert good in listed.stdout and "nested deeper than" in listed.stdout

    verified = target.run("verify", "--remote", "--all", env=env)
    assert verified.returncode == 1
    assert f"ok      {good}" in verified.stdout
    assert f"FAILED  {bad} (off-site): manifest is damaged" in verified.stdout
    assert "unexpected" not in verified.stderr
    named = target.run("verify", "--remote", bad, env=env)
    assert named.returncode == 1
    assert "is damaged (it is nested deeper than 5 levels)" in named.stderr

    cleaned = target.run("cleanup", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"left alone   {bad}" in cleaned.stdout
    assert f"db/{bad}.json" in bucket.names() and f"db/{bad}" in bucket.names()

    status = target.run("status", "--remote-max-age", "1d", env=env)
    assert status.returncode == 0, status.stderr

    # The scheduler with a metrics file reads the bucket at start: it still backs up.
    metrics_file = target.workdir / "velocity.prom"
    proc = target.popen(
        "schedule",
        env=env | {"BACKUP_SCHEDULE": "@every 1h", "BACKUP_METRICS_FILE": str(metrics_file)},
    )
    try:
        deadline = time.monotonic() + 90
        while len(catalog.list_backups(target.backup_dir)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scheduler made no backup"
            time.sleep(0.2)
        # The file is written at start too: wait for the run's own figures, so that
        # the stop below lands in the sleep after the run, not inside it.
        while "velocity_pg_last_run_timestamp_seconds " not in (
            metrics_file.read_text() if metrics_file.exists() else ""
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scheduler wrote no metrics after its run"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert "unexpected" not in out + err


def test_a_push_in_flight_is_never_aborted(target: Target, bucket: Bucket) -> None:
    """Another push of the same backup (here: another host's, its part uploaded just now)."""
    name = name_ago(1, target.dbname)
    fake_backup(target.backup_dir, name, database=target.dbname)
    env = target.env(**offsite_env(bucket))
    key = f"db/{name}"
    upload = bucket.client.create_multipart_upload(Bucket=bucket.name, Key=key)["UploadId"]
    bucket.client.upload_part(
        Bucket=bucket.name, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024
    )

    second = target.run("push", name, env=env)
    assert second.returncode == 1
    assert f"another push of {name} is uploading it" in second.stdout
    assert [u["UploadId"] for u in bucket.uploads()] == [upload]
    assert bucket.names() == []

    cleaned = target.run("cleanup", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert [u["UploadId"] for u in bucket.uploads()] == [upload]

    # Silent for more than the hour: a killed push's leftover, removed.
    settings = load_settings(environ=env)
    later = datetime.now(UTC) + offsite.LEFTOVER_MIN_AGE + timedelta(minutes=1)
    result = cleanup.cleanup_remote(settings, now=lambda: later)
    assert [(d.name, d.status) for d in result.leftovers] == [(name, "deleted")]
    assert bucket.uploads() == []


def test_cleanup_never_cuts_a_long_push_of_this_folder(target: Target, bucket: Bucket) -> None:
    name = name_ago(1, target.dbname)
    fake_backup(target.backup_dir, name, size=96 * 1024 * 1024, database=target.dbname)
    env = target.env(**offsite_env(bucket))
    settings = load_settings(environ=env)
    proc = target.popen("push", name, env=env)
    deadline = time.monotonic() + 60
    while not bucket.uploads():  # the push is uploading
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.02)
    # Hours later by the clock (as if the push had been running that long): the push
    # holds the folder, so its upload is no leftover.
    later = datetime.now(UTC) + timedelta(hours=3)
    result = cleanup.cleanup_remote(settings, now=lambda: later)
    assert result.leftovers == []
    assert "left for the next cleanup" in result.leftovers_skipped
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert bucket.names() == [f"db/{name}", f"db/{name}.json"]

    # Without a push, the folder is free and old leftovers go.
    bucket.client.create_multipart_upload(Bucket=bucket.name, Key=f"db/{name_ago(9, 'x')}")
    with lock.shared(target.backup_dir, "push"):  # a push of this folder at work
        held = cleanup.cleanup_remote(settings, now=lambda: later)
    assert held.leftovers == [] and len(bucket.uploads()) == 1
    free = cleanup.cleanup_remote(settings, now=lambda: later)
    assert [d.status for d in free.leftovers] == ["deleted"] and bucket.uploads() == []
    assert os.path.exists(target.backup_dir / identity.NAME)


#: Root in a user namespace, subordinate ids mapped (uid 1000 owns the folder).
NAMESPACE = ("unshare", "--map-auto", "--map-root-user", "--mount")
ROOT_MAKES_IDENTITY = r"""
import json, os, subprocess, sys
from pathlib import Path
from velocity_pg.store import identity

subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", "/srv"], check=True)
folder = Path("/srv/backups")
folder.mkdir(mode=0o700)
os.chown(folder, 1000, 1000)
made = identity.ensure(folder)
st = os.lstat(folder / identity.NAME)
print(json.dumps({"id": made, "again": identity.ensure(folder), "uid": st.st_uid,
                  "gid": st.st_gid, "mode": st.st_mode & 0o7777,
                  "files": sorted(os.listdir(folder))}))
"""


def test_root_makes_the_identity_for_the_folder_owner(tmp_path: Path) -> None:
    """`docker compose exec db velocity-pg push` runs as root in postgres's folder: the
    identity it makes belongs to the folder's owner, as `.velocity.lock` does."""
    probe = subprocess.run(
        [*NAMESPACE, "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("needs subordinate ids (/etc/subuid) and newuidmap (Debian: uidmap)")
    result = subprocess.run(
        [*NAMESPACE, sys.executable, "-c", ROOT_MAKES_IDENTITY],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert identity.PATTERN.match(data["id"]) and data["again"] == data["id"]
    assert (data["uid"], data["gid"], data["mode"]) == (1000, 1000, 0o600)
    assert data["files"] == [identity.NAME]  # no temporary file left
