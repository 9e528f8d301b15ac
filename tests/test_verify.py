"""``velocity-pg verify`` against real dumps: checksums, readable archives, restore drills."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from conftest import Target, load_varied_schema, slow_table_sql, wait_for_sleep_in

from velocity_pg.store import manifest


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
    assert result.stdout.startswith(f"ok      {dump.name} (checksum, archive (")
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


def test_cut_data_passes_the_quick_check_but_fails_the_drill(target: Target) -> None:
    """A dump whose data is cut but whose table of contents reads, with no manifest to tell."""
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
    assert quick.returncode == 0, quick.stdout  # honest: nothing short of a restore sees it
    drill = target.run("verify", "--restore", dump.name)
    assert drill.returncode == 1
    assert f"FAILED  {dump.name}: the restore drill failed: pg_restore: error:" in drill.stdout
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
