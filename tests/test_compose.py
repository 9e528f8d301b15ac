"""docker-compose.yml, Dockerfile.db and .env.example, read as files (no engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from velocity_pg import settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def db(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["db"]
    assert isinstance(service, dict)
    return service


def test_project_name(compose: dict[str, Any]) -> None:
    assert compose["name"] == "django-velocity"


def test_db_builds_from_dockerfile_db_with_the_base_image_as_argument(db: dict[str, Any]) -> None:
    assert db["build"]["context"] == "."
    assert db["build"]["dockerfile"] == "Dockerfile.db"
    assert (REPO / "Dockerfile.db").is_file()
    # The template's own image: an existing postgres-data volume keeps its major and C library.
    assert db["build"]["args"]["POSTGRES_IMAGE"] == "${POSTGRES_IMAGE:-postgres:16-alpine}"
    dockerfile = (REPO / "Dockerfile.db").read_text()
    assert "ARG POSTGRES_IMAGE=postgres:16-alpine\nFROM ${POSTGRES_IMAGE}\n" in dockerfile


def test_backup_and_data_volumes_are_named_volumes(
    compose: dict[str, Any], db: dict[str, Any]
) -> None:
    mounts = dict(m.split(":", 1) for m in db["volumes"])
    assert mounts["backup-data"] == "/backups"
    assert mounts["postgres-data"] == "/var/lib/postgresql/data"  # the template's names
    assert set(compose["volumes"]) >= {"backup-data", "postgres-data"}


def test_healthcheck_uses_pg_isready(db: dict[str, Any]) -> None:
    check = db["healthcheck"]
    assert check["test"][0] == "CMD-SHELL"
    assert "pg_isready" in check["test"][1]
    assert "-h 127.0.0.1" in check["test"][1]  # the real server, not the init-time one
    assert {"interval", "timeout", "retries"} <= set(check)


def test_settings_come_from_env_with_velocity_pg_defaults(db: dict[str, Any]) -> None:
    env = db["environment"]
    assert env["BACKUP_DIR"] == settings.DEFAULT_BACKUP_DIR == "/backups"
    for name, default in (
        ("BACKUP_MAX_AGE_DAYS", settings.DEFAULT_MAX_AGE_DAYS),
        ("BACKUP_MAX_COUNT", settings.DEFAULT_MAX_COUNT),
        ("BACKUP_MIN_KEEP", settings.DEFAULT_MIN_KEEP),
        ("BACKUP_NICE", settings.DEFAULT_DUMP_NICE),
    ):
        assert env[name] == f"${{{name}:-{default}}}"
    assert env["BACKUP_KEEP_PREVIOUS"] == "${BACKUP_KEEP_PREVIOUS:-true}"
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert env["POSTGRES_USER"] == "${POSTGRES_USER:-postgres}"
    assert env["POSTGRES_DB"] == "${POSTGRES_DB:-velocity}"


def test_no_scripts_are_mounted(db: dict[str, Any]) -> None:
    assert all(not m.split(":")[0].startswith((".", "/")) for m in db["volumes"])


def test_env_example_has_every_setting_compose_reads() -> None:
    example = (REPO / ".env.example").read_text()
    values = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    text = (REPO / "docker-compose.yml").read_text()
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert read == set(values), "docker-compose.yml and .env.example disagree"
    defaults = dict(re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", text))
    for name, default in defaults.items():
        assert values[name] == default, f"{name}: .env.example says {values[name]!r}"
    assert values["POSTGRES_PASSWORD"] == ""  # no default password


# -- the db-backup service (velocity-pg schedule) ---------------------------------------


@pytest.fixture(scope="module")
def db_backup(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["db-backup"]
    assert isinstance(service, dict)
    return service


def test_db_backup_is_the_db_image_running_the_scheduler(
    db: dict[str, Any], db_backup: dict[str, Any]
) -> None:
    assert db_backup["build"] == db["build"]  # the same image: pg_dump matches the server
    assert db_backup["command"] == ["velocity-pg", "schedule"]
    assert db_backup["user"] == "postgres"  # backups owned like `just db-backup`'s
    assert db_backup["init"] is True
    assert db_backup["restart"] == "unless-stopped"
    assert db_backup["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert db_backup["volumes"] == ["backup-data:/backups"]


def test_db_backup_connects_to_db_with_the_db_settings(
    db: dict[str, Any], db_backup: dict[str, Any]
) -> None:
    env, db_env = db_backup["environment"], db["environment"]
    assert env["PGHOST"] == "db"
    assert env["PGUSER"] == db_env["POSTGRES_USER"]
    assert env["PGPASSWORD"] == db_env["POSTGRES_PASSWORD"]
    assert env["PGDATABASE"] == db_env["POSTGRES_DB"]
    shared = [name for name in db_env if name.startswith(("BACKUP_", "AWS_"))]
    assert {"BACKUP_S3_URL", "AWS_SECRET_ACCESS_KEY", "BACKUP_SCHEDULE"} <= set(shared)
    for name in shared:  # retention, off-site copies, the schedule: the same as db's
        assert env[name] == db_env[name], name
    assert env["BACKUP_SCHEDULE"] == f"${{BACKUP_SCHEDULE:-{settings.DEFAULT_SCHEDULE}}}"
    assert env["BACKUP_VERIFY"] == f"${{BACKUP_VERIFY:-{settings.DEFAULT_VERIFY}}}"
    assert env["TZ"] == "${TZ:-UTC}"
    for name in ("BACKUP_PING_URL", "BACKUP_METRICS_FILE"):
        assert env[name] == f"${{{name}:-}}"


def test_db_backup_health_is_freshness(db_backup: dict[str, Any]) -> None:
    check = db_backup["healthcheck"]
    assert check["test"] == ["CMD", "velocity-pg", "status", "--max-age", "auto"]
    assert {"interval", "timeout", "retries", "start_period"} <= set(check)
