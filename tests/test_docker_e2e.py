"""End to end against a real Docker engine: Dockerfile.db, docker-compose.yml, the justfile.

Builds the image, brings the project up with stand-in app services (a compose
override: web, celery-worker, celery-beat running `sleep infinity` from the base
image; celery-beat is stopped, so a restore must leave it stopped), and runs every
recipe through the real `just`. Ends with `docker compose down -v --rmi local`.

Opt-in, because it builds an image (about a minute, more on a cold cache) and
needs the engine's socket (root, or the docker group)::

    ../shared/docker-sandbox/start                      # or any engine
    VELOCITY_E2E_DOCKER=1 POSTGRES_IMAGE=sandbox/postgres:15-bookworm \\
        .venv/bin/pytest -p no:cacheprovider tests/test_docker_e2e.py

POSTGRES_IMAGE is the base image (default: docker-compose.yml's, the official
postgres:16-alpine, pulled if missing); the project machines run it on both
stand-ins, sandbox/postgres:15-bookworm and sandbox/postgres:17-trixie. The last
test adopts velocity-pg in a stock Django Velocity setup (its own project,
``<name>-adopt``): the template's `image:` db service with an old-style backup,
then this repository's compose file on the same volumes. The project is named velocity-pg-e2e,
never django-velocity: the final `down -v` must not delete a real project's
backups (``VELOCITY_E2E_PROJECT`` gives another name, for runs sharing an engine).
Tests of the restore and cleanup recipes skip while the image's
velocity-pg lacks those verbs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import just_program

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
ENABLE = "VELOCITY_E2E_DOCKER"
# Several runs may share one engine: VELOCITY_E2E_PROJECT names each its own project.
PROJECT = os.environ.get("VELOCITY_E2E_PROJECT", "velocity-pg-e2e")
USER, DB, PASSWORD = "velocity", "velocity_e2e", "e2e-Secret-pw"
MAX_COUNT = 3
APP = ["web", "celery-worker", "celery-beat"]
# Compose v1 gives up on an engine call after 60 s; a busy engine on the slow vfs
# driver (creating or removing a container copies its whole image) can take longer.
ENGINE_TIMEOUT = "600"


def chosen_base_image() -> str:
    return os.environ.get("POSTGRES_IMAGE") or "postgres:16-alpine"


def skip_reason() -> str | None:
    if os.environ.get(ENABLE) != "1":
        return f"Docker end-to-end test is opt-in: set {ENABLE}=1 (it builds an image)"
    if shutil.which("docker") is None:
        return "no `docker` command"
    info = subprocess.run(["docker", "info"], capture_output=True, check=False)
    if info.returncode != 0:
        return (
            "no Docker engine answers (`docker info` failed; start one, e.g. "
            f"../shared/docker-sandbox/start): {info.stderr.decode().strip()[:200]}"
        )
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if compose.returncode != 0:
        return "`docker compose` is not available"
    return None


@dataclass
class Project:
    env: dict[str, str]
    base_image: str

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(cmd),
            env=self.env,
            cwd=REPO,
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
        return self.run(just_program(), "--justfile", str(REPO / "justfile"), *args, check=False)

    def sql(self, query: str, user: str = USER, db: str = DB) -> str:
        result = self.compose(
            "exec", "-T", "-u", "postgres", "db",
            "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-U", user, "-d", db, "-c", query,
        )  # fmt: skip
        return result.stdout.strip()

    def db_sh(self, script: str, user: str = "postgres") -> str:
        return self.compose("exec", "-T", "-u", user, "db", "sh", "-c", script).stdout

    def backups(self) -> list[str]:
        result = self.just("db-backup-list", "--json")
        assert result.returncode == 0, result.stderr
        return [b["name"] for b in json.loads(result.stdout)["backups"]]

    def container(self, service: str) -> tuple[bool, str]:
        """(running, started_at) of the service's container."""
        ids = self.run(
            "docker", "ps", "-a", "-q",
            "--filter", f"label=com.docker.compose.project={self.env['COMPOSE_PROJECT_NAME']}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"{service}: containers {ids}"
        state = json.loads(self.run("docker", "inspect", "-f", "{{json .State}}", ids[0]).stdout)
        return bool(state["Running"]), str(state["StartedAt"])

    def state(self, service: str) -> dict[str, object]:
        ids = self.run(
            "docker", "ps", "-a", "-q",
            "--filter", f"label=com.docker.compose.project={self.env['COMPOSE_PROJECT_NAME']}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"{service}: containers {ids}"
        inspected = self.run("docker", "inspect", "-f", "{{json .State}}", ids[0]).stdout
        return dict(json.loads(inspected))

    def health(self, service: str) -> str:
        health = self.state(service).get("Health")
        return str(health.get("Status")) if isinstance(health, dict) else "none"

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service).stdout

    def wait_for_log(self, service: str, needle: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.logs(service)
            if needle in text:
                return text
            assert time.monotonic() < deadline, f"{needle!r} not in {service}'s log:\n{text}"
            time.sleep(1)

    def wait_for_health(self, service: str, want: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.health(service) != want:
            assert time.monotonic() < deadline, (want, self.state(service))
            time.sleep(1)

    def backup_now(self) -> str:
        """`just db-backup --json`; the new backup's name."""
        backup = self.just("db-backup", "--json")
        assert backup.returncode == 0, backup.stderr
        return str(json.loads(backup.stdout)["name"])

    def apps(self) -> dict[str, tuple[bool, str]]:
        return {service: self.container(service) for service in APP}

    def has_verb(self, verb: str) -> bool:
        result = self.compose(
            "exec", "-T", "-u", "postgres", "db", "velocity-pg", verb, "--help", check=False
        )
        return result.returncode == 0

    def needs_verb(self, verb: str) -> None:
        if not self.has_verb(verb):
            pytest.skip(f"needs the `velocity-pg {verb}` verb, not in this checkout yet")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    base_image = chosen_base_image()
    override = tmp_path_factory.mktemp("compose") / "e2e.override.yml"
    app: dict[str, object] = {
        "image": base_image,
        "entrypoint": ["sleep", "infinity"],
        "init": True,
        "depends_on": ["db"],
    }
    # The base image declares VOLUMEs (PGDATA): a tmpfs there instead, or each app
    # stand-in would leave an anonymous volume behind at every `down` without -v.
    inspect = ["docker", "image", "inspect", "-f", "{{json .Config.Volumes}}", base_image]
    found = subprocess.run(inspect, capture_output=True, text=True, check=False)
    if found.returncode == 0 and found.stdout.strip() not in ("", "null"):
        app["tmpfs"] = sorted(json.loads(found.stdout))
    services: dict[str, object] = {service: app for service in APP}
    # The real db-backup service, only probed more often, so `up --wait` sees it
    # healthy within seconds of its first backup instead of after a minute.
    services["db-backup"] = {
        "healthcheck": {
            "test": ["CMD", "velocity-pg", "status", "--max-age", "auto"],
            "interval": "3s",
            "timeout": "30s",
            "retries": 2,
            "start_period": "5m",
        }
    }
    override.write_text(yaml.safe_dump({"services": services}))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "COMPOSE_"))
    }
    env.update(
        COMPOSE_PROJECT_NAME=PROJECT,
        COMPOSE_FILE=f"{REPO / 'docker-compose.yml'}{os.pathsep}{override}",
        POSTGRES_IMAGE=base_image,
        POSTGRES_USER=USER,
        POSTGRES_PASSWORD=PASSWORD,
        POSTGRES_DB=DB,
        BACKUP_MAX_COUNT=str(MAX_COUNT),
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
    )
    p = Project(env=env, base_image=base_image)
    p.compose("down", "-v", "--remove-orphans", "--rmi", "local")  # leftovers of a killed run
    try:
        # Building on a busy 2-core machine with the vfs driver can take minutes.
        p.run("docker", "compose", "up", "-d", "--build", "--wait", timeout=1800)
        p.compose("stop", "celery-beat")  # an app service that is not running
        # db-backup's first run starts at once (no backup yet): let it finish, so
        # its cleanup never races the recipes tested below.
        p.wait_for_log("db-backup", "next run at")
        yield p
    finally:
        p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        label = f"label=com.docker.compose.project={PROJECT}"
        volumes = p.run("docker", "volume", "ls", "-q", "--filter", label).stdout.split()
        assert volumes == [], f"down -v left volumes {volumes}"


