"""``velocity-pg serve``, ``report --html`` and ``schedule`` with ``BACKUP_HTTP_ADDR``, as
real processes over real HTTP on 127.0.0.1 (issue 24): each endpoint against a folder of
real backups (the test server), a failed run and off-site copies (moto); bad requests that
never stop the server; no secret in anything served; bad addresses refused before
anything runs.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import stat
import time
from pathlib import Path

import pytest
from conftest import Target
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    bucket,
    offsite_env,
    s3_endpoint,
)
from page_support import (
    Server,
    free_port,
    make_history,
    request,
    secret_env,
    secrets,
    serve,
    servers,  # noqa: F401 (the fixture)
    wait_listening,
)
from prometheus_client.parser import text_string_to_metric_families

from velocity_pg.scheduling import runlog


def no_secrets(text: str) -> None:
    for secret in secrets():
        assert secret not in text, f"a secret ({secret[:4]}...) is shown"


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def history(target: Target, bucket: Bucket) -> dict[str, str]:  # noqa: F811 (the fixture)
    env = target.env(**offsite_env(bucket))
    make_history(target, env)
    return env


def test_each_endpoint_against_real_backups_offsite_copies_and_a_failed_run(
    target: Target,
    history: dict[str, str],
    servers: list[Server],  # noqa: F811 (the fixture)
) -> None:
    env = {**history, **secret_env()}
    listed = json.loads(target.run("list", "--json", env=history).stdout)["backups"]
    remote = json.loads(target.run("list", "--remote", "--json", env=history).stdout)["backups"]
    assert len(listed) == 2 and len(remote) == 2
    server = serve(target, env)
    servers.append(server)

    page = request(server.port, "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    for b in listed:
        assert f'data-name="{b["name"]}"' in page.body
        assert f'data-local="{b["size_bytes"]}"' in page.body
    for r in remote:
        assert f'data-remote="{r["size_bytes"]}"' in page.body
    assert 'data-state="amber"' in page.body  # fresh, but the last run failed
    assert "the last run failed (backup)" in page.body
    assert page.body.count("<svg") == 4 and "failed run" in page.body
    assert "<script" not in page.body
    no_secrets(page.body)

    head = request(server.port, "/", method="HEAD")
    assert head.status == 200 and head.body == ""
    assert int(head.headers["content-length"]) > 1000

    found = request(server.port, "/metrics")
    assert found.status == 200 and found.headers["content-type"].startswith("text/plain")
    values = metric_values(found.body)
    assert values[("velocity_pg_backups", (("location", "local"),))] == 2
    assert values[("velocity_pg_backups", (("location", "remote"),))] == 2
    assert values[("velocity_pg_backups_size_bytes", (("location", "remote"),))] == sum(
        r["size_bytes"] for r in remote
    )
    assert values[("velocity_pg_backups_size_bytes", (("location", "local"),))] == sum(
        b["size_bytes"] for b in listed
    )
    no_secrets(found.body)

    health = request(server.port, "/healthz")
    assert health.status == 200 and health.body.startswith("ok: ")
    no_secrets(health.body)
    assert request(server.port, "/nope").status == 404
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refused = request(server.port, "/", method=method)
        assert refused.status == 405 and refused.headers["allow"] == "GET, HEAD"

    # report --html: the same page, one file, 0600, no secret.
    out = target.workdir / "page.html"
    written = target.run("report", "--html", str(out), env=env)
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert text.count("<svg") == 4 and all(f'data-name="{b["name"]}"' in text for b in listed)
    no_secrets(text + written.stdout + written.stderr)
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []
    out.write_text("old")  # replaced whole
    again = target.run("report", "--html", str(out), env=env)
    assert again.returncode == 0 and out.read_text().startswith("<!DOCTYPE html>")

    # The run log: one line per run, 0600.
    log = runlog.path_in(target.backup_dir)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    results = [e["result"] for e in runlog.read(target.backup_dir)]
    assert results == ["success", "success", "failure"]
    assert all(isinstance(e["offsite_seconds"], float) for e in runlog.read(target.backup_dir)[:2])
    out_text, err_text = server.stop()
    assert server.proc.returncode == 0, err_text  # SIGTERM: a stop, not a failure
    no_secrets(out_text + err_text)


def test_healthz_is_503_with_the_reason_when_there_is_no_backup(
    target: Target,
    servers: list[Server],  # noqa: F811 (the fixture)
) -> None:
    server = serve(target, target.env(BACKUP_SCHEDULE="@every 1h"))
    servers.append(server)
    health = request(server.port, "/healthz")
    assert health.status == 503
    assert health.body.startswith(f"stale: there is no backup of database '{target.dbname}'")
    page = request(server.port, "/")
    assert page.status == 200 and 'data-state="red"' in page.body


def test_bad_requests_and_slow_clients_never_stop_the_server(
    target: Target,
    servers: list[Server],  # noqa: F811 (the fixture)
) -> None:
    server = serve(target, target.env())
    servers.append(server)
    port = server.port
    # A very long URL: 414, or the connection closed; never the server's end.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /" + b"a" * 100_000 + b" HTTP/1.0\r\n\r\n")
        answer = s.recv(100)
    assert answer.startswith(b"HTTP/1.0 414"), answer
    assert request(port, "/" + "a" * 5000).status == 414  # the server's own bound, 4 KiB
    # Garbage: an error (400; http.server answers a two-word line as HTTP/0.9, no head).
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\x00\x01 nonsense\r\n\r\n")
        assert b"400" in s.makefile("rb").read()
    # Slow clients holding connections open (more than the server serves at once): the
    # ones beyond the bound get 503 at once, and once they are gone the page answers.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(80)]
    try:
        idle[-1].sendall(b"GET / HTTP/1.0\r\n")  # half a request, never finished
        time.sleep(0.5)
        busy = 0
        for s in idle:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                busy += s.recv(100).startswith(b"HTTP/1.0 503")
        assert busy >= 1
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 60
    while True:  # the slow ones' threads end (the client closed) and free their slots
        got = request(port, "/healthz")
        if got.status != 503 or not got.body.startswith("busy"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert got.status == 503 and got.body.startswith("stale")  # no backup: an answer
    assert server.proc.poll() is None


@pytest.mark.parametrize("addr", ["8070", "localhost:http", "127.0.0.1:99999", "a b:1"])
def test_a_bad_address_exits_2_before_anything_runs(target: Target, addr: str) -> None:
    env = target.env(BACKUP_HTTP_ADDR=addr, BACKUP_SCHEDULE="@every 1h")
    for args in (("serve",), ("schedule",)):
        done = target.run(*args, env=env, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("velocity-pg: error: BACKUP_HTTP_ADDR=")
        assert len(done.stderr.strip().splitlines()) == 1
    assert list(target.backup_dir.iterdir()) == []  # nothing ran


def test_an_address_in_use_is_one_line_and_exit_1_before_any_run(target: Target) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = target.env(BACKUP_HTTP_ADDR=f"127.0.0.1:{port}", BACKUP_SCHEDULE="@every 1h")
        for args in (("serve",), ("schedule",)):
            done = target.run(*args, env=env, timeout=60)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert (
                len(lines) == 1 and f"cannot serve the status page on 127.0.0.1:{port}" in lines[0]
            )
    assert list(target.backup_dir.iterdir()) == []  # the scheduler failed closed: no run


def test_no_address_for_serve_is_a_usage_error(target: Target) -> None:
    done = target.run("serve", env=target.env())
    assert done.returncode == 2 and "set BACKUP_HTTP_ADDR" in done.stderr


def test_a_missing_backup_folder_is_said_before_serving(target: Target) -> None:
    missing = target.backup_dir / "nope"
    for args in (("serve", "--addr", f"127.0.0.1:{free_port()}"), ("report", "--html", "x.html")):
        done = target.run(*args, env=target.env(BACKUP_DIR=str(missing)))
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip() == (
            f"velocity-pg: error: backup folder {missing} does not exist; create it or set "
            "BACKUP_DIR"
        )


def test_the_scheduler_serves_its_live_state_and_keeps_its_run_log(
    target: Target, tmp_path: Path
) -> None:
    port = free_port()
    env = target.env(
        BACKUP_HTTP_ADDR=f"127.0.0.1:{port}",
        BACKUP_SCHEDULE="@every 2s",
        BACKUP_METRICS_FILE=str(tmp_path / "velocity.prom"),
    )
    proc = target.popen("schedule", env=env)
    try:
        wait_listening(port, proc)
        deadline = time.monotonic() + 120
        while len(runlog.read(target.backup_dir)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        found = metric_values(request(port, "/metrics").body)
        assert found[("velocity_pg_runs_total", (("result", "success"),))] >= 2
        page = request(port, "/")
        assert page.status == 200 and 'data-state="green"' in page.body
        assert re.search(r'data-fact="last-run">success at ', page.body)
        assert request(port, "/healthz").status == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"status page on http://127.0.0.1:{port}/" in out


def test_the_rollback_point_of_a_restore_is_on_the_page(target: Target) -> None:
    made = target.run("backup", "--json")
    assert made.returncode == 0, made.stderr
    name = json.loads(made.stdout)["name"]
    restored = target.run("restore", name, "--yes", timeout=300)
    assert restored.returncode == 0, restored.stderr
    out = target.workdir / "page.html"
    written = target.run("report", "--html", str(out))
    assert written.returncode == 0, written.stderr
    text = out.read_text()
    assert re.search(r'data-fact="rollback-point">contents before [^<]*' + re.escape(name), text)
    assert 'data-fact="staged-copy"' not in text  # none: not shown


def test_a_run_log_that_cannot_be_written_never_fails_the_run(target: Target) -> None:
    runlog.path_in(target.backup_dir).mkdir()  # a folder where the file goes: rename fails
    done = target.run("schedule", "--once", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run succeeded" in done.stdout
    assert f"run log: cannot write {runlog.path_in(target.backup_dir)}" in done.stdout
    assert not [p for p in target.backup_dir.iterdir() if p.name.endswith(".tmp")]
