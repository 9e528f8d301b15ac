"""Every verb works on the database libpq connects to (issue 10, item 1).

A service file (PGSERVICEFILE + PGSERVICE, PGDATABASE unset), a URI or a
conninfo string in -d: backup dumps that database, and restore replaces
exactly that one, never ``postgres``, a database named after the user, or
one named after the URI. Against the real server, as real processes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from conftest import PASSWORD, Target, clean_env, load_varied_schema, table_contents

from velocity_pg.postgres import endpoint
from velocity_pg.restore import staging
from velocity_pg.settings import Connection, load_settings


def databases(target: Target) -> dict[str, int]:
    with target.connect("postgres") as conn:
        return {str(n): int(o) for o, n in conn.execute("SELECT oid, datname FROM pg_database")}


def contents(target: Target) -> dict[str, list[tuple[object, ...]]]:
    with target.connect() as conn:
        return table_contents(conn)


def scramble(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
        conn.execute("CREATE TABLE public.added_later (x int)")


def write_service_file(target: Target, folder: Path, *, user: bool = True) -> Path:
    path = folder / "pg_service.conf"
    lines = [
        "[velocity_test]",
        f"host={target.host}",
        f"port={target.port}",
        f"password={PASSWORD}",
        f"dbname={target.dbname}",
    ]
    if user:
        lines.append(f"user={target.user}")
    path.write_text("\n".join(lines) + "\n")
    return path


def service_env(target: Target, **extra: str) -> dict[str, str]:
    """Nothing but the service: no PGHOST, PGUSER, PGDATABASE or password in the environment."""
    path = write_service_file(target, target.workdir)
    base = {"PGSERVICEFILE": str(path), "PGSERVICE": "velocity_test"}
    return clean_env(**{**base, "BACKUP_DIR": str(target.backup_dir), **extra})


def assert_restored_exactly(
    target: Target, result: subprocess.CompletedProcess[str], original: object, before: dict
) -> None:
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert f"into database {target.dbname!r}" in result.stderr
    assert contents(target) == original
    after = databases(target)
    # The target's rollback point (its previous contents) is the one database a restore adds.
    previous = staging.previous_name(target.dbname)
    assert previous in after and after[previous] == before[target.dbname]
    after.pop(previous)
    # Exactly the target was replaced (a new oid); no other database appeared or changed.
    assert set(after) == set(before), set(after) ^ set(before)
    assert after[target.dbname] != before[target.dbname]
    assert {n: o for n, o in after.items() if n != target.dbname} == {
        n: o for n, o in before.items() if n != target.dbname
    }


def test_service_file_backup_and_restore_use_the_service_database(target: Target) -> None:
    load_varied_schema(target)
    original = contents(target)
    env = service_env(target)

    result = target.run("backup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["database"] == target.dbname
    name = made["name"]

    scramble(target)
    before = databases(target)
    result = target.run("restore", name, "--yes", env=env)
    assert_restored_exactly(target, result, original, before)

    result = target.run("verify", "--restore", name, env=env)
    assert result.returncode == 0, result.stderr


def test_service_file_restore_check_names_the_service_database(target: Target) -> None:
    load_varied_schema(target)
    env = service_env(target)
    name = json.loads(target.run("backup", "--json", env=env).stdout)["name"]
    result = target.run("restore", name, "--check", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == target.dbname


def conninfo_forms(target: Target) -> dict[str, str]:
    return {
        "uri": f"postgresql://{target.user}:{quote(PASSWORD)}@{target.host}:{target.port}"
        f"/{target.dbname}",
        "keywords": f"host={target.host} port={target.port} user={target.user} "
        f"password={PASSWORD} dbname={target.dbname}",
    }


@pytest.mark.parametrize("form", ["uri", "keywords"])
def test_connection_string_in_dbname_option(target: Target, form: str) -> None:
    load_varied_schema(target)
    original = contents(target)
    dsn = conninfo_forms(target)[form]
    env = clean_env(BACKUP_DIR=str(target.backup_dir))

    result = target.run("-d", dsn, "backup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["database"] == target.dbname

    scramble(target)
    before = databases(target)
    result = target.run("--debug", "-d", dsn, "restore", made["name"], "--yes", env=env)
    assert_restored_exactly(target, result, original, before)


def test_connection_string_in_pgdatabase(target: Target) -> None:
    load_varied_schema(target)
    original = contents(target)
    env = clean_env(BACKUP_DIR=str(target.backup_dir), PGDATABASE=conninfo_forms(target)["uri"])
    result = target.run("backup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == target.dbname
    scramble(target)
    before = databases(target)
    result = target.run("restore", json.loads(result.stdout)["name"], "--yes", env=env)
    assert_restored_exactly(target, result, original, before)


def test_bad_connection_string_is_a_usage_error(target: Target) -> None:
    env = clean_env(BACKUP_DIR=str(target.backup_dir))
    result = target.run("-d", "postgresql://u:pw@127.0.0.1/db?no_such_option=1", "backup", env=env)
    assert result.returncode == 2, result.stderr
    assert "not a valid connection string" in result.stderr
    assert "Traceback" not in result.stderr


def test_undefined_service_is_a_usage_error(target: Target) -> None:
    env = service_env(target, PGSERVICE="no_such_service")
    result = target.run("backup", env=env)
    assert result.returncode == 2, result.stderr
    assert "no_such_service" in result.stderr


# -- the resolution itself, in process ----------------------------------------------------


@pytest.fixture
def service_file(target: Target, monkeypatch: pytest.MonkeyPatch) -> Path:
    """libpq reads PGSERVICEFILE from the process environment."""
    for name in ("PGSERVICE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    path = write_service_file(target, target.workdir)
    monkeypatch.setenv("PGSERVICEFILE", str(path))
    return path


def test_service_beats_user_name_default(target: Target, service_file: Path) -> None:
    """As in the db container: the OS user and PGUSER are `postgres`, the service names the
    database. The database is the service's, not the one named after the user."""
    settings = load_settings(
        environ={"PGSERVICE": "velocity_test", "PGUSER": target.user}, env_file=None
    )
    where = endpoint.resolve(settings.connection)
    assert where.dbname == target.dbname
    assert where.user == target.user