def test_image_has_velocity_pg_for_root_and_postgres(project: Project) -> None:
    assert project.db_sh("stat -c '%U %G %a' /backups").split() == ["postgres", "postgres", "700"]
    for user in ("root", "postgres"):
        out = project.db_sh("command -v velocity-pg; velocity-pg --version", user=user)
        assert out.splitlines()[0] == "/usr/local/bin/velocity-pg"
        assert out.splitlines()[1].startswith("velocity-pg, version ")
        assert project.db_sh("age --version", user=user).strip()  # for encrypted off-site copies
    assert project.db_sh("ls -A /tmp") == ""  # the build context is gone
    assert project.db_sh("test ! -e /scripts && echo none").strip() == "none"


def test_db_backup_service_backs_up_at_once_and_turns_healthy(project: Project) -> None:
    """`docker compose up -d` is all it takes: a backup within the first minute, healthy."""
    state = project.state("db-backup")
    assert state["Running"] is True
    started = datetime.fromisoformat(str(state["StartedAt"])[:26].rstrip("Z") + "+00:00")
    log = project.wait_for_log("db-backup", "run succeeded")
    assert "no backup yet in /backups: running now" in log
    for step in (f"backup: ok {DB}_", "cleanup: ok ", f"verify: ok {DB}_"):
        assert step in log, log
    assert PASSWORD not in log
    # The first scheduled backup, by the time in its name, within a minute of the start.
    line = next(ln for ln in log.splitlines() if f"backup: ok {DB}_" in ln)
    name = line.split("backup: ok ")[1].split()[0]
    made = datetime.strptime(name[-22:], "%Y-%m-%d_%H%M%S.dump").replace(tzinfo=UTC)
    assert (made - started).total_seconds() < 60, (made, started)
    assert name in project.backups()
    owner = project.db_sh(f"stat -c '%U %a' /backups/{name}").split()
    assert owner == ["postgres", "600"]  # like `just db-backup`'s
    project.wait_for_health("db-backup", "healthy")
    logs = project.just("db-backup-logs")
    assert logs.returncode == 0 and "run succeeded" in logs.stdout


