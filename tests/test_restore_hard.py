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

import psycopg
import pytest
from conftest import PASSWORD, Target, table_contents
from psycopg import sql


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
    with target.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'velocity\\_pg\\_%' ORDER BY 1"
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
        for _ in range(2):
            result = target.run("restore", name, "--yes")
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr, result.stderr
            assert internal_databases(target) == []
            # The backup's subscription, disabled, with its slot name.
            assert subscriptions_of(target) == [("vt_sub", False, "vt_sub")]
    finally:
        drop_subscriptions(target)
