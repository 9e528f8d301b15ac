"""``restore NAME --into DB`` (``--replace``, ``--table``) and ``--list-tables`` against a
real server: a backup restored beside the live database, which is never touched.

Faults are real: a SIGKILL while pg_restore fills a sizable table (made slow on demand by
a CHECK that sleeps only inside a staging database, see ``conftest.slow_table_sql``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from conftest import (
    Target,
    drop_copies_of,
    drop_database,
    load_varied_schema,
    slow_table_sql,
    table_contents,
    wait_for_sleep_in,
)
from psycopg import sql
from test_restore import assert_one_error_line, backup

from velocity_pg.restore import into, staging


def databases(target: Target) -> list[str]:
    with target.connect("postgres") as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


def comment_of(target: Target, name: str) -> str | None:
    with target.connect("postgres") as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
    return None if row is None else row[0]


@pytest.fixture
def copy_name(target: Target, postgresql_proc: object) -> Iterator[str]:
    """A name for the --into database, dropped (with its staging copy) afterwards."""
    name = f"{target.dbname}_copy"
    yield name
    drop_database(postgresql_proc, name)
    drop_copies_of(postgresql_proc, name)


def test_into_restores_beside_the_live_database_which_is_untouched(
    target: Target, copy_name: str
) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        expected = table_contents(conn)
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
        live_before = table_contents(conn)
    # A session of the app's stays open on the live database all along.
    with target.connect(autocommit=False) as app:
        app.execute("SELECT count(*) FROM shop.orders").fetchone()
        pid = app.info.backend_pid

        check = target.run("restore", name, "--into", copy_name, "--check")
        assert check.returncode == 0, check.stderr
        assert "Check passed" in check.stdout and copy_name not in databases(target)

        result = target.run("restore", name, "--into", copy_name)  # no --yes: no countdown
        assert result.returncode == 0, result.stderr
        assert f"Created database {copy_name!r}" in result.stdout
        assert "seconds" not in result.stderr  # no countdown
        # The app's session was never ended, nor its transaction disturbed.
        assert app.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
        app.rollback()
    with target.connect() as conn:
        assert table_contents(conn) == live_before
    with target.connect(copy_name) as conn:
        assert table_contents(conn) == expected
    mark = into.parse_mark(comment_of(target, copy_name))
    assert mark is not None and mark.backup == name and mark.database == copy_name
    # No rollback point, staged copy or leftover of either database (other tests' copies
    # of their own databases are not this test's to judge).
    ours = {
        copy(db)
        for db in (target.dbname, copy_name)
        for copy in (staging.staging_name, staging.aside_name, staging.previous_name)
    }
    assert ours.isdisjoint(databases(target)), databases(target)


def test_an_existing_database_is_never_replaced_without_our_mark_and_replace(
    target: Target, copy_name: str, postgresql_proc: object
) -> None:
    load_varied_schema(target)
    name = backup(target)
    with target.connect() as conn:
        live_before = table_contents(conn)
    # The live database itself, and a database velocity-pg did not make.
    for existing in (target.dbname, "postgres"):
        result = target.run("restore", name, "--into", existing, "--replace")
        assert result.returncode in (1, 2), result.stderr
    foreign = f"{target.dbname}_theirs"
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(foreign)))
    try:
        for extra in ((), ("--replace",)):
            result = target.run("restore", name, "--into", foreign, *extra)
            assert result.returncode == 1
            assert_one_error_line(result, "not a copy velocity-pg made with --into", "new name")
        refused = target.run("restore", name, "--into", target.dbname, "--replace")
        assert_one_error_line(refused, "not a copy velocity-pg made with --into")

        # Our own copy: refused without --replace, replaced with it.
        assert target.run("restore", name, "--into", copy_name).returncode == 0
        with target.connect(copy_name) as conn:
            conn.execute("DELETE FROM shop.orders WHERE id > 100")
            conn.execute("CREATE TABLE public.scribble (x int)")
        again = target.run("restore", name, "--into", copy_name)
        assert again.returncode == 1
        assert_one_error_line(again, "add --replace", name)
        replaced = target.run("restore", name, "--into", copy_name, "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert f"Replaced database {copy_name!r}" in replaced.stdout
        with target.connect(copy_name) as conn:
            assert table_contents(conn) == live_before
        assert into.parse_mark(comment_of(target, copy_name)) is not None

        # Our mark copied onto another database does not make it ours (the oid differs).
        with target.connect("postgres") as conn:
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(foreign), sql.Literal(comment_of(target, copy_name))
                )
            )
        forged = target.run("restore", name, "--into", foreign, "--replace")
        assert forged.returncode == 1
        assert_one_error_line(forged, "not a copy velocity-pg made with --into")
        assert foreign in databases(target)
    finally:
        drop_database(postgresql_proc, foreign)
        drop_copies_of(postgresql_proc, foreign)
    with target.connect() as conn:
        assert table_contents(conn) == live_before


def test_usage_mistakes_exit_2_before_anything_runs(target: Target) -> None:
    for args, needle in (
        (("restore", "x.dump", "--into", "velocity_pg_staging_00"), "its own databases"),
        (("restore", "x.dump", "--into", "d" * 64), "at most 63 bytes"),
        (("restore", "x.dump", "--into", "template0"), "system database"),
        (("restore", "x.dump", "--table", "t"), "--table needs --into"),
        (("restore", "x.dump", "--replace"), "--replace goes only with --into"),
        (("restore", "--undo", "--into", "c"), "--into does not go with --undo"),
    ):
        result = target.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, result.stderr


SLOW_BIG = (
    slow_table_sql(r"velocity\_pg\_staging\_%")
    + """
