"""Restore and ``verify --restore`` against databases that broke them (issue 10), on a real server.

Partitions, inheritance and table names no listing can spell; a materialized view
whose refresh fails; role and database timeouts; template databases and
subscriptions; replication slots and prepared transactions (on a second private
server with ``wal_level=logical`` and prepared transactions enabled); two restores
at once, one of them of ``postgres``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from conftest import (
    PASSWORD,
    Target,
    _pg_ctl,
    slow_table_sql,
    table_contents,
    wait_for_sleep_in,
)
from psycopg import sql
from pytest_postgresql import factories

from velocity_pg.restore import staging

#: A second private server: logical decoding (replication slots) and prepared transactions.
_logical_server = factories.postgresql_proc(
    executable=_pg_ctl(),
    password=PASSWORD,
    port=None,
    postgres_options=(
        "-c wal_level=logical -c max_prepared_transactions=10 -c max_connections=40 "
        "-c max_replication_slots=10"
    ),
)


@pytest.fixture
def logical(_logical_server: object, postgresql_proc: object, tmp_path: Path) -> Iterator[Target]:
    """A fresh database on the second server (``postgresql_proc``: refuses root first)."""
    proc = _logical_server
    name = f"vt_{uuid.uuid4().hex[:10]}"
    backup_dir = tmp_path / "lbackups"
    backup_dir.mkdir(mode=0o700)
    workdir = tmp_path / "lwork"
    workdir.mkdir()
    target = Target(
        host=proc.host,  # type: ignore[attr-defined]
        port=int(proc.port),  # type: ignore[attr-defined]
        user=proc.user,  # type: ignore[attr-defined]
        password=PASSWORD,
        dbname=name,
        backup_dir=backup_dir,
        workdir=workdir,
    )
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield target
    with target.connect("postgres") as conn:
        prepared = conn.execute("SELECT gid, database FROM pg_prepared_xacts").fetchall()
    for gid, dbname in prepared:
        with target.connect(dbname) as conn:
            conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
    with target.connect("postgres") as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
        for leftover in (
            name,
            staging.staging_name(name),
            staging.aside_name(name),
            staging.previous_name(name),
        ):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(leftover))
            )


def backup(target: Target, **env: str) -> str:
    result = target.run("backup", "--json", env=target.env(**env))
    assert result.returncode == 0, result.stderr
    name: str = json.loads(result.stdout)["name"]
    return name


def one_line_errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    return [ln for ln in result.stderr.splitlines() if ln.startswith("velocity-pg: error:")]


def internal_databases(target: Target) -> list[str]:
    """velocity-pg's temporary databases (rollback points are kept on purpose: not counted)."""
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'velocity\\_pg\\_%' "
            "AND datname NOT LIKE 'velocity\\_pg\\_previous\\_%' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def role(target: Target) -> Iterator[str]:
    """A fresh non-superuser role (LOGIN, the test password), dropped with what it owns."""
    name = f"vt_role_{uuid.uuid4().hex[:8]}"
    with target.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(PASSWORD)
            )
        )
    yield name
    with target.connect("postgres") as conn:
        dbs = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template1'"
            ).fetchall()
        ]
    for dbname in dbs:
        try:
            with target.connect(dbname) as conn:
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        except psycopg.Error:
            pass
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


# -- item 3: the drill's table check -------------------------------------------------------

ODD_TABLES = """
CREATE SCHEMA "DATA";
CREATE TABLE "DATA".x (a int);
CREATE TABLE public.ev (id int, d date) PARTITION BY RANGE (d);
CREATE TABLE public.ev_2026 PARTITION OF public.ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.ev_2027 (id int, d date);
ALTER TABLE public.ev ATTACH PARTITION public.ev_2027
    FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO public.ev VALUES (1, '2026-05-01'), (2, '2027-05-01');
CREATE TABLE public.parent (a int);
CREATE TABLE public.child (b int) INHERITS (public.parent);
INSERT INTO public.child VALUES (1, 2);
CREATE TABLE public."new
line" (a int);
CREATE TABLE public."carriage\rreturn" (a int);
CREATE TABLE public."sp ace ""quoted"" 'single' ü 日本" (a int);
CREATE SCHEMA "my schema";
CREATE TABLE "my schema"."TABLE DATA" (a int);
"""


