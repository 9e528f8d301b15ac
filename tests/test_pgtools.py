"""argv builders read like the shell lines they stand for (pure, no database)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from velocity_pg.errors import CommandFailed, OperationFailed, describe_failure, first_error_line
from velocity_pg.postgres import pgtools


def test_pg_dump_cmd() -> None:
    assert pgtools.pg_dump_cmd("pg_dump", Path("/b/.velocity-tmp-1.partial")) == shlex.split(
        "pg_dump --format=custom --compress=9 --no-password --lock-wait-timeout=60s "
        "--file=/b/.velocity-tmp-1.partial"
    )


def test_pg_dump_cmd_never_holds_connection_details() -> None:
    cmd = pgtools.pg_dump_cmd("/usr/lib/postgresql/15/bin/pg_dump", Path("/b/x"))
    assert not any(a.startswith(("--password", "-W", "postgresql://", "--dbname")) for a in cmd)


def test_pg_restore_cmds() -> None:
    assert pgtools.pg_restore_list_cmd("pg_restore", Path("/b/v.dump")) == shlex.split(
        "pg_restore --list /b/v.dump"
    )
    assert pgtools.pg_restore_cmd("pg_restore", Path("/b/v.dump"), "stage", jobs=2) == shlex.split(
        "pg_restore --exit-on-error --no-password --dbname=stage --jobs=2 /b/v.dump"
    )


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", (15, 18)),
        ("pg_dump (PostgreSQL) 17.2\n", (17, 2)),
        ("pg_restore (PostgreSQL) 18beta1\n", (18, 0)),
    ],
)
def test_parse_version(text: str, version: tuple[int, int]) -> None:
    assert pgtools.parse_version(text) == version


def test_server_major() -> None:
    assert pgtools.server_major(150018) == 15
    assert pgtools.server_major(170000) == 17
    assert pgtools.server_major(90624) == 9


def test_check_can_dump_refuses_newer_server() -> None:
    prog = pgtools.Program(
        path=Path("/usr/lib/postgresql/15/bin/pg_dump"), major=15, version="15.18"
    )
    pgtools.check_can_dump(prog, 150018)
    pgtools.check_can_dump(prog, 130005)
    with pytest.raises(OperationFailed, match="cannot dump a PostgreSQL 17 server"):
        pgtools.check_can_dump(prog, 170002)


def test_error_summaries() -> None:
    stderr = (
        'pg_dump: error: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
    )
    assert first_error_line(stderr).startswith("pg_dump: error: connection to server")
    assert describe_failure(-9, "") == "killed by SIGKILL"
    assert describe_failure(1, "") == "exit status 1"
    failed = CommandFailed("pg_dump", 1, stderr)
    assert failed.message.startswith("pg_dump failed: pg_dump: error:")
    assert "\n" not in failed.message


def test_error_summaries_keep_the_detail_lines() -> None:
    """PostgreSQL 15+ tools print their details as ``program: detail:`` lines."""
    terminated = (
        'pg_dump: error: Dumping the contents of table "big" failed: PQgetCopyData() failed.\n'
        "pg_dump: detail: Error message from server: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request.\n"
        "pg_dump: detail: Command was: COPY public.big (g, t) TO stdout;\n"
    )
    assert first_error_line(terminated) == (
        'pg_dump: error: Dumping the contents of table "big" failed: PQgetCopyData() failed. '
        "detail: Error message from server: server closed the connection unexpectedly "
        "This probably means the server terminated abnormally before or while processing "
        "the request. detail: Command was: COPY public.big (g, t) TO stdout;"
    )
    lock = (
        "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\n"
        "pg_dump: detail: Query was: LOCK TABLE public.big IN ACCESS SHARE MODE\n"
    )
    assert first_error_line(lock).endswith(
        "statement timeout detail: Query was: LOCK TABLE public.big IN ACCESS SHARE MODE"
    )
    older = "pg_restore: error: could not execute query: ERROR:  x\nHINT:  do y\nCommand was: z\n"
    assert (
        first_error_line(older)
        == "pg_restore: error: could not execute query: ERROR:  x HINT:  do y"
    )
    assert len(first_error_line("p: error: e\np: detail: " + "q" * 1000)) < 350


# A program that behaves as pg_restore's parallel leader did on PostgreSQL 17 when the
# server went silent: a worker reports the timed-out connection, then the leader and
# a worker (which holds stderr open) hang in cancel requests that cannot connect.
HANGS_AFTER_TIMEOUT = """
import os, sys, time
sys.stderr.write("pg_restore: error: could not execute query: "
                 "SSL SYSCALL error: Connection timed out\\n")
sys.stderr.flush()
if os.fork() == 0:
    time.sleep(300)
    os._exit(0)
time.sleep(300)
"""


def test_a_program_that_hangs_after_its_connection_timed_out_is_ended() -> None:
    import sys
    import time

    started = time.monotonic()
    with pytest.raises(CommandFailed) as failed:
        pgtools.run([sys.executable, "-c", HANGS_AFTER_TIMEOUT], {})
    took = time.monotonic() - started
    assert took < pgtools.SILENT_EXIT_GRACE + 10, took
    assert failed.value.returncode == 1  # it had failed; its reason is kept
    assert pgtools.went_silent(failed.value.stderr)
    assert "killed" not in failed.value.message
    assert "Connection timed out" in failed.value.message


def test_children_of_finds_a_forked_child() -> None:
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import os, time\nos.fork()\ntime.sleep(60)"])
    try:
        import time

        deadline = time.monotonic() + 10
        while not pgtools.children_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = pgtools.children_of(proc.pid)
        assert len(kids) == 1
    finally:
        pgtools.kill_tree(proc)
        proc.wait()
    for _ in range(100):
        try:
            os.kill(kids[0], 0)
        except ProcessLookupError:
            break
        stat = Path(f"/proc/{kids[0]}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie until init reaps it
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the child outlived kill_tree")
