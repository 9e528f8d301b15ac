"""Roles travel with the backup (issue 22, items 3 and 4): the roles file beside each
backup, ``restore --check`` naming the roles the target lacks, ``--create-missing-roles``,
refusing a missing role up front, and ``restore --owner ROLE``.

Roles are cluster-wide: each test makes its own (uniquely named) roles on the test server,
drops them after the backup to play a server that lacks them, and drops them at the end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Target
from psycopg import sql

from velocity_pg.postgres import roles as pgroles


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """Role names for one test: app (owns the tables), reader (granted SELECT), base (app is
    a member of it), owner (a non-superuser that owns the target)."""
    tag = uuid.uuid4().hex[:8]
    yield {k: f"{k}_{tag}" for k in ("app", "reader", "base", "owner")}


def drop_roles(target: Target, names: dict[str, str]) -> None:
    with target.connect("postgres") as conn:
        for name in names.values():
            if pgroles.existing(conn, [name]):
                for db in conn.execute("SELECT datname FROM pg_database WHERE datallowconn"):
                    with target.connect(db[0]) as other:
                        other.execute(
                            sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name))
                        )
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def app_db(target: Target, names: dict[str, str]) -> Iterator[Target]:
    """The target database with two tables owned by app, SELECT granted to reader."""
    app, reader, base = names["app"], names["reader"], names["base"]
    ident = sql.Identifier
    with target.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(base)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'app-secret' IN ROLE {}").format(
                ident(app), ident(base)
            )
        )
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'reader-secret'").format(ident(reader)))
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO public.items SELECT i, 'x' || i FROM generate_series(1, 50) i")
        conn.execute("CREATE TABLE public.notes (id serial PRIMARY KEY, body text)")
        for table in ("items", "notes"):
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(ident(table), ident(app)))
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident(table), ident(reader)))
    try:
        yield target
    finally:
        drop_roles(target, names)


def backup(target: Target, **env: str) -> Path:
    result = target.run("backup", "--json", env=target.env(**env))
    assert result.returncode == 0, result.stderr
    return target.backup_dir / json.loads(result.stdout)["name"]


def test_the_roles_file_travels_beside_the_backup(app_db: Target, names: dict[str, str]) -> None:
    dump = backup(app_db)
    roles_file = dump.with_name(dump.name + ".roles.sql")
    text = roles_file.read_text()
    print(text)
    assert (roles_file.stat().st_mode & 0o777) == 0o600
    for key in ("app", "reader", "base"):
        assert f"CREATE ROLE {names[key]};" in text
    assert "SCRAM-SHA-256" not in text and "md5" not in text
    record = json.loads(dump.with_name(dump.name + ".json").read_text())["roles"]
    assert record["passwords"] is False
    assert sorted(record["roles"]) == sorted(names[k] for k in ("app", "base", "reader"))
