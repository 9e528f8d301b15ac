"""A pg_dump older than the server, for real: refused before anything is written.

pg_dump cannot dump a server of a newer major. velocity-pg checks the versions
first (pgtools.check_can_dump), so the failure is one clear line and no
temporary file, rather than pg_dump's own abort halfway through a backup.

Needs two majors at once: this machine's pg_dump and a newer server, named by
VELOCITY_TEST_NEWER_SERVER (a libpq connection string, e.g.
``host=127.0.0.1 port=5433 user=postgres dbname=postgres password=...``).
.ci/run provides it in its PostgreSQL 15 run: the host's pg_dump 15 against a
PostgreSQL 17 server started in its Debian trixie root. Skipped when unset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import clean_env
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from velocity_pg.postgres import pgtools

ENV = "VELOCITY_TEST_NEWER_SERVER"


@pytest.fixture
def newer_server() -> Iterator[dict[str, str]]:
    """Connection parameters of a fresh database on the newer server."""
    conninfo = os.environ.get(ENV)
    if not conninfo:
        pytest.skip(f"needs a server newer than the local pg_dump: set {ENV} (.ci/run does)")
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    name = f"vt_newer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(conninfo, dbname=name, autocommit=True) as conn:
            conn.execute("CREATE TABLE notes AS SELECT g AS id FROM generate_series(1, 100) g")
        yield params | {"dbname": name}
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def libpq_env(params: dict[str, str], **extra: str) -> dict[str, str]:
    env = clean_env(
        PGHOST=params["host"],
        PGPORT=params["port"],
        PGUSER=params["user"],
        PGPASSWORD=params["password"],
        PGDATABASE=params["dbname"],
    )
    env.update(extra)
    return env


def test_pg_dump_older_than_the_server_is_refused_before_dumping(
    newer_server: dict[str, str], tmp_path: Path
) -> None:
    with psycopg.connect(**newer_server) as conn:  # type: ignore[arg-type]
        server = pgtools.server_major(conn.info.server_version)
    local = pgtools.find_program("pg_dump", server)
    assert local.major < server, (
        f"{ENV} must name a server newer than the local pg_dump {local.version} (it is {server})"
    )

    # What the check stands for: this pg_dump really cannot dump that server.
    raw = subprocess.run(
        [str(local.path), "--schema-only", "--no-password", f"--file={tmp_path / 'raw.sql'}"],
        env=libpq_env(newer_server),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert raw.returncode != 0
    assert "server version mismatch" in raw.stderr

    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    result = subprocess.run(
        [sys.executable, "-m", "velocity_pg", "backup"],
        env=libpq_env(newer_server, BACKUP_DIR=str(backups)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"velocity-pg: error: pg_dump {local.version} cannot dump a PostgreSQL {server} server; "
        f"install the PostgreSQL {server} client programs (or set PG_BINDIR) or run velocity-pg "
        "inside the db container, whose tools match the server"
    ]
    assert result.stdout == ""
    assert list(backups.iterdir()) == []  # not even a temporary file
    assert newer_server["password"] not in result.stderr
