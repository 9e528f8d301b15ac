#!/usr/bin/env python3
"""Benchmark: ``velocity-pg cleanup --dry-run`` and ``list`` at 10,000 backups vs ``find``.

Creates a temporary folder of small backup files with mtimes spread over years,
then times whole processes (start-up included, as a user or cron sees them):

* ``velocity-pg cleanup --dry-run`` (list, plan, print every decision),
* ``velocity-pg list``,
* ``find DIR -name 'velocity_*.dump' -mtime +30`` (what the bash script did),

and prints the median and best wall time of each, with the ratio to find.
Target: at most 0.5 s each. Finally one real ``cleanup`` is timed on a fresh
copy of the folder. Needs no database. Run with the project's Python:

    .venv/bin/python bench/cleanup_bench.py [--count 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

TARGET_SECONDS = 0.5
SPACING_SECONDS = 3 * 3600  # one backup every 3 hours: 10,000 span ~3.4 years


def velocity_pg() -> list[str]:
    script = Path(sys.executable).parent / "velocity-pg"
    return [str(script)] if script.exists() else [sys.executable, "-m", "velocity_pg"]


def clean_env(backup_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "POSTGRES_", "BACKUP_", "VELOCITY_PG"))
    }
    env["BACKUP_DIR"] = str(backup_dir)
    return env


def populate(folder: Path, count: int) -> None:
    now = time.time()
    payload = b"PGDMP" + b"\0" * 59
    for i in range(count):
        mtime = now - 3600 - i * SPACING_SECONDS
        name = datetime.fromtimestamp(mtime - 60, UTC).strftime("velocity_%Y-%m-%d_%H%M%S.dump")
        path = folder / name
        path.write_bytes(payload)
        os.utime(path, (mtime, mtime))
    (folder / "notes.txt").write_text("not a backup")


def time_runs(cmd: list[str], env: dict[str, str], cwd: Path, runs: int) -> list[float]:
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def count_lines(cmd: list[str], env: dict[str, str], cwd: Path, prefix: str = "") -> int:
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return sum(1 for line in out.stdout.splitlines() if line.startswith(prefix))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="backups to create")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="velocity-bench-"))
    try:
        folder = root / "backups"
        folder.mkdir()
        work = root / "work"  # no .env here
        work.mkdir()
        started = time.perf_counter()
        populate(folder, args.count)
        print(
            f"{args.count} backups in {folder} (created in {time.perf_counter() - started:.1f} s)"
        )
        env = clean_env(folder)
        vpg = velocity_pg()
        find = ["find", str(folder), "-name", "velocity_*.dump", "-mtime", "+30"]
        cases = [
            ("velocity-pg cleanup --dry-run", [*vpg, "cleanup", "--dry-run"]),
            ("velocity-pg list", [*vpg, "list"]),
            ("find -name 'velocity_*.dump' -mtime +30", find),
        ]
        results = {label: time_runs(cmd, env, work, args.runs) for label, cmd in cases}
        base = statistics.median(results[cases[-1][0]])

        print(f"\n{'command':<42} {'median':>9} {'best':>9} {'vs find':>8}  target")
        for label, _cmd in cases:
            times = results[label]
            median = statistics.median(times)
            verdict = (
                ""
                if label.startswith("find")
                else ("ok" if median <= TARGET_SECONDS else f"SLOW (> {TARGET_SECONDS} s)")
            )
            print(
                f"{label:<42} {median:>8.3f}s {min(times):>8.3f}s {median / base:>7.1f}x  {verdict}"
            )

        would = count_lines([*vpg, "cleanup", "--dry-run"], env, work, "would delete")
        found = count_lines(find, env, work)
        print(
            f"\ncleanup --dry-run would delete {would} (age > 30 x 24 h or beyond the newest 50);"
            f" find -mtime +30 matches {found} (age >= 31 days, no count limit)"
        )

        copy = root / "copy"
        shutil.copytree(folder, copy)
        start = time.perf_counter()
        subprocess.run(
            [*vpg, "cleanup"], env=clean_env(copy), cwd=work, stdout=subprocess.DEVNULL, check=True
        )
        elapsed = time.perf_counter() - start
        left = sum(1 for p in copy.iterdir() if p.name.startswith("velocity_"))
        print(
            f"real cleanup (deleting {args.count - left}, fsync): {elapsed:.3f} s, "
            f"{left} backups left"
        )
        slow = [
            label for label, _ in cases[:-1] if statistics.median(results[label]) > TARGET_SECONDS
        ]
        return 1 if slow else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
