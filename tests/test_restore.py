"""``velocity-pg restore`` against a real server: it restores, and no failure loses anything.

Faults are real: truncated and corrupt files, a pg_restore that fails halfway,
SIGKILL and Ctrl+C while pg_restore runs, sessions that hold the database.
A slow pg_restore is made on demand with a CHECK constraint that sleeps only
inside a staging database, for as long as ``PGOPTIONS`` tells it to.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import (
    PASSWORD,
    Target,
    create_database,
    drop_copies_of,
    drop_database,
    load_varied_schema,
    slow_table_sql,
    table_contents,
    wait_for_sleep_in,
)
from psycopg import sql

from velocity_pg.restore import staging

# -- helpers ------------------------------------------------------------------------------


def backup(target: Target, **env: str) -> str:
    result = target.run("backup", "--json", env=target.env(**env))
    assert result.returncode == 0, result.stderr
    name: str = json.loads(result.stdout)["name"]
    return name


def admin(target: Target) -> psycopg.Connection:
    return target.connect("postgres")


def pg_database(target: Target) -> list[tuple[object, ...]]:
    """Every database's catalog entry: to assert that nothing at all changed."""
    with admin(target) as conn:
        return conn.execute(
            "SELECT oid, datname, datdba, encoding, datcollate, datctype, datistemplate, "
            "datallowconn, datconnlimit, datacl::text FROM pg_database ORDER BY oid"
        ).fetchall()


def state(target: Target, dbname: str | None = None) -> tuple[object, ...]:
    with target.connect(dbname) as conn:
        return (pg_database(target), table_contents(conn))


def internal_databases(target: Target) -> list[str]:
    """velocity-pg's temporary databases on the server (rollback points are kept on purpose,
    see tests/test_stage.py, and are not counted here)."""
    with admin(target) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'velocity\\_pg\\_%' "
            "AND datname NOT LIKE 'velocity\\_pg\\_previous\\_%' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def scramble(target: Target) -> None:
    """Change and delete data after the backup, so a restore has something to undo."""
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
        conn.execute("UPDATE public.customers SET name = 'changed' WHERE id < 50")
        conn.execute("DROP VIEW shop.big_orders")
        conn.execute("CREATE TABLE public.added_later (x int)")
        conn.execute("SELECT nextval('shop.invoice_seq')")


def assert_one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("velocity-pg: "), result.stderr
    for needle in needles:
        assert needle in line, line
    return line


SLOW_SCHEMA = slow_table_sql(r"velocity\_pg\_staging\_%")


def slow_env(target: Target, seconds: int = 60) -> dict[str, str]:
    """pg_restore (a libpq client) passes PGOPTIONS on: the CHECK then sleeps in staging."""
    return target.env(PGOPTIONS=f"-c velocity_test.delay={seconds}")


def wait_for_sleeping_restore(target: Target) -> None:
    """Until pg_restore is stuck in the sleeping CHECK, inside a staging database."""
    wait_for_sleep_in(target, r"velocity\_pg\_staging\_%")


def pg_restore_pids(archive: Path) -> list[int]:
    pids = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"pg_restore") and str(archive).encode() in argv:
                assert PASSWORD.encode() not in b" ".join(argv)
                pids.append(int(pid_dir.name))
    return pids


def wait_until_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        # A zombie child of an exited parent is reaped by init; its cmdline is empty.
        alive = [p for p in alive if Path(f"/proc/{p}/cmdline").read_bytes()]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"pg_restore still running: {pids}")


def read_stderr_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    assert proc.stderr is not None
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"{needle!r} never came; stderr: {''.join(lines)}")
        lines.append(line)
        if needle in line:
            return lines


@contextlib.contextmanager
def extra_database(target: Target, postgresql_proc: object, name: str) -> Iterator[Target]:
    """Another database on the server, dropped afterwards (with anything of ours for it)."""
    create_database(postgresql_proc, name)
    other = Target(**{**target.__dict__, "dbname": name})
    try:
        yield other
    finally:
        drop_database(postgresql_proc, name)
        drop_copies_of(postgresql_proc, name)


