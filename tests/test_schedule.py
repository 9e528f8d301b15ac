"""``velocity-pg schedule`` as a real process against the test server.

Pings go to a real HTTP server in a thread on 127.0.0.1; the metrics file is
parsed with prometheus_client's own parser after every run. Faults are real:
a password that stops working for a while, a slow restore drill (a table whose
CHECK sleeps), a pg_dump stuck behind a table lock when SIGTERM comes.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import PASSWORD, Target, _pg_ctl, slow_table_sql, wait_for_sleep_in
from offsite_support import (  # noqa: F401 (fixtures)
    AWS_SECRET,
    Bucket,
    bucket,
    offsite_env,
    s3_endpoint,
)
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from velocity_pg.scheduling import runlog
from velocity_pg.store import catalog

METRIC_NAMES = {
    "velocity_pg_last_success_timestamp_seconds",
    "velocity_pg_last_run_timestamp_seconds",
    "velocity_pg_last_run_duration_seconds",
    "velocity_pg_last_backup_size_bytes",
    "velocity_pg_runs_total",
    "velocity_pg_backups",
    "velocity_pg_backups_size_bytes",
}
STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}"


# -- a real HTTP endpoint for pings ------------------------------------------------------


@dataclass
class Received:
    path: str
    body: str
    at: float


@dataclass
class PingServer:
    """Healthchecks stand-in: records every POST; ``delay``/``status`` make it slow or broken."""

    received: list[Received] = field(default_factory=list)
    delay: float = 0.0
    status: int = 200
    port: int = 0
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/secret-token-1234"

    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"only {self.paths()} arrived"
            time.sleep(0.05)


@pytest.fixture
def pings() -> Iterator[PingServer]:
    state = PingServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            if state.delay:
                time.sleep(state.delay)
            state.received.append(Received(self.path, body, time.monotonic()))
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.server = server
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the scheduler as a process ------------------------------------------------------------


class Scheduler:
    """A running ``velocity-pg schedule``, its stdout collected line by line."""

    def __init__(self, target: Target, env: dict[str, str], *args: str) -> None:
        self.proc = target.popen("schedule", *args, env=env)
        self.lines: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(
                    f"scheduler exited {self.proc.returncode} before {what}\n{self.text()}\n"
                    f"{self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.text()}"
            time.sleep(0.05)

    def count(self, needle: str) -> int:
        return sum(1 for line in list(self.lines) if needle in line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Send ``sig``; return how long the process took to exit."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return time.monotonic() - started


@pytest.fixture
def schedulers() -> Iterator[list[Scheduler]]:
    started: list[Scheduler] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def start(schedulers: list[Scheduler], target: Target, *args: str, **env: str) -> Scheduler:
    env.setdefault("BACKUP_SCHEDULE", "@every 2s")
    s = Scheduler(target, target.env(**env), *args)
    schedulers.append(s)
    return s


def backups(target: Target) -> list[catalog.Backup]:
    return catalog.list_backups(target.backup_dir)


def leftovers(target: Target) -> list[str]:
    """Anything in the folder that is neither a backup, its manifest, its roles file, a
    lock file nor the scheduler's run log (the status page's history)."""
    return sorted(
        p.name
        for p in target.backup_dir.iterdir()
        if not catalog.is_backup_name(p.name)
        and not (p.name.endswith(".dump.json") and catalog.is_backup_name(p.name[:-5]))
        and not (p.name.endswith(".roles.sql") and catalog.is_backup_name(p.name[:-10]))
        and p.name not in (".velocity.lock", ".velocity-schedule.lock", runlog.FILE_NAME)
    )


def read_metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics file parsed by prometheus_client's own parser."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def runs(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], result: str) -> float:
    return metrics[("velocity_pg_runs_total", (("result", result),))]


def drill_databases(target: Target) -> list[str]:
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'velocity_pg_verify_%'"
        ).fetchall()
    return [str(r[0]) for r in rows]


# -- on time, never overlapping ------------------------------------------------------------


def test_backups_appear_on_time_with_every_step_logged(
    target: Target, schedulers: list[Scheduler]
) -> None:
    s = start(schedulers, target)
    s.wait_for(lambda: s.count("run succeeded") >= 4, what="four runs")
    elapsed = s.stop()
    assert s.proc.returncode == 0, s.stderr
    assert elapsed < 5
    made = sorted(b.created for b in backups(target))
    assert len(made) >= 4
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(made)]
    assert all(1 <= g <= 4 for g in gaps), gaps  # every 2 s (names have whole seconds)
    text = s.text()
    # No backup yet: the first run starts at once.
    assert re.search(rf"^{STAMP} no backup yet in .*: running now$", text, re.M), text
    for step in ("backup", "cleanup", "verify"):
        assert re.search(rf"^{STAMP} {step}: ok ", text, re.M), text
    assert re.search(rf"^{STAMP} backup: ok {target.dbname}_\S+\.dump \(", text, re.M)
    assert f"verify: ok {target.dbname}_" in text and "(checksum, roles file, archive (" in text
    assert re.search(rf"^{STAMP} stopping \(SIGTERM\)", text, re.M)
    # Verified: every backup's manifest records the scheduled checksum verification.
    lines = [ln for ln in s.lines if " run " in ln or ": ok " in ln]
    assert lines and all(re.match(STAMP, ln) for ln in lines)
    assert PASSWORD not in text + s.stderr
    assert leftovers(target) == []


def test_on_start_a_fresh_backup_means_waiting_for_the_due_time(
    target: Target, schedulers: list[Scheduler]
) -> None:
    assert target.run("backup").returncode == 0
    s = start(schedulers, target, BACKUP_SCHEDULE="@every 1h")
    s.wait_for(lambda: s.count("next run at") >= 1, what="the start-up decision")
    time.sleep(2)
    assert len(backups(target)) == 1
    assert "is 0s old; next run at" in s.text() or "s old; next run at" in s.text()
    s.stop()
    assert s.proc.returncode == 0


def test_on_start_an_old_backup_means_running_at_once(
    target: Target, schedulers: list[Scheduler]
) -> None:
    assert target.run("backup").returncode == 0
    (old,) = backups(target)
    renamed = old.path.with_name(f"{target.dbname}_2020-01-01_000000.dump")
    old.path.rename(renamed)
    old.path.with_name(old.name + ".json").rename(renamed.with_name(renamed.name + ".json"))
    s = start(schedulers, target, BACKUP_SCHEDULE="@every 1h")
    s.wait_for(lambda: s.count("run succeeded") >= 1, what="the catch-up run")
    assert "more than one period of the schedule (1h): running now" in s.text()
    s.stop()
    assert len(backups(target)) == 2


def test_a_run_that_outlasts_the_interval_is_skipped_never_overlapped(
    target: Target, schedulers: list[Scheduler], tmp_path: Path
) -> None:
    """A restore drill that takes about 3 s, every 2 s: due times are skipped and counted."""
    with target.connect() as conn:
        conn.execute(slow_table_sql("velocity_pg_verify_%"))
    metrics_file = tmp_path / "velocity.prom"
    s = start(
        schedulers,
        target,
        BACKUP_VERIFY="restore",
        BACKUP_METRICS_FILE=str(metrics_file),
        PGOPTIONS="-c velocity_test.delay=3",
    )
    # A manual backup while a scheduled run is going on is safe too.
    wait_for_sleep_in(target, "velocity_pg_verify_%")
    manual = target.run("backup")
    assert manual.returncode == 0, manual.stderr
    s.wait_for(lambda: s.count("run succeeded") >= 2, timeout=90, what="two slow runs")
    s.stop()
    assert s.proc.returncode == 0, s.stderr
    # Strictly one run at a time: started, then ended, then started...
    events = [
        ln for ln in s.lines if "run started" in ln or re.search(r" run (succeeded|FAILED)", ln)
    ]
    kinds = ["start" if "run started" in ln else "end" for ln in events]
    assert kinds[: len(kinds) // 2 * 2] == ["start", "end"] * (len(kinds) // 2), events
    skipped_lines = [ln for ln in s.lines if "that came while the run was going on" in ln]
    assert skipped_lines, s.text()
    skipped = sum(int(re.search(r"skipped (\d+) due time", ln).group(1)) for ln in skipped_lines)  # type: ignore[union-attr]
    assert runs(read_metrics(metrics_file), "skipped") == skipped
    assert "restore drill (" in s.text()
    names = [b.name for b in backups(target)]
    assert len(names) == len(set(names)) >= 3  # the manual one among them, no collision
    assert drill_databases(target) == []
    assert leftovers(target) == []


# -- failures are reported, and the next run succeeds -------------------------------------


@pytest.fixture
def own_role(target: Target) -> Iterator[tuple[str, str]]:
    """A login role of its own (superuser, to dump), so its password can stop working."""
    name, password = f"sched_{uuid.uuid4().hex[:8]}", "role-Pw-1"
    with target.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    yield name, password
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def set_password(target: Target, role: str, password: str) -> None:
    with target.connect("postgres") as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )


def test_a_failing_run_is_reported_and_the_next_one_succeeds(
    target: Target,
    schedulers: list[Scheduler],
    own_role: tuple[str, str],
    pings: PingServer,
    tmp_path: Path,
) -> None:
    role, password = own_role
    metrics_file = tmp_path / "velocity.prom"
    set_password(target, role, "changed-for-a-while")  # the server "goes away" for this role
    s = start(
        schedulers,
        target,
        PGUSER=role,
        PGPASSWORD=password,
        BACKUP_PING_URL=pings.url,
        BACKUP_METRICS_FILE=str(metrics_file),
    )
    # "next run at" follows the metrics file's rewrite after each run.
    s.wait_for(lambda: s.count("next run at") >= 2, what="two failed runs")
    assert s.count("run FAILED") >= 2
    assert s.proc.poll() is None  # the scheduler keeps going
    failed_metrics = read_metrics(metrics_file)
    assert runs(failed_metrics, "failure") >= 2
    assert runs(failed_metrics, "success") == 0
    assert ("velocity_pg_last_success_timestamp_seconds", ()) not in failed_metrics
    set_password(target, role, password)  # back
    s.wait_for(lambda: s.count("run succeeded") >= 1, what="a run after the fix")
    s.stop()
    assert s.proc.returncode == 0, s.stderr
    text = s.text()
    assert re.search(rf"^{STAMP} backup: FAILED .*password authentication failed", text, re.M)
    assert re.search(rf"^{STAMP} cleanup: skipped \(not run: backup failed\)", text, re.M)
    assert re.search(rf"^{STAMP} run FAILED in [\d.]+ s \(backup failed\)$", text, re.M)
    assert backups(target)
    assert leftovers(target) == []
    # Pings: /start then /fail for each failed run, /start then success once it worked.
    pings.wait_for(4)
    base = "/ping/secret-token-1234"
    paths = pings.paths()
    first_ok = paths.index(base)
    assert paths[:2] == [f"{base}/start", f"{base}/fail"]
    assert paths[first_ok - 1] == f"{base}/start"
    fail_body = pings.received[1].body
    assert "backup: FAILED" in fail_body and "run FAILED" in fail_body
    ok_body = pings.received[first_ok].body
    assert f"backup: ok {target.dbname}_" in ok_body and "run succeeded" in ok_body
    assert PASSWORD not in text and password not in text
    assert "secret-token-1234" not in text  # the ping URL's token is never logged
    final = read_metrics(metrics_file)
    assert runs(final, "success") >= 1 and runs(final, "failure") >= 2


class OwnServer:
    """A private PostgreSQL cluster of this test's own, which it can really stop."""

    def __init__(self, folder: Path) -> None:
        self.bindir = Path(_pg_ctl()).parent
        self.data = folder / "data"
        self.socket_dir = folder  # short enough for a socket path
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        pwfile = folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}")  # fmt: skip
        pwfile.unlink()
        self.start()
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD,
            dbname="postgres", autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute("CREATE DATABASE velocity")

    def run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bindir / program), *args], check=True, capture_output=True)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.data.parent / "log"),
                 "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1",
                 "start")  # fmt: skip

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def env(self) -> dict[str, str]:
        return dict(PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER="postgres",
                    PGPASSWORD=PASSWORD, PGDATABASE="velocity")  # fmt: skip


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    folder = Path(f"/tmp/vpg-own-{uuid.uuid4().hex[:8]}")
    folder.mkdir(mode=0o700)
    server = OwnServer(folder)
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_runs_fail_while_the_server_is_stopped_and_succeed_once_it_is_back(
    target: Target, schedulers: list[Scheduler], own_server: OwnServer, tmp_path: Path
) -> None:
    """The server really stopped (pg_ctl stop), then started again: each run meanwhile
    fails and says so, the scheduler keeps going, and the next run after the start succeeds."""
    metrics_file = tmp_path / "velocity.prom"
    s = start(schedulers, target, BACKUP_METRICS_FILE=str(metrics_file), **own_server.env())
    s.wait_for(lambda: s.count("run succeeded") >= 1, what="a first run")
    own_server.stop()
    failed_before = s.count("run FAILED")
    s.wait_for(lambda: s.count("run FAILED") >= failed_before + 2, what="two failed runs")
    assert s.proc.poll() is None  # the scheduler keeps going
    assert re.search(rf"^{STAMP} backup: FAILED .*", s.text(), re.M)
    # The metrics file is written after the run's summary line (with the skipped count).
    s.wait_for(
        lambda: runs(read_metrics(metrics_file), "failure") >= 2, what="two failures counted"
    )
    assert runs(read_metrics(metrics_file), "failure") >= 2
    succeeded = s.count("run succeeded")
    own_server.start()
    s.wait_for(lambda: s.count("run succeeded") > succeeded, what="a run after the start")
    s.stop()
    assert s.proc.returncode == 0, s.stderr
    assert leftovers(target) == []
    assert PASSWORD not in s.text()


