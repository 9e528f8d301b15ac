"""``velocity-pg verify`` against real dumps: checksums, readable archives, restore drills."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Target, load_varied_schema, slow_table_sql, wait_for_sleep_in
from test_backup import _unshare_works

from velocity_pg.store import lock, manifest


def make_backup(target: Target) -> Path:
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["path"])


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_good_backup_passes_and_is_recorded(target: Target) -> None:
    load_varied_schema(target)
    dump = make_backup(target)
    result = target.run("verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok      {dump.name} (checksum, roles file, archive (")
    record = manifest.read(dump)
    assert record is not None and record.last_verification is not None
    assert record.last_verification.ok
    assert record.last_verification.method == "checksum"
    listed = json.loads(target.run("list", "--json").stdout)["backups"][0]
    assert listed["last_verification"]["ok"] is True


def test_flipped_byte_fails_and_names_the_backup(target: Target) -> None:
    load_varied_schema(target)
    dump = make_backup(target)
    flip_byte(dump, dump.stat().st_size // 2)
    result = target.run("verify", dump.name)
    assert result.returncode == 1
    assert f"FAILED  {dump.name}: SHA-256 does not match" in result.stdout
    record = manifest.read(dump)
    assert record is not None and record.last_verification is not None
    assert not record.last_verification.ok
    assert "FAILED" in target.run("list").stdout


def test_all_reports_one_line_each(target: Target) -> None:
    load_varied_schema(target)
    good = make_backup(target)
    bad = make_backup(target)
    bad.write_bytes(bad.read_bytes()[:200])
    result = target.run("verify", "--all")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert any(ln.startswith(f"ok      {good.name}") for ln in lines)
    assert any(ln.startswith(f"FAILED  {bad.name}: size is 200 bytes") for ln in lines)
    data = json.loads(target.run("verify", "--all", "--json").stdout)
    assert data["ok"] is False
    assert {b["name"]: b["ok"] for b in data["backups"]} == {good.name: True, bad.name: False}


def test_old_style_backup_without_manifest(target: Target) -> None:
    load_varied_schema(target)
    dump = make_backup(target)
    manifest.path_for(dump).unlink()
    result = target.run("verify", dump.name)
    assert result.returncode == 0, result.stderr
    assert "no manifest: checksum not checked" in result.stdout
    assert not manifest.path_for(dump).exists()  # verify does not invent a manifest


def test_not_an_archive_fails(target: Target) -> None:
    (target.backup_dir / "velocity_2026-01-01_000000.dump").write_text("this is not a dump\n")
    result = target.run("verify", "velocity_2026-01-01_000000.dump")
    assert result.returncode == 1
    assert "not a readable archive" in result.stdout


def test_nothing_to_verify_is_not_success(target: Target) -> None:
    result = target.run("verify")
    assert result.returncode == 1
    assert "no backups to verify" in result.stderr


def test_verify_refuses_names_outside_the_folder(target: Target) -> None:
    dump = make_backup(target)
    outside = target.workdir / dump.name
    shutil.copy(dump, outside)
    result = target.run("verify", str(outside))
    assert result.returncode == 2
    assert "not a file in the backup folder" in result.stderr


# -- the restore drill -------------------------------------------------------------------

SLOW_IN_DRILL = slow_table_sql(r"velocity\_pg\_verify\_%")


def drill_databases(target: Target) -> list[str]:
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'velocity\\_pg\\_verify\\_%'"
        ).fetchall()
    return [r[0] for r in rows]


def test_restore_drill_passes_and_leaves_nothing(target: Target) -> None:
    load_varied_schema(target)
    dump = make_backup(target)
    with target.connect() as conn:
        before = conn.execute("SELECT count(*) FROM shop.orders").fetchone()
    result = target.run("verify", "--restore", "--json")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["backups"]
    assert entry["ok"] is True
    assert "restore drill (2 tables)" in entry["checks"]
    record = manifest.read(dump)
    assert record is not None and record.last_verification is not None
    assert record.last_verification.method == "restore"
    assert drill_databases(target) == []
    with target.connect() as conn:  # the live database was never touched
        assert conn.execute("SELECT count(*) FROM shop.orders").fetchone() == before


def test_cut_data_fails_the_quick_check_too(target: Target) -> None:
    """A dump whose data is cut but whose table of contents reads, with no manifest to tell:
    the quick check reads every data block (issue 18), so it fails without a drill."""
    load_varied_schema(target)
    with target.connect() as conn:
        conn.execute(
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t "
            "FROM generate_series(1, 20000) g"
        )
    dump = make_backup(target)
    manifest.path_for(dump).unlink()
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) * 7 // 10])
    quick = target.run("verify", dump.name)
    assert quick.returncode == 1, quick.stdout
    assert f"FAILED  {dump.name}: truncated or damaged: its data cannot be read" in quick.stdout
    drill = target.run("verify", "--restore", dump.name)
    assert drill.returncode == 1
    assert "truncated or damaged" in drill.stdout
    assert drill_databases(target) == []


def start_slow_drill(target: Target) -> subprocess.Popen[str]:
    """A `verify --restore` stuck in its drill: pg_restore sleeps in the slow table's CHECK."""
    with target.connect() as conn:
        conn.execute(SLOW_IN_DRILL)
    make_backup(target)
    proc = target.popen(
        "verify", "--restore", env=target.env(PGOPTIONS="-c velocity_test.delay=60")
    )
    try:
        wait_for_sleep_in(target, r"velocity\_pg\_verify\_%")
    except AssertionError:
        proc.kill()
        raise
    return proc


