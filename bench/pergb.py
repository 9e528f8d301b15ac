#!/usr/bin/env python3
"""Backup and restore time per GB with the raw tools, to size "past one machine".

    python bench/pergb.py --scale 50       # about 1.2 GB, about 5 minutes on 2 cores
    python bench/pergb.py --scale 1 --runs 1   # smoke run

Starts its own PostgreSQL (bench/run.py's server and database: pgbench tables plus a
table of text and jsonb), then times, --runs times each, the programs velocity-pg
runs and the physical copy a project would move to:

- ``pg_dump -Fc`` at gzip:9 (BACKUP_COMPRESSION's default) and, with pg_dump 16 or
  newer, zstd:3 (the recommended value), into a file;
- ``pg_restore`` of the gzip:9 dump into a new, empty database with 1 job and with
  one job per CPU (data, then every index and constraint rebuilt);
- ``pg_basebackup -Ft -X stream`` (the physical copy pgBackRest and WAL-G start from),
  uncompressed, for comparison.

Prints one table of seconds per GiB of ``pg_database_size`` (the median of the runs)
and the dump sizes. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BIN, Server, build_database, free_port, workspace

GIB = 1024**3


def pg_major() -> int:
    out = subprocess.run(
        [str(BIN / "pg_dump"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1].split(".")[0])


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50: about 1.2 GB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    major = pg_major()
    with workspace() as root:
        server = Server(root=root / "pg", port=free_port())
        server.start()
        try:
            return measure(server, root, args.scale, args.runs, cpus, major)
        finally:
            server.stop()


def measure(server: Server, root: Path, scale: int, runs: int, cpus: int, major: int) -> int:
    started = time.monotonic()
    size = build_database(server, "bench", scale)
    env = server.env("bench")
    methods = ["gzip:9"] + (["zstd:3"] if major >= 16 else [])
    times: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    out = root / "out"
    out.mkdir()
    os.chmod(out, 0o777)  # noqa: S103 - a throwaway folder; pg_basebackup writes as us
    for run in range(runs):
        for method in methods:
            dump = out / f"{method.replace(':', '-')}.dump"
            dump.unlink(missing_ok=True)
            level = method if major >= 16 else method.split(":")[1]  # 15: -Z 9 is gzip:9
            cmd = [str(BIN / "pg_dump"), "-Fc", "-Z", level, "-f", str(dump), "bench"]
            times.setdefault(f"pg_dump -Fc {method}", []).append(seconds(cmd, env))
            sizes[method] = dump.stat().st_size
        dump = out / "gzip-9.dump"
        for jobs in sorted({1, cpus}):
            target = f"restored_{run}_{jobs}"
            subprocess.run(
                [str(BIN / "createdb"), target], env=env, check=True, capture_output=True
            )
            cmd = [str(BIN / "pg_restore"), "-j", str(jobs), "-d", target, str(dump)]
            times.setdefault(f"pg_restore gzip:9, {jobs} job(s)", []).append(seconds(cmd, env))
            subprocess.run([str(BIN / "dropdb"), target], env=env, check=True, capture_output=True)
        base = out / f"base{run}"
        cmd = [str(BIN / "pg_basebackup"), "-D", str(base), "-Ft", "-X", "stream", "-c", "fast"]
        times.setdefault("pg_basebackup -Ft -X stream", []).append(seconds(cmd, env))
        sizes["basebackup"] = sum(f.stat().st_size for f in base.iterdir())
        shutil.rmtree(base)
    gib = size / GIB
    print(
        f"PostgreSQL {major}, {cpus} CPUs, pgbench scale {scale}: pg_database_size "
        f"{size / 2**20:.0f} MiB; {runs} run(s), total {time.monotonic() - started:.0f} s"
    )
    print()
    print("| step | median | per GiB | MiB/s |")
    print("|---|---|---|---|")
    for step, values in times.items():
        median = statistics.median(values)
        print(f"| {step} | {median:.1f} s | {median / gib:.1f} s | {size / 2**20 / median:.0f} |")
    print()
    for method, nbytes in sizes.items():
        print(f"size of {method}: {nbytes / 2**20:.0f} MiB ({nbytes / size:.2f} of the database)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
