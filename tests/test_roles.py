"""Roles travel with the backup (issue 22, items 3 and 4): the roles file beside each
backup, ``restore --check`` naming the roles the target lacks, ``--create-missing-roles``,
refusing a missing role up front, and ``restore --owner ROLE``.

Roles are cluster-wide: each test makes its own (uniquely named) roles on the test server,
drops them after the backup to play a server that lacks them, and drops them at the end.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Target, drop_copies_of, drop_database
from offsite_support import (  # noqa: F401 (fixtures)
    Bucket,
    Keys,
    age_keys,
    bucket,
    offsite_env,
    s3_endpoint,
)
from psycopg import sql

from velocity_pg.postgres import roles as pgroles


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """Role names for one test: app (owns the tables), reader (granted SELECT), base (app is
    a member of it), owner (a non-superuser that owns the target), keep (granted SELECT on
    items, and on the target too)."""
    tag = uuid.uuid4().hex[:8]
    yield {k: f"{k}_{tag}" for k in ("app", "reader", "base", "owner", "keep")}


def drop_roles(target: Target, names: dict[str, str]) -> None:
    with target.connect("postgres") as conn:
        for name in names.values():
            if pgroles.existing(conn, [name]):
                for db in conn.execute("SELECT datname FROM pg_database WHERE datallowconn"):
                    with target.connect(db[0]) as other:
                        other.execute(
                            sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(
                                sql.Identifier(name)
                            )
                        )
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
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(names["keep"])))
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO public.items SELECT i, 'x' || i FROM generate_series(1, 50) i")
        conn.execute("CREATE TABLE public.notes (id serial PRIMARY KEY, body text)")
        for table in ("items", "notes"):
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(ident(table), ident(app)))
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(ident(table), ident(reader)))
        conn.execute(sql.SQL("GRANT SELECT ON items TO {}").format(ident(names["keep"])))
    try:
        yield target
    finally:
        drop_roles(target, names)


def backup(target: Target, **env: str) -> Path:
    result = target.run("backup", "--json", env=target.env(**env))
    assert result.returncode == 0, result.stderr
    return target.backup_dir / json.loads(result.stdout)["name"]


def test_the_roles_file_travels_beside_the_backup(app_db: Target, names: dict[str, str]) -> None:
    with app_db.connect() as conn:  # a role of the server that no object of the backup needs
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(names["owner"])))
    dump = backup(app_db)
    roles_file = dump.with_name(dump.name + ".roles.sql")
    text = roles_file.read_text()
    assert (roles_file.stat().st_mode & 0o777) == 0o600
    for key in ("app", "reader", "base", "keep"):
        assert f"CREATE ROLE {names[key]};" in text
    assert names["owner"] not in text  # a role of the server the backup does not need
    assert "SCRAM-SHA-256" not in text and "md5" not in text
    record = json.loads(dump.with_name(dump.name + ".json").read_text())["roles"]
    assert record["passwords"] is False
    assert record["roles"] == sorted(names[k] for k in ("app", "base", "keep", "reader"))


def drop_app_roles(target: Target, names: dict[str, str]) -> None:
    """The target server without app, reader and base: a server the backup's roles never
    reached (the test database's tables go first: roles own them)."""
    with target.connect() as conn:
        conn.execute("DROP TABLE public.items, public.notes")
    drop_roles(target, {k: names[k] for k in ("app", "reader", "base")})


def owners_and_grants(target: Target) -> tuple[dict[str, str], list[tuple[str, str]]]:
    with target.connect() as conn:
        owners = dict(
            conn.execute(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')"
            ).fetchall()
        )
        grants = conn.execute(
            "SELECT table_name, grantee FROM information_schema.role_table_grants "
            "WHERE table_schema = 'public' AND privilege_type = 'SELECT' ORDER BY 1, 2"
        ).fetchall()
    return owners, grants


def test_a_missing_role_is_refused_up_front_then_created(
    app_db: Target, names: dict[str, str]
) -> None:
    dump = backup(app_db)
    drop_app_roles(app_db, names)
    app, reader, base = names["app"], names["reader"], names["base"]

    check = app_db.run("restore", dump.name, "--check")
    assert check.returncode == 1, check.stderr
    line = check.stderr.strip().splitlines()[-1]
    assert f"{app} (owner)" in line and f"{reader} (grantee)" in line, line
    assert "--create-missing-roles" in line and "nothing was changed" in line

    refused = app_db.run("restore", dump.name, "--yes")
    assert refused.returncode == 1
    assert "--create-missing-roles" in refused.stderr
    assert "OWNER TO" not in refused.stderr and "pg_restore" not in refused.stderr
    with app_db.connect() as conn:  # nothing was touched: the tables are still gone
        assert conn.execute("SELECT to_regclass('public.items')").fetchone() == (None,)

    would = app_db.run("restore", dump.name, "--check", "--create-missing-roles")
    assert would.returncode == 0, would.stderr
    assert app in would.stdout and "NOLOGIN" in would.stdout

    done = app_db.run("restore", dump.name, "--yes", "--create-missing-roles")
    assert done.returncode == 0, done.stderr
    assert f"created role(s) {app}, {base}, {reader} (NOLOGIN)" in done.stdout + done.stderr
    owners, grants = owners_and_grants(app_db)
    assert owners["items"] == app and owners["notes"] == app
    assert (("items", reader) in grants) and (("notes", reader) in grants)
    with app_db.connect() as conn:
        logins = dict(
            conn.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                ([app, reader, base],),
            ).fetchall()
        )
        assert logins == {app: False, reader: False, base: False}
        member = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (app, base)).fetchone()
        assert member == (True,)