def test_drill_checks_partitions_inheritance_and_any_name(target: Target) -> None:
    with target.connect() as conn:
        conn.execute(ODD_TABLES)
        tables = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema')"
        ).fetchone()
    assert tables == (10,)
    name = backup(target)
    result = target.run("verify", "--restore", "--json", name)
    assert result.returncode == 0, result.stdout + result.stderr
    (entry,) = json.loads(result.stdout)["backups"]
    assert entry["ok"] is True, entry
    assert "restore drill (10 tables)" in entry["checks"]
    assert internal_databases(target) == []
    # And a real restore of it round-trips.
    with target.connect() as conn:
        expected = table_contents(conn)
        conn.execute("DELETE FROM public.ev")
    restored = target.run("restore", name, "--yes")
    assert restored.returncode == 0, restored.stderr
    with target.connect() as conn:
        assert table_contents(conn) == expected


# -- item 8: a materialized view whose refresh fails -----------------------------------------


def make_rls_matview(target: Target, owner: str) -> None:
    """``public.rls_view`` over a FORCE ROW LEVEL SECURITY table its (non-superuser) owner
    owns: pg_restore's refresh (row_security off) fails. ``public.good_view`` refreshes,
    ``public.on_good`` (over good_view) too, ``public.empty_view`` was never populated."""
    with target.connect() as conn:
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
        conn.execute(
            """
            CREATE TABLE public.secret (a int);
            INSERT INTO public.secret VALUES (1), (2), (-3);
            ALTER TABLE public.secret ENABLE ROW LEVEL SECURITY;
            ALTER TABLE public.secret FORCE ROW LEVEL SECURITY;
            CREATE POLICY positive ON public.secret USING (a > 0);
            CREATE TABLE public.plain (a int);
            INSERT INTO public.plain SELECT generate_series(1, 5);
            CREATE MATERIALIZED VIEW public.good_view AS SELECT a * 2 AS b FROM public.plain;
            CREATE MATERIALIZED VIEW public.on_good AS SELECT sum(b) AS s FROM public.good_view;
            CREATE MATERIALIZED VIEW public.empty_view AS SELECT 1 AS one WITH NO DATA;
            """
        )
        conn.execute(sql.SQL("ALTER TABLE public.secret OWNER TO {}").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        conn.execute("CREATE MATERIALIZED VIEW public.rls_view AS SELECT a FROM public.secret")
        conn.execute("RESET ROLE")


def populated(target: Target) -> dict[str, bool]:
    with target.connect() as conn:
        rows = conn.execute(
            "SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm' ORDER BY 1"
        ).fetchall()
    return {str(r[0]): bool(r[1]) for r in rows}


def test_matview_whose_refresh_fails_does_not_sink_the_restore(target: Target, role: str) -> None:
    make_rls_matview(target, role)
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM public.plain")
        conn.execute("REFRESH MATERIALIZED VIEW public.good_view")
    result = target.run("restore", name, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    (view,) = json.loads(result.stdout)["unrefreshed_materialized_views"]
    assert view["name"] == "public rls_view"
    assert "row-level security" in view["error"]
    warning = [ln for ln in result.stderr.splitlines() if "public rls_view" in ln]
    assert len(warning) == 1 and warning[0].startswith("velocity-pg: warning: materialized view")
    assert "left unpopulated" in warning[0] and "row-level security" in warning[0]
    assert populated(target) == {
        "empty_view": False,
        "good_view": True,
        "on_good": True,
        "rls_view": False,
    }
    with target.connect() as conn:
        assert conn.execute("SELECT s FROM public.on_good").fetchone() == (30,)
    assert internal_databases(target) == []

    drill = target.run("verify", "--restore", name)
    assert drill.returncode == 0, drill.stdout + drill.stderr
    (line,) = drill.stdout.splitlines()
    assert line.startswith(f"ok      {name} (")
    assert "materialized view public rls_view could not be refreshed" in line
    assert "row-level security" in line


# -- item 10: role and database timeouts ------------------------------------------------------

SLOW_ANALYZE = """
CREATE FUNCTION public.slow_id(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM pg_sleep(0.002);
    RETURN x;
END $$;
CREATE TABLE public.big AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 400) g;
CREATE INDEX big_slow_idx ON public.big (public.slow_id(id));
CREATE MATERIALIZED VIEW public.big_view AS SELECT public.slow_id(id) AS id FROM public.big;
"""


def test_role_and_database_timeouts_do_not_cut_our_work(target: Target) -> None:
    """ANALYZE of the slow expression index (400 rows x 2 ms) and the slow view take far
    longer than the 150 ms the role and the database allow each statement and idle time."""
    user = f"vt_timed_{uuid.uuid4().hex[:8]}"
    with target.connect() as conn:
        conn.execute(SLOW_ANALYZE)
    with target.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(PASSWORD)
            )
        )
        for setting in (
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "idle_session_timeout",
        ):
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = '150ms'").format(
                    sql.Identifier(user), sql.Identifier(setting)
                )
            )
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET statement_timeout = '150ms'").format(
                sql.Identifier(target.dbname)
            )
        )
    try:
        env = target.env(PGUSER=user)
        name = backup(target, PGUSER=user)
        restored = target.run("restore", name, "--yes", env=env)
        assert restored.returncode == 0, restored.stderr
        assert "QueryCanceled" not in restored.stderr
        drilled = target.run("verify", "--restore", name, env=env)
        assert drilled.returncode == 0, drilled.stdout + drilled.stderr
        assert "QueryCanceled" not in drilled.stdout + drilled.stderr
        assert "could not be refreshed" not in drilled.stdout
        with target.connect() as conn:
            row = conn.execute("SELECT count(*) FROM public.big_view").fetchone()
            assert row == (400,)
            stats = conn.execute(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'big_slow_idx'"
            ).fetchone()
            assert stats == (1,)  # the ANALYZE ran to the end
    finally:
        with target.connect("postgres") as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


