"""The adoption guide (docs/adoption.md), followed literally on the template's files.

tests/adoption_guide.py applies the guide's diffs, its `just` block and the steps it
gives in words to a copy of the template's own docker-compose.yml,
docker-compose.production.yml, .env.example and justfile (tests/template/, from
rbrenaget/django-velocity). No engine is needed: Compose's `config` resolves the
result (v2 where installed, else v1; where neither is, as on a fresh CI machine, the
same interpolation done here, checked against Compose where it runs), the real `just`
(PyPI rust-just) reads the
justfile and .env, and a stand-in `docker` (tests/docker_standin.py) runs the
recipes' `docker compose exec db velocity-pg ...` against the test server with the
environment Compose gives `db`. tests/test_template_e2e.py brings the same result up
on a real engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from adoption_guide import (
    COMPOSE_FILES,
    TEMPLATE,
    GuideError,
    adopt,
    apply_diff,
    copy_template,
    guide_steps,
    recipes,
)
from conftest import Target, just_program
from test_compose import service_environment

from velocity_pg import settings

#: What the guide adds to .env in tests of item 2 and 3 of issue 18 (quoted, as it says).
SETTINGS = 'BACKUP_MAX_COUNT=2\nBACKUP_SCHEDULE="@every 30s"\n'
SHARED = ("BACKUP_", "AWS_")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "django-velocity"
    adopt(folder)
    return folder


def installed_compose() -> list[str] | None:
    """`docker compose` (v2) or `docker-compose` (v1) where one runs, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$\$")


def interpolated(text: str, values: dict[str, str]) -> str:
    """Compose's interpolation of ${NAME}, ${NAME:-default}, ${NAME-default},
    ${NAME:?message} and $$, for machines without Compose."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, how, rest = match.groups()
        value = values.get(name)
        if (how in (":-", ":?") and not value) or (how in ("-", "?") and value is None):
            if how.endswith("?"):
                raise AssertionError(f"Compose would refuse the file: {name}: {rest}")
            return rest
        return value or ""

    return VARIABLE.sub(one, text)


def resolved_values(node: Any, values: dict[str, str]) -> Any:
    """Interpolate every string of the parsed file (Compose interpolates after parsing)."""
    if isinstance(node, str):
        return interpolated(node, values)
    if isinstance(node, dict):
        return {k: resolved_values(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [resolved_values(v, values) for v in node]
    return node


def config(project: Path, compose_file: str) -> dict[str, Any]:
    """The adopted project as Compose resolves it with the project's .env (where no
    Compose is installed, as its interpolation and YAML merge keys read it)."""
    command = installed_compose()
    if command is None:
        from dotenv import dotenv_values

        values = {k: v or "" for k, v in dotenv_values(project / ".env").items()}
        data = resolved_values(yaml.safe_load((project / compose_file).read_text()), values)
        for service in data["services"].values():
            env = service.get("environment") or {}
            if isinstance(env, dict):
                service["environment"] = {k: "" if v is None else str(v) for k, v in env.items()}
        return dict(data)
    result = subprocess.run(
        [*command, "-f", compose_file, "config"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "BACKUP_"))},
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_without_compose_the_files_resolve_as_compose_resolves_them(
    project: Path, compose_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interpolation used where no Compose is installed (a fresh CI machine) gives
    db and db-backup the environment Compose gives them."""
    if installed_compose() is None:
        pytest.skip("needs Docker Compose (v2 plugin or v1 docker-compose) to compare with")
    with (project / ".env").open("a") as env:
        env.write(SETTINGS)
    by_compose = config(project, compose_file)
    monkeypatch.setattr(sys.modules[__name__], "installed_compose", lambda: None)
    by_python = config(project, compose_file)
    for service in ("db", "db-backup"):
        assert service_environment(by_python, service) == service_environment(
            by_compose, service
        ), service


def shared(env: dict[str, str]) -> dict[str, str]:
    """The settings db and db-backup share: all but the status page's address, which is
    db-backup's alone (turning the page on must not recreate db)."""
    return {
        k: v
        for k, v in env.items()
        if (k.startswith(SHARED) or k == "TZ") and k != "BACKUP_HTTP_ADDR"
    }


def test_the_template_copy_is_the_templates_files() -> None:
    """Kept as fetched (with the commit and license in tests/template/LICENSE)."""
    notice = (TEMPLATE / "LICENSE").read_text()
    assert "7fc934cbcc734db2581ccf3188bc347b7ec2488b" in notice
    assert "MIT License" in notice
    compose = yaml.safe_load((TEMPLATE / "docker-compose.yml").read_text())
    assert compose["services"]["db"]["image"] == "postgres:16-alpine"
    assert "./scripts:/scripts:ro" in compose["services"]["db"]["volumes"]
    assert (
        "DATABASE_URL=postgres://postgres:postgres@db:5432/velocity"
        in (TEMPLATE / ".env.example").read_text()
    )
    assert "POSTGRES_PASSWORD" not in (TEMPLATE / ".env.example").read_text()


