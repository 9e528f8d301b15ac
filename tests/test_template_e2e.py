"""The adoption guide, followed literally on the Django Velocity template, on a real engine.

tests/adoption_guide.py applies the guide (docs/adoption.md) to a copy of the template's own
docker-compose.yml, .env.example (copied to .env, unchanged) and justfile
(tests/template/, from rbrenaget/django-velocity); this test then takes step 5
(`docker compose up -d --build --wait`), runs the template's `just migrate`, and
checks what issue 18 asks: every `just db-*` recipe and the `db-backup` service work
with the template's .env unchanged (item 1), a setting in .env reaches the recipes and
the service alike (item 2), a quoted value in .env is read by just and Compose (item
3); and it measures both restore modes under an HTTP probe of the app every 0.1 s.

What is substituted, because the test machines reach no image registry (nothing else
of the template's files is changed):

- the app image: the template's dockerfiles/local/Dockerfile needs python:3.12-slim,
  uv from ghcr.io and Node.js; tests/template/app/ holds a stand-in Dockerfile (Python
  from Debian trixie, Django, daphne, django-environ, psycopg 3, celery and
  django-celery-beat 2.9 from PyPI, and a `uv` that runs `uv run CMD` as CMD) and a
  minimal Django project in the template's layout (config/, manage.py, one app): web
  serves it with daphne, celery-worker and celery-beat (the DatabaseScheduler) run the
  template's own commands, and the database comes from DATABASE_URL by django-environ
  (CONN_MAX_AGE 0), as in the template;
- redis:7-alpine: a Debian redis-server image built by the test (the compose file's
  `image:` line is the one line changed);
- POSTGRES_IMAGE (the guide's build argument) names the sandbox's postgres stand-in.

Opt-in like tests/test_docker_e2e.py (same VELOCITY_E2E_DOCKER gate, as root or the
docker group)::

    ../shared/docker-sandbox/start
    VELOCITY_E2E_DOCKER=1 POSTGRES_IMAGE=sandbox/postgres:15-bookworm \\
        .venv/bin/pytest -p no:cacheprovider -s tests/test_template_e2e.py

The project is named velocity-pg-template-e2e (VELOCITY_E2E_TEMPLATE_PROJECT for
another), never django-velocity; it publishes the template's ports (8000, 5432, 6379,
5678) on the host, so they must be free. The measured restore windows are printed and
written to VELOCITY_E2E_REPORT (a JSON file) when set. Ends with `docker compose down
-v --rmi local`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from adoption_guide import TEMPLATE, adopt
from conftest import just_program
from test_docker_e2e import ENGINE_TIMEOUT, chosen_base_image, skip_reason

pytestmark = pytest.mark.docker

PROJECT = os.environ.get("VELOCITY_E2E_TEMPLATE_PROJECT", "velocity-pg-template-e2e")
REDIS_IMAGE = f"{PROJECT}-redis:stand-in"
APP_FILES = ("manage.py", "config", "apps", "dockerfiles")
PROBE_URL = "http://127.0.0.1:8000/health/"
SETTINGS = 'BACKUP_MAX_COUNT=2\nBACKUP_SCHEDULE="@every 30s"\n'


@dataclass
class Template:
    folder: Path
    env: dict[str, str]
    results: dict[str, object] = field(default_factory=dict)

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(cmd),
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("docker", "compose", *args, check=check)

    def just(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(just_program(), *args, check=False)

    def sql(self, query: str) -> str:
        result = self.compose(
            "exec", "-T", "-u", "postgres", "db",
            "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-U", "postgres", "-d", "velocity",
            "-c", query,
        )  # fmt: skip
        return result.stdout.strip()

    def state(self, service: str) -> dict[str, object]:
        ids = self.run(
            "docker", "ps", "-a", "-q",
            "--filter", f"label=com.docker.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"{service}: containers {ids}"
        inspected = self.run("docker", "inspect", "-f", "{{json .State}}", ids[0]).stdout
        return dict(json.loads(inspected))

    def health(self, service: str) -> str:
        health = self.state(service).get("Health")
        return str(health.get("Status")) if isinstance(health, dict) else "none"

    def wait_for(self, what: str, ready: object, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(1)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service).stdout

    def backup_now(self) -> str:
        made = self.just("db-backup", "--json")
        assert made.returncode == 0, made.stdout + made.stderr
        return str(json.loads(made.stdout)["name"])

    def ticks(self) -> int:
        return int(self.sql("SELECT count(*) FROM notes_tick"))


def get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, urllib.error.URLError):
        return 0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("template") / PROJECT
    adopt(folder)  # steps 1 to 4 of the guide, on the template's files; .env = .env.example
    for name in APP_FILES:
        source = TEMPLATE / "app" / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            shutil.copyfile(source, folder / name)
    compose_file = folder / "docker-compose.yml"
    text = compose_file.read_text()
    assert text.count("image: redis:7-alpine\n") == 1
    compose_file.write_text(text.replace("image: redis:7-alpine\n", f"image: {REDIS_IMAGE}\n"))

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "COMPOSE_", "DATABASE_URL"))
    }
    env.update(
        COMPOSE_PROJECT_NAME=PROJECT,
        POSTGRES_IMAGE=chosen_base_image(),
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
        NO_COLOR="1",
    )
    t = Template(folder=folder, env=env)
    t.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)  # leftovers
    t.run("docker", "build", "-q", "-t", REDIS_IMAGE, str(TEMPLATE / "app" / "redis"))
    try:
        # An existing project's database is migrated: its db first, the template's
        # migrate in a one-off web container (else celery-beat's DatabaseScheduler
        # exits at start on the missing tables, the template's services having no
        # restart policy). Then step 5 of the guide, and the template's `just migrate`.
        t.run("docker", "compose", "up", "-d", "--build", "--wait", "db", timeout=2400)
        t.run(
            "docker", "compose", "run", "--rm", "web",
            "uv", "run", "python", "manage.py", "migrate", timeout=2400,
        )  # fmt: skip
        t.run("docker", "compose", "up", "-d", "--build", "--wait", timeout=2400)
        migrated = t.just("migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        yield t
    finally:
        t.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        t.run("docker", "rmi", REDIS_IMAGE, check=False)
        report = os.environ.get("VELOCITY_E2E_REPORT")
        if report and t.results:
            Path(report).write_text(json.dumps(t.results, indent=2) + "\n")


def test_the_adopted_project_runs_with_the_templates_env_unchanged(template: Template) -> None:
    """Item 1: .env is the template's .env.example as it is; every service runs, the app
    answers from the database, and the db-backup service backs up at once, healthy."""
    assert (template.folder / ".env").read_text() == (TEMPLATE / ".env.example").read_text()
    for service in ("db", "redis", "web", "celery-worker", "celery-beat", "db-backup"):
        assert template.state(service)["Running"] is True, service
    template.wait_for("web", lambda: get(PROBE_URL) == 200, timeout=120)
    template.wait_for(
        "the first scheduled backup", lambda: "run succeeded" in template.logs("db-backup")
    )
    log = template.logs("db-backup")
    assert "backup: ok velocity_" in log, log
    assert "postgres:postgres" not in log  # DATABASE_URL's password never shown
    template.wait_for("db-backup healthy", lambda: template.health("db-backup") == "healthy")
    # beat (DatabaseScheduler) and the worker write through the adopted db.
    template.wait_for("celery ticks", lambda: template.ticks() > 0, timeout=120)
    # The image gave /backups to postgres.
    owner = template.compose("exec", "-T", "db", "stat", "-c", "%U %a", "/backups").stdout.split()
    assert owner == ["postgres", "700"]


def test_every_recipe_works_with_the_templates_env_unchanged(template: Template) -> None:
    """just db-backup, -list, -status, -restore, -restore-undo, -cleanup (item 1)."""
    template.sql("CREATE TABLE marker (n int); INSERT INTO marker VALUES (1)")
    name = template.backup_now()
    listed = template.just("db-backup-list")
    assert listed.returncode == 0 and name in listed.stdout, listed.stdout + listed.stderr
    status = template.just("db-backup-status", "--max-age", "1h")
    assert status.returncode == 0, status.stdout + status.stderr

    template.sql("INSERT INTO marker VALUES (2)")
    restored = template.just("db-restore", name, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "the app services were down for" in restored.stderr
    assert template.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM marker") == "1"
    for service in ("web", "celery-worker", "celery-beat", "db-backup"):
        assert template.state(service)["Running"] is True, service

    undone = template.just("db-restore-undo", "--yes")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert template.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM marker") == "1,2"

    cleanup = template.just("db-backup-cleanup")
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    verify = template.just("db-backup-verify", name)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    logs = template.just("db-backup-logs")
    assert logs.returncode == 0 and "run succeeded" in logs.stdout
    template.wait_for("web", lambda: get(PROBE_URL) == 200, timeout=120)


@dataclass
class Probe:
    """GET the app every 0.1 s in a thread; each answer's start time and status."""

    answers: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.answers.append((started, get(PROBE_URL)))
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def summary(self) -> dict[str, float]:
        failed = [t for t, status in self.answers if status != 200]
        longest = 0.0
        start: float | None = None
        for t, status in self.answers:
            if status != 200 and start is None:
                start = t
            elif status == 200 and start is not None:
                longest = max(longest, t - start)
                start = None
        if start is not None:
            longest = max(longest, self.answers[-1][0] - start)
        return {
            "requests": len(self.answers),
            "failed": len(failed),
            "longest_window_s": round(longest, 2),
        }


