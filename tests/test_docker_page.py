"""The status page end to end on a real Docker engine (issue 24, "Done when").

The repository's own docker-compose.yml (db + db-backup, no override), its settings
in an env file as a user writes .env: ``BACKUP_HTTP_ADDR=0.0.0.0:8070`` and a free
``BACKUP_HTTP_PORT``. From the host: the page at ``http://127.0.0.1:<port>/`` shows
the scheduler's first backup and its charts, ``/healthz`` is 200, ``/metrics`` has
the backup metrics; the port is published on the host's loopback only; no secret of
the env file is served. Then, with ``BACKUP_HTTP_ADDR`` empty, the scheduler still
runs and nothing answers on the port.

The env file is given to Compose as ``COMPOSE_ENV_FILES`` (Compose v2.24+), not
written over a developer's own .env in the checkout. Opt-in like
tests/test_docker_e2e.py, whose helpers it uses::

    VELOCITY_E2E_DOCKER=1 POSTGRES_IMAGE=sandbox/postgres:15-bookworm \\
        .venv/bin/pytest -p no:cacheprovider tests/test_docker_page.py
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from page_support import Response, free_port, request
from test_docker_e2e import (
    ENGINE_TIMEOUT,
    PROJECT,
    REPO,
    Project,
    chosen_base_image,
    skip_reason,
)
from test_page_browser import artifacts, browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.docker

USER, DB = "velocity", "velocity_page"
PASSWORD = "page-Secret-pw-3c9e"
AWS_KEY_ID = "AKIAPAGETESTKEY7Q2Z"
AWS_SECRET = "page-aws-secret-0f4b8d2a61c7e9"
SECRETS = [PASSWORD, AWS_KEY_ID, AWS_SECRET]


def env_file_text(port: int, addr: str) -> str:
    return "\n".join(
        [
            f"POSTGRES_IMAGE={chosen_base_image()}",
            f"POSTGRES_USER={USER}",
            f"POSTGRES_PASSWORD={PASSWORD}",
            f"POSTGRES_DB={DB}",
            f"BACKUP_HTTP_ADDR={addr}",
            f"BACKUP_HTTP_PORT={port}",
            # Set, though no off-site store is: they reach the scheduler's environment.
            f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}",
            f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
            "",
        ]
    )


class Page(Project):
    port: int
    env_file: Path

    def set_addr(self, addr: str) -> None:
        self.env_file.write_text(env_file_text(self.port, addr))

    def container_id(self, service: str) -> str:
        ids = self.run(
            "docker", "ps", "-q",
            "--filter", f"label=com.docker.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def container_env(self, service: str) -> dict[str, str]:
        out = self.run(
            "docker", "inspect", "-f", "{{json .Config.Env}}", self.container_id(service)
        ).stdout
        return dict(item.split("=", 1) for item in json.loads(out))


def get(port: int, path: str) -> Response:
    return request(port, path, timeout=60)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False
    ).stdout.strip()
    major_minor = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if major_minor < (2, 24):
        pytest.skip(f"needs Compose v2.24+ (COMPOSE_ENV_FILES), not {version!r}")
    env_file = tmp_path_factory.mktemp("page") / "page.env"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "COMPOSE_", "AWS_"))
    }
    env.update(
        COMPOSE_PROJECT_NAME=PROJECT,
        COMPOSE_FILE=str(REPO / "docker-compose.yml"),
        COMPOSE_ENV_FILES=str(env_file),
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
    )
    p = Page(env=env, base_image=chosen_base_image())
    p.port = free_port()
    p.env_file = env_file
    p.set_addr("0.0.0.0:8070")
    p.compose("down", "-v", "--remove-orphans", "--rmi", "local")  # leftovers of a killed run
    try:
        # db-backup turns healthy once its first backup (at once: none yet) is fresh.
        p.run("docker", "compose", "up", "-d", "--build", "--wait", timeout=2400)
        p.wait_for_log("db-backup", "next run at", timeout=600)
        yield p
    finally:
        p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        label = f"label=com.docker.compose.project={PROJECT}"
        volumes = p.run("docker", "volume", "ls", "-q", "--filter", label).stdout.split()
        assert volumes == [], f"down -v left volumes {volumes}"


def first_backup(page: Page) -> str:
    log = page.wait_for_log("db-backup", "run succeeded", timeout=600)
    line = next(ln for ln in log.splitlines() if f"backup: ok {DB}_" in ln)
    return line.split("backup: ok ")[1].split()[0]


def test_the_env_file_reaches_the_scheduler(page: Page) -> None:
    env = page.container_env("db-backup")
    assert env["BACKUP_HTTP_ADDR"] == "0.0.0.0:8070"
    assert env["PGPASSWORD"] == PASSWORD and env["AWS_SECRET_ACCESS_KEY"] == AWS_SECRET


def test_the_page_shows_the_first_backup_and_its_charts(page: Page) -> None:
    name = first_backup(page)
    got = get(page.port, "/")
    assert got.status == 200, got.body[:500]
    assert got.headers["content-type"].startswith("text/html")
    assert name in got.body
    assert "<svg" in got.body and "pygal-chart" in got.body
    assert "velocity-pg: backups of" in got.body


def test_healthz_is_200_while_the_backup_is_fresh(page: Page) -> None:
    first_backup(page)
    got = get(page.port, "/healthz")
    assert got.status == 200, got.body


def test_metrics_are_prometheus_text_with_the_backup_metrics(page: Page) -> None:
    first_backup(page)
    got = get(page.port, "/metrics")
    assert got.status == 200, got.body[:500]
    assert got.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for line in got.body.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    assert values["velocity_pg_last_success_timestamp_seconds"] > time.time() - 3600
    assert values["velocity_pg_last_backup_size_bytes"] > 0
    assert values['velocity_pg_runs_total{result="success"}'] >= 1
    assert values['velocity_pg_backups{location="local"}'] >= 1
    assert "# TYPE velocity_pg_runs_total counter" in got.body


def test_the_port_is_published_on_the_host_loopback_only(page: Page) -> None:
    cid = page.container_id("db-backup")
    published = page.run("docker", "port", cid, "8070/tcp").stdout.split()
    assert published == [f"127.0.0.1:{page.port}"], published
    listening = page.run("ss", "-Htln", f"sport = :{page.port}").stdout
    local = [line.split()[3] for line in listening.splitlines() if line.strip()]
    assert local == [f"127.0.0.1:{page.port}"], listening
    # Not through the host's other addresses either.
    addresses = page.run("hostname", "-I").stdout.split()
    for address in [a for a in addresses if ":" not in a and not a.startswith("127.")]:
        with pytest.raises(OSError):
            socket.create_connection((address, page.port), timeout=5).close()


def test_no_secret_of_the_env_file_is_served(page: Page) -> None:
    first_backup(page)
    for path in ("/", "/metrics", "/healthz", "/nothing-here"):
        body = get(page.port, path).body
        for secret in SECRETS:
            assert secret not in body, (path, secret)


def test_the_page_in_chromium_from_the_container(
    page: Page,
    browser: Any,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    name = first_backup(page)
    browser.get(f"http://127.0.0.1:{page.port}/")
    assert browser.title.startswith("velocity-pg: backups of")
    assert browser.find_element(By.ID, "state").get_attribute("data-state") == "green"
    rows = browser.find_elements(By.CSS_SELECTOR, "#backups tbody tr")
    assert name in [r.get_attribute("data-name") for r in rows]
    charts = browser.find_elements(By.CSS_SELECTOR, "figure svg.pygal-chart")
    assert len(charts) == 4
    for chart in charts:
        assert chart.rect["width"] > 200 and chart.rect["height"] > 80, chart.rect
    browser.save_screenshot(str(artifacts(tmp_path) / "status-page-docker.png"))
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


def test_with_the_page_off_the_scheduler_runs_and_nothing_answers(page: Page) -> None:
    """Last: `up -d` with BACKUP_HTTP_ADDR emptied recreates db-backup, and db not at
    all (Compose still publishes the port; nothing behind it answers)."""
    first_backup(page)
    db_started = page.state("db")["StartedAt"]
    page.set_addr("")
    # As a user does after editing .env: the whole project.
    page.run("docker", "compose", "up", "-d", "--wait", timeout=1200)
    # Only db-backup was recreated: the database kept running (the setting is not db's).
    assert page.state("db")["StartedAt"] == db_started
    assert page.container_env("db-backup")["BACKUP_HTTP_ADDR"] == ""
    assert page.state("db-backup")["Running"] is True
    log = page.wait_for_log("db-backup", "next run at", timeout=300)
    assert "status page on" not in log, log
    page.wait_for_health("db-backup", "healthy", timeout=300)
    for path in ("/", "/healthz"):
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            get(page.port, path)
