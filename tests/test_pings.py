"""Pings against a real HTTP endpoint on 127.0.0.1 that misbehaves (issue 17, item 18).

One malformed answer (a bad status line, a cut response) used to end the only ping
thread silently: every later ping was dropped. Now a failure of any kind is logged and
the next ping still goes out. The endpoint is a real socket server that answers from
a script, then properly; velocity-pg's own Pinger, then a real ``schedule --once``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Target, clean_env

from velocity_pg.scheduling.pings import Kind, Pinger

GARBAGE = b"garbage\r\n\r\n"  # not an HTTP status line: BadStatusLine
CUT = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort"  # IncompleteRead
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"


class ScriptedEndpoint:
    """Answers each request with the next scripted answer, then with 200 OK."""

    def __init__(self, script: list[bytes]) -> None:
        self.script = list(script)
        self.paths: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/secret-token-5678"

    def serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                request = self.read_request(conn)
                if request is None:
                    continue
                self.paths.append(request)
                answer = self.script.pop(0) if self.script else OK
                conn.sendall(answer)

    @staticmethod
    def read_request(conn: socket.socket) -> str | None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:")),
            0,
        )
        while len(body) < length:
            chunk = conn.recv(4096)
            if not chunk:
                break
            body += chunk
        return lines[0].split(" ")[1]

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    server = ScriptedEndpoint([GARBAGE, CUT])
    yield server
    server.stop()


def test_a_malformed_answer_is_logged_and_the_next_ping_goes_out(
    endpoint: ScriptedEndpoint,
) -> None:
    logged: list[str] = []
    pinger = Pinger(endpoint.url, logged.append, attempts=1, backoff=(0.0,))
    for kind in (Kind.START, Kind.FAIL, Kind.SUCCESS):
        pinger.send(kind, "body\n")
    assert pinger.drain(15), logged
    pinger.close(1)
    assert endpoint.paths == [
        "/ping/secret-token-5678/start",  # answered with garbage
        "/ping/secret-token-5678/fail",  # answered with a cut response
        "/ping/secret-token-5678",  # answered properly
    ]
    assert len(logged) == 2, logged
    assert "BadStatusLine" in logged[0] and "giving up on it" in logged[0]
    assert "IncompleteRead" in logged[1]
    assert all("secret-token" not in line for line in logged)
    # The thread lives on: a later ping still goes out.
    pinger = Pinger(endpoint.url, logged.append, attempts=1)
    pinger.send(Kind.SUCCESS, "again\n")
    assert pinger.drain(10)
    pinger.close(1)
    assert len(endpoint.paths) == 4


def test_a_malformed_answer_is_retried(endpoint: ScriptedEndpoint) -> None:
    logged: list[str] = []
    pinger = Pinger(endpoint.url, logged.append, backoff=(0.0,))
    pinger.send(Kind.SUCCESS, "body\n")
    assert pinger.drain(15), logged
    pinger.close(1)
    assert endpoint.paths == ["/ping/secret-token-5678"] * 3  # garbage, cut, then delivered
    assert [line.endswith("trying again") for line in logged] == [True, True]


def test_schedule_once_still_sends_the_result_ping_after_a_garbage_answer(
    target: Target, endpoint: ScriptedEndpoint
) -> None:
    """The run's /start ping gets garbage, then a cut answer, then garbage again (all its
    attempts fail); the success ping still goes out, and the run is not held up."""
    endpoint.script.append(GARBAGE)
    started = time.monotonic()
    result = target.run(
        "schedule",
        "--once",
        env=target.env(BACKUP_PING_URL=endpoint.url, BACKUP_VERIFY="none"),
        timeout=60,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert endpoint.paths == ["/ping/secret-token-5678/start"] * 3 + ["/ping/secret-token-5678"]
    assert "giving up on it" in result.stdout
    assert "not sent before stopping" not in result.stdout
    assert "secret-token" not in result.stdout + result.stderr
    assert took < 20, took


# -- BACKUP_PING_URL checked up front ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "https://ping-user:hunter2-Secret@hc-ping.example/secret-token-5678",
            "BACKUP_PING_URL (https://hc-ping.example/…) holds a user name or password "
            "(user:password@host), which velocity-pg does not send;",
        ),
        ("https://hunter2-Secret@hc-ping.example/x", "holds a user name or password"),
        ("http://hc-ping.example:hunter2-Secret/x", "is not a valid URL"),
        ("http://hc-ping.example:99999/hunter2-Secret", "is not a valid URL"),
        ("http://[hunter2-Secret/x", "is not a valid URL"),
        (" ", "BACKUP_PING_URL is blank"),
    ],
)
def test_a_ping_url_with_credentials_or_malformed_is_refused_without_echoing_it(
    tmp_path: Path, url: str, reason: str
) -> None:
    env = clean_env(BACKUP_DIR=str(tmp_path), PGHOST=str(tmp_path / "no-server"))
    env["BACKUP_PING_URL"] = url
    for args in (("schedule", "--once"), ("schedule",)):
        result = subprocess.run(
            [sys.executable, "-m", "velocity_pg", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], result.stderr
        assert lines[0].startswith("velocity-pg: error: ")
        assert "hunter2" not in result.stdout + result.stderr
        assert "secret-token" not in result.stdout + result.stderr
        assert list(tmp_path.iterdir()) == []


def test_a_blank_metrics_file_is_refused(tmp_path: Path) -> None:
    env = clean_env(BACKUP_DIR=str(tmp_path), PGHOST=str(tmp_path / "no-server"))
    env["BACKUP_METRICS_FILE"] = "  "
    result = subprocess.run(
        [sys.executable, "-m", "velocity_pg", "schedule", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("velocity-pg: error: BACKUP_METRICS_FILE is blank")
    assert list(tmp_path.iterdir()) == []