def test_db_backup_health_is_freshness_by_the_schedule(project: Project) -> None:
    time.sleep(2)  # the newest backup is now surely more than 1 s old (names: whole seconds)
    check = project.compose(
        "exec", "-T", "db-backup", "velocity-pg", "status", "--max-age", "auto", check=False
    )
    assert check.returncode == 0, check.stderr
    tight = project.compose(
        "exec", "-T", "-e", "BACKUP_HEALTH_MAX_AGE=1s", "db-backup",
        "velocity-pg", "status", "--max-age", "auto", check=False,
    )  # fmt: skip
    assert tight.returncode == 1, tight.stdout + tight.stderr
    assert f"STALE: the newest backup of database {DB!r} is older than 1s" in tight.stderr
    assert "(BACKUP_HEALTH_MAX_AGE)" in tight.stderr


def test_db_backup_turns_unhealthy_when_there_is_no_fresh_backup(project: Project) -> None:
    """Docker's own health status follows the backups: red while none is fresh, green
    again once one is (the backups are only moved aside, then back)."""
    project.wait_for_health("db-backup", "healthy")
    project.db_sh(
        "mkdir /backups/held-aside && mv /backups/*.dump /backups/*.dump.json /backups/held-aside/"
    )
    try:
        project.wait_for_health("db-backup", "unhealthy")
        assert project.state("db-backup")["Running"] is True  # red, never restarted for it
    finally:
        project.db_sh("mv /backups/held-aside/* /backups/ && rmdir /backups/held-aside")
    project.wait_for_health("db-backup", "healthy")


