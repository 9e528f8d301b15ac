"""Messages that must say what happened (issue 10's "unclear messages"), on a real server."""

from __future__ import annotations

import json
import re
import signal
import time

from conftest import PASSWORD, Target, load_varied_schema


def backup(target: Target, **env: str) -> str:
    result = target.run("backup", "--json", env=target.env(**env))
    assert result.returncode == 0, result.stderr
    name: str = json.loads(result.stdout)["name"]
    return name


def internal_databases(target: Target) -> list[str]:
    """velocity-pg's temporary databases (rollback points are kept on purpose: not counted)."""
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'velocity\\_pg\\_%' "
            "AND datname NOT LIKE 'velocity\\_pg\\_previous\\_%' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


#: An expression index whose function sleeps 10 ms a row in the staging database, except
#: in pg_restore's sessions (row_security off): ANALYZE of the copy takes 30 s.
SLOW_ANALYZE = r"""
CREATE FUNCTION public.slow_id(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_database() LIKE 'velocity\_pg\_staging\_%'
       AND current_setting('row_security') = 'on' THEN
        PERFORM pg_sleep(0.01);
    END IF;
    RETURN x;
END $$;
CREATE TABLE public.big AS SELECT g AS id FROM generate_series(1, 3000) g;
CREATE INDEX big_slow_idx ON public.big (public.slow_id(id));
"""


def test_sigterm_during_analyze_says_terminated_and_nothing_else(target: Target) -> None:
    with target.connect() as conn:
        # The index is built in a session of pg_restore; then ANALYZE spends 30 s in it.
        conn.execute(SLOW_ANALYZE)
    name = backup(target)
    proc = target.popen("restore", name, "--yes")
    assert proc.stderr is not None
    seen = []
    while True:
        line = proc.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
        if "analyzing the restored copy" in line:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    lines = [*seen, *err.splitlines(keepends=True)]
    assert proc.returncode == 130, "".join(lines)
    assert all(ln.startswith("velocity-pg: ") for ln in lines if ln.strip()), "".join(lines)
    assert lines[-1].strip() == (
        "velocity-pg: terminated (SIGTERM); the unfinished copy was dropped and database "
        f"{target.dbname!r} was not changed"
    )
    assert internal_databases(target) == []


def test_pg_dump_detail_lines_name_the_table_and_the_reason(target: Target) -> None:
    """pg_dump waits for a lock on shop.orders; its session is terminated meanwhile. The one
    line says what pg_dump was doing (its ``pg_dump: detail:`` lines), not just "failed"."""
    load_varied_schema(target)
    locker = target.connect(autocommit=False)
    locker.execute("LOCK TABLE shop.orders IN ACCESS EXCLUSIVE MODE")
    try:
        proc = target.popen("backup")
        deadline = time.monotonic() + 30
        with target.connect("postgres") as conn:
            while True:
                row = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                    "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%%'",
                    (target.dbname,),
                ).fetchone()
                if row:
                    break
                assert time.monotonic() < deadline, "pg_dump never waited for the lock"
                time.sleep(0.05)
            conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        _out, err = proc.communicate(timeout=60)
    finally:
        locker.rollback()
        locker.close()
    assert proc.returncode == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert PASSWORD not in err
    assert lines[0].startswith("velocity-pg: error: pg_dump failed: pg_dump: error:")
    # pg_dump 15 locks one table per statement; 17 locks them in batches
    # ("LOCK TABLE public.customers, shop.orders IN ACCESS SHARE MODE").
    locked = r"detail: Query was: LOCK TABLE [^;]*shop\.orders[^;]* IN ACCESS SHARE MODE"
    assert re.search(locked, lines[0]), lines[0]
    assert "no backup was written" in lines[0]