def restore_under_probe(template: Template, *args: str) -> tuple[dict[str, float], str]:
    """The probe's summary, with the recipe's own figures; and the recipe's output."""
    probe = Probe()
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    time.sleep(2)  # some answers before
    started = time.monotonic()
    result = template.just("db-restore", *args, "--yes")
    took = time.monotonic() - started
    template.wait_for("web", lambda: get(PROBE_URL) == 200, timeout=120)
    time.sleep(2)  # some answers after
    probe.stop.set()
    thread.join()
    assert result.returncode == 0, result.stdout + result.stderr
    summary = probe.summary() | {"recipe_s": round(took, 1)}
    unavailable = re.search(r"it was unavailable for (\d+\.\d+) s", result.stdout)
    assert unavailable, result.stdout
    summary["db_unavailable_s"] = float(unavailable.group(1))
    down = re.search(r"the app services were down for (\d+\.\d) s", result.stderr)
    if down:
        summary["services_down_s"] = float(down.group(1))
    commits = re.search(r"^(\d+) transactions? committed in 'velocity' ", result.stdout, re.M)
    assert commits, result.stdout
    summary["commits_since_stage"] = int(commits.group(1))
    return summary, result.stdout + result.stderr


def test_both_restore_modes_under_an_http_probe(template: Template) -> None:
    """The app under a GET every 0.1 s (its health view runs SELECT 1 on a new
    connection, CONN_MAX_AGE 0): the stopping mode (`just db-restore NAME`) vs
    `--online`, three runs each: failed requests and the longest window of them."""
    name = template.backup_now()
    runs: dict[str, list[dict[str, float]]] = {"stopping": [], "online": []}
    for _ in range(3):
        for mode, extra in (("stopping", ()), ("online", ("--online",))):
            summary, stderr = restore_under_probe(template, name, *extra)
            if mode == "online":
                assert "no service is stopped" in stderr
                assert "services were down" not in stderr
            runs[mode].append(summary)
    engine = template.run("docker", "version", "-f", "{{.Server.Version}}").stdout.strip()
    compose = template.compose("version", "--short").stdout.strip()
    template.results = {
        "runs": runs,
        "engine": engine,
        "compose": compose,
        "base_image": template.env["POSTGRES_IMAGE"],
        "cpus": os.cpu_count(),
    }
    print(f"\nrestore modes under a probe every 0.1 s: {json.dumps(template.results)}")
    # Beat and the worker kept writing through the online swaps.
    before = template.ticks()
    template.wait_for("ticks after the swaps", lambda: template.ticks() > before, timeout=120)
    stopping = max(r["longest_window_s"] for r in runs["stopping"])
    online = max(r["longest_window_s"] for r in runs["online"])
    assert min(r["failed"] for r in runs["stopping"]) > 0  # the app was down
    assert online < stopping, runs  # generous: the online mode's window is the shorter


