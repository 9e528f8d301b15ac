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


# -- the fast lane: `pytest -m "pure or smoke"` --------------------------------------
#
# A test is *pure* when it needs no PostgreSQL, no S3 server, no Docker and starts no
# process: it tests functions in this Python process (an in-process HTTP receiver on
# 127.0.0.1 is allowed). pytest_collection_modifyitems marks pure tests itself, so a
# new test is classified without anyone remembering to: it is not pure when
#   * its fixtures (with the fixtures they use) include one that starts a server
#     (IMPURE_FIXTURES), or it carries the `docker` marker; or
#   * its code, its fixtures' code, or the module-level helpers they use (followed
#     through the tests/ modules they import from) mention `subprocess` or a call that
#     starts a process (os.fork, os.system, os.posix_spawn, os.exec*, pty.spawn, ...),
#     or sys.executable (a program to run, handed to velocity-pg's own runner, say).
# The second rule reads the source (ast), so it errs towards "not pure": a helper that
# merely names subprocess in an annotation makes its callers impure. Any process a pure
# test starts all the same (through some path the reading cannot follow) fails that test
# at once (the audit hook below), naming the rule, so the lane stays what it says.
# `@pytest.mark.not_pure(reason=...)` keeps a test out of the lane by hand (a slow one).

IMPURE_FIXTURES = frozenset(
    {"postgresql_proc", "_postgresql_server", "postgresql", "s3_endpoint", "_swift_endpoint"}
)
_SPAWNING_NAMES = frozenset({"subprocess", "multiprocessing", "create_subprocess_exec"})
_SPAWNING_OS_CALLS = frozenset(
    {"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "spawn"}
    | {"execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe"}
)
_TESTS_DIR = Path(__file__).resolve().parent


@dataclass
class _Module:
    defs: dict[str, object]  # module-level function/class name -> its ast node
    imported: dict[str, tuple[Path, str]]  # local name -> (tests/ module file, its name)


_modules: dict[Path, _Module | None] = {}
_spawning: dict[tuple[Path, str], bool] = {}


def _module(path: Path) -> _Module | None:
    """A tests/ module's top-level defs and its `from X import y` of other tests/ modules."""
    import ast

    path = path.resolve()
    if path not in _modules:
        if path.parent != _TESTS_DIR or path.suffix != ".py":
            _modules[path] = None
        else:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            module = _Module({}, {})
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    module.defs[node.name] = node
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    source = _TESTS_DIR / (node.module.replace(".", "/") + ".py")
                    if source.is_file():
                        for alias in node.names:
                            module.imported[alias.asname or alias.name] = (source, alias.name)
            _modules[path] = module
    return _modules[path]


def _starts_processes(path: Path, qualname: str) -> bool:
    """Whether the function or class ``qualname`` of tests/ module ``path``, or a module-level
    helper it names (followed through imports from other tests/ modules), may start a process."""
    import ast

    key = (path.resolve(), qualname)
    if key in _spawning:
        return _spawning[key]
    _spawning[key] = False  # a cycle adds nothing
    module = _module(path)
    node: object = None
    if module is not None:
        head, _, rest = qualname.partition(".")
        node = module.defs.get(head)
        if node is None and head in module.imported and not rest:
            source, name = module.imported[head]
            _spawning[key] = _starts_processes(source, name)
            return _spawning[key]
        for part in rest.split(".") if rest else ():
            node = next(
                (
                    n
                    for n in getattr(node, "body", ())
                    if getattr(n, "name", None) == part
                    and isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                ),
                node,  # a nested name not found: judge the whole enclosing def
            )
    if module is None or not isinstance(node, ast.AST):
        return False
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.add(sub.attr)
            if isinstance(sub.value, ast.Name) and (
                (sub.value.id in ("os", "pty") and sub.attr in _SPAWNING_OS_CALLS)
                or (sub.value.id == "sys" and sub.attr == "executable")
            ):
                _spawning[key] = True
                return True
    if names & _SPAWNING_NAMES:
        _spawning[key] = True
        return True
    for name in sorted(names):
        followed = name in module.defs or name in module.imported
        if followed and name != qualname.partition(".")[0] and _starts_processes(path, name):
            _spawning[key] = True
            return True
    return False


def _why_not_pure(item: pytest.Item) -> str | None:
    """Why a collected test is not pure, or None when it is."""
    manual = item.get_closest_marker("not_pure")
    if manual is not None:
        return f"marked not_pure: {manual.kwargs.get('reason', '')}"
    if item.get_closest_marker("docker") is not None:
        return "marked docker"
    fixtures = set(getattr(item, "fixturenames", ()))
    servers = sorted(fixtures & IMPURE_FIXTURES)
    if servers:
        return f"uses the server fixture {servers[0]}"
    function = getattr(item, "function", None)
    if function is None:
        return "not a Python test function"
    if _starts_processes(Path(function.__code__.co_filename), function.__qualname__):
        return "its code may start a process"
    info = getattr(item, "_fixtureinfo", None)
    for name in sorted(fixtures):
        for fixturedef in (info.name2fixturedefs.get(name, ()) if info else ())[-1:]:
            func = fixturedef.func
            code = getattr(func, "__code__", None)
            if code is not None and _starts_processes(Path(code.co_filename), func.__qualname__):
                return f"its fixture {name} may start a process"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        why = _why_not_pure(item)
        if why is None and item.get_closest_marker("smoke") is None:
            item.add_marker(pytest.mark.pure)


_pure_test_running: list[str] = []  # the node id of the pure test running, if one is
_pure_test_processes: list[str] = []  # the processes it tried to start


def _refuse_processes_in_pure_tests(event: str, args: tuple[object, ...]) -> None:
    if _pure_test_running and event in (
        "subprocess.Popen",
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.posix_spawn",
        "os.exec",
    ):
        _pure_test_processes.append(event)
        raise AssertionError(_not_pure_message())


def _not_pure_message() -> str:
    return (
        f"{_pure_test_running[0]} is marked pure (tests/conftest.py) but started a process "
        f"({_pure_test_processes[0]}): use a fixture or helper whose code the marking can "
        "read, or mark it @pytest.mark.not_pure(reason=...)"
    )


sys.addaudithook(_refuse_processes_in_pure_tests)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A pure test's own body may start no process (fixtures' setup is not watched: their
    code is read at collection). It fails even if the code under test swallowed the error."""
    if item.get_closest_marker("pure") is not None:
        _pure_test_running.append(item.nodeid)
    try:
        result = yield
        if _pure_test_processes:
            raise AssertionError(_not_pure_message())
        return result
    finally:
        _pure_test_running.clear()
        _pure_test_processes.clear()