def test_backup_lands_in_the_volume_and_list_shows_it(project: Project) -> None:
    project.sql("CREATE TABLE IF NOT EXISTS notes (id int PRIMARY KEY, body text)")
    result = project.just("db-backup")
    assert result.returncode == 0, result.stderr
    assert "Backup created: velocity_" in result.stdout
    name = result.stdout.split("Backup created: ")[1].split()[0]

    listed = project.just("db-backup-list")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout
    assert name in project.backups()  # extra arguments (--json) pass through

    # In the named volume itself, seen from a container that only mounts it.
    volume = f"{PROJECT}_backup-data"
    out = project.run(
        "docker", "run", "--rm", "-v", f"{volume}:/b:ro", "--entrypoint", "stat",
        project.base_image, "-c", "%U %a %s", f"/b/{name}",
    ).stdout.split()  # fmt: skip
    assert out[:2] == ["postgres", "600"]
    assert int(out[2]) > 0


def test_verify_drill_and_status_in_the_container(project: Project) -> None:
    name = project.backups()[0]
    verified = project.just("db-backup-verify", "--restore", name)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"ok      {name}" in verified.stdout
    assert "restore drill" in verified.stdout
    status = project.just("db-backup-status", "--json", "--max-age", "1d")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["newest"]["last_verification"]["method"] == "restore"
    assert report["stale"] is False


def test_backup_copied_out_and_back_in_as_the_readme_says(project: Project, tmp_path: Path) -> None:
    name = project.backups()[0]
    project.compose("cp", f"db:/backups/{name}", str(tmp_path))
    copied = tmp_path / name
    inside = project.db_sh(f"sha256sum /backups/{name}").split()[0]
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == inside

    other = f"{DB}_2001-02-03_040506.dump"
    copied.rename(tmp_path / other)
    project.compose("cp", str(tmp_path / other), "db:/backups/")
    project.compose(
        "exec", "-T", "db", "sh", "-c",
        "chown postgres:postgres /backups/*.dump && chmod 0600 /backups/*.dump",
    )  # fmt: skip
    assert other in project.backups()
    assert project.db_sh(f"sha256sum /backups/{other}").split()[0] == inside
    project.db_sh(f"rm /backups/{other}")


def test_exit_statuses_pass_through(project: Project) -> None:
    usage = project.just("db-backup-list", "--no-such-option")
    assert usage.returncode == 2, usage.stderr
    missing = project.just("db-backup", "--json", "extra-argument")
    assert missing.returncode == 2, missing.stderr


def downtime(stderr: str) -> float:
    """The recipe's own measure: from the first app service stopped to the last one started."""
    match = re.search(r"the app services were down for (\d+\.\d) s", stderr)
    assert match, stderr
    return float(match.group(1))


def notes_then_backup(project: Project, rows: int, body: str) -> str:
    """A fresh table ``notes`` of ROWS rows (body: an SQL expression of g), backed up by
    `just db-backup`; returns the backup's name."""
    project.sql(
        "DROP TABLE IF EXISTS notes; CREATE TABLE notes (id int PRIMARY KEY, body text); "
        f"INSERT INTO notes SELECT g, {body} FROM generate_series(1, {rows}) g"
    )
    return project.backup_now()