# -- success ----------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_round_trip(target: Target, jobs: str) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    name = backup(target)
    scramble(target)
    with target.connect() as conn:
        assert table_contents(conn) != expected
        old_oid = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()

    result = target.run("restore", name, "--yes", "--jobs", jobs, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    with target.connect() as conn:
        assert table_contents(conn) == expected
        new_oid = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert new_oid != old_oid  # a new database took the name
    assert internal_databases(target) == []
    assert data["name"] == name
    assert data["database"] == target.dbname
    assert data["created_database"] is False
    assert data["jobs"] == int(jobs)
    assert data["objects"]["total"] > 10
    assert data["objects"]["restored"] == data["objects"]["total"]
    assert 0 <= data["unavailable_seconds"] <= data["duration_seconds"]
    assert PASSWORD not in result.stdout + result.stderr


def test_old_style_backup_without_manifest_restores(target: Target) -> None:
    """A dump made by the old bash scripts (plain pg_dump -Fc, no manifest) restores."""
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    name = "velocity_2025-06-01_020304.dump"
    subprocess.run(
        ["pg_dump", "-Fc", "-Z9", "-f", str(target.backup_dir / name)],
        env=target.env(),
        check=True,
        capture_output=True,
    )
    scramble(target)
    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    with target.connect() as conn:
        assert table_contents(conn) == expected


def test_plain_output(target: Target) -> None:
    load_varied_schema(target)
    name = backup(target)
    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Restored database {target.dbname!r} from {name} in ")
    assert "unavailable for" in result.stdout
    assert "restoring into a new database, velocity_pg_staging_" in result.stderr
    assert "starting in" not in result.stderr  # --yes: no countdown


def test_sessions_are_terminated_and_restore_succeeds(target: Target) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    name = backup(target)
    scramble(target)
    idle = target.connect()
    idle.execute("SELECT 1")
    in_transaction = target.connect(autocommit=False)
    in_transaction.execute("SELECT count(*) FROM public.customers")  # holds a table lock
    try:
        result = target.run("restore", name, "--yes", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["terminated_sessions"] >= 2
        for conn in (idle, in_transaction):
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    finally:
        idle.close()
        in_transaction.close()
    with target.connect() as conn:
        assert table_contents(conn) == expected


def test_reconnecting_client_never_sees_a_half_restored_database(target: Target) -> None:
    load_varied_schema(target)
    name = backup(target)
    scramble(target)
    query = (
        "SELECT (SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'shop')), "
        "(SELECT count(*) FROM public.customers WHERE name = 'changed'), "
        "(SELECT count(*) FROM shop.orders), (SELECT count(*) FROM pg_largeobject_metadata)"
    )
    with target.connect() as conn:
        after_scramble = conn.execute(query).fetchone()
    seen: list[tuple[object, ...]] = []
    refused: list[str] = []
    wrong: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with target.connect(connect_timeout=10) as conn:
                    row = conn.execute(query).fetchone()
                    assert row is not None
                    seen.append(tuple(row))
            except psycopg.OperationalError as exc:  # refused, or terminated: fine
                refused.append(str(exc))
            except BaseException as exc:  # a missing table: a half-restored database
                wrong.append(exc)
            time.sleep(0.005)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.2)
        result = target.run("restore", name, "--yes")
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert not wrong, wrong[:3]
    with target.connect() as conn:
        restored = conn.execute(query).fetchone()
    assert set(seen) == {after_scramble, restored}  # the old one, then the new one: no other
    assert seen.index(restored) > seen.index(after_scramble)
    assert seen[-1] == restored


def test_creates_a_missing_database(target: Target, postgresql_proc: object) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    name = backup(target)
    fresh = f"vt_fresh_{uuid.uuid4().hex[:8]}"
    try:
        result = target.run("restore", name, "--yes", "--json", env=target.env(PGDATABASE=fresh))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["created_database"] is True
        with target.connect(fresh) as conn:
            assert table_contents(conn) == expected
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database') "
                "FROM pg_database WHERE datname = current_database()"
            ).fetchone()
        assert row == (target.user, None)  # owned by the user; our staging comment is gone
        assert internal_databases(target) == []
    finally:
        drop_database(postgresql_proc, fresh)


