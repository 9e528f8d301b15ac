"""`restore --check` finds a truncated or damaged dump (issue 18, item 6).

``pg_restore --list`` reads only the table of contents at the start of the
archive: the first 3,000 bytes of a 100 KiB dump listed as a whole one and the
check passed. With a manifest the size and SHA-256 are compared; without one,
every data block is read. Real dumps, really cut and damaged, against the server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import Target

OLD_NAME = "velocity_2026-01-02_000000.dump"


def dump_with_data(target: Target) -> Path:
    """A real dump of about 100 KiB: the TOC first, then the data blocks."""
    with target.connect() as conn:
        conn.execute(
            "CREATE TABLE public.notes AS SELECT i, md5(i::text) || md5((i * 7)::text) AS body "
            "FROM generate_series(1, 6000) AS i"
        )
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    path = target.backup_dir / json.loads(result.stdout)["name"]
    assert path.stat().st_size > 60_000
    return path


def damaged(path: Path, kind: str) -> bytes:
    data = path.read_bytes()
    if kind == "first 3000 bytes":
        return data[:3000]
    if kind == "cut in half":
        return data[: len(data) // 2]
    middle = len(data) // 2  # inside the table's compressed data block
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


KINDS = ["first 3000 bytes", "cut in half", "64 bytes flipped"]


def check(target: Target, name: str) -> tuple[int, str]:
    result = target.run("restore", name, "--check", "--yes")
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_manifest_every_data_block_is_read(target: Target, kind: str) -> None:
    good = dump_with_data(target)
    (target.backup_dir / OLD_NAME).write_bytes(damaged(good, kind))  # an old script's dump
    status, stderr = check(target, OLD_NAME)
    assert status == 1, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("velocity-pg: error: ")
    assert f"{OLD_NAME} is truncated or damaged" in line
    assert "nothing was changed" in line
    # The same bytes, whole, pass.
    (target.backup_dir / OLD_NAME).write_bytes(good.read_bytes())
    assert check(target, OLD_NAME)[0] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_with_a_manifest_size_and_sha256_decide(target: Target, kind: str) -> None:
    good = dump_with_data(target)
    good.write_bytes(damaged(good, kind))
    status, stderr = check(target, good.name)
    assert status == 1, stderr
    line = stderr.strip().splitlines()[-1]
    assert "does not match its manifest" in line
    assert ("size is" in line) if kind != "64 bytes flipped" else ("SHA-256" in line)


def test_reading_every_block_takes_about_what_listing_does_for_a_small_dump(
    target: Target,
) -> None:
    """How long the extra read takes, for the record (docs/restore.md, restore --check)."""
    good = dump_with_data(target)
    (target.backup_dir / OLD_NAME).write_bytes(good.read_bytes())
    started = time.monotonic()
    assert check(target, OLD_NAME)[0] == 0
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("kind", KINDS)
def test_verify_reads_every_data_block_without_a_manifest(target: Target, kind: str) -> None:
    """`velocity-pg verify` (just db-backup-verify) is a check too: the same cut fails it."""
    good = dump_with_data(target)
    (target.backup_dir / OLD_NAME).write_bytes(damaged(good, kind))
    result = target.run("verify", OLD_NAME, "--json")
    assert result.returncode == 1, result.stderr
    (outcome,) = json.loads(result.stdout)["backups"]
    assert "truncated or damaged" in json.dumps(outcome), outcome
    (target.backup_dir / OLD_NAME).write_bytes(good.read_bytes())
    whole = target.run("verify", OLD_NAME, "--json")
    assert whole.returncode == 0, whole.stderr
