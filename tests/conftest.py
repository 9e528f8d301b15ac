"""Shared fixtures: one private PostgreSQL server per test session (pytest-postgresql).

Every test that needs a database gets a fresh one on that server, and runs
velocity-pg as a real process with a clean environment, so what is tested is
exactly what a user runs.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories

# The tests run psycopg as users do: the pure-Python driver over the system libpq (Debian
# libpq5), as the image installs it. The test extra has no psycopg[binary]; should it be
# installed anyway, every velocity-pg the tests start still uses the users' flavour.
os.environ["PSYCOPG_IMPL"] = "python"

# A test run started with SIGINT ignored (nohup, `pytest &` from a script) would pass that
# on to every process it starts, and a process cannot catch a signal it inherited as
# ignored (Python then never raises KeyboardInterrupt, bash cannot trap it): the Ctrl+C
# tests would hang or see exit 0. A terminal's foreground job gets SIGINT at its default;
# so do the tests' processes: a signal with a handler is reset to the default on exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every off-site test (tests/test_offsite*.py) that uses an S3 server runs on each of
    moto and OpenStack Swift (``[moto]``, ``[swift]``); ``@pytest.mark.s3_only("moto",
    reason=...)`` keeps one on a single server (docs/development.md lists them, with the reasons).
    Other test files that use an S3 server get moto's."""
    from offsite_support import S3_SERVERS

    if "s3_endpoint" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("s3_only")
    if not metafunc.module.__name__.startswith("test_offsite"):
        assert only is None, "s3_only is for the tests of tests/test_offsite*.py"
        return
    servers = list(S3_SERVERS)
    if only is not None:
        assert len(only.args) == 1 and only.args[0] in S3_SERVERS, only
        assert str(only.kwargs.get("reason", "")).strip(), "s3_only needs a reason="
        servers = [only.args[0]]
    metafunc.parametrize("s3_endpoint", servers, indirect=True, scope="session")


def _pg_ctl() -> str:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return found[-1]
    which = shutil.which("pg_ctl")
    if which:
        return which
    raise RuntimeError("pg_ctl not found: install the PostgreSQL server (Debian: postgresql)")


PASSWORD = "velocity-s3cret-Pw"  # distinctive, so a leak is easy to spot
_postgresql_server = factories.postgresql_proc(
    executable=_pg_ctl(), password=PASSWORD, port=None, postgres_options="-c max_connections=100"
)


@pytest.fixture(scope="session")
def postgresql_proc(request: pytest.FixtureRequest) -> object:
    """The private server; refuses root before starting it (tests without it run as root)."""
    if os.geteuid() == 0:
        pytest.exit(
            "PostgreSQL refuses to run as root: run the tests as an unprivileged user "
            "(CI does: see .ci/run)",
            returncode=2,
        )
    return request.getfixturevalue("_postgresql_server")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any PG*/POSTGRES_*/BACKUP_*/VELOCITY_PG* variable
    or DATABASE_URL."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "VELOCITY_PG"))
        and key != "DATABASE_URL"
    }
    env.update(extra)
    return env


@dataclass
class Target:
    """A database on the test server, and how velocity-pg is pointed at it."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    backup_dir: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: nothing of the caller's PG*/POSTGRES_*/BACKUP_* leaks in."""
        env = clean_env()
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGPASSWORD=self.password,
            PGDATABASE=self.dbname,
            BACKUP_DIR=str(self.backup_dir),
        )
        env.update(extra)
        return env

    def connect(
        self, dbname: str | None = None, *, autocommit: bool = True, **kwargs: object
    ) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.dbname,
            autocommit=autocommit,
            **kwargs,  # type: ignore[arg-type]
        )

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m velocity_pg ARGS`` as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "velocity_pg", *args],
            env=self.env() if env is None else env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "velocity_pg", *args],
            env=self.env() if env is None else env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def _admin(proc: object) -> psycopg.Connection:
    return psycopg.connect(
        host=proc.host,  # type: ignore[attr-defined]
        port=proc.port,  # type: ignore[attr-defined]
        user=proc.user,  # type: ignore[attr-defined]
        password=PASSWORD,
        dbname="postgres",
        autocommit=True,
    )


def create_database(proc: object, name: str) -> None:
    with _admin(proc) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(proc: object, name: str) -> None:
    with _admin(proc) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def target(postgresql_proc: object, tmp_path: Path) -> Iterator[Target]:
    """A fresh, empty database and an empty backup folder."""
    name = f"vt_{uuid.uuid4().hex[:10]}"
    create_database(postgresql_proc, name)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    workdir = tmp_path / "work"
    workdir.mkdir()
    yield Target(
        host=postgresql_proc.host,  # type: ignore[attr-defined]
        port=int(postgresql_proc.port),  # type: ignore[attr-defined]
        user=postgresql_proc.user,  # type: ignore[attr-defined]
        password=PASSWORD,
        dbname=name,
        backup_dir=backup_dir,
        workdir=workdir,
    )
    drop_database(postgresql_proc, name)
    drop_copies_of(postgresql_proc, name)