def test_service_beats_environment_and_dotenv_options_beat_service(
    target: Target, service_file: Path, tmp_path: Path
) -> None:
    """libpq's order: parameters (velocity-pg's options) > service file > environment."""
    env_file = tmp_path / ".env"
    env_file.write_text("PGDATABASE=not_this_one\n")
    settings = load_settings(environ={"PGSERVICE": "velocity_test"}, env_file=env_file)
    assert endpoint.resolve(settings.connection).dbname == target.dbname
    settings = load_settings(
        environ={"PGSERVICE": "velocity_test"}, overrides={"PGDATABASE": "postgres"}
    )
    assert endpoint.resolve(settings.connection).dbname == "postgres"


def test_missing_database_resolves_to_the_name_libpq_would_use(target: Target) -> None:
    """A restore onto a fresh server: the database does not exist yet."""
    conn = Connection(
        host=target.host,
        port=target.port,
        user=target.user,
        password=PASSWORD,
        dbname="vt_not_created_yet",
    )
    where = endpoint.resolve(conn)
    assert where.dbname == "vt_not_created_yet"


def test_children_get_exactly_the_resolved_parameters(target: Target) -> None:
    conn = Connection(
        host=target.host,
        port=target.port,
        user=target.user,
        password=PASSWORD,
        dbname=target.dbname,
    )
    where = endpoint.resolve(conn)
    env = where.libpq_env("other")
    assert env["PGDATABASE"] == "other"
    assert env["PGPASSWORD"] == PASSWORD
    assert env["PGHOST"] == target.host
    assert env["PGPORT"] == str(target.port)
    for name in ("PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR"):
        assert env[name] is None  # removed from what the child inherits
    assert PASSWORD not in repr(where)
    with psycopg.connect(**where.connect_params()) as check:
        assert check.execute("SELECT current_database()").fetchone() == (target.dbname,)


# -- a backup of database A restored into database B (issue 10, unclear messages) ----------


