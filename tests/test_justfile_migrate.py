"""`just db-restore` migrates a Django database's staged copy before the swap (issue 23).

The real justfile under the real `just`, with the `docker` stand-in first on PATH
(tests/docker_standin.py): `compose exec db velocity-pg ...` runs velocity-pg against the
test server, and `compose run ... web CMD` runs CMD on this machine with the web
service's environment, so the project's own manage.py (tests/django_project) migrates
the real staged copy, as `docker compose run` would in the web image.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import Target, just_program
from test_migrations import PROJECT, backup, columns, manage, migrate, url

from velocity_pg.restore import staging

JUSTFILE = Path(__file__).resolve().parent.parent / "justfile"
MIGRATE = f"{sys.executable} manage.py migrate --noinput"


class Recipe:
    def __init__(self, target: Target, tmp: Path) -> None:
        self.target = target
        self.bin = tmp / "bin"
        self.bin.mkdir()
        docker = self.bin / "docker"
        standin = Path(__file__).with_name("docker_standin.py")
        docker.write_text(f'#!/bin/sh\nexec {sys.executable} {standin} "$@"\n')
        docker.chmod(0o755)
        self.log = tmp / "calls.jsonl"
        self.running = tmp / "running"
        self.running.write_text("db\nweb\n")
        self.services = tmp / "services.json"
        self.web_env: dict[str, str] = {"DATABASE_URL": url(target)}

    def just(self, *args: str) -> tuple[int, str]:
        self.services.write_text(json.dumps({"web": self.web_env, "db": {}}))
        env = self.target.env(
            PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            STANDIN_LOG=str(self.log),
            STANDIN_RUNNING=str(self.running),
            STANDIN_SERVICE_ENV=str(self.services),
            STANDIN_RUN_DIR=str(PROJECT),
            BACKUP_MIGRATE_COMMAND=MIGRATE,
            NO_COLOR="1",
        )
        import subprocess

        done = subprocess.run(
            [
                just_program(),
                "--justfile",
                str(JUSTFILE),
                "--working-directory",
                str(self.target.workdir),
                "--set",
                "restore_countdown",
                "0",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )
        return done.returncode, done.stderr

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log.read_text().splitlines()]

    def runs(self) -> list[list[str]]:
        return [c for c in self.calls() if c[1] == "run"]


@pytest.fixture
def recipe(target: Target, tmp_path: Path) -> Recipe:
    return Recipe(target, tmp_path)


def staged_exists(target: Target) -> bool:
    with target.connect("postgres") as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (staging.staging_name(target.dbname),)
        ).fetchone()
    return row is not None


def behind_backup(target: Target) -> str:
    """A backup at shop 0001 / blog 0001 (one row), then the live database migrated on."""
    migrate(target, "shop", "0001")
    migrate(target, "blog", "0001")
    with target.connect() as conn:
        conn.execute("INSERT INTO shop_item (name) VALUES ('from the backup')")
    name = str(backup(target)["name"])
    migrate(target, "shop", "0003")
    migrate(target, "blog")
    with target.connect() as conn:
        conn.execute("INSERT INTO shop_item (name, price, note) VALUES ('live', 7, '')")
    return name


def test_a_backup_behind_is_migrated_on_the_staged_copy_before_the_swap(
    recipe: Recipe, target: Target
) -> None:
    name = behind_backup(target)
    status, err = recipe.just("db-restore", name, "--yes")
    assert status == 0, err
    assert "migrating the staged copy" in err
    assert "migrate --check: the database is at the code's migration state" in err
    # The restored rows, on the code's schema.
    assert {"price", "note"} <= columns(target, "shop_item")
    assert "subtitle" in columns(target, "blog_post")
    with target.connect() as conn:
        assert conn.execute("SELECT name FROM shop_item").fetchall() == [("from the backup",)]
    assert manage(target, "migrate", "--check").returncode == 0
    calls = recipe.calls()
    # The order: migrate the staged copy before anything is stopped, check after the swap.
    migrate_at = next(i for i, c in enumerate(calls) if c[1] == "run" and "-e" in c)
    stop_at = next(i for i, c in enumerate(calls) if c[1] == "stop")
    swap_at = next(i for i, c in enumerate(calls) if "--drop-later" in c)
    check_at = next(i for i, c in enumerate(calls) if c[1] == "run" and c[-1] == "--check")
    assert migrate_at < stop_at < swap_at < check_at
    # The password never travels on a command line: DATABASE_URL only by name.
    assert calls[migrate_at][5:7] == ["-e", "DATABASE_URL"]
    assert not any(target.password in arg for call in calls for arg in call)


def test_a_failing_migrate_leaves_the_live_database_and_the_app(
    recipe: Recipe, target: Target
) -> None:
    name = behind_backup(target)
    recipe.web_env["SHOP_MIGRATION_FAILS"] = "1"
    status, err = recipe.just("db-restore", name, "--yes")
    assert status == 1, err
    assert "SHOP_MIGRATION_FAILS" in err  # migrate's own output
    assert "could not be migrated" in err
    assert not any(c[1] in ("stop", "start") for c in recipe.calls())
    assert not any("--drop-later" in c for c in recipe.calls())
    assert recipe.running.read_text().split() == ["db", "web"]
    with target.connect() as conn:
        rows = conn.execute("SELECT name, price FROM shop_item ORDER BY id").fetchall()
    assert rows == [("from the backup", 0), ("live", 7)]
    # The half-migrated copy is not kept for a later restore to swap in.
    assert not staged_exists(target)


def test_no_migrate_swaps_the_copy_in_unmigrated(recipe: Recipe, target: Target) -> None:
    name = behind_backup(target)
    status, err = recipe.just("db-restore", name, "--yes", "--no-migrate")
    assert status == 0, err
    assert "--no-migrate" in err
    assert "price" not in columns(target, "shop_item")
    assert not any(c[1] == "run" and "-e" in c for c in recipe.calls())
    assert "not at the code's migration state" in err


def test_a_backup_ahead_is_never_migrated_backwards(recipe: Recipe, target: Target) -> None:
    migrate(target)
    name = str(backup(target)["name"])
    migrate(target, "shop", "0002")
    status, err = recipe.just("db-restore", name, "--yes")
    assert status == 0, err
    assert "WARNING: the backup is ahead" in err
    assert not any(c[1] == "run" and "-e" in c for c in recipe.calls())
    with target.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop'")
        assert rows.fetchone() == (4,)


def test_a_database_that_is_not_django_s_runs_no_migrate(recipe: Recipe, target: Target) -> None:
    with target.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    name = str(backup(target)["name"])
    status, err = recipe.just("db-restore", name, "--yes")
    assert status == 0, err
    assert recipe.runs() == []


def test_staged_url_reads_the_url_from_stdin_and_refuses_another_database(
    target: Target,
) -> None:
    import subprocess

    def staged_url(given: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "velocity_pg", "restore", "--staged-url"],
            input=given,
            env=target.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = staged_url(url(target) + "?sslmode=disable\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        url(target, staging.staging_name(target.dbname)) + "?sslmode=disable"
    )
    other = staged_url(url(target, "elsewhere") + "\n")
    assert other.returncode == 2
    assert "'elsewhere'" in other.stderr and target.password not in other.stderr
    assert staged_url("").returncode == 2


def test_online_migrates_the_staged_copy_and_stops_nothing(recipe: Recipe, target: Target) -> None:
    name = behind_backup(target)
    status, err = recipe.just("db-restore", name, "--yes", "--online")
    assert status == 0, err
    assert "migrate --check: the database is at the code's migration state" in err
    assert {"price", "note"} <= columns(target, "shop_item")
    assert not any(c[1] in ("stop", "start") for c in recipe.calls())


def test_the_just_variable_overrides_the_command_velocity_pg_gives(
    recipe: Recipe, target: Target
) -> None:
    """`just migrate_command=...`: that command runs, not BACKUP_MIGRATE_COMMAND's."""
    name = behind_backup(target)
    marker = recipe.log.with_name("ran")
    command = f"{sys.executable} -c open({str(marker)!r},'w').write('x')"
    assert " " not in str(marker)
    status, err = recipe.just(f"migrate_command={command}", "db-restore", name, "--yes")
    # The command given migrated nothing, and succeeded: the unmigrated copy went in.
    assert status == 0, err
    assert marker.exists()
    assert "price" not in columns(target, "shop_item")
