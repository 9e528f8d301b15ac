"""A database's own properties travel in the backup's manifest (issue 22, item 5).

``pg_dump`` without ``--create`` leaves out a database's ``ALTER DATABASE ... SET``
settings (also per role), comment, grants and connection limit. Each backup records
them in its manifest; a restore gives them to the restored database where the
database it replaces does not set them, so a fresh server (where the replaced
database is the empty one the image's entrypoint created) gets them back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from conftest import PASSWORD, Target, create_database, drop_copies_of, drop_database
from psycopg import sql

from velocity_pg.store import manifest


def backup(target: Target) -> str:
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    assert "own properties" not in result.stderr, result.stderr
    name: str = json.loads(result.stdout)["name"]
    return name


def admin(target: Target) -> psycopg.Connection:
    return target.connect("postgres")


def settings_of(target: Target) -> dict[str, list[str]]:
    with admin(target) as conn:
        rows = conn.execute(
            "SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*'), s.setconfig "
            "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s",
            (target.dbname,),
        ).fetchall()
    return {str(r[0]): sorted(r[1]) for r in rows}


def comment_limit_acl(target: Target) -> tuple[object, ...]:
    with admin(target) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database'), datconnlimit, "
            "ARRAY(SELECT x::text FROM unnest(datacl) x ORDER BY 1) "
            "FROM pg_database WHERE datname = %s",
            (target.dbname,),
        ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def reader(target: Target) -> Iterator[str]:
    role = f"vt_reader_{uuid.uuid4().hex[:6]}"
    with admin(target) as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    yield role
    with admin(target) as conn:
        for leftover in (target.dbname,):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(leftover))
            )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def give_properties(target: Target, reader: str) -> None:
    db, r = sql.Identifier(target.dbname), sql.Identifier(reader)
    with admin(target) as conn:
        for stmt in (
            sql.SQL("ALTER DATABASE {} SET statement_timeout = '41s'").format(db),
            sql.SQL('ALTER DATABASE {} SET search_path = app, "my schema", public').format(db),
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '9MB'").format(r, db),
            sql.SQL("COMMENT ON DATABASE {} IS 'the app''s database'").format(db),
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, r),
            sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT 33").format(db),
        ):
            conn.execute(stmt)
    with target.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")


def fresh_server(target: Target, postgresql_proc: object) -> None:
    """What a new volume holds: the database the image's entrypoint created, empty."""
    drop_database(postgresql_proc, target.dbname)
    drop_copies_of(postgresql_proc, target.dbname)
    create_database(postgresql_proc, target.dbname)


def test_backup_records_the_database_properties(target: Target, reader: str) -> None:
    give_properties(target, reader)
    name = backup(target)
    record = manifest.read(target.backup_dir / name)
    assert record is not None and record.database_properties is not None
    props = record.database_properties
    assert props.comment == "the app's database"
    assert props.connection_limit == 33
    everyone = sorted(s.setting for s in props.settings if s.role is None)
    assert everyone == ['search_path=app, "my schema", public', "statement_timeout=41s"]
    assert [(s.role, s.setting) for s in props.settings if s.role] == [(reader, "work_mem=9MB")]
    assert props.grants is not None
    assert {(g.grantee, g.privilege) for g in props.grants} >= {
        (reader, "CONNECT"),
        (reader, "TEMPORARY"),
    }


def test_fresh_server_gets_the_backups_settings_comment_and_grants(
    target: Target, postgresql_proc: object, reader: str
) -> None:
    give_properties(target, reader)
    before = (settings_of(target), comment_limit_acl(target))
    name = backup(target)
    fresh_server(target, postgresql_proc)
    assert settings_of(target) == {}

    check = target.run("restore", name, "--check")
    assert check.returncode == 0, check.stderr
    line = (
        "database settings from the backup: search_path, statement_timeout, "
        f"work_mem (for {reader}); comment; grants; connection limit"
    )
    assert line in check.stdout
    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert line in result.stdout + result.stderr

    assert (settings_of(target), comment_limit_acl(target)) == before
    with target.connect() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("41s",)
        assert conn.execute("SHOW search_path").fetchone() == ('app, "my schema", public',)
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_the_live_databases_own_values_win(
    target: Target, postgresql_proc: object, reader: str
) -> None:
    give_properties(target, reader)
    name = backup(target)
    fresh_server(target, postgresql_proc)
    db = sql.Identifier(target.dbname)
    with admin(target) as conn:  # this server's own choices
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '5s'").format(db))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'staging'").format(db))

    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "database settings from the backup: search_path, work_mem" in out
    assert "statement_timeout" not in out.split("database settings from the backup:")[1]

    settings = settings_of(target)
    assert "statement_timeout=5s" in settings["*"]
    assert 'search_path=app, "my schema", public' in settings["*"]
    assert settings[reader] == ["work_mem=9MB"]
    comment, limit, _ = comment_limit_acl(target)
    assert (comment, limit) == ("staging", 33)