def test_backup_of_another_database_is_announced_loudly(
    target: Target, postgresql_proc: object
) -> None:
    from conftest import create_database, drop_database

    from velocity_pg.restore import staging

    load_varied_schema(target)
    made = json.loads(target.run("backup", "--json").stdout)
    name, source = made["name"], target.dbname
    other = f"{target.dbname}_b"
    create_database(postgresql_proc, other)
    try:
        env = target.env(PGDATABASE=other)
        warning = (
            f"WARNING: {name} is a backup of database {source!r}, not of {other!r}: "
            f"the restore replaces {other!r} with the contents of {source!r}"
        )
        result = target.run("restore", name, "--check", env=env)
        assert result.returncode == 0, result.stderr
        assert f"a backup of database {source!r}) can restore database {other!r}" in result.stdout
        assert warning in result.stdout
        assert f"velocity-pg: {warning}" in result.stderr

        result = target.run("restore", name, "--check", "--json", env=env)
        data = json.loads(result.stdout)
        assert (data["database"], data["source_database"], data["other_source"]) == (
            other,
            source,
            True,
        )

        # Without its manifest, the archive's own header names the source.
        manifest_file = target.backup_dir / f"{name}.json"
        manifest_file.rename(target.workdir / "manifest.json")
        result = target.run("restore", name, "--yes", env=env)
        assert result.returncode == 0, result.stderr
        assert f"velocity-pg: {warning}" in result.stderr
        assert f"WARNING: database {other!r} now holds the contents of database {source!r}" in (
            result.stdout
        )
        (target.workdir / "manifest.json").rename(manifest_file)

        # Into its own database: named, and no warning.
        result = target.run("restore", name, "--check", "--json")
        data = json.loads(result.stdout)
        assert (data["source_database"], data["other_source"]) == (source, False)
        result = target.run("restore", name, "--yes")
        assert result.returncode == 0, result.stderr
        assert "WARNING" not in result.stdout + result.stderr
        assert f"restore {name} (of database {source!r}, " in result.stderr
    finally:
        for leftover in (other, staging.staging_name(other), staging.aside_name(other)):
            drop_database(postgresql_proc, leftover)


# -- the configured database, without a connection (status, verify, off-site) -------------


def test_settings_database_is_what_libpq_resolves(target: Target, service_file: Path) -> None:
    settings = load_settings(environ={"PGSERVICE": "velocity_test"}, env_file=None)
    assert settings.database == target.dbname
    dsn = "postgresql://someone@db.invalid:5432/from_uri"  # never looked up: no DNS, no network
    assert load_settings(environ={"PGDATABASE": dsn}, env_file=None).database == "from_uri"
    assert load_settings(environ={"POSTGRES_DB": "app"}, env_file=None).database == "app"
    assert load_settings(environ={}, env_file=None).database is None