def test_restore_stages_then_stops_the_apps_only_for_the_swap(project: Project) -> None:
    project.needs_verb("restore")
    name = notes_then_backup(project, 1000, "'note ' || g")
    project.sql("DELETE FROM notes WHERE id > 10; CREATE TABLE later (x int)")
    # What the stand-ins (and db-backup, paused for the swap too) take to stop and
    # start, without any restore.
    started = time.monotonic()
    project.compose("stop", "web", "celery-worker", "db-backup")
    project.compose("start", "web", "celery-worker", "db-backup")
    own = time.monotonic() - started
    before = project.apps()
    backup_before = project.container("db-backup")
    assert [running for running, _ in before.values()] == [True, True, False]

    result = project.just("db-restore", name)
    assert result.returncode == 0, result.stderr
    assert project.sql("SELECT count(*), sum(id) FROM notes") == "1000|500500"
    assert project.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'later'") == "0"
    after = project.apps()
    for service in ("web", "celery-worker"):  # stopped, then started again
        assert after[service][0], f"{service} is not running after the restore"
        assert after[service][1] != before[service][1], f"{service} was not restarted"
    assert after["celery-beat"] == before["celery-beat"]  # not running: left alone
    backup_after = project.container("db-backup")  # paused for the swap, running again
    assert backup_after[0] and backup_after[1] != backup_before[1], "db-backup was not restarted"
    # The copy was built before anything stopped; the swap alone ran with the app down.
    err = result.stderr
    assert err.index("restoring into a new database") < err.index("stopping web celery-worker")
    assert err.index("stopping web celery-worker") < err.index("using velocity_pg_staging_")
    assert "starting web celery-worker" in err
    # The recipe reads the stage's --json (its migration drift) and says what it staged.
    assert f"staged {name} as velocity_pg_staging_" in err
    assert "restore --undo" in result.stdout  # the previous contents were kept
    seconds = downtime(err)
    started = time.monotonic()
    project.compose("exec", "-T", "-u", "postgres", "db", "velocity-pg", "--version")
    exec_alone = time.monotonic() - started
    print(
        f"\ne2e: app services down for {seconds} s during `just db-restore`; "
        f"stopping and starting them alone takes {own:.1f} s; one `docker compose exec` "
        f"of velocity-pg --version takes {exec_alone:.1f} s"
    )
    # The issue's target: at most 5 s over the services' own stop and start (measured
    # just above), whatever the database's size. Here it was 0.7 s over (4.5 s, 3.8 s).
    assert seconds <= own + 5, err

    # A mistaken restore is undone: the contents from before it, the apps restarted.
    undo = project.just("db-restore-undo", "--yes")
    assert undo.returncode == 0, undo.stderr
    assert project.sql("SELECT count(*) FROM notes") == "10"
    assert project.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'later'") == "1"
    print(f"e2e: app services down for {downtime(undo.stderr)} s during `just db-restore-undo`")
    again = project.apps()
    for service in ("web", "celery-worker"):
        assert again[service][0] and again[service][1] != after[service][1], service
    # And the undo is undone: the restored data again.
    redo = project.just("db-restore-undo", "--yes")
    assert redo.returncode == 0, redo.stderr
    assert project.sql("SELECT count(*), sum(id) FROM notes") == "1000|500500"
    status = project.just("db-backup-status")
    assert "Rollback point: contents before the undo" in status.stdout, status.stdout


