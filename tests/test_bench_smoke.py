"""The benchmark runs to completion at a tiny size (it asserts no timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import clean_env

REPO = Path(__file__).resolve().parent.parent


def test_bench_quick_run_prints_the_table(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--scale", "1", "--quick"],
        env=clean_env(TMPDIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    figures = [row.split(" | ")[0].lstrip("| ") for row in table[1:]]
    assert figures == [
        "backup time / raw pg_dump -Fc -Z9 -f",
        "restore time / seed sequence (1 job)",
        "longest unavailability during restore",
        "app downtime during just db-restore (stop/start instant)",
        "pgbench TPS during backup / without",
        "peak RSS of backup (this db / empty db)",
        "peak RSS of restore (this db / empty db)",
        "list, 10,000 backups",
        "cleanup --dry-run, 10,000 backups",
        "velocity-pg --help start-up",
    ]


def test_bench_compression_comparison_prints_its_rows(tmp_path: Path) -> None:
    """--compression compares BACKUP_COMPRESSION values with gzip:9 (gzip:1 works on any
    pg_dump; docs/performance.md's zstd rows come from PostgreSQL 17)."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--scale",
            "1",
            "--quick",
            "--compression",
            "gzip:1",
            "--compression-only",
        ],
        env=clean_env(TMPDIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0].lstrip("| ") for row in table[1:]] == [
        "backup time gzip:1 / gzip:9",
        "dump size gzip:1 / gzip:9",
        "restore time gzip:1 / gzip:9",
    ]


def test_time_per_gb_bench_prints_its_table(tmp_path: Path) -> None:
    """bench/pergb.py (the README's "Past one machine" figures) runs at a tiny size."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pergb.py"), "--scale", "1", "--runs", "1"],
        env=clean_env(TMPDIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [line.split(" | ")[0].lstrip("| ") for line in result.stdout.splitlines()]
    assert "pg_dump -Fc gzip:9" in steps
    assert "pg_restore gzip:9, 1 job(s)" in steps
    assert "pg_basebackup -Ft -X stream" in steps