@pytest.mark.parametrize(
    "dbname", ['My "Quoted" DB-Name', "o'brien db", "UPPER-dash-ed"], ids=["quotes", "apos", "caps"]
)
def test_database_names_that_need_quoting(
    target: Target, postgresql_proc: object, dbname: str
) -> None:
    with extra_database(target, postgresql_proc, dbname) as odd:
        with odd.connect() as conn:
            conn.execute(
                "CREATE TABLE t (id int PRIMARY KEY, v text); "
                "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g"
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET work_mem = '5MB'").format(sql.Identifier(dbname))
            )
            expected = table_contents(conn)
        name = backup(odd)
        with odd.connect() as conn:
            conn.execute("DELETE FROM t WHERE id > 5")
        result = odd.run("restore", name, "--yes")
        assert result.returncode == 0, result.stderr
        with odd.connect() as conn:
            assert table_contents(conn) == expected
            assert conn.execute("SHOW work_mem").fetchone() == ("5MB",)
        assert internal_databases(target) == []


def database_properties(target: Target, dbname: str) -> dict[str, object]:
    with admin(target) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, "
            "datctype, datconnlimit, datallowconn, shobj_description(oid, 'pg_database'), "
            "ARRAY(SELECT x::text FROM unnest(datacl) x ORDER BY 1), oid "
            "FROM pg_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
        assert row is not None
        settings = conn.execute(
            "SELECT coalesce(pg_get_userbyid(nullif(setrole, 0)), '*'), setconfig "
            "FROM pg_db_role_setting WHERE setdatabase = %s ORDER BY 1",
            (row[-1],),
        ).fetchall()
    return {
        "owner": row[0],
        "encoding": row[1],
        "collate": row[2],
        "ctype": row[3],
        "connlimit": row[4],
        "allowconn": row[5],
        "comment": row[6],
        "acl": row[7],
        "settings": settings,
    }


def test_settings_grants_owner_and_comment_survive(target: Target, postgresql_proc: object) -> None:
    suffix = uuid.uuid4().hex[:6]
    owner, helper, reader = (f"vt_{r}_{suffix}" for r in ("owner", "helper", "reader"))
    db = sql.Identifier(target.dbname)
    try:
        with admin(target) as conn:
            for role in (owner, helper, reader):
                conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
            o, h, r = (sql.Identifier(x) for x in (owner, helper, reader))
            for stmt in (
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, o),
                sql.SQL("ALTER DATABASE {} SET work_mem = '7MB'").format(db),
                sql.SQL('ALTER DATABASE {} SET search_path = public, "my schema"').format(db),
                sql.SQL("ALTER DATABASE {} SET timezone = 'Europe/Paris'").format(db),
                sql.SQL("ALTER DATABASE {} SET myapp.flag = 'it''s on'").format(db),
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET statement_timeout = '5s'").format(r, db),
                sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT 42").format(db),
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
                sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {} WITH GRANT OPTION").format(
                    db, h
                ),
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(db, r),
                sql.SQL("SET ROLE {}").format(h),
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, r),
                sql.SQL("RESET ROLE"),
                sql.SQL("COMMENT ON DATABASE {} IS 'the app''s database'").format(db),
            ):
                conn.execute(stmt)
        with target.connect() as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        before = database_properties(target, target.dbname)
        assert before["connlimit"] == 42 and before["owner"] == owner
        assert f"{reader}=c/{helper}" in before["acl"]  # type: ignore[operator]
        name = backup(target)
        result = target.run("restore", name, "--yes")
        assert result.returncode == 0, result.stderr
        after = database_properties(target, target.dbname)
        assert after == before
        with target.connect() as conn:
            assert conn.execute("SHOW search_path").fetchone() == ('public, "my schema"',)
            assert conn.execute("SHOW myapp.flag").fetchone() == ("it's on",)
    finally:
        drop_database(postgresql_proc, target.dbname)
        drop_copies_of(postgresql_proc, target.dbname)
        with admin(target) as conn:
            for role in (reader, helper, owner):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# -- refusals ------------------------------------------------------------------------------