def ctrl_c_when(project: Project, needle: str, *args: str) -> tuple[int, str]:
    """Run `just ARGS` in its own process group and Ctrl+C it (SIGINT to the group, as a
    terminal does) once ``needle`` shows in its stderr; return its status and stderr."""
    proc = subprocess.Popen(
        [just_program(), "--justfile", str(REPO / "justfile"), *args],
        env=project.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 600
        for line in proc.stderr:
            seen.append(line)
            if needle in line:
                os.killpg(proc.pid, signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(seen)
        else:
            raise AssertionError(f"{needle!r} never showed:\n{''.join(seen)}")
        rest = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, "".join(seen) + rest


def test_ctrl_c_at_each_step_of_db_restore(project: Project) -> None:
    """On the real engine: Ctrl+C in the countdown or while staging stops nothing and
    changes nothing; Ctrl+C while the app is down still starts it again. Nothing is lost."""
    project.needs_verb("restore")
    name = notes_then_backup(project, 300_000, "md5(g::text)")
    project.sql("DELETE FROM notes WHERE id > 10")
    before = project.apps()

    # 1. In the countdown: exit 130, nothing stopped, nothing changed.
    status, err = ctrl_c_when(project, "press Ctrl+C to cancel", "db-restore", name)
    assert status == 130, err
    assert "interrupted; nothing was changed" in err
    assert project.apps() == before
    assert project.sql("SELECT count(*) FROM notes") == "10"

    # 2. While the copy is built: the app was never stopped, the database is unchanged.
    status, err = ctrl_c_when(project, "restoring into a new database", "db-restore", name, "--yes")
    assert status == 130, err
    assert "the app was not stopped and the database was not changed" in err
    assert "stopping web" not in err
    assert project.apps() == before
    assert project.sql("SELECT count(*) FROM notes") == "10"

    # 3. While the app is down: the services start again; the swap is all or nothing.
    status, err = ctrl_c_when(project, "stopping web", "db-restore", name, "--yes")
    assert status == 130, err
    assert "starting web celery-worker" in err
    after = project.apps()
    for service in ("web", "celery-worker"):
        assert after[service][0], f"{service} is not running after Ctrl+C"
    assert project.container("db-backup")[0], "db-backup is not running after Ctrl+C"
    assert project.sql("SELECT count(*) FROM notes") in ("10", "300000")

    # And a plain run afterwards restores, whatever the interrupted ones left.
    done = project.just("db-restore", name, "--yes")
    assert done.returncode == 0, done.stderr
    assert project.sql("SELECT count(*) FROM notes") == "300000"
    project.sql("DROP TABLE notes")


def test_restore_of_corrupt_file_leaves_app_and_data(project: Project) -> None:
    project.needs_verb("restore")
    project.sql(
        "DROP TABLE IF EXISTS notes; CREATE TABLE notes (id int PRIMARY KEY, body text); "
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g"
    )
    good = project.backups()[0]
    corrupt = f"{DB}_2000-01-01_000000.dump"
    project.db_sh(
        f"head -c 64 /backups/{good} > /backups/{corrupt} && chmod 600 /backups/{corrupt}"
    )
    before = project.apps()

    result = project.just("db-restore", corrupt)
    assert result.returncode == 1, result.stderr
    assert "velocity-pg: error:" in result.stderr
    assert project.apps() == before
    assert project.sql("SELECT count(*) FROM notes") == "50"
    project.db_sh(f"rm /backups/{corrupt}")


def test_cleanup_prunes_by_age_and_count(project: Project) -> None:
    project.needs_verb("cleanup")
    for _ in range(MAX_COUNT + 1):
        assert project.just("db-backup").returncode == 0
    # An earlier test restored a backup without the table `later`: the backups since look
    # wrong next to the last good one, and a suspect backup never rotates a good one out
    # (docs/retention.md). The change was intended: say so, as a user would.
    newest = json.loads(project.just("db-backup-list", "--json").stdout)["backups"][0]
    if newest["suspect"] is not None:
        accepted = project.compose(
            "exec", "-T", "-u", "postgres", "db", "velocity-pg", "accept", newest["name"]
        )
        assert accepted.returncode == 0, accepted.stderr
    # Two backups with old modification times (cleanup's age is by mtime).
    old = [f"{DB}_2001-01-01_000000.dump", f"{DB}_2001-01-02_000000.dump"]  # this database's
    newest = project.backups()[0]
    for name in old:
        project.db_sh(
            f"cp /backups/{newest} /backups/{name} && touch -d 2001-01-01 /backups/{name}"
        )
    everything = project.backups()

    dry = project.just("db-backup-cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert project.backups() == everything

    result = project.just("db-backup-cleanup")
    assert result.returncode == 0, result.stderr
    left = project.backups()
    assert not set(old) & set(left)
    assert len(left) == MAX_COUNT
    assert newest in left


def test_stopping_db_backup_is_clean(project: Project) -> None:
    started = time.monotonic()
    project.compose("stop", "db-backup")
    took = time.monotonic() - started
    state = project.state("db-backup")
    assert state["Running"] is False
    assert state["ExitCode"] == 0, state  # not killed after the 10 s grace (137)
    assert took < 10, took
    # The image's stop signal is SIGINT (as the official postgres image's); both stop cleanly.
    stopped = r"stopping \(SIG(INT|TERM)\); nothing is left half-done"
    assert re.search(stopped, project.logs("db-backup"))
    assert project.db_sh("ls -A /backups | grep -c '^.velocity-tmp-' || true").strip() == "0"
    project.compose("start", "db-backup")


def test_backups_survive_down_without_v(project: Project) -> None:
    """docs/docker.md's promise: `down` keeps the backup-data volume (`down -v` does not)."""
    kept = project.backups()
    assert kept
    project.compose("down")
    project.compose("up", "-d", "--wait")
    project.compose("stop", "celery-beat")
    assert project.backups() == kept


LARGE = "VELOCITY_E2E_LARGE_MB"


@pytest.mark.skipif(
    not os.environ.get(LARGE), reason=f"the large restore is opt-in: set {LARGE}=1024 (minutes)"
)
def test_downtime_of_a_large_restore_is_the_swap_only(project: Project) -> None:
    """The benchmark's row on a real engine: a database of VELOCITY_E2E_LARGE_MB (1 GB for
    the issue), `just db-restore` against the seed's sequence (the app stopped for the
    whole drop, create and pg_restore)."""
    project.needs_verb("restore")
    want = int(os.environ[LARGE]) * 1024 * 1024
    project.sql("DROP TABLE IF EXISTS big")
    project.sql("CREATE TABLE big (id bigint PRIMARY KEY, a text, b text)")
    rows = 0
    while int(project.sql("SELECT pg_database_size(current_database())")) < want:
        # Hex digests: text that compresses about as badly as real data's.
        project.sql(
            "INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text), "
            "md5((g * 31)::text) || md5((g * 37)::text) "
            f"FROM generate_series({rows + 1}, {rows + 500_000}) g"
        )
        rows += 500_000
    size = int(project.sql("SELECT pg_database_size(current_database())"))
    name = project.backup_now()
    apps = ["web", "celery-worker", "db-backup"]
    started = time.monotonic()
    project.compose("stop", *apps)
    project.compose("start", *apps)
    own = time.monotonic() - started

    result = project.just("db-restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    seconds = downtime(result.stderr)
    assert project.sql("SELECT count(*) FROM big") == str(rows)

    # The seed's restore.sh: stop the app, terminate, drop, create, pg_restore, start.
    started = time.monotonic()
    project.compose("stop", *apps)
    project.sql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{DB}' "
        "AND pid <> pg_backend_pid()",
        db="postgres",
    )
    project.sql(f"DROP DATABASE {DB}", db="postgres")
    project.sql(f"CREATE DATABASE {DB} OWNER {USER}", db="postgres")
    project.compose(
        "exec", "-T", "-u", "postgres", "db",
        "pg_restore", "-U", USER, "-d", DB, "--no-owner", f"/backups/{name}",
    )  # fmt: skip
    project.compose("start", *apps)
    seed = time.monotonic() - started
    assert project.sql("SELECT count(*) FROM big") == str(rows)
    print(
        f"\ne2e: {size / 2**20:.0f} MiB: app services down for {seconds} s during `just "
        f"db-restore` (their own stop and start: {own:.1f} s); the seed's sequence: {seed:.1f} s"
    )
    assert seconds <= own + 5, result.stderr
    project.sql("DROP TABLE big")


# -- adopting velocity-pg in an existing Django Velocity project ---------------------

# Two days old: within the default 30 days' retention, so the scheduled run's cleanup
# keeps it, and older than one @daily period, so db-backup backs up at once on start.
OLD_BACKUP = f"velocity_{datetime.now(UTC) - timedelta(days=2):%Y-%m-%d}_030405.dump"


def stock_compose(base_image: str) -> dict[str, object]:
    """The template's db service as it stands before adoption: `image:`, its scripts mounted."""
    return {
        "services": {
            "db": {
                "image": base_image,
                "environment": {
                    "POSTGRES_DB": "${POSTGRES_DB:-velocity}",
                    "POSTGRES_USER": "${POSTGRES_USER:-postgres}",
                    "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
                },
                "volumes": [
                    "postgres-data:/var/lib/postgresql/data",
                    "backup-data:/backups",
                    "./scripts:/scripts:ro",
                ],
                "healthcheck": {
                    "test": ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres -d velocity"],
                    "interval": "2s",
                    "timeout": "5s",
                    "retries": 30,
                },
            }
        },
        "volumes": {"postgres-data": None, "backup-data": None},
    }


@pytest.fixture
def adopted(tmp_path: Path) -> Iterator[Project]:
    """A stock setup's project (own name), torn down with its volumes afterwards."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    base_image = chosen_base_image()
    stock = tmp_path / "stock"
    (stock / "scripts").mkdir(parents=True)
    (stock / "scripts" / "backup.sh").write_text("#!/bin/sh\n# the template's old script\n")
    (stock / "docker-compose.yml").write_text(yaml.safe_dump(stock_compose(base_image)))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "COMPOSE_"))
    }
    # Only the password: the user and database are the compose files' defaults.
    env.update(
        COMPOSE_PROJECT_NAME=f"{PROJECT}-adopt",
        COMPOSE_FILE=str(stock / "docker-compose.yml"),
        POSTGRES_IMAGE=base_image,
        POSTGRES_PASSWORD=PASSWORD,
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
    )
    p = Project(env=env, base_image=base_image)
    p.compose("down", "-v", "--remove-orphans", "--rmi", "local")  # leftovers of a killed run
    try:
        yield p
    finally:
        p.env["COMPOSE_FILE"] = str(REPO / "docker-compose.yml")
        p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        label = f"label=com.docker.compose.project={PROJECT}-adopt"
        volumes = p.run("docker", "volume", "ls", "-q", "--filter", label).stdout.split()
        assert volumes == [], f"down -v left volumes {volumes}"


def test_adopting_velocity_pg_keeps_the_data_and_the_old_backups(adopted: Project) -> None:
    """docs/adoption.md: the stock setup, then this compose file on its volumes."""
    p = adopted
    # 1. The stock template: the official image as `image:`, backups by the old script.
    p.compose("up", "-d", "--wait")
    p.sql(
        "CREATE TABLE notes (id int PRIMARY KEY, body text); "
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g",
        user="postgres",
        db="velocity",
    )
    # What backup.sh did, run as the template's recipe ran it (root, in the db container).
    p.compose(
        "exec", "-T", "db", "sh", "-c",
        f"pg_dump -U postgres -d velocity -Fc -Z9 -f /backups/{OLD_BACKUP}",
    )  # fmt: skip
    p.sql(
        "INSERT INTO notes SELECT g, 'later' FROM generate_series(101, 150) g",
        "postgres",
        "velocity",
    )
    old_sha = p.db_sh(f"sha256sum /backups/{OLD_BACKUP}", user="root").split()[0]
    p.compose("down")  # no -v: the volumes stay, as they do for a user

    # 2. The same project with velocity-pg's compose file: same volumes, image built.
    p.env["COMPOSE_FILE"] = str(REPO / "docker-compose.yml")
    p.compose("up", "-d", "--build", "--wait")
    assert p.sql("SELECT count(*) FROM notes", "postgres", "velocity") == "150"  # the data
    # db-backup (scheduled backups) came with the compose file: the newest backup is older
    # than one period, so its first run backs up at once, beside the old backup.
    p.wait_for_log("db-backup", "next run at", timeout=300)
    assert len(p.backups()) == 2

    listed = p.just("db-backup-list", "--json")
    assert listed.returncode == 0, listed.stderr
    old = [b for b in json.loads(listed.stdout)["backups"] if b["name"] == OLD_BACKUP]
    assert len(old) == 1, listed.stdout  # the old backup, found where it was
    assert not old[0]["manifest"]  # made by the old script: no manifest

    verified = p.just("db-backup-verify", OLD_BACKUP)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "no manifest" in verified.stdout

    restored = p.just("db-restore", OLD_BACKUP, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert p.sql("SELECT count(*), max(id) FROM notes", "postgres", "velocity") == "100|100"

    # New backups go beside the old one, which is unchanged.
    backup = p.just("db-backup")
    assert backup.returncode == 0, backup.stderr
    assert p.db_sh(f"sha256sum /backups/{OLD_BACKUP}").split()[0] == old_sha
    assert len(p.backups()) == 3
