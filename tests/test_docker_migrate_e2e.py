"""`just db-restore` migrates a Django database's staged copy, on a real engine (issue 23).

tests/test_justfile_migrate.py runs the recipe through a stand-in for `docker compose`;
this is the real thing: the repository's db service (Dockerfile.db) beside a `web`
service BUILT from tests/django_project (two apps, shop and blog; shop's 0004 fails when
SHOP_MIGRATION_FAILS is set), its database from DATABASE_URL pointing at db. The web
image (a Dockerfile written by the test into its temp folder) is Debian's Python with
Django, psycopg 3 and uv from PyPI, so the recipe runs BACKUP_MIGRATE_COMMAND's default,
the template's `uv run python manage.py migrate --noinput` (uv here runs the command in
the image's virtual environment: the project has no pyproject.toml).

Each test: the database migrated up to shop 0001 / blog 0001, a row written and a
backup taken, then the app's "deploy" (every later migration) and a live row; then
`just db-restore NAME --yes`: the staged copy is migrated in a one-off web container and
swapped in (the live database has the later migrations' columns and the backup's rows),
or, with SHOP_MIGRATION_FAILS set for the web service, the recipe exits 1 and the live
database (rows and migrations) and the running web container are as they were.

Opt-in like tests/test_docker_e2e.py (same VELOCITY_E2E_DOCKER gate, as root or the
docker group)::

    ../shared/docker-sandbox/start
    VELOCITY_E2E_DOCKER=1 POSTGRES_IMAGE=sandbox/postgres:15-bookworm \\
        .venv/bin/pytest -p no:cacheprovider tests/test_docker_migrate_e2e.py

The web image's base: with a sandbox stand-in POSTGRES_IMAGE (sandbox/postgres:N-SUITE),
the sandbox's sandbox/debian:SUITE (smaller: on the sandbox's vfs driver each one-off
container copies its whole image); else POSTGRES_IMAGE itself (apk or apt-get, as in
Dockerfile.db); VELOCITY_E2E_WEB_BASE names another. The project is
``<VELOCITY_E2E_PROJECT or velocity-pg-e2e>-migrate``, never django-velocity; it starts
only db and web (no db-backup), and ends with `docker compose down -v --rmi local`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_docker_e2e import (
    DB,
    ENGINE_TIMEOUT,
    PASSWORD,
    REPO,
    USER,
    Project,
    chosen_base_image,
    skip_reason,
)
from test_docker_e2e import PROJECT as E2E_PROJECT

from velocity_pg.restore import staging

pytestmark = pytest.mark.docker

PROJECT = f"{E2E_PROJECT}-migrate"
DJANGO_PROJECT = Path(__file__).resolve().parent / "django_project"
DATABASE_URL = f"postgres://{USER}:{PASSWORD}@db:5432/{DB}"
MIGRATE = "uv run python manage.py migrate --noinput"  # the template's, the default

# Debian's python3 (or Alpine's), a virtual environment with Django, psycopg 3 (the
# system's libpq, no psycopg[binary]) and uv from PyPI; the project's code last, so a
# change to it rebuilds only that layer. The code is baked in, not mounted.
WEB_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN set -eux; \\
    if command -v apk >/dev/null 2>&1; then \\
        apk add --no-cache python3 libpq; \\
    else \\
        apt-get update; \\
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
            python3 python3-venv libpq5; \\
        rm -rf /var/lib/apt/lists/*; \\
    fi; \\
    python3 -m venv /opt/app; \\
    /opt/app/bin/pip install --no-cache-dir --disable-pip-version-check \\
        'django>=5.1' 'psycopg>=3.1' uv; \\
    /opt/app/bin/pip freeze --disable-pip-version-check | grep -iE '^(django|psycopg|uv)=='
COPY app /app
ENV PATH=/opt/app/bin:$PATH VIRTUAL_ENV=/opt/app PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 UV_PYTHON_DOWNLOADS=never
WORKDIR /app
ENTRYPOINT []
CMD ["sleep", "infinity"]
"""