def make_bad_file(target: Target, kind: str) -> str:
    """A file named like a backup that is not one: the name to give restore."""
    good = target.backup_dir / backup(target)
    bad = target.backup_dir / "velocity_2026-01-02_000000.dump"
    data = good.read_bytes()
    if kind == "corrupt":
        bad.write_bytes(b"XXXXXXXX" + data[8:])
    elif kind == "truncated":
        bad.write_bytes(data[:100])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "not-a-dump":
        bad.write_text("-- a plain SQL file\nDROP TABLE public.customers;\n")
    good.unlink()
    return bad.name


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "not-a-dump"])
def test_unreadable_archives_are_refused(target: Target, kind: str) -> None:
    load_varied_schema(target)
    name = make_bad_file(target, kind)
    before = state(target)
    result = target.run("restore", name, "--yes")
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result, name, "pg_restore", "nothing was changed")
    assert result.stderr.count("\n") == 1
    assert state(target) == before


@pytest.mark.parametrize(
    ("name", "status", "needle"),
    [
        ("velocity_2030-01-01_000000.dump", 1, "does not exist"),
        ("../velocity_2026-01-01_000000.dump", 2, "not a file in the backup folder"),
        ("/etc/passwd", 2, "not a file in the backup folder"),
        ("notes.txt", 2, "not a backup name"),
        ("link", 2, "not a"),
    ],
)
def test_bad_names_are_refused(target: Target, name: str, status: int, needle: str) -> None:
    load_varied_schema(target)
    good = backup(target)
    outside = target.backup_dir.parent / "velocity_2026-01-01_000000.dump"
    outside.write_bytes((target.backup_dir / good).read_bytes())
    (target.backup_dir / "notes.txt").write_text("x")
    (target.backup_dir / "link").symlink_to(outside)
    before = state(target)
    for extra in ([], ["--check", "--yes"]):
        result = target.run("restore", name, "--yes", *extra)
        assert result.returncode == status, result.stderr
        assert_one_error_line(result, needle)
        assert state(target) == before


def test_server_down_is_refused(target: Target) -> None:
    import socket

    load_varied_schema(target)
    name = backup(target)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = state(target)
    result = target.run("restore", name, "--yes", env=target.env(PGPORT=str(port)))
    assert result.returncode == 1
    assert_one_error_line(result, "cannot connect")
    assert state(target) == before


