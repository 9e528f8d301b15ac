#!/usr/bin/env python3
"""velocity-pg measured against the raw tools and the seed's own sequence, in one run.

    python bench/run.py --scale 50          # about 1 GB, under 10 minutes on 2 cores
    python bench/run.py --scale 1 --quick   # smoke run, about a minute

Starts its own PostgreSQL (like the tests; as root it runs the server as the
``postgres`` user), builds a database of pgbench tables plus a table of text
and jsonb, and prints one table. These machines are noisy: absolute times
drift, so every comparison is interleaved A/B/A/B in the same run and
reported as the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

VELOCITY = [sys.executable, "-m", "velocity_pg"]


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        sys.exit("bench: PostgreSQL server programs not found (Debian: postgresql)")
    return Path(pg_ctl).parent


BIN = bindir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A private PostgreSQL server for the benchmark."""

    root: Path
    port: int
    password: str = "bench-pw"  # noqa: S105 - a throwaway server
    user: str = "postgres"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        subprocess.run(
            self._as_owner(
                [
                    str(BIN / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
        )
        opts = (
            # TCP only: a socket under a long temporary path would pass the
            # 107-byte limit of a Unix socket's name.
            f"-p {self.port} -c unix_socket_directories='' -c listen_addresses=127.0.0.1 "
            "-c shared_buffers=256MB -c max_wal_size=4GB -c fsync=on -c max_connections=50"
        )
        subprocess.run(
            self._as_owner(
                [
                    str(BIN / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-o",
                    opts,
                    "-w",
                    "-l",
                    str(self.root / "log"),
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_owner([str(BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "stop"]),
            check=False,
            capture_output=True,
        )

    def env(self, dbname: str, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_", "BACKUP_"))
        }
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGPASSWORD=self.password,
            PGDATABASE=dbname,
            PG_BINDIR=str(BIN),
        )
        env.update(extra)
        return env

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )


def build_database(server: Server, dbname: str, scale: int) -> int:
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    subprocess.run(
        [str(BIN / "pgbench"), "-i", "-q", "-s", str(scale), "--foreign-keys"],
        env=server.env(dbname),
        check=True,
        capture_output=True,
    )
    with server.connect(dbname) as conn:
        # Text and jsonb that compress like real application data (not like zeros).
        conn.execute(
            "CREATE TABLE documents (id bigint PRIMARY KEY, title text, body text, "
            "meta jsonb, created timestamptz)"
        )
        conn.execute(
            """
            INSERT INTO documents
            SELECT g,
                   'Document ' || g || ' about ' || (ARRAY['sales','ops','hr','it'])[1 + g %% 4],
                   repeat(md5(g::text) || ' lorem ipsum dolor sit amet ', 1 + g %% 8),
                   jsonb_build_object('author', 'user' || (g %% 997), 'tags',
                                      jsonb_build_array('t' || g %% 13, 't' || g %% 7),
                                      'score', (g::bigint * 7919) %% 1000),
                   timestamptz '2026-01-01' + (g || ' seconds')::interval
            FROM generate_series(1, %s) g
            """,
            (scale * 20000,),
        )
        conn.execute("CREATE INDEX ON documents (created)")
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert size is not None
    return int(size[0])  # type: ignore[call-overload]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB, largest process of the tree) of one command."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err.strip()}")
    return elapsed, int(usage.ru_maxrss)


def self_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and the peak RSS (KiB) of the velocity-pg Python process itself."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    peak = 0
    status_file = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            m = re.search(r"VmHWM:\s+(\d+)", status_file.read_text())
            if m:
                peak = max(peak, int(m.group(1)))
        time.sleep(0.02)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err.strip()}")
    return time.monotonic() - start, peak


def interleave(
    a: Callable[[], float], b: Callable[[], float], pairs: int
) -> tuple[float, list[float], list[float]]:
    """Run A/B pairs (alternating which goes first); median of per-pair ratios A/B."""
    ratios, ta, tb = [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            x, y = a(), b()
        else:
            y, x = b(), a()
        ta.append(x)
        tb.append(y)
        ratios.append(x / y)
    return statistics.median(ratios), ta, tb


INDEX_COUNT = "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"


class Prober(threading.Thread):
    """Connects and queries every 10 ms; records the longest stretch without an answer."""

    def __init__(self, server: Server, dbname: str) -> None:
        super().__init__(daemon=True)
        self.server, self.dbname = server, dbname
        # "Available" means complete: every index there (pg_restore builds them last),
        # not merely an empty or half-filled database that answers.
        with server.connect(dbname) as conn:
            row = conn.execute(INDEX_COUNT).fetchone()
        assert row is not None
        self.complete = row[0]
        self.stop_event = threading.Event()
        self.longest_gap = 0.0
        self.failures = 0

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self.stop_event.is_set():
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.server.port,
                    user=self.server.user,
                    password=self.server.password,
                    dbname=self.dbname,
                    connect_timeout=2,
                ) as conn:
                    conn.execute("SELECT count(*) FROM pgbench_branches").fetchone()
                    row = conn.execute(INDEX_COUNT).fetchone()
                if row is None or row[0] != self.complete:
                    continue
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
            except psycopg.Error:
                self.failures += 1
            finally:
                time.sleep(0.01)


def seed_restore(server: Server, dbname: str, archive: Path) -> float:
    """The seed's sequence: terminate, drop, create, pg_restore with one job."""
    start = time.monotonic()
    with server.connect() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    subprocess.run(
        [
            str(BIN / "pg_restore"),
            "--exit-on-error",
            "--no-password",
            f"--dbname={dbname}",
            str(archive),
        ],
        env=server.env(dbname),
        check=True,
        capture_output=True,
    )
    return time.monotonic() - start


REPO = Path(__file__).resolve().parent.parent
DOWN_RE = re.compile(r"the app services were down for (\d+(?:\.\d+)?) s")


def just_db_restore(root: Path, env: dict[str, str], name: str) -> float:
    """Run the real `just db-restore NAME --yes` with tests/docker_standin.py as `docker`
    (its `exec db velocity-pg` runs velocity-pg here; stopping and starting the app
    services is instant), and return the recipe's own measure of the app downtime: from
    the first `docker compose stop` until the last service runs again."""
    bin_dir = root / "standin-bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    standin = REPO / "tests" / "docker_standin.py"
    docker.write_text(f'#!/bin/sh\nexec {sys.executable} {standin} "$@"\n')
    docker.chmod(0o755)
    running = root / "standin-running"
    running.write_text("db\nweb\ncelery-worker\ncelery-beat\n")
    beside = Path(sys.executable).parent / "just"
    just = str(beside) if beside.exists() else shutil.which("just")
    if just is None:
        raise RuntimeError("`just` not found: install the test extra (PyPI rust-just)")
    recipe = ["--justfile", str(REPO / "justfile"), "--working-directory", str(root)]
    result = subprocess.run(
        [just, *recipe, "db-restore", name, "--yes"],
        env={
            **env,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "STANDIN_LOG": str(root / "standin-log.jsonl"),
            "STANDIN_RUNNING": str(running),
            "STANDIN_STATUS": "[]",
        },
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    match = DOWN_RE.search(result.stderr)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"just db-restore failed ({result.returncode}): {result.stderr}")
    log = root / "standin-log.jsonl"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    swap = [c for c in calls if "--yes" in c["argv"] and "--stage" not in c["argv"]][-1]
    print(
        f"bench: just db-restore: app down {match.group(1)} s, of which the swap-only "
        f"`velocity-pg restore` took {swap['at'][1] - swap['at'][0]:.1f} s",
        file=sys.stderr,
    )
    return float(match.group(1))


def downtime_row(
    root: Path, env: dict[str, str], name: str, seed_seconds: list[float], runs: int
) -> tuple[str, str, str, str]:
    """The seed stops the app services for its whole drop, create and pg_restore (its
    downtime is that sequence's time); `just db-restore` stages first and stops them for
    the swap only. Several runs: each after the first also replaces the rollback point the
    one before kept (the older one is dropped after the swap, inside the window)."""
    downs = [just_db_restore(root, env, name) for _ in range(runs)]
    worst = max(downs)
    return (
        "app downtime during just db-restore (stop/start instant)",
        f"{worst:.1f} s, worst of {len(downs)}: {', '.join(f'{d:.1f}' for d in downs)} "
        f"(seed sequence: {statistics.median(seed_seconds):.1f} s)",
        "<= 5 s + services' stop/start",
        "yes" if worst <= 5.0 else "no",
    )


def pgbench_tps(server: Server, dbname: str, seconds: int) -> float:
    out = subprocess.run(
        [str(BIN / "pgbench"), "-c", "4", "-j", "2", "-T", str(seconds), "-n"],
        env=server.env(dbname),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def fill_backups(folder: Path, count: int) -> None:
    now = datetime.now(UTC)
    for i in range(count):
        moment = now - timedelta(hours=2 * i)
        path = folder / moment.strftime("velocity_%Y-%m-%d_%H%M%S.dump")
        path.write_bytes(b"PGDMP")
        ts = moment.timestamp()
        os.utime(path, (ts, ts))


def wall(cmd: list[str], env: dict[str, str] | None = None, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.monotonic()
        subprocess.run(cmd, env=env, check=False, capture_output=True)
        times.append(time.monotonic() - start)
    return statistics.median(times)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="velocity-bench-"))
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must enter it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50 is about 1 GB)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per comparison")
    parser.add_argument("--pgbench-seconds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="1 pair, short pgbench: a smoke run")
    parser.add_argument(
        "--only-downtime",
        action="store_true",
        help="only the app-downtime row: one backup, the seed's sequence and `just "
        "db-restore` --pairs times each",
    )
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.pgbench_seconds = 1, 3
    rows: list[tuple[str, str, str, str]] = []
    started = time.monotonic()

    with workspace() as root:
        server = Server(root / "pg", free_port())
        server.start()
        try:
            backups = root / "backups"
            backups.mkdir()
            if os.geteuid() == 0:
                shutil.chown(backups, "postgres")
            dbname = "bench"
            print(f"bench: building the database (scale {args.scale}) ...", file=sys.stderr)
            size = build_database(server, dbname, args.scale)
            print(f"bench: database is {size / 2**20:.0f} MiB", file=sys.stderr)
            env = server.env(dbname, BACKUP_DIR=str(backups))
            raw_file = root / "raw.dump"
            if args.only_downtime:
                timed([*VELOCITY, "backup"], env)
                dump = sorted(backups.glob("*.dump"))[-1]
                seed = [seed_restore(server, dbname, dump) for _ in range(args.pairs)]
                rows.append(downtime_row(root, env, dump.name, seed, args.pairs))
                return print_table(args, size, rows, started)

            # 1. backup vs raw pg_dump
            def ours() -> float:
                t, _ = timed([*VELOCITY, "backup"], env)
                return t

            def raw() -> float:
                t, _ = timed([str(BIN / "pg_dump"), "-Fc", "-Z9", "-f", str(raw_file)], env)
                return t

            ratio, ta, tb = interleave(ours, raw, args.pairs)
            rows.append(
                (
                    "backup time / raw pg_dump -Fc -Z9 -f",
                    f"{ratio:.2f} ({statistics.median(ta):.1f} s vs {statistics.median(tb):.1f} s)",
                    "<= 1.02",
                    "yes" if ratio <= 1.02 else "no",
                )
            )

            # 2. restore vs the seed's sequence, with a prober on the live database
            archive = sorted(backups.glob(f"{dbname}_*.dump"))[-1]
            gaps: list[float] = []
            seed_gaps: list[float] = []

            def probed(run: Callable[[], float], gaps_seen: list[float]) -> float:
                prober = Prober(server, dbname)
                prober.start()
                t = run()
                time.sleep(0.3)  # let the prober see the finished database
                prober.stop_event.set()
                prober.join()
                gaps_seen.append(prober.longest_gap)
                return t

            def ours_restore() -> float:
                cmd = [*VELOCITY, "restore", "--yes", archive.name]
                return probed(lambda: timed(cmd, env)[0], gaps)

            def seed() -> float:
                return probed(lambda: seed_restore(server, dbname, raw_file), seed_gaps)

            ratio, ta, tb = interleave(ours_restore, seed, args.pairs)
            rows.append(
                (
                    "restore time / seed sequence (1 job)",
                    f"{ratio:.2f} ({statistics.median(ta):.1f} s vs {statistics.median(tb):.1f} s)",
                    "<= 0.70",
                    "yes" if ratio <= 0.70 else "no",
                )
            )
            gap = max(gaps)
            rows.append(
                (
                    "longest unavailability during restore",
                    f"{gap:.2f} s (seed sequence: {max(seed_gaps):.1f} s)",
                    "<= 1 s",
                    "yes" if gap <= 1.0 else "no",
                )
            )

            # 2b. app downtime during `just db-restore`
            rows.append(downtime_row(root, env, archive.name, tb, max(2, args.pairs)))

            # 3. pgbench TPS with and without a concurrent backup
            alone = pgbench_tps(server, dbname, args.pgbench_seconds)
            stop = threading.Event()

            def backup_loop() -> None:
                while not stop.is_set():
                    subprocess.run([*VELOCITY, "backup"], env=env, check=False, capture_output=True)

            looper = threading.Thread(target=backup_loop, daemon=True)
            looper.start()
            time.sleep(1.0)
            during = pgbench_tps(server, dbname, args.pgbench_seconds)
            stop.set()
            looper.join()
            tps_ratio = during / alone
            rows.append(
                (
                    "pgbench TPS during backup / without",
                    f"{tps_ratio:.2f} ({during:.0f} vs {alone:.0f} TPS)",
                    ">= 0.8 (goal)",
                    "yes" if tps_ratio >= 0.8 else "no",
                )
            )

            # 4. peak memory of the velocity-pg process: at this size and at a tiny one
            _, mem_backup = self_rss([*VELOCITY, "backup"], env)
            archive = sorted(backups.glob(f"{dbname}_*.dump"))[-1]
            _, mem_restore = self_rss([*VELOCITY, "restore", "--yes", archive.name], env)
            small_backups = root / "small-backups"
            small_backups.mkdir()
            if os.geteuid() == 0:
                shutil.chown(small_backups, "postgres")
            with server.connect() as conn:
                conn.execute("CREATE DATABASE tiny")
            tiny_env = server.env("tiny", BACKUP_DIR=str(small_backups))
            _, tiny_backup = self_rss([*VELOCITY, "backup"], tiny_env)
            tiny_archive = sorted(small_backups.glob("tiny_*.dump"))[-1]
            _, tiny_restore = self_rss([*VELOCITY, "restore", "--yes", tiny_archive.name], tiny_env)
            rows.append(
                (
                    "peak RSS of backup (this db / empty db)",
                    f"{mem_backup / 1024:.0f} MiB / {tiny_backup / 1024:.0f} MiB",
                    "flat",
                    "yes" if mem_backup <= tiny_backup * 1.2 + 2048 else "no",
                )
            )
            rows.append(
                (
                    "peak RSS of restore (this db / empty db)",
                    f"{mem_restore / 1024:.0f} MiB / {tiny_restore / 1024:.0f} MiB",
                    "flat",
                    "yes" if mem_restore <= tiny_restore * 1.2 + 2048 else "no",
                )
            )
        finally:
            server.stop()

        # 5. list and cleanup --dry-run with 10,000 backups (no server needed)
        many = root / "many"
        many.mkdir()
        fill_backups(many, 10_000)
        menv = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_"))}
        menv["BACKUP_DIR"] = str(many)
        t_find = wall(["find", str(many), "-name", "velocity_*.dump", "-mtime", "+30"])
        t_list = wall([*VELOCITY, "list"], menv)
        t_clean = wall([*VELOCITY, "cleanup", "--dry-run"], menv)
        rows.append(
            (
                "list, 10,000 backups",
                f"{t_list:.2f} s (find: {t_find:.3f} s)",
                "<= 0.5 s",
                "yes" if t_list <= 0.5 else "no",
            )
        )
        rows.append(
            (
                "cleanup --dry-run, 10,000 backups",
                f"{t_clean:.2f} s (find: {t_find:.3f} s)",
                "<= 0.5 s",
                "yes" if t_clean <= 0.5 else "no",
            )
        )

    # 6. start-up
    t_help = wall([*VELOCITY, "--help"], repeat=7)
    rows.append(
        (
            "velocity-pg --help start-up",
            f"{t_help:.3f} s",
            "<= 0.25 s",
            "yes" if t_help <= 0.25 else "no",
        )
    )

    return print_table(args, size, rows, started)


def print_table(
    args: argparse.Namespace, size: int, rows: list[tuple[str, str, str, str]], started: float
) -> int:
    print()
    print(
        f"velocity-pg bench: scale {args.scale}, database {size / 2**20:.0f} MiB, "
        f"{args.pairs} pair(s), {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}, "
        f"PostgreSQL {BIN.parent.name}"
    )
    print()
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n(total bench time {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
