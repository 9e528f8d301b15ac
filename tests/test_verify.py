"""``velocity-pg verify`` against real dumps: checksums, readable archives, restore drills."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Target, load_varied_schema

from velocity_pg import manifest


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