def test_grants_to_roles_the_target_lacks_are_left_out(
    target: Target, postgresql_proc: object
) -> None:
    gone = f"vt_gone_{uuid.uuid4().hex[:6]}"
    db, g = sql.Identifier(target.dbname), sql.Identifier(gone)
    with admin(target) as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(g))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, g))
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '2MB'").format(g, db))
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '7s'").format(db))
    name = backup(target)
    fresh_server(target, postgresql_proc)
    with admin(target) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(g))

    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert f"left out for role(s) the target lacks: {gone}" in result.stdout + result.stderr
    assert settings_of(target) == {"*": ["statement_timeout=7s"]}
    _, _, acl = comment_limit_acl(target)
    assert not any(gone in str(item) for item in acl)  # type: ignore[attr-defined]


def test_into_gets_the_backups_properties(target: Target, reader: str) -> None:
    give_properties(target, reader)
    name = backup(target)
    into = f"vt_into_{uuid.uuid4().hex[:6]}"
    try:
        result = target.run("restore", name, "--into", into)
        assert result.returncode == 0, result.stderr
        with target.connect(into) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("41s",)
            row = conn.execute(
                "SELECT datconnlimit, has_database_privilege(%s, current_database(), 'CONNECT') "
                "FROM pg_database WHERE datname = current_database()",
                (reader,),
            ).fetchone()
        assert row == (33, True)
    finally:
        with admin(target) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(into))
            )


def test_old_manifest_without_properties_restores_as_before(
    target: Target, postgresql_proc: object, reader: str
) -> None:
    give_properties(target, reader)
    name = backup(target)
    path = manifest.path_for(target.backup_dir / name)
    data = json.loads(path.read_bytes())
    del data["database_properties"]
    path.write_text(json.dumps(data))
    fresh_server(target, postgresql_proc)

    result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert "database settings from the backup" not in result.stdout + result.stderr
    assert settings_of(target) == {}
    assert comment_limit_acl(target)[:2] == (None, -1)


def test_properties_too_large_to_record_are_a_warning_not_a_failure(target: Target) -> None:
    huge = "x" * (300 * 1024)  # above what a manifest records of them
    with admin(target) as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(target.dbname), sql.Literal(huge)
            )
        )
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    assert "own properties are larger than" in result.stderr
    assert json.loads(result.stdout)["properties_problem"]
    name = json.loads(result.stdout)["name"]
    record = manifest.read(target.backup_dir / name)
    assert record is not None and record.database_properties is None


def test_a_non_superuser_owner_leaves_out_what_only_a_superuser_may_set(
    target: Target, postgresql_proc: object
) -> None:
    """A backup recorded log_statement (superuser-only); a fresh server restored by the
    database's owner, who is not a superuser: the rest comes back, log_statement is left
    out and said, and the restore does not fail for it."""
    role = f"vt_owner_{uuid.uuid4().hex[:6]}"
    db = sql.Identifier(target.dbname)
    with admin(target) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(db))
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '41s'").format(db))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PASSWORD)
            )
        )
    try:
        with target.connect() as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
            conn.execute(sql.SQL("ALTER TABLE t OWNER TO {}").format(sql.Identifier(role)))
        name = backup(target)
        fresh_server(target, postgresql_proc)
        with admin(target) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(role)))
        env = target.env(PGUSER=role)
        check = target.run("restore", name, "--check", env=env)
        assert check.returncode == 0, check.stderr
        said = "left out, only a superuser may set them: log_statement"
        assert said in check.stdout
        result = target.run("restore", name, "--yes", env=env)
        assert result.returncode == 0, result.stderr
        assert said in result.stdout + result.stderr
        assert settings_of(target) == {"*": ["statement_timeout=41s"]}
        with target.connect() as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        with admin(target) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            drop_copies_of(postgresql_proc, target.dbname)
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_objects_of_a_role_the_restoring_user_cannot_become_are_refused_up_front(
    target: Target, postgresql_proc: object
) -> None:
    """The owner of the database, not a superuser, restoring a backup whose table another
    role owns: refused before anything runs (not at pg_restore's OWNER TO), with the way
    out (--owner)."""
    role = f"vt_owner_{uuid.uuid4().hex[:6]}"
    db = sql.Identifier(target.dbname)
    with admin(target) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PASSWORD)
            )
        )
    try:
        with target.connect() as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")  # owned by the superuser
        name = backup(target)
        with admin(target) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(role)))
        env = target.env(PGUSER=role)
        for args in (("--check",), ("--yes",)):
            result = target.run("restore", name, *args, env=env)
            assert result.returncode == 1, result.stderr
            last = result.stderr.strip().splitlines()[-1]
            assert "may not act as (SET ROLE)" in last and "--owner ROLE" in last, last
            assert "nothing was changed" in last
        owned = target.run("restore", name, "--owner", role, "--yes", env=env)
        assert owned.returncode == 0, owned.stderr
        with target.connect() as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        drop_copies_of(postgresql_proc, target.dbname)
        with target.connect() as conn:
            conn.execute(
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role))
            )
        with admin(target) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(db))
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
