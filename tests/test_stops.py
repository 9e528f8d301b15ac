"""Ctrl+C and SIGTERM inside a shielded section are deferred, never dropped (issue 17, item 15).

A step that must not stop halfway (dropping a database) holds the stop signals back;
as it ends, the first one is acted on, unless the run has passed its point of no return
(the swap), where it finishes and reports. The tests make the drop slow for real: another
session holds a lock on the database (an open ``COMMENT ON DATABASE``), so ``DROP
DATABASE`` waits; the signal is sent to a real ``velocity-pg`` while it waits, and only
then is the lock released.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import psycopg
import pytest
from conftest import (
    PASSWORD,
    Target,
    load_varied_schema,
    slow_table_sql,
    table_contents,
    wait_for_sleep_in,
)
from psycopg import sql

from velocity_pg.postgres.pgtools import Terminated
from velocity_pg.restore import staging
from velocity_pg.restore.shield import shielded

# -- the shield itself (in-process, no database) -------------------------------------------


class Raised(Exception):
    pass


@contextmanager
def handler_raising() -> Iterator[list[int]]:
    """SIGTERM raises :class:`Raised` (as velocity-pg's own handler raises Terminated)."""
    seen: list[int] = []

    def raise_it(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)
        raise Raised

    previous = signal.signal(signal.SIGTERM, raise_it)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_in_a_shielded_section_is_acted_on_as_it_ends() -> None:
    finished = False
    with handler_raising() as seen, pytest.raises(Raised), shielded() as held_back:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # Python runs handlers between bytecodes: it had its chance
        assert held_back == [signal.SIGTERM]
        assert seen == []
        finished = True
    assert finished
    assert seen == [signal.SIGTERM]


def test_a_signal_at_the_point_of_no_return_is_reported_not_acted_on() -> None:
    with handler_raising() as seen:
        with shielded(deliver=False) as held_back:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert held_back == [signal.SIGTERM]
    assert seen == []


def test_a_signal_in_a_failing_section_still_stops_the_run() -> None:
    """An error that ends the section does not swallow the signal: a scheduler would
    record the error as a failed step and go on."""
    with handler_raising(), pytest.raises(Raised) as raised, shielded():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        raise ValueError("the drop failed")
    assert isinstance(raised.value.__context__, ValueError)


def test_nested_sections_hand_the_signal_outwards() -> None:
    with handler_raising() as seen, pytest.raises(Raised), shielded() as outer:
        with shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert outer == [signal.SIGTERM]
        assert seen == []
    assert seen == [signal.SIGTERM]


def test_velocity_pgs_own_handler_raises_terminated_after_the_section() -> None:
    from velocity_pg.postgres.pgtools import install_termination_handlers

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    install_termination_handlers()
    try:
        with pytest.raises(Terminated) as raised, shielded():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
        assert raised.value.signum == signal.SIGHUP
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# -- helpers for the real runs -------------------------------------------------------------


def backup(target: Target) -> str:
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    name: str = json.loads(result.stdout)["name"]
    return name


@contextmanager
def lock_database(target: Target, name: str) -> Iterator[psycopg.Connection]:
    """Hold a lock on database ``name`` (an uncommitted COMMENT ON DATABASE) from a session
    in another database: DROP DATABASE waits for it, connections to it do not."""
    conn = target.connect("postgres", autocommit=False)
    try:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS 'held by the test'").format(sql.Identifier(name))
        )
        yield conn
    finally:
        conn.rollback()
        conn.close()


def wait_for_waiting_drop(target: Target, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until velocity-pg's DROP DATABASE waits for the lock."""
    deadline = time.monotonic() + timeout
    with target.connect("postgres") as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'DROP DATABASE%%'"
            ).fetchone()
            if row and row[0]:
                return
            if proc.poll() is not None:
                _out, err = proc.communicate()
                raise AssertionError(f"velocity-pg exited {proc.returncode} first: {err}")
            time.sleep(0.05)
    raise AssertionError("DROP DATABASE never waited for the lock")


def signal_during_drop(
    target: Target, proc: subprocess.Popen[str], held: psycopg.Connection, sig: signal.Signals
) -> tuple[str, float]:
    """Send ``sig`` while the drop waits; check the run waits for the drop; release the
    lock; return stderr and how long the run took after the release."""
    try:
        wait_for_waiting_drop(target, proc)
        proc.send_signal(sig)
        time.sleep(1.5)
        assert proc.poll() is None, "the signal stopped the drop halfway"
        held.rollback()
        released = time.monotonic()
        _out, err = proc.communicate(timeout=60)
        return err, time.monotonic() - released
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def live_state(target: Target) -> tuple[object, ...]:
    with target.connect("postgres") as conn:
        row = conn.execute(
            "SELECT oid, datname FROM pg_database WHERE datname = %s", (target.dbname,)
        ).fetchone()
    with target.connect() as conn:
        return (row, table_contents(conn))