def web_base_image(base_image: str) -> str:
    chosen = os.environ.get("VELOCITY_E2E_WEB_BASE")
    if chosen:
        return chosen
    sandbox = re.fullmatch(r"sandbox/postgres:\d+-(\w+)", base_image)
    return f"sandbox/debian:{sandbox.group(1)}" if sandbox else base_image


class MigrateProject(Project):
    """test_docker_e2e's helpers, on this module's compose project."""

    def state(self, service: str) -> dict[str, object]:
        ids = self.run(
            "docker", "ps", "-a", "-q",
            "--filter", f"label=com.docker.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--filter", "label=com.docker.compose.oneoff=False",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"{service}: containers {ids}"
        inspected = self.run("docker", "inspect", "-f", "{{json .State}}", ids[0]).stdout
        return dict(json.loads(inspected))

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The project's manage.py in the running web container (exec: no new container)."""
        return self.compose(
            "exec", "-T", "web", "uv", "run", "python", "manage.py", *args, check=check
        )

    def columns(self, table: str) -> set[str]:
        return set(
            self.sql(
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_schema = 'public' AND table_name = '{table}'"
            ).split()
        )

    def applied(self) -> list[str]:
        return self.sql(
            "SELECT app || '.' || name FROM django_migrations "
            "WHERE app IN ('shop', 'blog') ORDER BY app, name"
        ).splitlines()

    def staged_exists(self) -> bool:
        staged = staging.staging_name(DB)
        return self.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{staged}'") == "1"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrateProject]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    base_image = chosen_base_image()
    web_base = web_base_image(base_image)
    folder = tmp_path_factory.mktemp("migrate-e2e")
    web = folder / "web"
    web.mkdir()
    (web / "Dockerfile").write_text(WEB_DOCKERFILE)
    shutil.copytree(
        DJANGO_PROJECT, web / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    service: dict[str, object] = {
        "build": {"context": str(web), "args": {"BASE_IMAGE": web_base}},
        "init": True,
        "depends_on": {"db": {"condition": "service_healthy"}},
        "environment": {
            "DATABASE_URL": DATABASE_URL,
            # Empty unless the test sets it for `docker compose` (the failing migrate).
            "SHOP_MIGRATION_FAILS": "${SHOP_MIGRATION_FAILS:-}",
        },
    }
    # A base image that declares VOLUMEs (the postgres images' PGDATA): a tmpfs there,
    # or each one-off container of the recipe would leave an anonymous volume behind.
    inspect = ["docker", "image", "inspect", "-f", "{{json .Config.Volumes}}", web_base]
    found = subprocess.run(inspect, capture_output=True, text=True, check=False)
    if found.returncode == 0 and found.stdout.strip() not in ("", "null"):
        service["tmpfs"] = sorted(json.loads(found.stdout))
    override = folder / "migrate.override.yml"
    override.write_text(yaml.safe_dump({"services": {"web": service}}))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("PG", "POSTGRES_", "BACKUP_", "COMPOSE_", "DATABASE_URL", "SHOP_MIGRATION_FAILS")
        )
    }
    env.update(
        COMPOSE_PROJECT_NAME=PROJECT,
        COMPOSE_FILE=f"{REPO / 'docker-compose.yml'}{os.pathsep}{override}",
        POSTGRES_IMAGE=base_image,
        POSTGRES_USER=USER,
        POSTGRES_PASSWORD=PASSWORD,
        POSTGRES_DB=DB,
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
        NO_COLOR="1",
    )
    p = MigrateProject(env=env, base_image=base_image)
    p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)  # leftovers
    try:
        # Two images to build on a busy 2-core machine with the vfs driver: minutes.
        p.run("docker", "compose", "up", "-d", "--build", "--wait", "db", "web", timeout=2400)
        yield p
    finally:
        p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        label = f"label=com.docker.compose.project={PROJECT}"
        volumes = p.run("docker", "volume", "ls", "-q", "--filter", label).stdout.split()
        assert volumes == [], f"down -v left volumes {volumes}"