# -- item 9: template databases and subscriptions ---------------------------------------------


def is_template(target: Target) -> bool:
    with target.connect("postgres") as conn:
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (target.dbname,)
        ).fetchone()
    return bool(row and row[0])


def test_template_database_is_restored_twice(target: Target) -> None:
    ident = sql.Identifier(target.dbname)
    with target.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 3) AS x")
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(ident))
    try:
        name = backup(target)
        for _ in range(2):
            result = target.run("restore", name, "--yes")
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr, result.stderr
            assert internal_databases(target) == []
            assert is_template(target)  # still a template, as before
        with target.connect() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    finally:
        with target.connect("postgres") as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))


def subscriptions_of(target: Target) -> list[tuple[str, bool, str | None]]:
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT s.subname, s.subenabled, s.subslotname FROM pg_subscription s "
            "JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = %s ORDER BY 1",
            (target.dbname,),
        ).fetchall()
    return [(str(r[0]), bool(r[1]), None if r[2] is None else str(r[2])) for r in rows]


def drop_subscriptions(target: Target) -> None:
    with target.connect() as conn:
        for sub, _, _ in subscriptions_of(target):
            ident = sql.Identifier(sub)
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


def test_database_with_a_subscription_is_restored_twice(target: Target) -> None:
    """A subscription (to a publisher that is not even there: made without connecting)
    stops DROP DATABASE; the restore detaches it from its slot and drops it with the old copy."""
    with target.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute(
            "CREATE SUBSCRIPTION vt_sub CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' "
            "PUBLICATION vt_pub WITH (connect = false)"
        )
    try:
        name = backup(target)
        check = target.run("restore", name, "--check", "--json")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout)["subscriptions"] == ["vt_sub"]
        assert "subscription(s) vt_sub" in check.stderr
        # Kept (disabled) in the rollback point, as the announcement says, not dropped.
        assert "stay with its current contents in the rollback point" in check.stderr
        for _ in range(2):
            result = target.run("restore", name, "--yes")
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr, result.stderr
            assert internal_databases(target) == []
            # The backup's subscription, disabled, with its slot name.
            assert subscriptions_of(target) == [("vt_sub", False, "vt_sub")]
        # The drill's throwaway database gets the subscription too, and is dropped all the same.
        drill = target.run("verify", "--restore", name)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert internal_databases(target) == []
    finally:
        drop_subscriptions(target)


