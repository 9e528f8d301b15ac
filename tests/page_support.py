"""Helpers of the status page's tests (issue 24): a folder with a history, servers as
processes, plain HTTP requests."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import PASSWORD, Target

#: Secrets set in the environment of every server these tests start: none may appear in
#: what is served (the page, its source, /metrics, /healthz) or in report --html's file.
PING_TOKEN = "ping-token-5e1f0c9a"
NOTIFY_SECRET = "notify-secret-77c2d4e8"


def secret_env() -> dict[str, str]:
    return {
        "BACKUP_PING_URL": f"http://127.0.0.1:9/ping/{PING_TOKEN}",
        "BACKUP_NOTIFY_URLS": f"json://hookuser:{NOTIFY_SECRET}@127.0.0.1:9/hook",
    }


def secrets() -> list[str]:
    from offsite_support import AWS_SECRET

    return [PASSWORD, AWS_SECRET, PING_TOKEN, NOTIFY_SECRET]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def request(port: int, path: str = "/", method: str = "GET", timeout: float = 30) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        got = conn.getresponse()
        body = got.read().decode("utf-8", errors="replace")
        return Response(got.status, {k.lower(): v for k, v in got.getheaders()}, body)
    finally:
        conn.close()


def wait_listening(
    port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the server exited {proc.returncode}: {out}\n{err}")
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int

    def stop(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.communicate()


def serve(target: Target, env: dict[str, str]) -> Server:
    port = free_port()
    proc = target.popen("serve", "--addr", f"127.0.0.1:{port}", env=env)
    wait_listening(port, proc)
    return Server(proc, port)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


def make_history(target: Target, env: dict[str, str]) -> None:
    """Real backups through the scheduler's --once runs: two that pass (pushed off-site
    when ``env`` has BACKUP_S3_URL) and one that fails (a database that does not exist),
    each a line in the run log."""
    for _ in range(2):
        done = target.run("schedule", "--once", env=env, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(1.1)  # the next backup's name in another second
    failed = target.run(
        "schedule", "--once", env={**env, "PGDATABASE": target.dbname + "_missing"}, timeout=180
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
