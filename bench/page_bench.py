#!/usr/bin/env python3
"""Benchmark: a scheduled backup while slow clients hold the status page's server.

    python bench/page_bench.py --scale 10 --clients 200 --pairs 3

Starts its own PostgreSQL (bench/run.py's), builds its database, then runs A/B pairs
(alternating which goes first): ``velocity-pg schedule`` with ``BACKUP_HTTP_ADDR`` on an
empty folder (so its first run starts at once) with ``--clients`` clients on 127.0.0.1
trickling requests a byte at a time, reading slowly and coming back (A), and the same
without clients (B). The figure is the backup step's time (from the run log), reported
as the median of the per-pair ratios A/B; also the pages served during A and the time of
one ``GET /`` on the quiet server. Target: the ratio within noise (about 1.0).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import VELOCITY, Server, build_database, free_port, workspace

from velocity_pg.scheduling import runlog


def slow_client(port: int, stop: threading.Event, served: list[int]) -> None:
    # Real clients are on other machines (through SSH): here they yield the CPU to the
    # backup, as they would there.
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                for byte in b"GET / HTTP/1.0\r\n\r\n":
                    s.sendall(bytes([byte]))
                    if stop.wait(0.05):
                        return
                while chunk := s.recv(512):
                    if chunk.startswith(b"HTTP/1.0 200"):
                        served.append(1)
                    if stop.wait(0.01):
                        return
        except OSError:
            stop.wait(0.1)


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            sys.exit(f"bench: the scheduler exited {proc.returncode}")
        time.sleep(0.05)
    sys.exit("bench: the scheduler never listened")


def one_run(env: dict[str, str], folder: Path, clients: int) -> tuple[float, int, float | None]:
    """(backup step seconds, pages served meanwhile, seconds of one GET / when quiet)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    run_env = {
        **env,
        "BACKUP_DIR": str(folder),
        "BACKUP_HTTP_ADDR": f"127.0.0.1:{port}",
        "BACKUP_SCHEDULE": "@every 1h",
        "BACKUP_VERIFY": "none",
    }
    proc = subprocess.Popen(
        [*VELOCITY, "schedule"], env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stop = threading.Event()
    served: list[int] = []
    threads = [
        threading.Thread(target=slow_client, args=(port, stop, served), daemon=True)
        for _ in range(clients)
    ]
    page_seconds = None
    try:
        wait_listening(port, proc)
        for t in threads:
            t.start()
        while not [e for e in runlog.read(folder) if e["result"] != "skipped"]:
            if proc.poll() is not None:
                sys.exit(f"bench: the scheduler exited {proc.returncode}")
            time.sleep(0.05)
        if not clients:
            tick = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            page_seconds = time.perf_counter() - tick
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        proc.terminate()
        proc.wait(60)
    entry = [e for e in runlog.read(folder) if e["result"] != "skipped"][-1]
    if entry["result"] != "success":
        sys.exit(f"bench: the run failed: {entry}")
    step = next(s for s in entry["steps"] if s["name"] == "backup")
    return float(step["seconds"]), len(served), page_seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (10: ~200 MB)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    with workspace() as root:
        server = Server(root / "pg", free_port())
        server.start()
        try:
            print(f"bench: building the database (scale {args.scale}) ...", file=sys.stderr)
            size = build_database(server, "bench", args.scale)
            env = server.env("bench")
            ratios, loaded, quiet, pages, page_times = [], [], [], [], []
            for i in range(args.pairs):
                order = (args.clients, 0) if i % 2 == 0 else (0, args.clients)
                got = {n: one_run(env, root / f"backups-{n}", n) for n in order}
                (a, served, _), (b, _, page) = got[args.clients], got[0]
                ratios.append(a / b)
                loaded.append(a)
                quiet.append(b)
                pages.append(served)
                if page is not None:
                    page_times.append(page)
        finally:
            server.stop()
    print(f"database {size / 2**20:.0f} MiB, {args.pairs} pair(s)")
    print("| figure | value |")
    print("| --- | --- |")
    print(
        f"| backup time with {args.clients} slow clients / without "
        f"| {statistics.median(ratios):.2f} (median of {', '.join(f'{r:.2f}' for r in ratios)}) |"
    )
    print(f"| backup step, with / without (s) | {statistics.median(loaded):.2f} / "
          f"{statistics.median(quiet):.2f} |")  # fmt: skip
    print(f"| pages served during the loaded backup | {statistics.median(pages):.0f} |")
    if page_times:
        print(f"| one GET / on the quiet server (s) | {statistics.median(page_times):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