@contextmanager
def connections_refused(target: Target, dbname: str) -> Iterator[None]:
    """A pg_hba.conf line that refuses every connection to database ``dbname`` (this test
    session's own server), taken out again on exit."""
    with target.connect("postgres") as conn:
        row = conn.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba = Path(str(row[0]))
        original = hba.read_text()
        hba.write_text(f"local {dbname} all reject\nhost {dbname} all all reject\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        hba.write_text(original)
        with target.connect("postgres") as conn:
            conn.execute("SELECT pg_reload_conf()")


def test_restore_that_cannot_drop_what_it_replaced_still_succeeded(target: Target) -> None:
    """Issue 17, item 17: after the swap committed, dropping the replaced contents needs a
    connection to them (to detach their subscription), and pg_hba.conf refuses it. The
    restore is done: exit 0, a warning with the command that finishes the job, which works
    once the connection is allowed; a second restore is never needed."""
    aside = staging.aside_name(target.dbname)
    with target.connect() as conn:
        conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        conn.execute(
            "CREATE SUBSCRIPTION vt_sub CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' "
            "PUBLICATION vt_pub WITH (connect = false)"
        )
    try:
        name = backup(target)
        with target.connect() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        with connections_refused(target, aside):
            result = target.run("restore", name, "--yes", "--no-keep-previous")
            assert result.returncode == 0, result.stderr
            assert one_line_errors(result) == []
            (warning,) = [ln for ln in result.stderr.splitlines() if "warning:" in ln]
            assert "the restore is complete, but the previous contents" in warning, warning
            assert f"kept as database {aside!r}, could not be dropped" in warning, warning
            assert "`velocity-pg restore --tidy` drops it" in warning, warning
            assert f"Restored database {target.dbname!r} from {name}" in result.stdout
            with target.connect() as conn:
                assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
            assert internal_databases(target) == [aside]
            still = target.run("restore", "--tidy")
            assert still.returncode == 1
            (line,) = one_line_errors(still)
            assert f"cannot drop database {aside}" in line and "restore --tidy" in line, line
        tidied = target.run("restore", "--tidy")
        assert tidied.returncode == 0, tidied.stderr
        assert f"Dropped {aside}" in tidied.stdout
        assert internal_databases(target) == []
    finally:
        drop_subscriptions(target)


# -- unclear messages ----------------------------------------------------------------------


def test_check_lists_the_logical_replication_slots(logical: Target) -> None:
    with logical.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("SELECT pg_create_logical_replication_slot('vt_slot', 'pgoutput')")
    name = backup(logical)
    check = logical.run("restore", name, "--check", "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["replication_slots"] == ["vt_slot"]
    (line,) = [ln for ln in check.stderr.splitlines() if "vt_slot" in ln]
    assert "logical replication slot(s) vt_slot" in line and "dropped" in line


def slots_on(target: Target) -> dict[str, str]:
    """Every replication slot of the server: name -> the database it belongs to."""
    with target.connect("postgres") as conn:
        rows = conn.execute("SELECT slot_name, database FROM pg_replication_slots").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def test_restore_and_undo_drop_the_replaced_contents_slots(logical: Target) -> None:
    """Issue 17, item 5: with the default BACKUP_KEEP_PREVIOUS=true a logical slot stayed on
    the rollback point, inactive, holding back WAL until `--forget`, while the restore said
    it was dropped. Now the swap's tidying drops it (restore and undo alike), says so, and
    the consumer's slot can be made anew, under its name, in the restored database."""
    previous = staging.previous_name(logical.dbname)
    with logical.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("SELECT pg_create_logical_replication_slot('vt_slot', 'pgoutput')")
    name = backup(logical)
    result = logical.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert slots_on(logical) == {}
    assert "warning" not in result.stderr, result.stderr
    (announced,) = [ln for ln in result.stderr.splitlines() if "has logical replication" in ln]
    assert "dropped once the swap is done" in announced, announced
    (done,) = [ln for ln in result.stderr.splitlines() if "dropped replication slot" in ln]
    assert f"vt_slot with the replaced contents ({previous})" in done, done
    status = json.loads(logical.run("status", "--json").stdout)["restore"]
    assert status["rollback_point"]["replication_slots"] == []
    # The consumer's slot, made anew in the restored database; an undo drops it in turn.
    with logical.connect() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('vt_slot', 'pgoutput')")
    undone = logical.run("restore", "--undo", "--yes")
    assert undone.returncode == 0, undone.stderr
    assert "has logical replication slot(s) vt_slot" in undone.stderr
    assert "dropped replication slot(s) vt_slot" in undone.stderr
    assert slots_on(logical) == {}


def test_status_lists_a_slot_left_on_the_rollback_point(logical: Target) -> None:
    """A slot on the rollback point (one a restore could not drop, or made there since) is
    listed by `status` with the WAL it holds back and the command that frees it."""
    previous = staging.previous_name(logical.dbname)
    with logical.connect() as conn:
        conn.execute("CREATE TABLE t (x int)")
    name = backup(logical)
    assert logical.run("restore", name, "--yes").returncode == 0
    with logical.connect(previous) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('vt_left', 'pgoutput')")
    with logical.connect() as conn:
        conn.execute("INSERT INTO t SELECT generate_series(1, 10000)")
    report = json.loads(logical.run("status", "--json").stdout)["restore"]["rollback_point"]
    (slot,) = report["replication_slots"]
    assert slot["name"] == "vt_left" and slot["retained_wal_bytes"] > 100_000, slot
    text = logical.run("status").stdout
    (line,) = [ln for ln in text.splitlines() if "vt_left" in ln]
    assert "WARNING: replication slot vt_left is on the rollback point" in line, line
    assert "of WAL from being removed" in line, line
    assert "SELECT pg_drop_replication_slot('vt_left')" in line, line
    assert "restore --forget" in line, line
    forgot = logical.run("restore", "--forget")
    assert forgot.returncode == 0, forgot.stderr
    assert slots_on(logical) == {}


def test_slot_the_restore_may_not_drop_is_a_warning_and_listed(logical: Target) -> None:
    """The database's owner restores it without superuser or REPLICATION, so it may not drop
    a slot: the restore still succeeds, the warning gives the SQL that frees the slot, and
    `status` lists it on the rollback point until it is run."""
    role = f"vt_app_{uuid.uuid4().hex[:6]}"
    previous = staging.previous_name(logical.dbname)
    db = sql.Identifier(logical.dbname)
    app = Target(**{**logical.__dict__, "user": role})
    as_app = logical.env(PGUSER=role)
    try:
        with logical.connect("postgres") as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(PASSWORD)
                )
            )
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(role)))
        with app.connect() as conn:
            conn.execute("CREATE TABLE t (x int)")
        with logical.connect() as conn:
            conn.execute("SELECT pg_create_logical_replication_slot('vt_kept', 'pgoutput')")
        result = logical.run("backup", "--json", env=as_app)
        assert result.returncode == 0, result.stderr
        name = json.loads(result.stdout)["name"]
        result = logical.run("restore", name, "--yes", env=as_app)
        assert result.returncode == 0, result.stderr
        assert one_line_errors(result) == []
        (warning,) = [ln for ln in result.stderr.splitlines() if "warning:" in ln]
        assert f"could not drop replication slot vt_kept of the replaced contents ({previous})" in (
            warning
        ), warning
        assert "SELECT pg_drop_replication_slot('vt_kept')" in warning, warning
        assert slots_on(logical) == {"vt_kept": previous}
        status = logical.run("status", env=as_app).stdout
        assert "WARNING: replication slot vt_kept is on the rollback point" in status, status
        with logical.connect() as conn:
            conn.execute("SELECT pg_drop_replication_slot('vt_kept')")
        assert "vt_kept" not in logical.run("status", env=as_app).stdout
    finally:
        with logical.connect("postgres") as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
            for database in (logical.dbname, previous):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