CREATE TABLE public.big (id bigint PRIMARY KEY, payload text);
INSERT INTO public.big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200000) g;
"""
)


def test_a_killed_restore_leaves_no_database_of_that_name_and_the_live_one_untouched(
    target: Target, copy_name: str
) -> None:
    load_varied_schema(target)
    with target.connect() as conn:
        conn.execute(SLOW_BIG)
        expected = table_contents(conn)
    name = backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM public.big WHERE id > 1000")
        live_before = table_contents(conn)
    proc = target.popen(
        "restore", name, "--into", copy_name, env=target.env(PGOPTIONS="-c velocity_test.delay=60")
    )
    try:
        wait_for_sleep_in(target, r"velocity\_pg\_staging\_%")
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    names = databases(target)
    assert copy_name not in names
    assert staging.staging_name(copy_name) in names  # the unfinished copy, left for the next run
    with target.connect() as conn:
        assert table_contents(conn) == live_before

    result = target.run("restore", name, "--into", copy_name)
    assert result.returncode == 0, result.stderr
    assert f"dropped {staging.staging_name(copy_name)}, the unfinished copy" in result.stderr
    with target.connect(copy_name) as conn:
        assert table_contents(conn) == expected
    assert staging.staging_name(copy_name) not in databases(target)


TABLES_SCHEMA = """
CREATE SCHEMA shop;
CREATE TYPE shop.state AS ENUM ('new', 'paid');
CREATE TABLE public.customers (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop.orders (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    state shop.state NOT NULL DEFAULT 'new',
    amount numeric(12, 2) NOT NULL CHECK (amount >= 0)
);
CREATE INDEX orders_amount_idx ON shop.orders (amount);
CREATE TABLE shop.lines (
    id serial PRIMARY KEY,
    order_id integer NOT NULL REFERENCES shop.orders (id),
    sku text NOT NULL
);
CREATE FUNCTION shop.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.sku := upper(NEW.sku); RETURN NEW; END $$;
CREATE TRIGGER lines_stamp BEFORE INSERT ON shop.lines FOR EACH ROW EXECUTE FUNCTION shop.stamp();
CREATE VIEW shop.paid AS SELECT * FROM shop.orders WHERE state = 'paid';
INSERT INTO public.customers (name) SELECT 'c' || g FROM generate_series(1, 50) g;
INSERT INTO shop.orders (customer_id, amount) SELECT (g % 50) + 1, g FROM generate_series(1, 300) g;
INSERT INTO shop.lines (order_id, sku)
SELECT (g % 300) + 1, 'sku' || g FROM generate_series(1, 900) g;
"""


def test_tables_come_with_their_indexes_triggers_sequences_and_the_fk_between_them(
    target: Target, copy_name: str
) -> None:
    with target.connect() as conn:
        conn.execute(TABLES_SCHEMA)
        orders = conn.execute("SELECT * FROM shop.orders ORDER BY id").fetchall()
        lines = conn.execute("SELECT * FROM shop.lines ORDER BY id").fetchall()
    name = backup(target)

    listed = target.run("restore", name, "--list-tables")
    assert listed.returncode == 0, listed.stderr
    assert [ln.split()[0] for ln in listed.stdout.splitlines()[1:4]] == [
        "public.customers", "shop.lines", "shop.orders"
    ]  # fmt: skip
    assert "900" in listed.stdout  # rows from the manifest's statistics
    as_json = json.loads(target.run("restore", name, "--list-tables", "--json").stdout)
    assert {(t["schema"], t["table"]) for t in as_json["tables"]} == {
        ("public", "customers"), ("shop", "lines"), ("shop", "orders")
    }  # fmt: skip

    unknown = target.run("restore", name, "--into", copy_name, "--table", "shop.order")
    assert unknown.returncode == 1
    assert_one_error_line(unknown, "no such table", "shop.orders")

    chosen = ("--table", "shop.orders", "--table", "lines")
    check = target.run("restore", name, "--into", copy_name, *chosen, "--check")
    assert check.returncode == 0, check.stderr
    assert "(2 table(s))" in check.stdout and "orders_customer_id_fkey" in check.stdout
    assert copy_name not in databases(target)
    result = target.run("restore", name, "--into", copy_name, *chosen, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["selection"]["tables"] == ["shop.orders", "shop.lines"]
    assert report["selection"]["foreign_keys_left_out"] == [
        "orders_customer_id_fkey of shop.orders"
    ]
    assert "VIEW shop paid" in report["selection"]["left_out"]
    assert "orders_customer_id_fkey" in result.stderr  # said as it starts, too

    with target.connect(copy_name) as conn:
        assert conn.execute("SELECT * FROM shop.orders ORDER BY id").fetchall() == orders
        assert conn.execute("SELECT * FROM shop.lines ORDER BY id").fetchall() == lines
        tables_there = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables "
            "WHERE schemaname IN ('public', 'shop') ORDER BY 1"
        ).fetchall()
        assert tables_there == [("shop.lines",), ("shop.orders",)]
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert {"orders_amount_idx", "orders_pkey", "lines_pkey"} <= indexes
        fks = dict(
            conn.execute("SELECT conname, confrelid::regclass::text FROM pg_constraint "
                         "WHERE contype = 'f'").fetchall()
        )  # fmt: skip
        assert fks == {"lines_order_id_fkey": "shop.orders"}
        # The FK kept works; the trigger and the sequence are there and go on.
        row = conn.execute(
            "INSERT INTO shop.lines (order_id, sku) VALUES (1, 'abc') RETURNING id, sku"
        ).fetchone()
        assert row == (901, "ABC")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO shop.lines (order_id, sku) VALUES (99999, 'x')")
        assert conn.execute(
            "INSERT INTO shop.orders (customer_id, amount) VALUES (12345, 1) RETURNING id"
        ).fetchone() == (301,)  # identity sequence restored, FK to customers left out
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO shop.orders (customer_id, amount) VALUES (1, -1)")
        assert conn.execute("SELECT count(*) FROM pg_type WHERE typname = 'state'").fetchone() == (
            1,
        )
    mark = into.parse_mark(comment_of(target, copy_name))
    assert mark is not None and mark.tables == ("shop.orders", "shop.lines")


def test_an_ambiguous_table_name_is_refused_naming_both(target: Target, copy_name: str) -> None:
    with target.connect() as conn:
        conn.execute(
            "CREATE SCHEMA other; CREATE TABLE public.t (x int); CREATE TABLE other.t (y int)"
        )
    name = backup(target)
    result = target.run("restore", name, "--into", copy_name, "--table", "t")
    assert result.returncode == 1
    assert_one_error_line(result, "other.t", "public.t", "schema.table")
    assert copy_name not in databases(target)
    ok = target.run("restore", name, "--into", copy_name, "--table", "other.t")
    assert ok.returncode == 0, ok.stderr
    with target.connect(copy_name) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone() == (
            1,
        )


def test_abort_into_drops_the_unfinished_copy_a_killed_run_left(
    target: Target, copy_name: str
) -> None:
    left = staging.staging_name(copy_name)
    with target.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(left)))
        comment = staging.staging_comment(copy_name, 999999, "elsewhere")
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(left), sql.Literal(comment)
            )
        )
    result = target.run("restore", "--abort", "--into", copy_name)
    assert result.returncode == 0, result.stderr
    assert left in result.stdout and left not in databases(target)
    again = target.run("restore", "--abort", "--into", copy_name)
    assert again.returncode == 0 and "nothing was changed" in again.stdout