def test_killed_drill_is_cleaned_by_the_next_one(target: Target) -> None:
    proc = start_slow_drill(target)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert len(drill_databases(target)) == 1
    # pg_restore may still be sleeping in it (its parent died); the next drill drops it anyway.
    result = target.run("verify", "--restore")
    assert result.returncode == 0, result.stdout + result.stderr
    assert drill_databases(target) == []


def test_interrupted_drill_drops_its_database(target: Target) -> None:
    proc = start_slow_drill(target)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert drill_databases(target) == []


# -- recording the result is not a check (issue 10, items 4 and 5) -----------------------


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every entry but the lock file, with its bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != lock.LOCK_NAME}


def assert_checked_but_not_recorded(
    result: subprocess.CompletedProcess[str], dumps: list[Path], reason: str
) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    for dump in dumps:
        checked = f"ok      {dump.name} (checksum, roles file, archive ("
        assert any(ln.startswith(checked) for ln in lines), lines
        warning = f"velocity-pg: warning: {dump.name}: the result was not recorded in its manifest"
        (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith(warning)]
        assert reason in line, line
        assert line.endswith("the manifest is unchanged")
    assert "unexpected" not in result.stderr


def test_verify_on_a_read_only_folder_checks_every_backup(target: Target) -> None:
    load_varied_schema(target)
    dumps = [make_backup(target), make_backup(target)]
    before = folder_state(target.backup_dir)
    target.backup_dir.chmod(0o500)
    try:
        result = target.run("verify", "--all")
        as_json = target.run("verify", "--all", "--json")
    finally:
        target.backup_dir.chmod(0o700)
    assert_checked_but_not_recorded(result, dumps, "Permission denied")
    data = json.loads(as_json.stdout)
    assert as_json.returncode == 0
    assert data["ok"] is True
    assert all("not recorded" in b["warning"] for b in data["backups"])
    assert folder_state(target.backup_dir) == before


def test_verify_failure_still_exits_1_when_it_cannot_be_recorded(target: Target) -> None:
    good = make_backup(target)
    bad = make_backup(target)
    bad.write_bytes(bad.read_bytes()[:100])
    target.backup_dir.chmod(0o500)
    try:
        result = target.run("verify", "--all")
    finally:
        target.backup_dir.chmod(0o700)
    assert result.returncode == 1
    assert f"ok      {good.name}" in result.stdout
    assert f"FAILED  {bad.name}: size is 100 bytes" in result.stdout
    assert result.stderr.count("not recorded") == 2


NAMESPACE_SCRIPT = """set -u
{setup}
"$PYTHON" -m velocity_pg verify --all
echo "rc=$?" >&2
"""


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user namespaces (unshare -rm)")
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        # A real full disk: a small tmpfs holding copies of the backups, filled up.
        (
            'mount -t tmpfs -o size=512k tmpfs "$DISK"\n'
            'cp -p "$SOURCE"/*.dump* "$DISK"/\n'
            'dd if=/dev/zero of="$DISK/filler" bs=4k 2>/dev/null\n'
            'export BACKUP_DIR="$DISK"',
            "No space left on device",
        ),
        # A read-only mount of the backup folder itself.
        (
            'mount --bind "$SOURCE" "$SOURCE" && mount -o remount,bind,ro "$SOURCE"\n'
            'export BACKUP_DIR="$SOURCE"',
            "Read-only file system",
        ),
    ],
    ids=["full-disk", "read-only-mount"],
)
def test_verify_on_a_full_or_read_only_file_system(
    target: Target, tmp_path: Path, setup: str, reason: str
) -> None:
    load_varied_schema(target)
    dumps = [make_backup(target), make_backup(target)]
    before = folder_state(target.backup_dir)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "inside.sh"
    script.write_text(NAMESPACE_SCRIPT.format(setup=setup))
    env = target.env(PYTHON=sys.executable, SOURCE=str(target.backup_dir), DISK=str(disk))
    result = subprocess.run(
        ["unshare", "-rm", "sh", str(script)],
        env=env,
        cwd=target.workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.stderr.splitlines()[-1] == "rc=0", (result.stdout, result.stderr)
    result.returncode = 0
    result.stderr = "\n".join(result.stderr.splitlines()[:-1])
    assert_checked_but_not_recorded(result, dumps, reason)
    assert folder_state(target.backup_dir) == before


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_short_write_of_a_manifest_is_detected(target: Target) -> None:
    """A file-size limit cuts the manifest's write short: the old manifest stays whole."""
    dump = make_backup(target)
    before = folder_state(target.backup_dir)
    size = len(before[manifest.path_for(dump).name])
    result = target.run("verify", preexec_fn=_file_size_limit(size // 2))
    assert_checked_but_not_recorded(result, [dump], "File too large")
    assert folder_state(target.backup_dir) == before  # no cut manifest, no temporary file
    assert manifest.read(dump) is not None
    # Without the limit the same verify records its result.
    assert target.run("verify").returncode == 0
    record = manifest.read(dump)
    assert record is not None and record.last_verification is not None


def test_write_all_reports_a_short_write(tmp_path: Path) -> None:
    """The loop itself: a write that cannot finish raises instead of leaving a cut file."""
    path = tmp_path / "f"
    code = (
        "import os, sys, resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
        "from velocity_pg.store import manifest\n"
        f"fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "try:\n"
        "    manifest.write_all(fd, b'x' * 1000)\n"
        "except OSError as exc:\n"
        "    print('raised', exc.strerror)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "raised File too large"
