"""One real run of each verb, through the command line: the fast lane's smoke tests.

`pytest -m "pure or smoke"` runs these beside the pure tests (tests/conftest.py marks
those): each verb once against the private PostgreSQL server (push and pull against
moto's S3 server, notify --test to a webhook receiver on 127.0.0.1), as a real
`python -m velocity_pg` process. They check that the verb works end to end, not its
edge cases (the other test files do). They go through the command line only, never
importing velocity_pg's verb modules, so they stand whatever the package's layout.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Target, load_varied_schema, table_contents
from offsite_support import Bucket, aws_env, bucket, s3_endpoint  # noqa: F401

pytestmark = pytest.mark.smoke


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a run that must have succeeded quietly (nothing on stderr but notes)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def backup(target: Target, env: dict[str, str] | None = None) -> str:
    """Back up the target's database; the new backup's name."""
    data = json.loads(ok(target.run("backup", "--json", env=env)))
    assert data["database"] == target.dbname
    assert (target.backup_dir / data["name"]).is_file()
    return str(data["name"])


def test_backup(target: Target) -> None:
    load_varied_schema(target)
    name = backup(target)
    assert (target.backup_dir / name).stat().st_mode & 0o777 == 0o600


def test_list(target: Target) -> None:
    name = backup(target)
    listed = json.loads(ok(target.run("list", "--json")))["backups"]
    assert [b["name"] for b in listed] == [name]


def test_verify(target: Target) -> None:
    load_varied_schema(target)
    backup(target)
    assert json.loads(ok(target.run("verify", "--json")))["ok"] is True


def test_status(target: Target) -> None:
    name = backup(target)
    data = json.loads(ok(target.run("status", "--max-age", "1h", "--json")))
    assert (data["count"], data["newest"]["name"], data["stale"]) == (1, name, False)


def test_cleanup(target: Target) -> None:
    first = backup(target)
    second = backup(target)
    ok(target.run("cleanup", "--max-count", "1"))
    assert not (target.backup_dir / first).exists()
    assert (target.backup_dir / second).is_file()  # the newest is never deleted


def test_restore(target: Target) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        before = table_contents(conn)
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
    ok(target.run("restore", name, "--yes", "--jobs", "1", timeout=300))
    with target.connect() as conn:
        assert table_contents(conn) == before


def test_push_and_pull(target: Target, bucket: Bucket) -> None:
    env = target.env(**aws_env(bucket.endpoint), BACKUP_S3_URL=f"s3://{bucket.name}/db")
    name = backup(target, env)
    ok(target.run("push", env=env))
    assert any(key.endswith(name) for key in bucket.names()), bucket.names()
    original = (target.backup_dir / name).read_bytes()
    for path in target.backup_dir.iterdir():
        if path.is_file() and path.name.startswith(name):
            path.unlink()
    ok(target.run("pull", name, env=env))
    assert (target.backup_dir / name).read_bytes() == original


def test_schedule_once(target: Target) -> None:
    ok(target.run("schedule", "--once", timeout=300))
    made = sorted(p.name for p in target.backup_dir.glob(f"{target.dbname}_*.dump"))
    assert len(made) == 1, sorted(p.name for p in target.backup_dir.iterdir())


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A JSON webhook receiver on 127.0.0.1: its json:// URL and the bodies it took."""
    posts: list[dict[str, object]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            posts.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{server.server_address[1]}/hook/smoke-token", posts
    server.shutdown()
    server.server_close()


def test_notify_test(target: Target, webhook: tuple[str, list[dict[str, object]]]) -> None:
    url, posts = webhook
    env = target.env(BACKUP_NOTIFY_URLS=url, BACKUP_NOTIFY_NAME="smoke")
    out = ok(target.run("notify", "--test", env=env))
    assert "delivered" in out and "smoke-token" not in out
    assert len(posts) == 1 and "test message" in str(posts[0].get("title")), posts


def test_entrypoint(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "velocity_pg", "entrypoint", "--", sys.executable, "-c", "exit(7)"],
        capture_output=True,
        text=True,
        env={**os.environ, "BACKUP_DIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode == 7, result.stderr  # it became the command