def drop_copies_of(proc: object, name: str) -> None:
    """Drop the databases a restore of ``name`` keeps beside it (staged copy, rollback point),
    the way velocity-pg drops its own (a template flag or a subscription does not stop it)."""
    from velocity_pg.postgres import endpoint
    from velocity_pg.restore import staging, swap
    from velocity_pg.settings import Connection

    conn = endpoint.resolve(
        Connection(
            host=proc.host,  # type: ignore[attr-defined]
            port=int(proc.port),  # type: ignore[attr-defined]
            user=proc.user,  # type: ignore[attr-defined]
            password=PASSWORD,
            dbname="postgres",
        )
    )
    with _admin(proc) as admin:
        for leftover in (
            staging.staging_name(name),
            staging.aside_name(name),
            staging.previous_name(name),
        ):
            swap.drop_database(admin, leftover, conn)


# -- helpers shared by the test modules --------------------------------------------


def snapshot_dir(folder: Path) -> dict[str, bytes]:
    """Every file in a folder with its bytes: to assert nothing changed."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


VARIED_SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE public.customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    note text,
    data jsonb,
    created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
);
CREATE INDEX customers_name_idx ON public.customers (name);
CREATE TABLE shop.orders (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint REFERENCES public.customers (id),
    amount numeric(12, 2) NOT NULL,
    doc oid
);
CREATE SEQUENCE shop.invoice_seq START 1000;
CREATE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE amount > 100;
INSERT INTO public.customers (name, note, data)
SELECT 'customer ' || g, 'Ünïcødé ✓ 日本語 ' || g,
       jsonb_build_object('n', g, 'tags', ARRAY['a', 'b'])
FROM generate_series(1, 500) AS g;
INSERT INTO shop.orders (customer_id, amount)
SELECT (g % 500) + 1, g * 1.5 FROM generate_series(1, 1000) g;
SELECT nextval('shop.invoice_seq') FROM generate_series(1, 7);
UPDATE shop.orders SET doc = lo_from_bytea(0, convert_to('large object payload', 'UTF8'))
WHERE id = 1;
"""


def load_varied_schema(target: Target) -> None:
    with target.connect() as conn:
        conn.execute(VARIED_SCHEMA)


def table_contents(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every user table's rows (sorted), plus sequences and large objects."""
    tables = conn.execute(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    result: dict[str, list[tuple[object, ...]]] = {}
    for (name,) in tables:
        rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(name))).fetchall()
        result[name] = sorted(rows, key=repr)
    seqs = conn.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
    ).fetchall()
    result["<sequences>"] = [tuple(r) for r in seqs]
    los = conn.execute(
        "SELECT encode(lo_get(oid), 'escape') FROM pg_largeobject_metadata ORDER BY 1"
    ).fetchall()
    result["<large objects>"] = [tuple(r) for r in los]
    views = conn.execute(
        "SELECT schemaname, viewname, definition FROM pg_views "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
    ).fetchall()
    result["<views>"] = [tuple(r) for r in views]
    indexes = conn.execute(
        "SELECT schemaname, indexname FROM pg_indexes "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
    ).fetchall()
    result["<indexes>"] = [tuple(r) for r in indexes]
    return result


def slow_table_sql(database_like: str) -> str:
    """A table whose CHECK sleeps (velocity_test.delay seconds, from PGOPTIONS) while it is
    restored into a database whose name is LIKE ``database_like``: a slow pg_restore on demand.
    """
    return rf"""
CREATE FUNCTION public.slow_here() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_database() LIKE '{database_like}' THEN
        PERFORM pg_sleep(coalesce(nullif(current_setting('velocity_test.delay', true), ''),
                                  '0')::float8);
    END IF;
    RETURN true;
END $$;
CREATE TABLE public.slow (id int CHECK (public.slow_here()));
INSERT INTO public.slow VALUES (1);
"""


def wait_for_sleep_in(target: Target, database_like: str, timeout: float = 30) -> None:
    """Until some session sleeps (the slow table's CHECK) in a database LIKE ``database_like``."""
    deadline = time.monotonic() + timeout
    with target.connect("postgres") as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event = 'PgSleep' AND datname LIKE %s",
                (database_like,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"pg_restore never reached the slow table in {database_like}")


def just_program() -> str:
    """The real `just` (PyPI rust-just) beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "just"
    found = str(beside) if beside.exists() else shutil.which("just")
    if not found:
        raise RuntimeError("`just` not found: install the test extra (PyPI rust-just)")
    return found