SLOW_SCHEMA = slow_table_sql(r"velocity\_pg\_staging\_%")


def slow_env(target: Target, seconds: float) -> dict[str, str]:
    return target.env(PGOPTIONS=f"-c velocity_test.delay={seconds}")


def test_prepared_transaction_that_appears_during_the_restore_is_named(logical: Target) -> None:
    with logical.connect() as conn:
        conn.execute(SLOW_SCHEMA)
    name = backup(logical)
    proc = logical.popen("restore", name, "--yes", env=slow_env(logical, 3))
    try:
        wait_for_sleep_in(logical, r"velocity\_pg\_staging\_%")
        with logical.connect(autocommit=False) as conn:
            conn.execute("INSERT INTO public.slow VALUES (2)")
            conn.execute("PREPARE TRANSACTION 'vt_during_restore'")
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert "prepared transaction" in last, last
    assert "ROLLBACK PREPARED" in last and "kept coming back" not in last
    assert "the unfinished copy was dropped" in last
    assert internal_databases(logical) == []


def test_leftover_of_a_failed_restore_is_not_called_killed(logical: Target) -> None:
    """pg_restore's session is ended while a prepared transaction sits in the staging
    database: the copy cannot be dropped. The next runs say the restore failed."""
    with logical.connect() as conn:
        conn.execute(SLOW_SCHEMA)
    name = backup(logical)
    copy = staging.staging_name(logical.dbname)
    proc = logical.popen("restore", name, "--yes", env=slow_env(logical, 60))
    try:
        wait_for_sleep_in(logical, r"velocity\_pg\_staging\_%")
        with logical.connect(copy, autocommit=False) as conn:
            conn.execute("CREATE TABLE stuck (x int)")
            conn.execute("PREPARE TRANSACTION 'vt_in_staging'")
        with logical.connect("postgres") as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND wait_event = 'PgSleep'",
                (copy,),
            )
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert f"the unfinished copy {copy!r} could not be dropped" in last, last

    blocked = logical.run("restore", name, "--yes")
    assert blocked.returncode == 1
    assert f"{copy}, left by an earlier restore that failed" in blocked.stderr
    assert "was killed" not in blocked.stderr
    assert "ROLLBACK PREPARED" in blocked.stderr.strip().splitlines()[-1]

    with logical.connect(copy) as conn:
        conn.execute("ROLLBACK PREPARED 'vt_in_staging'")
    fixed = logical.run("restore", name, "--yes")
    assert fixed.returncode == 0, fixed.stderr
    assert f"dropped {copy}, the unfinished copy, left by an earlier restore that failed" in (
        fixed.stderr
    )
    assert "was killed" not in fixed.stderr
    assert internal_databases(logical) == []


