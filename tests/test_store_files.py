"""Hostile files in the backup folder: FIFOs, malformed manifests, unreadable dumps.

Each is a real file (``os.mkfifo``, ``chmod 000``, a 100000-level JSON) and each
verb runs as a real process with a timeout: a hang fails the test instead of
stalling it.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Target
from test_status import make_backup, run

from velocity_pg.store import manifest

TIMEOUT = 20


def run_quick(*args: str, folder: Path) -> subprocess.CompletedProcess[str]:
    try:
        return run(*args, folder=folder, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"velocity-pg {' '.join(args)} hung on a non-regular file: {exc}")


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "unexpected" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# -- item 11: anything that is not a regular file is never opened for reading -------------


def test_fifo_named_like_a_manifest_hangs_nothing(tmp_path: Path) -> None:
    good = make_backup(tmp_path, timedelta(hours=3))
    fifo_dump = make_backup(tmp_path, timedelta(hours=1))
    manifest.path_for(fifo_dump).unlink()
    os.mkfifo(manifest.path_for(fifo_dump))

    listed = run_quick("list", folder=tmp_path)
    assert listed.returncode == 0, listed.stderr
    no_traceback(listed)
    lines = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:-1]}
    assert lines[fifo_dump.name].endswith("manifest unreadable")
    assert lines[good.name].endswith("not yet")
    data = json.loads(run_quick("list", "--json", folder=tmp_path).stdout)
    by_name = {b["name"]: b for b in data["backups"]}
    assert by_name[fifo_dump.name]["manifest"] == "unreadable"
    assert "not a regular file" in by_name[fifo_dump.name]["manifest_problem"]

    status = run_quick("status", folder=tmp_path)
    assert status.returncode == 0, status.stderr
    no_traceback(status)
    assert "unreadable" in status.stdout
    assert "not a regular file" in status.stdout

    verified = run_quick("verify", "--all", folder=tmp_path)
    no_traceback(verified)
    assert verified.returncode == 1
    assert f"FAILED  {fifo_dump.name}: " in verified.stdout
    assert "not a regular file" in verified.stdout
    assert good.name in verified.stdout  # the other backup was still checked


def test_fifo_named_like_a_dump_hangs_nothing(tmp_path: Path) -> None:
    good = make_backup(tmp_path, timedelta(hours=3))
    fifo = tmp_path / "velocity_2026-01-01_000000.dump"
    os.mkfifo(fifo)
    for args in (("list",), ("status",), ("verify", "--all")):
        result = run_quick(*args, folder=tmp_path)
        no_traceback(result)
        assert fifo.name not in result.stdout  # not a backup: never listed or opened
        assert good.name in result.stdout
    named = run_quick("verify", fifo.name, folder=tmp_path)
    assert named.returncode == 1
    assert f"{fifo.name} in {tmp_path} is not a regular file" in named.stderr


def test_restore_check_refuses_fifos_without_hanging(target: Target) -> None:
    made = target.run("backup", "--json")
    assert made.returncode == 0, made.stderr
    dump = Path(json.loads(made.stdout)["path"])
    side = manifest.path_for(dump)
    side.unlink()
    os.mkfifo(side)
    result = target.run("restore", dump.name, "--check", "--yes", timeout=TIMEOUT)
    assert result.returncode == 1
    no_traceback(result)
    assert f"manifest {side.name} is not a regular file" in result.stderr
    assert "nothing was changed" in result.stderr

    fifo = target.backup_dir / "velocity_2026-01-01_000000.dump"
    os.mkfifo(fifo)
    result = target.run("restore", fifo.name, "--check", "--yes", timeout=TIMEOUT)
    assert result.returncode == 1
    assert "is not a regular file" in result.stderr


# -- item 12: one malformed manifest is unreadable for that backup only ------------------


def _manifest_json(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(manifest.path_for(path).read_text())
    return data


MALFORMED: dict[str, object] = {
    "wrong type": lambda good: json.dumps({**good, "size_bytes": "12"}).encode(),
    "bool as number": lambda good: json.dumps({**good, "toc_entries": True}).encode(),
    "negative size": lambda good: json.dumps({**good, "size_bytes": -1}).encode(),
    "verification wrong type": lambda good: json.dumps(
        {**good, "last_verification": {"at": 5, "method": "checksum", "ok": "yes"}}
    ).encode(),
    "verification a list": lambda good: json.dumps({**good, "last_verification": [1]}).encode(),
    "NaN duration": lambda good: json.dumps({**good, "duration_seconds": float("nan")}).encode(),
    "deeply nested": lambda good: b"[" * 100000 + b"]" * 100000,
    "nested in a field": lambda good: (
        json.dumps({**good, "database": "X"}).replace('"X"', "[" * 50000 + "]" * 50000).encode()
    ),
    "huge": lambda good: json.dumps({**good, "database": "x" * (20 << 20)}).encode(),
    "not UTF-8": lambda good: (
        json.dumps(good).replace("app", "\udcff").encode("utf-8", "surrogateescape")
    ),
    "not an object": lambda good: b"12",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_manifest_is_unreadable_for_that_backup_only(tmp_path: Path, kind: str) -> None:
    older = make_backup(tmp_path, timedelta(hours=5))
    bad = make_backup(tmp_path, timedelta(hours=1))
    build = MALFORMED[kind]
    assert callable(build)
    manifest.path_for(bad).write_bytes(build(_manifest_json(older)))

    listed = run_quick("list", folder=tmp_path)
    assert listed.returncode == 0, listed.stderr
    no_traceback(listed)
    lines = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:-1]}
    assert lines[bad.name].endswith("manifest unreadable")
    assert lines[older.name].endswith("not yet")
    data = json.loads(run_quick("list", "--json", folder=tmp_path).stdout)
    by_name = {b["name"]: b for b in data["backups"]}
    assert by_name[bad.name]["manifest"] == "unreadable"
    assert by_name[older.name]["manifest"] is True

    status = run_quick("status", "--json", folder=tmp_path)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["count"] == 2
    problems = {p["name"]: p for p in report["ignored"]}
    assert set(problems) == {bad.name}
    assert problems[bad.name]["reason"] == "manifest_unreadable"
    assert report["newest"]["name"] == older.name  # judged by the one that can be trusted

    text = run_quick("status", folder=tmp_path)
    assert "manifest unreadable" in text.stdout
    assert "no manifest" not in text.stdout


def test_manifest_loads_refuses_without_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested"):
        manifest.loads(b"[" * 100000 + b"]" * 100000)
    with pytest.raises(ValueError, match="larger than"):
        manifest.loads(b" " * (manifest.MAX_BYTES + 1))
    with pytest.raises(ValueError, match="UTF-8"):
        manifest.loads(b'{"format": "\xff"}')


# -- unclear messages: an unreadable dump or manifest ----------------------------------------


@pytest.fixture
def not_root() -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")


def test_unreadable_dump_is_named_with_the_fix(tmp_path: Path, not_root: None) -> None:
    good = make_backup(tmp_path, timedelta(hours=3))
    locked = make_backup(tmp_path, timedelta(hours=1))
    locked.chmod(0)
    try:
        listed = run_quick("list", folder=tmp_path)
        status = run_quick("status", "--max-age", "2h", folder=tmp_path)
        verified = run_quick("verify", "--all", folder=tmp_path)
        named = run_quick("verify", locked.name, folder=tmp_path)
    finally:
        locked.chmod(0o600)
    for result in (listed, status, verified, named):
        no_traceback(result)
    lines = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:-1]}
    assert "dump unreadable" in lines[locked.name]
    assert "permission denied" in status.stdout
    assert locked.name in status.stdout
    assert status.returncode == 1  # the newest readable backup is 3 h old
    out = verified.stdout
    assert f"FAILED  {locked.name}: cannot read {locked.name}: permission denied" in out
    assert "chmod" in out or "chown" in out
    assert f"ok      {good.name}" in out or f"FAILED  {good.name}" in out
    assert named.returncode == 1
    assert f"cannot read {locked.name}: permission denied" in named.stdout + named.stderr


def test_restore_of_an_unreadable_dump_names_the_fix(target: Target, not_root: None) -> None:
    made = target.run("backup", "--json")
    assert made.returncode == 0, made.stderr
    dump = Path(json.loads(made.stdout)["path"])
    dump.chmod(0)
    try:
        result = target.run("restore", dump.name, "--check", "--yes", timeout=TIMEOUT)
    finally:
        dump.chmod(0o600)
    assert result.returncode == 1
    no_traceback(result)
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot read {dump.name}: permission denied" in line
    assert "chmod" in line or "chown" in line


def test_status_calls_an_unreadable_manifest_unreadable(tmp_path: Path, not_root: None) -> None:
    path = make_backup(tmp_path, timedelta(minutes=5))
    manifest.path_for(path).chmod(0)
    try:
        result = run_quick("status", folder=tmp_path)
        data = json.loads(run_quick("status", "--json", folder=tmp_path).stdout)
    finally:
        manifest.path_for(path).chmod(0o600)
    no_traceback(result)
    assert "no manifest" not in result.stdout
    assert f"{path.name}: manifest unreadable (cannot read manifest" in result.stdout
    assert "permission denied" in result.stdout
    (ignored,) = data["ignored"]
    assert ignored["reason"] == "manifest_unreadable"
    assert "permission denied" in ignored["detail"]


# -- item 2: a reader that may not create the lock file locks the folder ------------------


def test_reader_in_a_folder_it_cannot_write_still_holds_off_cleanup(
    tmp_path: Path, not_root: None
) -> None:
    """No lock file and no write access: the reader locks the folder itself; cleanup sees it."""
    from velocity_pg.store import lock

    for hours in (50, 60, 70):
        make_backup(tmp_path, timedelta(hours=hours))
    tmp_path.chmod(0o500)
    try:
        with lock.shared(tmp_path, "verify"):
            assert not (tmp_path / lock.LOCK_NAME).exists()  # it could not make one
            tmp_path.chmod(0o700)  # now a cleanup could delete: it must see the reader
            busy = run_quick("cleanup", "--max-count", "1", folder=tmp_path)
    finally:
        tmp_path.chmod(0o700)
    assert busy.returncode == 1
    assert "a restore, verify or another cleanup is using the backups" in busy.stderr
    assert len(list(tmp_path.glob("*.dump"))) == 3
    done = run_quick("cleanup", "--max-count", "1", folder=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deleted " in done.stdout
    assert len(list(tmp_path.glob("*.dump"))) < 3
