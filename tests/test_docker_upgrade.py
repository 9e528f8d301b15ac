"""`just db-upgrade` on a real Docker engine: a project moves to a newer PostgreSQL major
and back (issue 22, item 6).

The sandbox's stand-ins play the two majors: sandbox/postgres:15-bookworm the old one
(16 in production) and sandbox/postgres:17-trixie the new one. The project comes up on
the old image with the template's data volume (postgres-data), an app stand-in (web)
and the real db-backup service; the test then does what docs/docker.md tells a user:
set POSTGRES_IMAGE and POSTGRES_DATA_VOLUME (here in the environment, as .env would),
run `just db-upgrade`, and checks the new server has every row, the app and the
scheduled backups run again (db-backup on the new image), and the old volume is
untouched; then goes back (the two settings as they were, `docker compose up`) and finds
the old server with its data exactly as before the move.

Opt-in like tests/test_docker_e2e.py; needs both stand-ins
(``SANDBOX_PG_MAJORS="15 17" ../shared/docker-sandbox/start``)::

    VELOCITY_E2E_DOCKER=1 .venv/bin/pytest -p no:cacheprovider tests/test_docker_upgrade.py

VELOCITY_UPGRADE_FROM / VELOCITY_UPGRADE_TO name other images. The project is
``<VELOCITY_E2E_PROJECT>-upgrade``; every volume it made is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_support import compose_project, mounted_volume, project_volumes, remove_project
from test_docker_e2e import DB, PROJECT, Project, skip_reason

pytestmark = pytest.mark.docker

OLD_IMAGE = os.environ.get("VELOCITY_UPGRADE_FROM", "sandbox/postgres:15-bookworm")
NEW_IMAGE = os.environ.get("VELOCITY_UPGRADE_TO", "sandbox/postgres:17-trixie")
NAME = f"{PROJECT}-upgrade"
DATA = "/var/lib/postgresql/data"
APP = {
    "entrypoint": ["sleep", "infinity"],
    "init": True,
    "depends_on": ["db"],
    "tmpfs": [DATA],  # the base image's VOLUME, so no anonymous volume is left behind
}
CONTENTS = (
    "SELECT (SELECT count(*) || ':' || sum(id) FROM notes), "
    "(SELECT count(*) FROM shop.orders), (SELECT last_value FROM shop.orders_id_seq), "
    "(SELECT count(*) FROM open_orders)"
)


def image_exists(image: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return found.returncode == 0


@pytest.fixture
def old_project(tmp_path: Path) -> Iterator[Project]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    for image in (OLD_IMAGE, NEW_IMAGE):
        if not image_exists(image):
            pytest.skip(f"needs the image {image} (SANDBOX_PG_MAJORS='15 17' start)")
    override = {"services": {"web": {"image": OLD_IMAGE, **APP}}}
    p = compose_project(NAME, tmp_path, OLD_IMAGE, override, BACKUP_MAX_COUNT="10")
    remove_project(p)  # leftovers of a killed run
    try:
        p.run("docker", "compose", "up", "-d", "--build", "--wait", timeout=1800)
        p.wait_for_log("db-backup", "next run at", timeout=300)
        yield p
    finally:
        remove_project(p)


def major(p: Project) -> int:
    return int(p.sql("SHOW server_version_num")) // 10000


def test_db_upgrade_moves_to_the_new_major_and_the_old_volume_takes_it_back(
    old_project: Project,
) -> None:
    p = old_project
    old_major = major(p)
    p.sql(
        "CREATE TABLE notes (id int PRIMARY KEY, body text); "
        "INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 20000) g; "
        "CREATE SCHEMA shop; "
        "CREATE TABLE shop.orders (id serial PRIMARY KEY, note int REFERENCES notes, "
        "  open boolean NOT NULL DEFAULT true); "
        "INSERT INTO shop.orders (note, open) SELECT g, g % 3 = 0 FROM generate_series(1, 500) g; "
        "CREATE VIEW open_orders AS SELECT * FROM shop.orders WHERE open"
    )
    # The database's own settings are not in a dump: the recipe carries them over.
    p.sql(f"ALTER DATABASE {DB} SET work_mem = '12MB'")
    p.sql(f"ALTER DATABASE {DB} SET search_path = shop, public")
    before = p.sql(CONTENTS)
    old_volume = mounted_volume(p, "db", DATA)
    assert old_volume == f"{NAME}_postgres-data"

    # Not yet told where to: the same volume is refused before anything happens.
    same = p.just("db-upgrade", "--yes")
    assert same.returncode == 2, same.stderr
    assert "POSTGRES_DATA_VOLUME still names the running server's volume" in same.stderr
    assert p.container("web")[0]
    assert major(p) == old_major

    # The user's two lines in .env, then the recipe.
    p.env.update(POSTGRES_IMAGE=NEW_IMAGE, POSTGRES_DATA_VOLUME="postgres-data-17")
    moved = p.just("db-upgrade", "--yes")
    print(moved.stderr)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    new_major = major(p)
    assert new_major > old_major
    assert mounted_volume(p, "db", DATA) == f"{NAME}_postgres-data-17"
    assert p.sql(CONTENTS) == before
    assert "row counts match: 2 tables" in moved.stderr
    assert "the database's settings carried over: 2" in moved.stderr
    assert "the app services were down for " in moved.stderr
    assert p.sql("SHOW work_mem") == "12MB"
    assert p.sql("SHOW search_path") == "shop, public"
    assert "postgres-data (PostgreSQL" in moved.stderr
    assert "to go back: set POSTGRES_DATA_VOLUME=postgres-data" in moved.stderr
    # The app and the scheduled backups run again, db-backup with the new pg_dump.
    assert p.container("web")[0]
    assert p.container("db-backup")[0]
    dump = p.compose("exec", "-T", "db-backup", "pg_dump", "--version").stdout
    assert f" {new_major}." in dump, dump
    # The new server's newest backup is its own, by the new pg_dump (restorable there).
    listed = p.backups()
    assert len(listed) >= 3  # the scheduler's first, the move's, the new server's first
    verify = p.just("db-backup-verify", "--restore", listed[0])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Both volumes exist; the old one is not in use.
    assert {f"{NAME}_postgres-data", f"{NAME}_postgres-data-17"} <= set(project_volumes(p))

    # A write on the new server, then back: the old volume as it was before the move.
    p.sql("INSERT INTO notes VALUES (20001, 'after the move')")
    p.env.update(POSTGRES_IMAGE=OLD_IMAGE, POSTGRES_DATA_VOLUME="postgres-data")
    p.run("docker", "compose", "up", "-d", "--build", "--wait", timeout=1800)
    assert major(p) == old_major
    assert mounted_volume(p, "db", DATA) == old_volume
    assert p.sql(CONTENTS) == before  # the write after the move is on the new volume only
    # A backup of the newer server does not go back: the older pg_restore refuses it,
    # one line, exit 1, nothing changed.
    newest = p.just("db-backup-verify", listed[0])
    print(newest.stdout + newest.stderr)
    assert newest.returncode == 1, newest.stdout + newest.stderr
    assert p.sql(CONTENTS) == before