def test_a_setting_in_env_reaches_the_recipes_and_the_service(template: Template) -> None:
    """Items 2 and 3: with BACKUP_MAX_COUNT=2 and BACKUP_SCHEDULE="@every 30s" (quoted,
    as the guide says) added to .env, `just db-backup-cleanup` and `just
    db-backup-status` (in db) and the db-backup service keep and judge alike."""
    with (template.folder / ".env").open("a") as env:
        env.write(SETTINGS)
    template.run("docker", "compose", "up", "-d", "--wait", timeout=1800)
    for _ in range(3):
        template.backup_now()
        time.sleep(1.1)
    by_recipe = template.just("db-backup-cleanup", "--dry-run", "--json")
    assert by_recipe.returncode == 0, by_recipe.stderr
    by_service = template.compose(
        "exec", "-T", "db-backup", "velocity-pg", "cleanup", "--dry-run", "--json"
    )
    for result in (by_recipe, by_service):
        assert json.loads(result.stdout)["policy"]["max_count"] == 2, result.stdout
    status = template.just("db-backup-status", "--max-age", "auto", "--json")
    assert status.returncode == 0, status.stderr
    health = template.compose(
        "exec", "-T", "db-backup", "velocity-pg", "status", "--max-age", "auto", "--json"
    )
    ages = [json.loads(r.stdout)["max_age_seconds"] for r in (status, health)]
    assert ages[0] == ages[1] < 3600, ages  # by "@every 30s", not @daily's 95040 s
    for service in ("db", "db-backup"):
        shown = template.compose("exec", "-T", service, "env").stdout
        assert "BACKUP_MAX_COUNT=2\n" in shown and "BACKUP_SCHEDULE=@every 30s\n" in shown