# -- stopping ----------------------------------------------------------------------------


def test_sigterm_during_a_dump_exits_0_and_leaves_nothing(
    target: Target, schedulers: list[Scheduler]
) -> None:
    from test_backup import hold_table_lock, wait_for_pg_dump

    with target.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    for sig in (signal.SIGTERM, signal.SIGINT):
        locker = hold_table_lock(target, "t")
        try:
            s = start(schedulers, target, BACKUP_SCHEDULE="@every 1h")
            pid, argv = wait_for_pg_dump(s.proc.pid)
            temp = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--file=")))
            assert temp.exists()
            elapsed = s.stop(sig)
        finally:
            locker.rollback()
            locker.close()
        assert s.proc.returncode == 0, s.stderr
        assert elapsed < 5, elapsed  # well within Docker's 10 s
        assert not temp.exists()
        assert backups(target) == []
        assert leftovers(target) == []
        assert (
            not Path(f"/proc/{pid}").exists()
            or b"pg_dump" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        assert "nothing is left half-done" in s.text()


def test_sigterm_during_a_restore_drill_drops_the_throwaway_database(
    target: Target, schedulers: list[Scheduler]
) -> None:
    with target.connect() as conn:
        conn.execute(slow_table_sql("velocity_pg_verify_%"))
    s = start(
        schedulers,
        target,
        BACKUP_SCHEDULE="@every 1h",
        BACKUP_VERIFY="restore",
        PGOPTIONS="-c velocity_test.delay=30",
    )
    wait_for_sleep_in(target, "velocity_pg_verify_%")
    assert drill_databases(target)
    elapsed = s.stop()
    assert s.proc.returncode == 0, s.stderr
    assert elapsed < 8, elapsed
    assert drill_databases(target) == []
    assert len(backups(target)) == 1  # the backup itself was complete
    assert leftovers(target) == []


# -- --once -------------------------------------------------------------------------------


def test_once_exit_status_is_every_steps(target: Target, tmp_path: Path) -> None:
    metrics_file = tmp_path / "m.prom"
    ok = target.run("schedule", "--once", env=target.env(BACKUP_METRICS_FILE=str(metrics_file)))
    assert ok.returncode == 0, ok.stderr
    assert "backup: ok" in ok.stdout and "verify: ok" in ok.stdout and "run succeeded" in ok.stdout
    assert len(backups(target)) == 1
    first = read_metrics(metrics_file)
    assert runs(first, "success") == 1
    bad = target.run(
        "schedule",
        "--once",
        env=target.env(PGPORT=str(free_port()), BACKUP_METRICS_FILE=str(metrics_file)),
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("velocity-pg: error: the run failed: ")
    assert "backup: " in bad.stderr and "Connection refused" in bad.stderr
    assert "Traceback" not in bad.stderr
    # The counters survive the restart: read from the previous file.
    second = read_metrics(metrics_file)
    assert runs(second, "success") == 1 and runs(second, "failure") == 1
    assert (
        second[("velocity_pg_last_success_timestamp_seconds", ())]
        == first[("velocity_pg_last_success_timestamp_seconds", ())]
    )
    assert (
        second[("velocity_pg_last_run_timestamp_seconds", ())]
        > first[("velocity_pg_last_run_timestamp_seconds", ())]
    )
    none = target.run("schedule", "--once", env=target.env(BACKUP_VERIFY="none"))
    assert none.returncode == 0 and "verify" not in none.stdout


def test_once_while_another_scheduled_run_holds_the_folder(target: Target) -> None:
    fd = os.open(target.backup_dir / ".velocity-schedule.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = target.run("schedule", "--once")
    finally:
        os.close(fd)
    assert result.returncode == 1
    assert "another velocity-pg schedule run is going on" in result.stderr
    assert backups(target) == []


# -- bad settings: exit 2 before anything runs ----------------------------------------------


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"BACKUP_SCHEDULE": "0 3 * *"}, "has 4 field(s)"),
        ({"BACKUP_SCHEDULE": "@every soon"}, "is not a duration"),
        ({"BACKUP_SCHEDULE": "0 25 * * *"}, "Bad hour"),
        ({"TZ": "Mars/Olympus"}, "is not a time zone"),
        ({"BACKUP_VERIFY": "sometimes"}, "is not one of checksum, restore, none"),
        ({"BACKUP_PING_URL": "ftp://example.invalid/x"}, "is not an http:// or https:// URL"),
        ({"BACKUP_METRICS_FILE": "/nonexistent/dir/velocity.prom"}, "does not exist"),
        ({"BACKUP_HEALTH_MAX_AGE": "a while"}, "is not a duration"),
    ],
)
def test_bad_settings_exit_2_before_anything_runs(
    target: Target, env: dict[str, str], reason: str
) -> None:
    for args in (("schedule",), ("schedule", "--once")):
        result = target.run(*args, env=target.env(**env), timeout=30)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], result.stderr
        assert lines[0].startswith("velocity-pg: error: ")
        assert result.stdout == ""
        assert list(target.backup_dir.iterdir()) == []