def test_the_guide_has_the_steps_this_test_follows() -> None:
    steps = guide_steps()
    assert [s.number for s in steps] == [1, 2, 3, 4, 5]
    assert [lang for lang, _ in steps[1].blocks] == ["diff", "diff"]
    assert [lang for lang, _ in steps[2].blocks] == ["just"]


def test_every_diff_of_the_guide_fits_both_compose_files(tmp_path: Path) -> None:
    """Step 2's diffs apply to each of the template's compose files as printed (its
    second diff once named dev's `POSTGRES_DB: velocity`, which the production file
    writes `${POSTGRES_DB:-velocity}`)."""
    copy_template(tmp_path)
    diffs = guide_steps()[1].code("diff")
    for name in COMPOSE_FILES:
        text = (tmp_path / name).read_text()
        for diff in diffs:
            text = apply_diff(text, diff, name)
        assert "<<: *backup-settings" in text


def test_a_diff_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GuideError, match="found 0 times"):
        apply_diff("a:\n  b: 1\n", "   a:\n-    c: 2\n", "here")


def test_the_adopted_compose_files(project: Path) -> None:
    for name in COMPOSE_FILES:
        data = yaml.safe_load((project / name).read_text())
        db, backup = data["services"]["db"], data["services"]["db-backup"]
        assert "image" not in db, name
        assert db["build"] == {
            "context": "./velocity-pg",
            "dockerfile": "Dockerfile.db",
            "args": {"POSTGRES_IMAGE": "${POSTGRES_IMAGE:-postgres:16-alpine}"},
        }
        assert db["volumes"] == ["postgres-data:/var/lib/postgresql/data", "backup-data:/backups"]
        assert backup["build"]["context"] == "./velocity-pg"
        assert backup["command"] == ["velocity-pg", "schedule"]
        # One source of backup settings: the same block merged into both (YAML merge).
        assert shared(db["environment"]) == shared(backup["environment"]), name
        assert db["environment"]["BACKUP_MAX_COUNT"] == "${BACKUP_MAX_COUNT:-50}"
        # The template's own values stay; the other services are untouched.
        assert db["environment"]["POSTGRES_USER"] in ("postgres", "${POSTGRES_USER:-postgres}")
        template = yaml.safe_load((TEMPLATE / name).read_text())
        for service in ("web", "redis", "celery-worker", "celery-beat"):
            assert data["services"][service] == template["services"][service], (name, service)
        assert set(data["volumes"]) == set(template["volumes"]), name
    # The build context the guide puts beside the project.
    for needed in ("Dockerfile.db", "pyproject.toml", "LICENSE", "README.md", "velocity_pg"):
        assert (project / "velocity-pg" / needed).exists(), needed


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_compose_reads_the_adopted_project_with_the_templates_env_unchanged(
    project: Path, compose_file: str
) -> None:
    """Issue 18, item 1: the template's .env (no POSTGRES_PASSWORD) works as it is, and
    db-backup reaches db's database with DATABASE_URL's password."""
    assert (project / ".env").read_text() == (TEMPLATE / ".env.example").read_text()
    resolved = config(project, compose_file)
    backup_env = service_environment(resolved, "db-backup")
    assert backup_env["DATABASE_URL"] == "postgres://postgres:postgres@db:5432/velocity"
    connection = settings.settings_from_values(backup_env).connection
    assert (connection.host, connection.port, connection.user, connection.dbname) == (
        "db", 5432, "postgres", "velocity",
    )  # fmt: skip
    assert connection.password == "postgres"
    db_env = service_environment(resolved, "db")
    in_db = settings.settings_from_values(db_env).connection
    assert (in_db.user, in_db.dbname) == ("postgres", "velocity")


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_a_setting_in_env_reaches_db_and_db_backup_alike(project: Path, compose_file: str) -> None:
    """Issue 18, item 2, on both of the template's compose files."""
    with (project / ".env").open("a") as env:
        env.write(SETTINGS)
    resolved = config(project, compose_file)
    db_env, backup_env = (service_environment(resolved, s) for s in ("db", "db-backup"))
    assert shared(db_env) == shared(backup_env)
    assert db_env["BACKUP_MAX_COUNT"] == backup_env["BACKUP_MAX_COUNT"] == "2"
    assert db_env["BACKUP_SCHEDULE"] == backup_env["BACKUP_SCHEDULE"] == "@every 30s"