def test_owner_makes_every_object_the_owner_roles(app_db: Target, names: dict[str, str]) -> None:
    dump = backup(app_db)
    drop_app_roles(app_db, names)
    owner = names["owner"]
    password = "owner-secret"
    with app_db.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(app_db.dbname), sql.Identifier(owner)
            )
        )
    # The restore runs as the owner role itself: no superuser anywhere.
    env = app_db.env(PGUSER=owner, PGPASSWORD=password)
    check = app_db.run("restore", dump.name, "--check", "--owner", owner, env=env)
    assert check.returncode == 0, check.stderr
    assert f"in place of {names['app']}, which the target lacks" in check.stdout
    assert names["reader"] in check.stdout
    done = app_db.run("restore", dump.name, "--yes", "--owner", owner, env=env)
    assert done.returncode == 0, done.stderr
    assert f"privileges of role(s) the target lacks were left out: {names['reader']}" in (
        done.stdout
    )
    owners, grants = owners_and_grants(app_db)
    assert set(owners.values()) == {owner}, owners
    # The grant to keep, which the target has, was applied again; reader's left out.
    assert sorted(grants) == [("items", names["keep"]), ("items", owner), ("notes", owner)]


def test_password_hashes_only_with_backup_role_passwords(
    app_db: Target, names: dict[str, str]
) -> None:
    dump = backup(app_db, BACKUP_ROLE_PASSWORDS="true")
    text = dump.with_name(dump.name + ".roles.sql").read_text()
    assert "PASSWORD 'SCRAM-SHA-256$" in text or "PASSWORD 'md5" in text
    record = json.loads(dump.with_name(dump.name + ".json").read_text())["roles"]
    assert record["passwords"] is True
    # A non-superuser cannot read them: refused before pg_dump, nothing written.
    owner = names["owner"]
    with app_db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("GRANT SELECT ON items, notes TO {}").format(sql.Identifier(owner)))
    before = sorted(p.name for p in app_db.backup_dir.iterdir())
    env = app_db.env(PGUSER=owner, PGPASSWORD="pw", BACKUP_ROLE_PASSWORDS="true")
    refused = app_db.run("backup", env=env)
    assert refused.returncode == 1
    assert "BACKUP_ROLE_PASSWORDS=true needs a superuser" in refused.stderr
    assert sorted(p.name for p in app_db.backup_dir.iterdir()) == before


def test_verify_checks_the_roles_file(app_db: Target) -> None:
    dump = backup(app_db)
    roles_file = dump.with_name(dump.name + ".roles.sql")
    assert app_db.run("verify", dump.name).returncode == 0
    roles_file.write_text(roles_file.read_text().replace("NOLOGIN", "LOGIN"))
    damaged = app_db.run("verify", dump.name)
    assert damaged.returncode == 1
    assert "roles file" in damaged.stdout + damaged.stderr


