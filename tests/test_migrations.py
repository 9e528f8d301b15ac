"""Django-aware restores (issue 23): a backup knows its migrations, a restore says how far
the backup is from the live database, and a staged copy is migrated before the swap.

A small Django project (tests/django_project: apps shop and blog, a few migrations) runs
its own ``manage.py migrate`` as a subprocess against the real test server, with
DATABASE_URL pointing at the database to migrate (the live one, or the staged copy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import Target

from velocity_pg.postgres.migrations import read_applied
from velocity_pg.restore import staging
from velocity_pg.store import manifest
from velocity_pg.store import migrations as m

PROJECT = Path(__file__).parent / "django_project"
ALL_SHOP = ["0001_initial", "0002_item_price", "0003_item_note", "0004_check_items"]


# -- pure: the state and the drift ---------------------------------------------------------


def read_state(conn: psycopg.Connection) -> m.MigrationState | None:
    return m.state_from(read_applied(conn))


def state(**apps: list[str]) -> m.MigrationState:
    return m.MigrationState.from_rows((app, name) for app, names in apps.items() for name in names)


def test_state_json_round_trips_and_fingerprint_is_of_the_set() -> None:
    one = state(shop=["0001_initial", "0002_item_price"], blog=["0001_initial"])
    raw = one.to_json()
    assert raw["counts"] == {"blog": 1, "shop": 2}
    assert raw["latest"] == {"blog": "0001_initial", "shop": "0002_item_price"}
    assert len(raw["fingerprint"]) == 12
    assert m.from_json(json.loads(json.dumps(raw))) == one
    # The fingerprint is of the set: the applied order does not change it.
    other = m.MigrationState.from_rows(
        [("shop", "0002_item_price"), ("blog", "0001_initial"), ("shop", "0001_initial")]
    )
    assert other.fingerprint == one.fingerprint


def test_a_damaged_state_is_refused() -> None:
    raw = state(shop=["0001_initial"]).to_json()
    with pytest.raises(ValueError, match="fingerprint"):
        m.from_json(raw | {"fingerprint": "000000000000"})
    with pytest.raises(ValueError, match="counts"):
        m.from_json(raw | {"counts": {"shop": 5}})
    with pytest.raises(ValueError, match="list of migration names"):
        m.from_json(raw | {"apps": {"shop": "0001_initial"}})


def test_drift_behind_ahead_same_and_apps_on_one_side() -> None:
    backup = state(shop=ALL_SHOP[:1], blog=["0001_initial"], old=["0001_initial"])
    live = state(shop=ALL_SHOP[:3], blog=["0001_initial"], new=["0001_initial"])
    found = {a.app: a for a in m.drift(backup, live).apps}
    assert found["shop"].describe() == "shop: behind by 2 (0001_initial → 0003_item_note)"
    assert found["blog"].describe() == "blog: same (0001_initial)"
    assert found["old"].direction == m.AHEAD and "only in the backup" in found["old"].describe()
    assert found["new"].direction == m.BEHIND and "only in the live" in found["new"].describe()
    assert m.drift(backup, live).direction == m.MIXED
    ahead = m.drift(live, backup)
    assert {a.app: a.describe() for a in ahead.apps}["shop"] == (
        "shop: ahead by 2 (0001_initial → 0003_item_note)"
    )
    assert m.drift(live, live).direction == m.SAME
    assert m.drift(live, live).lines()[0].startswith("migrations: the backup is at")
    behind = m.drift(state(shop=ALL_SHOP[:1]), state(shop=ALL_SHOP[:3]))
    assert behind.direction == m.BEHIND and not behind.loud
    assert (
        m.drift(state(shop=ALL_SHOP[:3]), state(shop=ALL_SHOP[:1]))
        .lines()[0]
        .startswith("WARNING: migrations: the backup is AHEAD")
    )


def test_old_manifests_without_migrations_still_load() -> None:
    record = manifest.Manifest(
        sha256="0" * 64,
        size_bytes=1,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:01+00:00",
        duration_seconds=1.0,
        database="app",
        server_version="17",
        pg_dump_version="17",
        velocity_pg_version="1",
        toc_entries=1,
    )
    data = manifest.dumps(record)
    assert b"migrations" not in data
    assert manifest.loads(data).migrations is None
    with_state = manifest.loads(manifest.dumps(record.__class__(**{**vars(record)})))
    assert with_state == record
    recorded = manifest.loads(
        manifest.dumps(
            manifest.Manifest(**{**vars(record), "migrations": state(shop=ALL_SHOP[:2])})
        )
    )
    assert recorded.migrations == state(shop=ALL_SHOP[:2])


def test_the_off_site_manifest_carries_it_within_the_nesting_limit() -> None:
    from velocity_pg.store import remote

    dump = manifest.Manifest(
        sha256="0" * 64,
        size_bytes=1,
        started_at="2026-01-02T03:04:05+00:00",
        finished_at="2026-01-02T03:04:06+00:00",
        duration_seconds=1.0,
        database="velocity",
        server_version="17",
        pg_dump_version="17",
        velocity_pg_version="1",
        toc_entries=1,
        migrations=state(shop=ALL_SHOP, blog=["0001_initial"]),
    )
    name = "velocity_2026-01-02_030405.dump"
    record = remote.RemoteManifest(
        name=name,
        object_key=name,
        object_size=1,
        object_sha256="1" * 64,
        encryption=None,
        recipients=(),
        uploaded_at="2026-01-02T03:05:00+00:00",
        dump=dump,
    )
    back = remote.loads(remote.dumps(record))
    assert back.dump.migrations == dump.migrations


# -- against the real server ------------------------------------------------------------


def url(target: Target, dbname: str | None = None) -> str:
    return (
        f"postgres://{target.user}:{target.password}@{target.host}:{target.port}/"
        f"{dbname or target.dbname}"
    )


def manage(
    target: Target, *args: str, dbname: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The Django project's own manage.py, DATABASE_URL pointing at ``dbname``."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "DATABASE_URL", "DJANGO"))
    }
    environment.update(DATABASE_URL=url(target, dbname), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def migrate(target: Target, *args: str, dbname: str | None = None) -> None:
    done = manage(target, "migrate", "--noinput", *args, dbname=dbname)
    assert done.returncode == 0, done.stderr


def backup(target: Target) -> dict[str, object]:
    done = target.run("backup", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def columns(target: Target, table: str, dbname: str | None = None) -> set[str]:
    with target.connect(dbname) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_backup_records_the_migration_state(target: Target) -> None:
    migrate(target, "shop", "0002")
    migrate(target, "blog", "0001")
    made = backup(target)
    record = manifest.read(Path(str(made["path"])))
    assert record is not None and record.migrations is not None
    assert record.migrations.names() == {
        "blog": ("0001_initial",),
        "shop": ("0001_initial", "0002_item_price"),
    }
    assert made["migrations"] == record.migrations.to_json()
    listed = json.loads(target.run("list", "--json").stdout)
    assert listed["backups"][0]["migrations"]["counts"] == {"blog": 1, "shop": 2}
    verified = target.run("verify")
    assert verified.returncode == 0, verified.stderr
    assert f"migrations: 3 migrations in 2 apps (fingerprint {record.migrations.fingerprint})" in (
        verified.stdout
    )


def test_a_database_that_is_not_django_s_records_nothing(target: Target) -> None:
    with target.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    made = backup(target)
    assert made["migrations"] is None
    assert b'"migrations"' not in manifest.path_for(Path(str(made["path"]))).read_bytes()
    check = target.run("restore", "--check", str(made["name"]))
    assert check.returncode == 0, check.stderr
    assert "migrations" not in check.stderr


def test_a_table_without_select_privilege_is_noted_not_raised(target: Target) -> None:
    """(pg_dump itself cannot dump a table it may not read: the note is for readers that can
    connect but not read it, e.g. the live side of a restore's comparison.)"""
    migrate(target, "shop", "0001")
    role = f"{target.dbname}_r"
    with target.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        with psycopg.connect(
            host=target.host,
            port=target.port,
            user=role,
            password="pw",
            dbname=target.dbname,
            autocommit=True,
        ) as conn:
            found = read_state(conn)
            assert found is not None and "no SELECT privilege" in found.unreadable
            assert conn.execute("SELECT 1").fetchone() == (1,)  # still usable
        with target.connect() as conn:
            assert read_state(conn) == state(shop=["0001_initial"])
            conn.execute("CREATE TABLE plain (id int)")
            conn.execute("CREATE DATABASE " + f"{target.dbname}_plain")
        with target.connect(f"{target.dbname}_plain") as conn:
            assert read_state(conn) is None
    finally:
        with target.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {target.dbname}_plain")
            conn.execute(f"DROP ROLE {role}")


def test_check_reports_a_backup_behind_and_says_which_command_migrates(target: Target) -> None:
    migrate(target, "shop", "0001")
    migrate(target, "blog", "0001")
    name = str(backup(target)["name"])
    migrate(target)  # the code's state: shop 0004, blog 0002
    check = target.run("restore", "--check", "--json", name)
    assert check.returncode == 0, check.stderr
    assert "the backup is BEHIND" in check.stderr
    assert "shop: behind by 3 (0001_initial → 0004_check_items)" in check.stderr
    assert "blog: behind by 1 (0001_initial → 0002_post_subtitle)" in check.stderr
    assert "uv run python manage.py migrate --noinput" in check.stderr
    drift = json.loads(check.stdout)["migrations"]
    assert drift["drift"] == "behind"
    # The setting's value is what it names.
    custom = target.run(
        "restore", "--check", name, env=target.env(BACKUP_MIGRATE_COMMAND="./manage.py migrate")
    )
    assert "`docker compose run --rm web ./manage.py migrate`" in custom.stderr


def test_check_and_stage_warn_loudly_of_a_backup_ahead(target: Target) -> None:
    migrate(target)
    name = str(backup(target)["name"])
    migrate(target, "shop", "0002")  # rolled back: the backup is ahead
    check = target.run("restore", "--check", name)
    assert check.returncode == 0, check.stderr
    assert "WARNING: migrations: the backup is AHEAD" in check.stderr
    assert "shop: ahead by 2 (0002_item_price → 0004_check_items)" in check.stderr
    staged = target.run("restore", "--stage", "--yes", "--json", name)
    assert staged.returncode == 0, staged.stderr
    assert "WARNING: migrations: the backup is AHEAD" in staged.stderr
    result = json.loads(staged.stdout)
    assert result["migrations"]["drift"] == "ahead"
    assert result["staged_as"] == staging.staging_name(target.dbname)


def test_same_state_is_said_in_one_line(target: Target) -> None:
    migrate(target)
    name = str(backup(target)["name"])
    check = target.run("restore", "--check", name)
    assert check.returncode == 0, check.stderr
    lines = [line for line in check.stderr.splitlines() if "migrations" in line]
    assert len(lines) == 1 and "at the live database's migration state" in lines[0]


def test_staged_copy_migrated_then_swapped_in_has_the_new_columns(target: Target) -> None:
    """The recipe's building blocks: stage, migrate the staged copy, swap, check."""
    migrate(target, "shop", "0001")
    migrate(target, "blog", "0001")
    with target.connect() as conn:
        conn.execute("INSERT INTO shop_item (name) VALUES ('from the backup')")
    name = str(backup(target)["name"])
    migrate(target)
    with target.connect() as conn:
        conn.execute("INSERT INTO shop_item (name, price, note) VALUES ('after', 1, 'x')")

    staged = target.run("restore", "--stage", "--yes", "--json", name)
    assert staged.returncode == 0, staged.stderr
    result = json.loads(staged.stdout)
    assert result["migrations"]["drift"] == "behind"
    copy = str(result["staged_as"])
    assert "price" not in columns(target, "shop_item", copy)
    migrate(target, dbname=copy)
    assert {"price", "note"} <= columns(target, "shop_item", copy)

    swapped = target.run("restore", "--yes", name)
    assert swapped.returncode == 0, swapped.stderr
    # The staged copy (migrated) is what came in: at the live database's state.
    assert "at the live database's migration state" in swapped.stderr
    assert "swapping in the copy staged earlier" in swapped.stderr or "staged" in swapped.stderr
    assert {"price", "note"} <= columns(target, "shop_item")
    with target.connect() as conn:
        rows = conn.execute("SELECT name FROM shop_item ORDER BY id").fetchall()
    assert rows == [("from the backup",)]
    checked = manage(target, "migrate", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_failing_migration_on_the_staged_copy_leaves_the_live_database(target: Target) -> None:
    migrate(target, "shop", "0001")
    name = str(backup(target)["name"])
    migrate(target, "shop", "0003")
    with target.connect() as conn:
        conn.execute("INSERT INTO shop_item (name, price, note) VALUES ('live', 7, '')")
    staged = target.run("restore", "--stage", "--yes", "--json", name)
    assert staged.returncode == 0, staged.stderr
    copy = str(json.loads(staged.stdout)["staged_as"])
    failed = manage(target, "migrate", "--noinput", dbname=copy, SHOP_MIGRATION_FAILS="1")
    assert failed.returncode != 0
    assert "SHOP_MIGRATION_FAILS" in failed.stderr
    # Not swapped: the live database is exactly as it was.
    with target.connect() as conn:
        rows = conn.execute("SELECT name, price FROM shop_item").fetchall()
        applied = conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop'")
        assert applied.fetchone() == (3,)
    assert rows == [("live", 7)]
    dropped = target.run("restore", "--abort")
    assert dropped.returncode == 0, dropped.stderr