def databases_like(target: Target, pattern: str) -> list[str]:
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,)
        ).fetchall()
    return [str(r[0]) for r in rows]


# -- a restore: the leftover or stale copy dropped at its start ------------------------------


@pytest.mark.parametrize(
    ("what", "sig"),
    [
        ("leftover", signal.SIGTERM),
        ("leftover", signal.SIGINT),
        ("stale", signal.SIGTERM),
    ],
    ids=["leftover-SIGTERM", "leftover-SIGINT", "stale-SIGTERM"],
)
def test_signal_while_a_restore_drops_an_old_copy_stops_it_before_the_swap(
    target: Target, what: str, sig: signal.Signals
) -> None:
    """The copy dropped first (a killed run's leftover, or a copy staged from another
    backup) is dropped to the end; then the restore stops, exit 130, and the live database
    is exactly as it was (on main the signal was thrown away and the restore replaced it)."""
    load_varied_schema(target)
    first = backup(target)
    stg = staging.staging_name(target.dbname)
    if what == "leftover":
        with target.connect("postgres") as conn:  # as a restore killed by SIGKILL leaves it
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(stg)))
        name = first
    else:
        staged = target.run("restore", "--stage", first)
        assert staged.returncode == 0, staged.stderr
        name = backup(target)  # another backup: the staged copy is stale for it
        assert name != first
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")  # what the restore would undo
    before = live_state(target)
    with lock_database(target, stg) as held:
        proc = target.popen("restore", name, "--yes")
        err, after_release = signal_during_drop(target, proc, held, sig)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and PASSWORD not in err
    word = "interrupted" if sig == signal.SIGINT else f"terminated ({sig.name})"
    assert err.strip().splitlines()[-1] == f"velocity-pg: {word}; nothing was changed", err
    assert after_release < 30, after_release
    assert live_state(target) == before
    # The old copy is gone, and nothing else of this database's was made.
    ours = [stg, staging.aside_name(target.dbname), staging.previous_name(target.dbname)]
    with target.connect("postgres") as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (ours,))
        assert rows.fetchall() == []


# -- verify --restore: the drill's final drop ------------------------------------------------


def test_sigterm_during_the_drills_final_drop_exits_130_after_it(target: Target) -> None:
    """The throwaway database is dropped to the end, then the run stops: exit 130 (on main
    the signal was thrown away: exit 0, as if nobody had asked it to stop)."""
    with target.connect() as conn:
        conn.execute(slow_table_sql(r"velocity\_pg\_verify\_%"))
    backup(target)
    # The slow table's CHECK sleeps 2 s in the drill: time to lock its database (once the
    # drill has set its comment, which the lock would hold up).
    proc = target.popen("verify", "--restore", env=target.env(PGOPTIONS="-c velocity_test.delay=2"))
    try:
        wait_for_sleep_in(target, r"velocity\_pg\_verify\_%")
        found = databases_like(target, r"velocity\_pg\_verify\_%")
        (drill,) = found
        with lock_database(target, drill) as held:
            err, _ = signal_during_drop(target, proc, held, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("velocity-pg: terminated (SIGTERM)"), err
    assert drill not in databases_like(target, r"velocity\_pg\_verify\_%")


# -- --stop-on-eof: a stop through the end of the input (how the justfile's recipes stop
#    velocity-pg through `docker compose exec`, which passes no signal on) ----------------


def test_the_end_of_the_input_stops_a_backup_like_ctrl_c(target: Target) -> None:
    """With --stop-on-eof, closing velocity-pg's input acts as Ctrl+C: the backup, waiting
    on a table lock, stops with exit 130, one line, and leaves no file behind."""
    with target.connect() as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS eof_locked (id int)")
    before = sorted(p.name for p in target.backup_dir.iterdir())
    with target.connect(autocommit=False) as holder:
        holder.execute("LOCK TABLE eof_locked IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [sys.executable, "-m", "velocity_pg", "--stop-on-eof", "backup"],
            env=target.env(),
            cwd=target.workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            with target.connect("postgres") as watch:
                waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
                while watch.execute(waiting).fetchone() != (1,):
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "pg_dump never waited for the lock"
                    time.sleep(0.05)
            assert proc.stdin is not None
            proc.stdin.close()  # the end of the input
            proc.wait(timeout=30)
            assert proc.stderr is not None
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        holder.rollback()
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1].startswith("velocity-pg: interrupted"), err
    assert sorted(p.name for p in target.backup_dir.iterdir()) == before