def test_check_validates_and_changes_nothing(target: Target) -> None:
    load_varied_schema(target)
    name = backup(target)
    scramble(target)
    before = state(target)
    result = target.run("restore", name, "--check", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["check"] == "passed"
    assert data["database_exists"] is True
    assert data["objects"] > 10
    assert state(target) == before


def test_check_does_not_count_down(target: Target) -> None:
    """A check starts nothing, so it counts down to nothing (issue 10)."""
    load_varied_schema(target)
    name = backup(target)
    before = state(target)
    result = target.run("restore", name, "--check")
    assert result.returncode == 0, result.stderr
    assert "Check passed" in result.stdout
    assert "starting in" not in result.stderr
    assert not [ln for ln in result.stderr.splitlines() if ln.endswith(("...", "cancel"))]
    assert state(target) == before


def test_ctrl_c_during_countdown(target: Target) -> None:
    load_varied_schema(target)
    name = backup(target)
    scramble(target)
    before = state(target)
    proc = target.popen("restore", name)
    read_stderr_until(proc, "starting in 5 s")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "velocity-pg: interrupted; nothing was changed"
    assert state(target) == before
    assert internal_databases(target) == []


# -- failures after the start ----------------------------------------------------------------


def test_pg_restore_failing_halfway_leaves_the_database(target: Target) -> None:
    load_varied_schema(target)
    with target.connect() as conn:  # data that does not compress: most of the file
        conn.execute(
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t "
            "FROM generate_series(1, 20000) g"
        )
        # A CHECK that fails in the staging database only, after the big table's data
        # (PGOPTIONS reaches pg_restore). A cut dump no longer gets this far: restore's
        # check reads every data block of a dump without a manifest (issue 18).
        conn.execute(SLOW_SCHEMA)
    name = backup(target)
    scramble(target)
    before = state(target)
    result = target.run(
        "restore", name, "--yes", env=target.env(PGOPTIONS="-c velocity_test.delay=x")
    )
    assert result.returncode == 1, result.stderr
    assert_one_error_line(
        result, "pg_restore failed", "the unfinished copy was dropped", "was not changed"
    )
    assert state(target) == before
    assert internal_databases(target) == []


@pytest.mark.parametrize("damage", ["cut", "flipped byte"])
def test_dump_that_does_not_match_its_manifest_is_refused(target: Target, damage: str) -> None:
    """With a manifest, a damaged dump is refused before any database is created."""
    load_varied_schema(target)
    name = backup(target)
    path = target.backup_dir / name
    data = bytearray(path.read_bytes())
    if damage == "cut":
        del data[len(data) * 7 // 10 :]
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    scramble(target)
    before = state(target)
    result = target.run("restore", name, "--yes")
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result, name, "does not match its manifest", "nothing was changed")
    assert state(target) == before
    assert internal_databases(target) == []
    # --check refuses it too, so the justfile never stops the app for it.
    assert target.run("restore", "--check", "--yes", name).returncode == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_during_pg_restore(target: Target, sig: signal.Signals) -> None:
    """Ctrl+C or SIGTERM while pg_restore runs: staging dropped, database unchanged, 130.

    Meanwhile, a second restore of the same database is refused.
    """
    load_varied_schema(target)
    with target.connect() as conn:
        conn.execute(SLOW_SCHEMA)
    name = backup(target)
    scramble(target)
    before = state(target)
    proc = target.popen("restore", name, "--yes", env=slow_env(target))
    try:
        wait_for_sleeping_restore(target)
        pids = pg_restore_pids(target.backup_dir / name)
        assert pids
        second = target.run("restore", name, "--yes")
        assert second.returncode == 1
        assert_one_error_line(second, "already running", "nothing was changed")
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"velocity-pg: {'interrupted' if sig == signal.SIGINT else 'terminated (SIGTERM)'}; "
        "the unfinished copy was dropped and database "
        f"{target.dbname!r} was not changed"
    )
    wait_until_gone(pids)
    assert state(target) == before
    assert internal_databases(target) == []


def test_sigkill_during_pg_restore_then_next_run_cleans_up(target: Target) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        conn.execute(SLOW_SCHEMA)
        expected = table_contents(conn)
    name = backup(target)
    scramble(target)
    before = state(target)
    proc = target.popen("restore", name, "--yes", env=slow_env(target))
    wait_for_sleeping_restore(target)
    pids = pg_restore_pids(target.backup_dir / name)
    proc.kill()
    proc.communicate(timeout=30)
    # Killed: the live database is untouched, the staging database is left behind.
    with target.connect() as conn:
        assert table_contents(conn) == before[1]
    assert internal_databases(target) == [staging.staging_name(target.dbname)]

    result = target.run("restore", name, "--yes")  # not slow this time
    assert result.returncode == 0, result.stderr
    assert f"dropped {staging.staging_name(target.dbname)}, the unfinished copy" in result.stderr
    wait_until_gone(pids)  # the orphaned pg_restore lost its session and gave up
    with target.connect() as conn:
        assert table_contents(conn) == expected
    assert internal_databases(target) == []


def test_previous_contents_left_after_a_swap_are_dropped(target: Target) -> None:
    """A run killed after its swap committed leaves the old database aside: dropped next time."""
    load_varied_schema(target)
    name = backup(target)
    aside = staging.aside_name(target.dbname)
    with admin(target) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(aside)))
    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert f"dropped {aside}, the previous contents" in result.stderr
    assert internal_databases(target) == []


def test_old_contents_without_a_live_database_are_never_dropped(
    target: Target, postgresql_proc: object
) -> None:
    load_varied_schema(target)
    name = backup(target)
    gone = f"vt_gone_{uuid.uuid4().hex[:8]}"
    aside = staging.aside_name(gone)
    with admin(target) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(aside)))
    try:
        before = pg_database(target)
        result = target.run("restore", name, "--yes", env=target.env(PGDATABASE=gone))
        assert result.returncode == 1
        assert_one_error_line(result, aside, "rename it back", "nothing was changed")
        assert pg_database(target) == before
    finally:
        drop_database(postgresql_proc, aside)