# -- pings ---------------------------------------------------------------------------------


def test_pings_start_then_success_with_the_summary(target: Target, pings: PingServer) -> None:
    url = pings.url + "?status=up"  # a query string (Uptime Kuma) stays at the end
    result = target.run("schedule", "--once", env=target.env(BACKUP_PING_URL=url))
    assert result.returncode == 0, result.stderr
    assert pings.paths() == [
        "/ping/secret-token-1234/start?status=up",
        "/ping/secret-token-1234?status=up",
    ]
    body = pings.received[1].body.splitlines()
    assert [ln.split(" ", 2)[1] for ln in body[:-1]] == ["backup:", "cleanup:", "verify:"]
    assert body[-1].startswith("run succeeded in ")
    assert "secret-token" not in result.stdout + result.stderr


def test_a_dead_ping_endpoint_neither_fails_nor_delays_the_run(target: Target) -> None:
    url = f"http://127.0.0.1:{free_port()}/dead"
    started = time.monotonic()
    result = target.run("schedule", "--once", env=target.env(BACKUP_PING_URL=url), timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "run succeeded" in result.stdout
    assert "ping to http://127.0.0.1:" in result.stdout and "giving up on it" in result.stdout
    assert "/dead" not in result.stdout
    assert took < 25, took  # bounded retries with short timeouts


def test_a_slow_or_failing_ping_endpoint_does_not_delay_scheduled_runs(
    target: Target, schedulers: list[Scheduler], pings: PingServer
) -> None:
    pings.delay = 8.0  # longer than the scheduler's per-attempt timeout
    pings.status = 500
    s = start(schedulers, target, BACKUP_PING_URL=pings.url)
    s.wait_for(lambda: s.count("run succeeded") >= 4, timeout=30, what="four runs")
    made = sorted(b.created for b in backups(target))
    span = (made[-1] - made[0]).total_seconds()
    assert span <= 3 * 2 + 3, span  # four runs on the 2-second rhythm, not held up
    elapsed = s.stop()
    assert s.proc.returncode == 0
    assert elapsed < 5, elapsed  # a stuck ping never holds up the stop either
    assert "ping to http://127.0.0.1:" in s.text()


# -- status --max-age auto: the health check -------------------------------------------------


def test_status_max_age_auto_follows_the_schedule(target: Target) -> None:
    empty = target.run("status", "--max-age", "auto", env=target.env(BACKUP_SCHEDULE="@every 2s"))
    assert empty.returncode == 1 and "STALE: there is no backup" in empty.stderr
    assert target.run("backup").returncode == 0
    fresh = target.run("status", "--max-age", "auto", env=target.env(BACKUP_SCHEDULE="@every 2s"))
    assert fresh.returncode == 0, fresh.stderr
    # An hour-old newest backup: stale for @every 2s (62 s), fine for @daily (26 h 24 m).
    (made,) = backups(target)
    old = made.path.with_name(catalog.format_name(made.created - timedelta(hours=1), target.dbname))
    made.path.rename(old)
    stale = target.run("status", "--max-age", "auto", env=target.env(BACKUP_SCHEDULE="@every 2s"))
    assert stale.returncode == 1
    assert "older than 62s (BACKUP_SCHEDULE=@every 2s)" in stale.stderr
    assert target.run("status", "--max-age", "auto").returncode == 0  # default @daily
    explicit = target.run(
        "status", "--max-age", "auto", env=target.env(BACKUP_HEALTH_MAX_AGE="30m")
    )
    assert explicit.returncode == 1 and "(BACKUP_HEALTH_MAX_AGE)" in explicit.stderr
    bad = target.run("status", "--max-age", "auto", env=target.env(BACKUP_SCHEDULE="nope"))
    assert bad.returncode == 2


def test_metrics_file_has_exactly_the_documented_names(target: Target, tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    metrics_file = tmp_path / "metrics" / "velocity.prom"
    result = target.run("schedule", "--once", env=target.env(BACKUP_METRICS_FILE=str(metrics_file)))
    assert result.returncode == 0, result.stderr
    found = read_metrics(metrics_file)
    assert {name for name, _ in found} == METRIC_NAMES
    (made,) = backups(target)
    assert found[("velocity_pg_backups", (("location", "local"),))] == 1
    assert found[("velocity_pg_backups_size_bytes", (("location", "local"),))] == made.size
    assert found[("velocity_pg_last_backup_size_bytes", ())] == made.size
    assert abs(found[("velocity_pg_last_success_timestamp_seconds", ())] - time.time()) < 60
    assert 0 < found[("velocity_pg_last_run_duration_seconds", ())] < 60
    assert {runs(found, r) for r in ("success", "failure", "skipped")} == {1.0, 0.0}
    text = metrics_file.read_text()
    assert "# TYPE velocity_pg_runs_total counter" in text
    assert "_created" not in text
    assert [p.name for p in metrics_file.parent.iterdir()] == ["velocity.prom"]  # no temp left


# -- off-site copies in the run (a real S3 API: moto's server on 127.0.0.1) -----------------


def test_a_run_pushes_off_site_prunes_there_and_counts_remote(
    target: Target,
    bucket: Bucket,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    metrics_file = tmp_path / "velocity.prom"
    env = target.env(
        **offsite_env(bucket),
        BACKUP_S3_MAX_COUNT="1",
        BACKUP_METRICS_FILE=str(metrics_file),
    )
    for _ in range(2):
        result = target.run("schedule", "--once", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(1.1)  # the next backup in another second
    steps = [
        ln.split(" ", 1)[1].split(":")[0]
        for ln in result.stdout.splitlines()
        if re.match(rf"{STAMP} [a-z -]+: (ok|FAILED|skipped)", ln)
    ]
    assert steps == ["backup", "push", "cleanup", "cleanup off-site", "verify"], result.stdout
    assert re.search(rf"^{STAMP} push: ok {target.dbname}_\S+ pushed: ", result.stdout, re.M)
    assert re.search(rf"^{STAMP} cleanup off-site: ok Off-site: kept 1 backup", result.stdout, re.M)
    local = backups(target)
    assert len(local) == 2
    newest = local[0].name
    assert bucket.names() == [  # pruned to 1
        f"db/{newest}",
        f"db/{newest}.json",
        f"db/{newest}.roles.sql",
    ]
    found = read_metrics(metrics_file)
    assert found[("velocity_pg_backups", (("location", "remote"),))] == 1
    assert found[("velocity_pg_backups_size_bytes", (("location", "remote"),))] == local[0].size
    assert found[("velocity_pg_backups", (("location", "local"),))] == 2
    assert AWS_SECRET not in result.stdout + result.stderr


def test_a_failing_push_fails_the_run_and_prunes_nothing_off_site(
    target: Target,
    bucket: Bucket,  # noqa: F811 (the fixture)
) -> None:
    env = target.env(**offsite_env(bucket))
    env["BACKUP_S3_URL"] = f"s3://{bucket.name}-missing/db"
    result = target.run("schedule", "--once", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"^{STAMP} push: FAILED ", result.stdout, re.M), result.stdout
    assert re.search(
        rf"^{STAMP} cleanup off-site: skipped \(not run: push failed\)", result.stdout, re.M
    )
    assert re.search(rf"^{STAMP} cleanup: ok ", result.stdout, re.M)  # local pruning still runs
    assert re.search(rf"^{STAMP} verify: ok ", result.stdout, re.M)
    assert "the run failed: push: " in result.stderr
    assert len(backups(target)) == 1  # the local backup is safe