def test_status_and_verify_judge_the_service_database(target: Target) -> None:
    """With a service file, the newest backup is the service database's, not any database's."""
    from datetime import UTC, datetime

    from velocity_pg.store import catalog

    load_varied_schema(target)
    env = service_env(target)
    ours = json.loads(target.run("backup", "--json", env=env).stdout)["name"]
    other = catalog.format_name(datetime.now(UTC), "some_other_db")
    (target.backup_dir / other).write_bytes(b"PGDMP not ours")
    result = target.run("status", "--max-age", "26h", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["newest"]["name"] == ours
    result = target.run("verify", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert [b["name"] for b in json.loads(result.stdout)["backups"]] == [ours]


def test_layers_decide_the_database_and_password_of_a_real_run(
    target: Target, postgresql_proc: object
) -> None:
    """The layers as a user meets them, against the server: .env under the environment
    under the command line, for the database and for the password."""
    from conftest import create_database, drop_database

    other = f"{target.dbname}_cli"
    create_database(postgresql_proc, other)
    try:
        (target.workdir / ".env").write_text(
            f"PGDATABASE=no_such_database_here\nPOSTGRES_DB=nor_this_one\nPGPASSWORD={PASSWORD}\n"
        )
        env = target.env()
        del env["PGPASSWORD"]  # only the .env file knows it
        made = target.run("backup", "--json", env=env)
        assert made.returncode == 0, made.stderr  # the environment's database, .env's password
        assert json.loads(made.stdout)["database"] == target.dbname
        by_option = target.run("-d", other, "backup", "--json", env=env)
        assert by_option.returncode == 0, by_option.stderr
        assert json.loads(by_option.stdout)["database"] == other
        # A wrong password in the environment beats the right one in .env: it fails.
        refused = target.run("backup", env={**env, "PGPASSWORD": "not-it"})
        assert refused.returncode == 1, refused.stderr
        assert "password authentication failed" in refused.stderr
        assert PASSWORD not in refused.stderr
    finally:
        (target.workdir / ".env").unlink()
        drop_database(postgresql_proc, other)


# -- DATABASE_URL: the Django project's own line, the lowest layer (issue 18, item 1) ----------


def url_of(target: Target, *, user: str | None = None, password: str = PASSWORD) -> str:
    who = f"{quote(user or target.user, safe='')}:{quote(password, safe='')}"
    return f"postgres://{who}@{target.host}:{target.port}/{target.dbname}"


def test_database_url_in_env_file_alone_is_enough(target: Target) -> None:
    """The template's .env: DATABASE_URL and nothing else says where the database is."""
    (target.workdir / ".env").write_text(f"DATABASE_URL={url_of(target)}\n")
    env = clean_env(BACKUP_DIR=str(target.backup_dir))
    made = target.run("backup", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["database"] == target.dbname
    assert PASSWORD not in made.stdout + made.stderr


def test_every_pg_and_postgres_variable_wins_over_database_url(
    target: Target, postgresql_proc: object
) -> None:
    """Part by part: the URL names another database and a wrong password; the
    POSTGRES_* variables (in .env, a lower layer than the URL's environment) win."""
    from conftest import create_database, drop_database

    other = f"{target.dbname}_url"
    create_database(postgresql_proc, other)
    try:
        wrong = url_of(target, password="not-it").replace(f"/{target.dbname}", f"/{other}")
        (target.workdir / ".env").write_text(
            f"POSTGRES_PASSWORD={PASSWORD}\nPOSTGRES_DB={target.dbname}\n"
        )
        env = clean_env(BACKUP_DIR=str(target.backup_dir), DATABASE_URL=wrong)
        made = target.run("backup", "--json", env=env)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["database"] == target.dbname
        # Without them, the URL's own parts are used: its database, its (wrong) password.
        (target.workdir / ".env").unlink()
        refused = target.run("backup", env=env)
        assert refused.returncode == 1
        assert "password authentication failed" in refused.stderr
        assert f"database '{other}'" in refused.stderr
        assert "not-it" not in refused.stderr
    finally:
        drop_database(postgresql_proc, other)


def test_a_percent_encoded_password_in_database_url(target: Target) -> None:
    secret = "p@ss:w/rd%?#&é"
    role = f"url_{target.dbname}"
    with target.connect() as conn:
        conn.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                psycopg.sql.Identifier(role), psycopg.sql.Literal(secret)
            )
        )
    try:
        env = clean_env(
            BACKUP_DIR=str(target.backup_dir),
            DATABASE_URL=url_of(target, user=role, password=secret),
        )
        made = target.run("backup", "--json", env=env)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["database"] == target.dbname
    finally:
        with target.connect() as conn:
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))


def test_a_missing_password_says_which_variable_to_set(target: Target) -> None:
    """The server asks for a password; no setting gives one: one line naming the settings."""
    no_password = url_of(target).replace(f":{PASSWORD}@", "@")
    env = clean_env(
        BACKUP_DIR=str(target.backup_dir),
        DATABASE_URL=no_password,
        PGPASSFILE=str(target.workdir / "no-passfile"),
    )
    refused = target.run("backup", env=env)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("velocity-pg: error: cannot connect to ")
    assert "set POSTGRES_PASSWORD (or PGPASSWORD)" in lines[0]
    assert "DATABASE_URL" in lines[0]