def test_push_and_pull_carry_the_roles_file(
    app_db: Target,
    names: dict[str, str],
    bucket: Bucket,  # noqa: F811 (a fixture)
    age_keys: Keys,  # noqa: F811 (a fixture)
) -> None:
    env = app_db.env(**offsite_env(bucket, age_keys))
    result = app_db.run("backup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    name = json.loads(result.stdout)["name"]
    key = f"db/{name}.roles.sql.age"
    assert key in bucket.names()
    assert bucket.read(key).startswith(b"age-encryption.org/v1")
    local = (app_db.backup_dir / (name + ".roles.sql")).read_bytes()
    checked = app_db.run("verify", "--remote", name, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "roles file" in checked.stdout

    # A new machine: the folder is empty; pull brings the roles file back, checked.
    for path in app_db.backup_dir.iterdir():
        path.unlink()
    pulled = app_db.run("pull", name, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert (app_db.backup_dir / (name + ".roles.sql")).read_bytes() == local
    assert app_db.run("verify", name, env=env).returncode == 0

    # A damaged copy of the roles file off-site is refused, nothing written.
    for path in app_db.backup_dir.iterdir():
        path.unlink()
    other = app_db.backup_dir.parent / "other.roles.sql"
    other.write_bytes(local.replace(b"NOLOGIN", b"LOGIN"))
    encrypted = subprocess.run(
        ["age", "--encrypt", "-r", age_keys.recipient, str(other)],
        capture_output=True,
        check=True,
    ).stdout
    bucket.write(key, encrypted)
    refused = app_db.run("pull", name, env=env)
    assert refused.returncode == 1
    assert "roles file" in refused.stderr and "does not match" in refused.stderr
    assert refused.stderr.strip().endswith("nothing was written")
    damaged = app_db.run("verify", "--remote", name, env=env)
    assert damaged.returncode == 1
    assert "roles file" in damaged.stdout + damaged.stderr
    assert [p.name for p in app_db.backup_dir.iterdir() if not p.name.startswith(".")] == []


def test_an_older_backup_without_a_roles_file_still_restores(
    app_db: Target, names: dict[str, str]
) -> None:
    dump = backup(app_db)
    # As a backup made before roles were recorded: no roles file, no "roles" in its manifest.
    dump.with_name(dump.name + ".roles.sql").unlink()
    side = dump.with_name(dump.name + ".json")
    record = json.loads(side.read_text())
    del record["roles"]
    side.write_text(json.dumps(record))
    check = app_db.run("restore", dump.name, "--check")
    assert check.returncode == 0, check.stderr
    assert "roles: unknown" in check.stdout
    done = app_db.run("restore", dump.name, "--yes")
    assert done.returncode == 0, done.stderr
    # Its owners are still checked, from the archive: gone, it is refused up front.
    drop_app_roles(app_db, names)
    refused = app_db.run("restore", dump.name, "--check")
    assert refused.returncode == 1
    assert f"{names['app']} (owner)" in refused.stderr


def test_a_damaged_roles_file_is_refused(app_db: Target) -> None:
    dump = backup(app_db)
    roles_file = dump.with_name(dump.name + ".roles.sql")
    roles_file.write_text(roles_file.read_text() + "-- changed\n")
    refused = app_db.run("restore", dump.name, "--check")
    assert refused.returncode == 1
    line = refused.stderr.strip().splitlines()[-1]
    assert "roles file" in line and "does not match the manifest" in line, line
    assert line.endswith("nothing was changed")


def test_owner_into_a_new_database_as_a_superuser(
    app_db: Target, names: dict[str, str], postgresql_proc: object
) -> None:
    """Another environment: a database of another name, which does not exist yet, restored
    by a superuser for a role without any privilege of its own: the database and every
    object in it are the role's (it can create in the public schema it owns)."""
    dump = backup(app_db)
    owner = names["owner"]
    with app_db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
    copy = app_db.dbname + "_env"
    try:
        env = app_db.env(PGDATABASE=copy)
        done = app_db.run("restore", dump.name, "--yes", "--owner", owner, env=env)
        assert done.returncode == 0, done.stderr
        with app_db.connect(copy) as conn:
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (copy,)
            ).fetchone()
            assert row == (owner,)
            owners = conn.execute(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace"
            ).fetchall()
            assert owners == [(owner,)]
    finally:
        drop_database(postgresql_proc, copy)
        drop_copies_of(postgresql_proc, copy)