def just(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [just_program(), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def test_just_reads_the_adopted_justfile_and_the_templates_env(project: Path) -> None:
    """Issue 18, item 3: the template's justfile (set dotenv-load) with its .env.example,
    and with the guide's quoted schedule added, lists every recipe; an unquoted one is
    what just refuses."""
    listed = just(project, "--list")
    assert listed.returncode == 0, listed.stderr
    for recipe in (
        "db-backup", "db-backup-list", "db-restore", "db-restore-undo", "db-backup-cleanup",
        "db-backup-status", "db-backup-verify", "db-backup-logs", "migrate", "up",
    ):  # fmt: skip
        assert re.search(rf"^\s+{recipe}\b", listed.stdout, re.M), recipe
    # `--evaluate` loads .env (`--list` does not).
    evaluated = just(project, "--evaluate", "compose")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout == "docker compose -f docker-compose.yml"
    with (project / ".env").open("a") as env:
        env.write(SETTINGS)
    assert just(project, "--evaluate", "compose").returncode == 0
    # What the guide warns of: the same value unquoted.
    unquoted = (TEMPLATE / ".env.example").read_text() + "BACKUP_SCHEDULE=@every 30s\n"
    (project / ".env").write_text(unquoted)
    refused = just(project, "--evaluate", "compose")
    assert refused.returncode != 0
    assert "failed to load environment file" in refused.stderr


def test_the_adopted_justfile_keeps_the_templates_other_recipes(project: Path) -> None:
    theirs = recipes((TEMPLATE / "justfile").read_text())
    ours = recipes((project / "justfile").read_text())
    replaced = {"db-backup", "db-backup-list", "db-backup-cleanup", "db-restore"}
    for name, recipe in theirs.items():
        if name not in replaced:
            assert ours[name].lines == recipe.lines, name
    added = set(ours) - set(theirs)
    assert added == {"db-restore-undo", "db-backup-verify", "db-backup-status", "db-backup-logs"}
    for name in replaced | added:
        assert "[positional-arguments]" in ours[name].lines, name


def test_the_recipes_and_the_service_read_the_same_settings(
    project: Path, target: Target, tmp_path: Path
) -> None:
    """Issue 18, item 2, end to end without an engine: with BACKUP_MAX_COUNT=2 and
    BACKUP_SCHEDULE="@every 30s" in .env, `just db-backup-cleanup` and `just
    db-backup-status` (the adopted justfile's, run in db by the stand-in with db's
    environment as Compose resolves it) and the scheduler's commands (db-backup's
    environment) keep 2 and judge freshness by the 30 s schedule alike."""
    with (project / ".env").open("a") as env:
        env.write(SETTINGS)
    resolved = config(project, "docker-compose.yml")
    envs = {s: service_environment(resolved, s) for s in ("db", "db-backup")}
    envs_file = tmp_path / "service-env.json"
    envs_file.write_text(json.dumps(envs))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = Path(__file__).with_name("docker_standin.py")
    (bin_dir / "docker").write_text(f'#!/bin/sh\nexec {sys.executable} {standin} "$@"\n')
    (bin_dir / "docker").chmod(0o755)
    running = tmp_path / "running"
    running.write_text("db\nweb\n")
    log = tmp_path / "calls.jsonl"
    env = target.env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        STANDIN_LOG=str(log),
        STANDIN_RUNNING=str(running),
        STANDIN_SERVICE_ENV=str(envs_file),
        NO_COLOR="1",
    )
    for _ in range(3):
        made = just(project, "db-backup", env=env)
        assert made.returncode == 0, made.stderr
        time.sleep(1.1)  # distinct names
    by_recipe = just(project, "db-backup-cleanup", "--dry-run", "--json", env=env)
    assert by_recipe.returncode == 0, by_recipe.stderr
    status = just(project, "db-backup-status", "--max-age", "auto", "--json", env=env)
    assert status.returncode == 0, status.stderr
    # Each ran velocity-pg in db as postgres (the template's recipes with its `-f
    # docker-compose.yml`, the ones copied from velocity-pg/justfile without).
    calls = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    assert len(calls) == 5
    for argv in calls:
        plain = argv[3:] if argv[1] == "-f" else argv[1:]
        assert plain[:5] == ["exec", "-u", "postgres", "db", "velocity-pg"], argv

    service = target.env() | {
        k: v for k, v in envs["db-backup"].items() if k != "BACKUP_DIR" and not k.startswith("PG")
    }
    del service["DATABASE_URL"]
    by_service = target.run("cleanup", "--dry-run", "--json", env=service)
    assert by_service.returncode == 0, by_service.stderr
    health = target.run("status", "--max-age", "auto", "--json", env=service)
    assert health.returncode == 0, health.stderr
    for result in (by_recipe, by_service):
        plan = json.loads(result.stdout)
        assert plan["policy"]["max_count"] == 2, plan["policy"]
        assert len(plan["delete"]) == 1
    ages = [json.loads(r.stdout)["max_age_seconds"] for r in (status, health)]
    assert ages[0] == ages[1] < 3600  # by "@every 30s", not @daily's 95040 s