def behind_backup(project: MigrateProject) -> str:
    """A backup at shop 0001 / blog 0001 with one row each, then the deploy: every later
    migration applied to the live database, and a row written after it."""
    project.manage("migrate", "--noinput", "shop", "0001")  # backwards, on a second run
    project.manage("migrate", "--noinput", "blog", "0001")
    project.sql(
        "TRUNCATE shop_item, blog_post; "
        "INSERT INTO shop_item (name) VALUES ('from the backup'); "
        "INSERT INTO blog_post (title) VALUES ('backed up')"
    )
    assert project.applied() == ["blog.0001_initial", "shop.0001_initial"]
    name = project.backup_now()
    project.manage("migrate", "--noinput")  # the deploy
    project.sql("INSERT INTO shop_item (name, price, note) VALUES ('after the deploy', 7, '')")
    assert "price" in project.columns("shop_item")
    return name


def test_a_backup_behind_the_deploy_is_migrated_on_the_staged_copy_then_swapped_in(
    project: MigrateProject,
) -> None:
    name = behind_backup(project)
    before = project.state("web")
    assert before["Running"] is True

    restored = project.just("db-restore", name, "--yes")
    out = restored.stdout + restored.stderr
    assert restored.returncode == 0, out
    # The drift, reported before anything changed; then the default command, in web.
    assert "shop: behind by 3 (0001_initial → 0004_check_items)" in out, out
    assert "blog: behind by 1 (0001_initial → 0002_post_subtitle)" in out, out
    assert f"migrating the staged copy: {MIGRATE} (in web)" in restored.stderr
    assert "migrate --check: the database is at the code's migration state" in restored.stderr
    assert "the app services were down for" in restored.stderr
    assert PASSWORD not in out  # DATABASE_URL went by the environment only

    # The backup's rows, on the code's schema: the later migrations' columns exist.
    assert {"price", "note"} <= project.columns("shop_item")
    assert "subtitle" in project.columns("blog_post")
    assert project.sql("SELECT name || ':' || price FROM shop_item") == "from the backup:0"
    assert project.sql("SELECT title || ':' || subtitle FROM blog_post") == "backed up:"
    assert project.applied() == [
        "blog.0001_initial",
        "blog.0002_post_subtitle",
        "shop.0001_initial",
        "shop.0002_item_price",
        "shop.0003_item_note",
        "shop.0004_check_items",
    ]
    assert project.manage("migrate", "--check").returncode == 0
    assert not project.staged_exists()
    # web was stopped for the swap only, and runs again.
    after = project.state("web")
    assert after["Running"] is True
    assert after["StartedAt"] != before["StartedAt"]


def test_a_failing_migrate_leaves_the_live_database_and_the_app_as_they_were(
    project: MigrateProject,
) -> None:
    name = behind_backup(project)
    before = project.state("web")
    assert before["Running"] is True
    rows = project.sql("SELECT name || ':' || price FROM shop_item ORDER BY id")
    assert rows.splitlines() == ["from the backup:0", "after the deploy:7"]
    applied = project.applied()
    assert "shop.0004_check_items" in applied

    # SHOP_MIGRATION_FAILS for the web service: Compose puts it in the one-off container
    # the recipe migrates in (the running web container was created without it).
    failing = MigrateProject(
        env={**project.env, "SHOP_MIGRATION_FAILS": "1"}, base_image=project.base_image
    )
    restored = failing.just("db-restore", name, "--yes")
    out = restored.stdout + restored.stderr
    assert restored.returncode == 1, out
    assert "shop: behind by 3 (0001_initial → 0004_check_items)" in out, out
    assert f"migrating the staged copy: {MIGRATE} (in web)" in restored.stderr
    assert "shop.0004_check_items failed (SHOP_MIGRATION_FAILS is set)" in out  # migrate's
    assert "could not be migrated" in restored.stderr
    assert "the app services were down for" not in restored.stderr
    assert PASSWORD not in out

    # The live database: its rows and its migrations as before; the copy dropped.
    assert project.sql("SELECT name || ':' || price FROM shop_item ORDER BY id") == rows
    assert project.applied() == applied
    assert not project.staged_exists()
    # The app was never stopped: the same container, running since before.
    after = project.state("web")
    assert after["Running"] is True
    assert after["StartedAt"] == before["StartedAt"]
    assert project.manage("migrate", "--check").returncode == 0