def test_swap_that_fails_after_renaming_live_aside_rolls_back(target: Target) -> None:
    """The second rename fails (a lock on the staging database) after the first succeeded:
    the transaction rolls back and the live database keeps its name, oid and contents."""
    from velocity_pg.errors import OperationFailed
    from velocity_pg.postgres import endpoint
    from velocity_pg.restore import swap
    from velocity_pg.settings import load_settings

    load_varied_schema(target)
    before = state(target)
    connection = endpoint.resolve(load_settings(environ=target.env()).connection)
    stg, aside = staging.staging_name(target.dbname), staging.aside_name(target.dbname)
    with swap.connect_admin(connection, target.dbname) as conn:
        swap.create_staging(conn, stg, swap.read_props(conn, target.dbname), "test")
        blocker = target.connect("postgres", autocommit=False)
        try:
            blocker.execute(sql.SQL("COMMENT ON DATABASE {} IS 'busy'").format(sql.Identifier(stg)))
            with pytest.raises(OperationFailed, match="holds a lock"):
                swap.swap_in(
                    conn,
                    connection,
                    target=target.dbname,
                    staging=stg,
                    aside=aside,
                    replace=True,
                    as_grantors=True,
                    lock_timeout=0.5,
                )
        finally:
            blocker.rollback()
            blocker.close()
        assert swap.existing(conn, [stg, aside]) == [stg]
        swap.drop_database(conn, stg)
    assert state(target) == before


def test_swap_failing_end_to_end_changes_nothing(target: Target, postgresql_proc: object) -> None:
    """Restoring into a missing database that someone creates meanwhile: the rename fails
    inside the swap transaction, which rolls back; their database is left alone."""
    load_varied_schema(target)
    with target.connect() as conn:
        conn.execute(SLOW_SCHEMA)
    name = backup(target)
    fresh = f"vt_race_{uuid.uuid4().hex[:8]}"

    def theirs(dbname: str) -> tuple[object, ...]:
        entry = [row for row in pg_database(target) if row[1] == dbname]
        with target.connect(dbname) as conn:
            return (entry, table_contents(conn))

    env = {**slow_env(target, seconds=2), "PGDATABASE": fresh}
    try:
        proc = target.popen("restore", name, "--yes", env=env)
        wait_for_sleeping_restore(target)
        create_database(postgresql_proc, fresh)
        with target.connect(fresh) as conn:
            conn.execute("CREATE TABLE theirs AS SELECT 42 AS answer")
        before = theirs(fresh)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        line = err.strip().splitlines()[-1]
        assert "already exists" in line, line
        assert "the unfinished copy was dropped" in line, line
        assert theirs(fresh) == before
        assert internal_databases(target) == []
    finally:
        drop_database(postgresql_proc, fresh)


def test_restore_as_the_owner_without_superuser(target: Target, postgresql_proc: object) -> None:
    """A role with CREATEDB that owns the database can restore it (no superuser needed)."""
    role = f"vt_app_{uuid.uuid4().hex[:6]}"
    secret = "app-" + uuid.uuid4().hex
    db = sql.Identifier(target.dbname)
    try:
        with admin(target) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(secret)
                )
            )
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(role)))
        as_app = {"PGUSER": role, "PGPASSWORD": secret}
        app = Target(**{**target.__dict__, "user": role, "password": secret})
        with app.connect() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '3MB'").format(db))
            conn.execute("CREATE TABLE t AS SELECT generate_series(1, 10) AS x")
            expected = table_contents(conn)
        before = database_properties(target, target.dbname)
        name = backup(target, **as_app)
        with app.connect() as conn:
            conn.execute("DELETE FROM t")
        session = app.connect()  # the owner's own session is terminated too
        try:
            result = target.run("restore", name, "--yes", env=target.env(**as_app))
        finally:
            session.close()
        assert result.returncode == 0, result.stderr
        with app.connect() as conn:
            assert table_contents(conn) == expected
        assert database_properties(target, target.dbname) == before
    finally:
        drop_database(postgresql_proc, target.dbname)
        drop_copies_of(postgresql_proc, target.dbname)
        with admin(target) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