def test_restore_of_postgres_spares_a_concurrent_restore(logical: Target) -> None:
    """A restore of another database keeps its admin session (and lock) in ``postgres``: a
    restore of ``postgres`` meanwhile is refused, and the first one completes."""
    with logical.connect() as conn:
        conn.execute(SLOW_SCHEMA)
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 5) AS x")
    name = backup(logical)
    first = logical.popen("restore", name, "--yes", env=slow_env(logical, 4))
    try:
        wait_for_sleep_in(logical, r"velocity\_pg\_staging\_%")
        second = logical.run("restore", name, "--yes", env=logical.env(PGDATABASE="postgres"))
        _out, err = first.communicate(timeout=90)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert second.returncode == 1, second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert "another velocity-pg restore or verify is running" in last, last
    assert "nothing was changed" in last
    with logical.connect("postgres") as conn:  # postgres is still the server's own
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)


def test_check_finds_a_setting_a_non_superuser_owner_cannot_carry_over(
    target: Target, role: str
) -> None:
    other = f"{role}_other"
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(target.dbname), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(other)))
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '5MB'").format(
                sql.Identifier(other), sql.Identifier(target.dbname)
            )
        )
    try:
        name = backup(target)
        env = target.env(PGUSER=role)
        for args in (("--check",), ("--yes",)):
            result = target.run("restore", name, *args, env=env)
            assert result.returncode == 1, result.stderr
            (line,) = one_line_errors(result)
            assert f"ALTER ROLE {other} IN DATABASE" in line.replace('"', ""), line
            assert "permission denied" in line and "superuser" in line, line
            assert "nothing was changed" in line
            assert internal_databases(target) == []
    finally:
        with target.connect("postgres") as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(
                    sql.Identifier(other), sql.Identifier(target.dbname)
                )
            )
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(other)))
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(
                    sql.Identifier(target.dbname)
                )
            )
