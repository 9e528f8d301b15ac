"""The justfile under the real `just`, with a stand-in `docker` first on PATH.

The stand-in (tests/docker_standin.py) records every call and runs the
`docker compose exec db velocity-pg ...` part as ``python -m velocity_pg`` against
the test server, so each recipe is tested end to end except for Docker itself
(tests/test_docker_e2e.py covers that against a real engine).

Tests marked "needs restore" / "needs cleanup" run the real verb and skip while
that verb is not in this checkout; the control-flow tests of db-restore make the
stand-in answer the restore steps with a chosen status, so they run either way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import Target, just_program, load_varied_schema, snapshot_dir, table_contents

REPO = Path(__file__).resolve().parent.parent
JUSTFILE = REPO / "justfile"
APP_SERVICES = ["web", "celery-worker", "celery-beat"]
CHECK = ["restore", "--check"]
STAGE = ["restore", "--stage", "--yes", "--json"]
YES = ["restore", "--yes"]
SWAP = ["restore", "--yes", "--drop-later"]
TIDY = ["velocity-pg", "restore", "--tidy"]
UNDO_CHECK = ["restore", "--undo", "--check"]
UNDO = ["restore", "--undo", "--yes"]
DUMP = "velocity_2026-01-02_030405.dump"


@cache
def has_verb(verb: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "velocity_pg", verb, "--help"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode == 0


def needs_verb(verb: str) -> None:
    if not has_verb(verb):
        pytest.skip(f"needs the `velocity-pg {verb}` verb, not in this checkout yet")


@dataclass
class Call:
    argv: list[str]
    user: str | None
    status: int
    at: list[float]

    @property
    def short(self) -> list[str]:
        """The call without `compose` and without exec's fixed prefix."""
        args = self.argv[1:]
        if args[:1] == ["exec"]:
            rest = [a for a in args[1:] if a not in ("-T", "--no-TTY")]
            if rest[:3] == ["-u", "postgres", "db"] and rest[3:4] == ["velocity-pg"]:
                # --stop-on-eof is the restore recipes' plumbing (see the next test).
                return ["velocity-pg", *(a for a in rest[4:] if a != "--stop-on-eof")]
        return args


@dataclass
class Harness:
    target: Target
    bin_dir: Path
    log_file: Path
    running_file: Path
    forced: list[dict[str, object]]
    #: db-restore's countdown; none unless a test is about it.
    countdown: int = 0

    def set_running(self, *services: str) -> None:
        self.running_file.write_text("".join(f"{s}\n" for s in services))

    def running(self) -> list[str]:
        return self.running_file.read_text().split()

    def force(self, *tokens: str, status: int, wait: Path | None = None) -> None:
        """Make the stand-in answer calls holding all these tokens with ``status``.

        With ``wait``, the call creates that file and waits until interrupted.
        """
        rule: dict[str, object] = {"when": list(tokens), "status": status}
        if wait is not None:
            rule["wait"] = str(wait)
        self.forced.append(rule)

    def just_cmd(self, *args: str) -> list[str]:
        return [
            just_program(),
            "--justfile",
            str(JUSTFILE),
            "--working-directory",
            str(self.target.workdir),
            "--set",
            "restore_countdown",
            str(self.countdown),
            *args,
        ]

    def just_env(self) -> dict[str, str]:
        return self.target.env(
            PATH=f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            STANDIN_LOG=str(self.log_file),
            STANDIN_RUNNING=str(self.running_file),
            STANDIN_STATUS=json.dumps(self.forced),
            NO_COLOR="1",
        )

    def just(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.just_cmd(*args),
            env=self.just_env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def calls(self) -> list[Call]:
        if not self.log_file.exists():
            return []
        return [Call(**json.loads(line)) for line in self.log_file.read_text().splitlines()]

    def shorts(self) -> list[list[str]]:
        return [c.short for c in self.calls()]


@pytest.fixture
def harness(target: Target, tmp_path: Path) -> Harness:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    standin = Path(__file__).with_name("docker_standin.py")
    docker.write_text(f'#!/bin/sh\nexec {sys.executable} {standin} "$@"\n')
    docker.chmod(0o755)
    h = Harness(
        target=target,
        bin_dir=bin_dir,
        log_file=tmp_path / "docker-calls.jsonl",
        running_file=tmp_path / "running-services",
        forced=[],
    )
    h.set_running("db", "web", "celery-worker", "celery-beat")
    return h


def make_backup(target: Target) -> str:
    result = target.run("backup", "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["name"])


# -- the justfile itself ---------------------------------------------------------------


def test_default_recipe_lists_the_recipes(harness: Harness) -> None:
    result = harness.just()
    assert result.returncode == 0, result.stderr
    for recipe in (
        "db-backup",
        "db-backup-list",
        "db-restore",
        "db-restore-undo",
        "db-upgrade",
        "db-backup-verify",
        "db-backup-status",
        "db-backup-cleanup",
        "db-backup-logs",
        "test",
    ):
        assert re.search(rf"^\s+{re.escape(recipe)}\b", result.stdout, re.M), result.stdout
    assert harness.calls() == []


def test_app_services_are_named_in_one_place() -> None:
    text = JUSTFILE.read_text()
    assert 'app_services := "web celery-worker " + long_lived' in text
    assert 'long_lived := "celery-beat"' in text
    for service in ("celery-worker", "celery-beat"):
        assert text.count(service) == 1, f"{service} named more than once in the justfile"


def test_test_recipe_is_the_readme_test_command(harness: Harness) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    command = [line for line in block.splitlines() if line.strip() and "```" not in line]
    assert len(command) == 1
    shown = harness.just("--dry-run", "test")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip().startswith(command[0].strip()), shown.stderr


# -- backup, list, cleanup: one exec each, arguments and status passed through ------------


def test_db_backup_runs_velocity_pg_as_postgres_in_db(harness: Harness) -> None:
    result = harness.just("db-backup")
    assert result.returncode == 0, result.stderr
    (call,) = harness.calls()
    assert call.argv[:2] == ["compose", "exec"]
    assert call.user == "postgres"
    assert call.short == ["velocity-pg", "backup"]
    name, manifest_name, roles_name = snapshot_dir(harness.target.backup_dir)
    assert manifest_name == name + ".json"
    assert roles_name == name + ".roles.sql"
    assert name in result.stdout


def test_db_backup_list_passes_extra_arguments(harness: Harness) -> None:
    name = make_backup(harness.target)
    result = harness.just("db-backup-list", "--json")
    assert result.returncode == 0, result.stderr
    assert [b["name"] for b in json.loads(result.stdout)["backups"]] == [name]
    assert harness.shorts() == [["velocity-pg", "list", "--json"]]


def test_failure_status_and_message_pass_through(harness: Harness) -> None:
    """velocity-pg's one error line and status reach the user; just adds nothing."""
    harness.target.backup_dir.rmdir()
    result = harness.just("db-backup")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("velocity-pg: error:"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    usage = harness.just("db-backup-list", "--no-such-option")
    assert usage.returncode == 2, usage.stderr
    assert "Recipe" not in usage.stderr
    assert [c.status for c in harness.calls()] == [1, 2]


def test_arguments_with_spaces_stay_whole(harness: Harness) -> None:
    harness.force(*CHECK, status=1)
    result = harness.just("db-restore", "name with spaces.dump", "--jobs", "2")
    assert result.returncode == 1
    assert harness.shorts() == [
        ["velocity-pg", *CHECK, "name with spaces.dump", "--jobs", "2"],
    ]


def test_db_backup_cleanup_passes_arguments_and_status(harness: Harness) -> None:
    """Call and status pass-through (whatever cleanup answers, or its absence)."""
    result = harness.just("db-backup-cleanup", "--dry-run")
    (call,) = harness.calls()
    assert call.short == ["velocity-pg", "cleanup", "--dry-run"]
    assert call.user == "postgres"
    assert result.returncode == call.status


def test_db_backup_cleanup_dry_run_deletes_nothing(harness: Harness) -> None:
    """Needs cleanup."""
    needs_verb("cleanup")
    make_backup(harness.target)
    before = snapshot_dir(harness.target.backup_dir)
    result = harness.just("db-backup-cleanup", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert snapshot_dir(harness.target.backup_dir) == before


# -- db-restore: check first, stop only what runs, always start it again ------------------


def stop_start(verb: str, *services: str) -> list[str]:
    return [verb, *services]


PS = ["ps", "--services", "--filter", "status=running"]


def force_steps(harness: Harness, *, check: int = 0, stage: int = 0, swap: int = 0) -> None:
    """The db-restore steps answer these statuses (the stage rule first: it holds --yes too)."""
    harness.force(*CHECK, status=check)
    harness.force(*STAGE, status=stage)
    harness.force(*YES, status=swap)


def test_restore_order_stops_and_restarts_running_app_services(harness: Harness) -> None:
    force_steps(harness)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 0, result.stderr
    assert harness.shorts() == [
        ["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump"],
        ["velocity-pg", *STAGE, "velocity_2026-01-02_030405.dump"],
        PS,
        stop_start("stop", *APP_SERVICES),
        ["velocity-pg", *SWAP, "velocity_2026-01-02_030405.dump"],
        stop_start("start", *APP_SERVICES),
        TIDY,
    ]
    assert all(c.user == "postgres" for c in harness.calls() if c.argv[1] == "exec")
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])
    assert re.search(r"the app services were down for \d+\.\d s", result.stderr), result.stderr


def test_failing_check_never_stops_anything(harness: Harness) -> None:
    """A corrupt file: the check fails (for real), nothing else is called."""
    (harness.target.backup_dir / "velocity_2026-01-02_030405.dump").write_bytes(b"PGDMP junk")
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    (call,) = harness.calls()
    assert call.short[:3] == ["velocity-pg", *CHECK]
    assert call.status != 0
    assert result.returncode == call.status
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


@pytest.mark.parametrize("status", [1, 2, 130])
def test_check_status_passes_through_and_stops_nothing(harness: Harness, status: int) -> None:
    """Bad file (1), bad usage (2), Ctrl+C during the countdown (130)."""
    harness.force(*CHECK, status=status)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == status
    assert harness.shorts() == [["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump"]]


@pytest.mark.parametrize("status", [1, 2, 130])
def test_failed_stage_stops_nothing(harness: Harness, status: int) -> None:
    """The copy cannot be built (bad file, full disk, Ctrl+C): the app keeps running."""
    force_steps(harness, stage=status)
    result = harness.just("db-restore", DUMP)
    assert result.returncode == status
    assert harness.shorts() == [["velocity-pg", *CHECK, DUMP], ["velocity-pg", *STAGE, DUMP]]
    assert "the app was not stopped" in result.stderr
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


@pytest.mark.parametrize("status", [1, 130])
def test_services_restarted_after_failed_restore(harness: Harness, status: int) -> None:
    force_steps(harness, swap=status)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == status
    assert harness.shorts()[3:] == [
        stop_start("stop", *APP_SERVICES),
        ["velocity-pg", *SWAP, "velocity_2026-01-02_030405.dump"],
        stop_start("start", *APP_SERVICES),
    ]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


def interrupt_when(harness: Harness, started: Path, *args: str) -> tuple[int, str]:
    """Run just in its own process group, and Ctrl+C it (SIGINT to the group) once
    the step that creates ``started`` runs; return just's status and stderr."""
    proc = subprocess.Popen(
        harness.just_cmd(*args),
        env=harness.just_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("client_status", [0, 1])
def test_ctrl_c_during_restore_still_starts_the_services(
    harness: Harness, tmp_path: Path, client_status: int
) -> None:
    started = tmp_path / "restore-started"
    harness.force(*CHECK, status=0)
    harness.force(*STAGE, status=0)
    harness.force(*YES, status=client_status, wait=started)
    status, err = interrupt_when(harness, started, "db-restore", "velocity_2026-01-02_030405.dump")
    assert status == 130, err
    assert harness.shorts()[3:] == [
        stop_start("stop", *APP_SERVICES),
        ["velocity-pg", *SWAP, "velocity_2026-01-02_030405.dump"],
        stop_start("start", *APP_SERVICES),
    ]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


def test_countdown_after_the_check_before_anything_stops(harness: Harness) -> None:
    """velocity-pg's check does not count down (it starts nothing); the recipe does,
    after the check and before it stops anything."""
    harness.countdown = 2
    harness.force(*CHECK, status=0)
    harness.force(*YES, status=0)
    started = time.monotonic()
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 2
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("db-restore: ")]
    assert lines[:2] == [
        "db-restore: stopping the app and restoring velocity_2026-01-02_030405.dump in 2 s; "
        "press Ctrl+C to cancel",
        "db-restore: 1...",
    ]
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump", "--yes")
    assert result.returncode == 0, result.stderr
    assert "press Ctrl+C" not in result.stderr


def test_ctrl_c_during_countdown_stops_nothing(harness: Harness, tmp_path: Path) -> None:
    harness.countdown = 30
    harness.force(*CHECK, status=0)
    proc = subprocess.Popen(
        harness.just_cmd("db-restore", "velocity_2026-01-02_030405.dump"),
        env=harness.just_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "press Ctrl+C to cancel" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted; nothing was changed" in err
    assert harness.shorts() == [["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump"]]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


# The docker client a Ctrl+C ends may exit 0, 1 or 130: the recipe's status is 130 anyway.
@pytest.mark.parametrize("client_status", [0, 1])
def test_ctrl_c_during_check_stops_nothing(
    harness: Harness, tmp_path: Path, client_status: int
) -> None:
    started = tmp_path / "check-started"
    harness.force(*CHECK, status=client_status, wait=started)
    status, err = interrupt_when(harness, started, "db-restore", "velocity_2026-01-02_030405.dump")
    assert status == 130, err
    assert harness.shorts() == [["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump"]]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


@pytest.mark.parametrize("client_status", [0, 1])
def test_ctrl_c_during_stage_stops_nothing(
    harness: Harness, tmp_path: Path, client_status: int
) -> None:
    started = tmp_path / "stage-started"
    harness.force(*CHECK, status=0)
    harness.force(*STAGE, status=client_status, wait=started)
    status, err = interrupt_when(harness, started, "db-restore", DUMP)
    assert status == 130, err
    assert "interrupted; the app was not stopped and the database was not changed" in err
    assert harness.shorts() == [["velocity-pg", *CHECK, DUMP], ["velocity-pg", *STAGE, DUMP]]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


def test_ctrl_c_reaches_velocity_pg_through_its_input(harness: Harness, tmp_path: Path) -> None:
    """`docker compose exec` passes no signal on to what it runs (a Ctrl+C used to end only
    the client, and the stage went on inside the container). The restore recipes run the
    client with -T in a process group of its own, velocity-pg with --stop-on-eof, and
    close its input on Ctrl+C: the stand-in, like the real client, gets no SIGINT, only
    the end of its input, and the recipe gets velocity-pg's answer."""
    started = tmp_path / "stage-started"
    harness.force(*CHECK, status=0)
    harness.force(*STAGE, status=0, wait=started)
    status, err = interrupt_when(harness, started, "db-restore", DUMP)
    assert status == 130, err
    assert started.read_text() == "stopped by the end of its input\n"
    stage = harness.calls()[1].argv
    assert stage[:5] == ["compose", "exec", "-T", "-u", "postgres"], stage
    assert "--stop-on-eof" in stage
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


@pytest.mark.parametrize("client_status", [0, 1])
def test_ctrl_c_during_stop_swaps_nothing_and_starts_again(
    harness: Harness, tmp_path: Path, client_status: int
) -> None:
    started = tmp_path / "stop-started"
    force_steps(harness)
    harness.force("stop", status=client_status, wait=started)
    status, err = interrupt_when(harness, started, "db-restore", DUMP)
    assert status == 130, err
    assert harness.shorts()[3:] == [["stop", *APP_SERVICES], ["start", *APP_SERVICES]]
    assert "the database was not restored" in err


def test_ctrl_c_during_start_still_fails_the_run(harness: Harness, tmp_path: Path) -> None:
    """The swap is done; Ctrl+C while the services start: 130, and the message says how to
    start them."""
    started = tmp_path / "start-started"
    force_steps(harness)
    harness.force("start", status=0, wait=started)
    status, err = interrupt_when(harness, started, "db-restore", DUMP)
    assert status == 130, err
    assert harness.shorts()[3:] == [
        ["stop", *APP_SERVICES],
        ["velocity-pg", *SWAP, DUMP],
        ["start", *APP_SERVICES],
    ]
    assert "start them with: docker compose start web celery-worker celery-beat" in err


def test_only_running_app_services_are_stopped_and_restarted(harness: Harness) -> None:
    harness.set_running("db", "redis", "celery-beat", "web")
    force_steps(harness, swap=1)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 1
    assert harness.shorts()[3:] == [
        ["stop", "web", "celery-beat"],
        ["velocity-pg", *SWAP, "velocity_2026-01-02_030405.dump"],
        ["start", "web", "celery-beat"],
    ]
    assert sorted(harness.running()) == ["celery-beat", "db", "redis", "web"]


def test_no_app_service_running_stops_nothing(harness: Harness) -> None:
    harness.set_running("db")
    force_steps(harness)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 0, result.stderr
    assert harness.shorts() == [
        ["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump"],
        ["velocity-pg", *STAGE, "velocity_2026-01-02_030405.dump"],
        PS,
        ["velocity-pg", *SWAP, "velocity_2026-01-02_030405.dump"],
        TIDY,
    ]


def test_app_services_can_be_overridden(harness: Harness) -> None:
    """celery-beat is restarted whenever it runs, even when app_services leaves it out:
    the swap ends its one long-lived connection."""
    harness.set_running("db", "web", "worker", "celery-beat")
    force_steps(harness)
    result = harness.just(
        "app_services=web worker", "db-restore", "velocity_2026-01-02_030405.dump"
    )
    assert result.returncode == 0, result.stderr
    assert ["stop", "web", "worker", "celery-beat"] in harness.shorts()
    assert ["start", "web", "worker", "celery-beat"] in harness.shorts()


def test_celery_beat_alone_is_restarted_around_the_swap(harness: Harness) -> None:
    harness.set_running("db", "celery-beat")
    force_steps(harness)
    result = harness.just("db-restore", DUMP)
    assert result.returncode == 0, result.stderr
    assert harness.shorts()[3:] == [
        ["stop", "celery-beat"],
        ["velocity-pg", *SWAP, DUMP],
        ["start", "celery-beat"],
        TIDY,
    ]


def test_the_db_backup_service_is_paused_for_the_swap_and_the_undo(harness: Harness) -> None:
    """A scheduled pg_dump during the swap would be cut off and fail its run: db-backup
    stops with the app, only for the swap, and starts again with it."""
    harness.set_running("db", "web", "celery-beat", "db-backup")
    force_steps(harness)
    harness.force(*UNDO_CHECK, status=0)
    harness.force(*UNDO, status=0)
    result = harness.just("db-restore", DUMP)
    assert result.returncode == 0, result.stderr
    assert harness.shorts()[:2] == [["velocity-pg", *CHECK, DUMP], ["velocity-pg", *STAGE, DUMP]]
    assert harness.shorts()[3:] == [
        ["stop", "web", "celery-beat", "db-backup"],
        ["velocity-pg", *SWAP, DUMP],
        ["start", "web", "celery-beat", "db-backup"],
        TIDY,
    ]
    assert sorted(harness.running()) == ["celery-beat", "db", "db-backup", "web"]
    undo = harness.just("db-restore-undo")
    assert undo.returncode == 0, undo.stderr
    assert harness.shorts()[-3:] == [
        ["stop", "web", "celery-beat", "db-backup"],
        ["velocity-pg", *UNDO],
        ["start", "web", "celery-beat", "db-backup"],
    ]
    assert sorted(harness.running()) == ["celery-beat", "db", "db-backup", "web"]


def test_failed_stop_restores_nothing_and_starts_services_again(harness: Harness) -> None:
    force_steps(harness)
    harness.force("stop", status=1)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 1
    assert harness.shorts() == [
        ["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump"],
        ["velocity-pg", *STAGE, "velocity_2026-01-02_030405.dump"],
        PS,
        stop_start("stop", *APP_SERVICES),
        stop_start("start", *APP_SERVICES),
    ]


def test_failed_restart_after_good_restore_is_a_failure(harness: Harness) -> None:
    force_steps(harness)
    harness.force("start", status=1)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 1
    assert "docker compose start web celery-worker celery-beat" in result.stderr


def test_failed_ps_stops_nothing(harness: Harness) -> None:
    force_steps(harness)
    harness.force("ps", status=1)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump")
    assert result.returncode == 1
    assert [s[0] for s in harness.shorts()] == ["velocity-pg", "velocity-pg", "ps"]


def test_extra_arguments_go_to_check_and_restore(harness: Harness) -> None:
    force_steps(harness)
    result = harness.just("db-restore", "velocity_2026-01-02_030405.dump", "--jobs", "3")
    assert result.returncode == 0, result.stderr
    execs = [s for s in harness.shorts() if s[0] == "velocity-pg"]
    assert execs == [
        ["velocity-pg", *CHECK, "velocity_2026-01-02_030405.dump", "--jobs", "3"],
        ["velocity-pg", *STAGE, "velocity_2026-01-02_030405.dump", "--jobs", "3"],
        ["velocity-pg", *SWAP, "velocity_2026-01-02_030405.dump", "--jobs", "3"],
        TIDY,
    ]


# -- db-restore with the real verb ---------------------------------------------------------


def test_db_restore_brings_the_data_back(harness: Harness) -> None:
    """Needs restore: backup, change, `just db-restore`: data back, services restarted."""
    needs_verb("restore")
    target = harness.target
    load_varied_schema(target)
    with target.connect() as conn:
        before = table_contents(conn)
    assert harness.just("db-backup").returncode == 0
    name, _manifest, _roles = snapshot_dir(target.backup_dir)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
        conn.execute("DROP VIEW shop.big_orders")
    harness.set_running("db", "web", "celery-beat")

    result = harness.just("db-restore", name, timeout=300)
    assert result.returncode == 0, result.stderr
    with target.connect() as conn:
        assert table_contents(conn) == before
    assert harness.shorts()[1:] == [
        ["velocity-pg", *CHECK, name],
        ["velocity-pg", *STAGE, name],
        PS,
        ["stop", "web", "celery-beat"],
        ["velocity-pg", *SWAP, name],
        ["start", "web", "celery-beat"],
        TIDY,
    ]
    assert sorted(harness.running()) == ["celery-beat", "db", "web"]
    # The swap only: no pg_restore while the app was down; the previous contents kept.
    assert "using velocity_pg_staging_" in result.stderr
    assert "restore --undo" in result.stdout


# -- db-restore-undo -----------------------------------------------------------------------


def test_db_restore_undo_brings_the_previous_contents_back(harness: Harness) -> None:
    """Needs restore: restore, then `just db-restore-undo`: the contents from before the
    restore, the services stopped only around the swap."""
    needs_verb("restore")
    target = harness.target
    load_varied_schema(target)
    name = make_backup(target)
    with target.connect() as conn:
        conn.execute("DELETE FROM shop.orders WHERE id > 10")
        before_restore = table_contents(conn)
    assert harness.just("db-restore", name, "--yes", timeout=300).returncode == 0
    first = len(harness.calls())

    result = harness.just("db-restore-undo", timeout=300)
    assert result.returncode == 0, result.stderr
    with target.connect() as conn:
        assert table_contents(conn) == before_restore
    assert harness.shorts()[first:] == [
        ["velocity-pg", *UNDO_CHECK],
        PS,
        ["stop", *APP_SERVICES],
        ["velocity-pg", *UNDO],
        ["start", *APP_SERVICES],
    ]
    assert "Undone" in result.stdout
    assert re.search(r"the app services were down for \d+\.\d s", result.stderr)


@pytest.mark.parametrize("status", [1, 130])
def test_undo_check_failing_stops_nothing(harness: Harness, status: int) -> None:
    harness.force(*UNDO_CHECK, status=status)
    result = harness.just("db-restore-undo")
    assert result.returncode == status
    assert harness.shorts() == [["velocity-pg", *UNDO_CHECK]]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


@pytest.mark.parametrize("status", [1, 130])
def test_failed_undo_still_starts_the_services(harness: Harness, status: int) -> None:
    harness.force(*UNDO_CHECK, status=0)
    harness.force(*UNDO, status=status)
    result = harness.just("db-restore-undo")
    assert result.returncode == status
    assert harness.shorts() == [
        ["velocity-pg", *UNDO_CHECK],
        PS,
        ["stop", *APP_SERVICES],
        ["velocity-pg", *UNDO],
        ["start", *APP_SERVICES],
    ]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


def test_ctrl_c_during_undo_still_starts_the_services(harness: Harness, tmp_path: Path) -> None:
    started = tmp_path / "undo-started"
    harness.force(*UNDO_CHECK, status=0)
    harness.force(*UNDO, status=0, wait=started)
    status, err = interrupt_when(harness, started, "db-restore-undo")
    assert status == 130, err
    assert harness.shorts()[-1] == ["start", *APP_SERVICES]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


def test_db_restore_of_corrupt_file_changes_nothing(harness: Harness) -> None:
    """Needs restore: the real check refuses the file (exit 1); nothing stopped or changed."""
    needs_verb("restore")
    target = harness.target
    load_varied_schema(target)
    name = make_backup(target)
    good = (target.backup_dir / name).read_bytes()
    corrupt = "velocity_2000-01-01_000000.dump"
    (target.backup_dir / corrupt).write_bytes(good[:64])  # cut inside the header
    with target.connect() as conn:
        before = table_contents(conn)

    result = harness.just("db-restore", corrupt)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith("velocity-pg: error:"), result.stderr
    assert harness.shorts() == [["velocity-pg", *CHECK, corrupt]]
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])
    with target.connect() as conn:
        assert table_contents(conn) == before


def test_db_restore_of_cut_file_leaves_everything_as_it_was(harness: Harness) -> None:
    """Needs restore: a file cut in its data (no manifest) fails the check, which reads
    every data block (issue 18): non-zero exit, data unchanged, nothing stopped."""
    needs_verb("restore")
    target = harness.target
    load_varied_schema(target)
    name = make_backup(target)
    good = (target.backup_dir / name).read_bytes()
    cut = "velocity_2000-01-01_000000.dump"
    (target.backup_dir / cut).write_bytes(good[: len(good) // 2])
    with target.connect() as conn:
        before = table_contents(conn)

    result = harness.just("db-restore", cut, timeout=300)
    assert result.returncode != 0
    with target.connect() as conn:
        assert table_contents(conn) == before
    assert harness.shorts() == [["velocity-pg", *CHECK, cut]]
    assert "is truncated or damaged" in result.stderr
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES])


def test_db_backup_verify_and_status_pass_through(harness: Harness) -> None:
    name = make_backup(harness.target)
    result = harness.just("db-backup-verify", "--restore", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok      {name} (checksum, roles file, archive")
    status = harness.just("db-backup-status", "--max-age", "1h")
    assert status.returncode == 0, status.stderr
    assert name in status.stdout
    assert harness.shorts() == [
        ["velocity-pg", "verify", "--restore", name],
        ["velocity-pg", "status", "--max-age", "1h"],
    ]
    time.sleep(1.1)  # the name has whole seconds: now the backup is surely older than 1 s
    stale = harness.just("db-backup-status", "--max-age", "1s")
    assert stale.returncode == 1
    assert "STALE" in stale.stderr


def test_db_backup_logs_shows_the_db_backup_service_log(harness: Harness) -> None:
    result = harness.just("db-backup-logs", "--tail", "50")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stand-in log of db-backup\n"
    (call,) = harness.calls()
    assert call.argv == ["compose", "logs", "--tail", "50", "db-backup"]
    plain = harness.just("db-backup-logs")
    assert plain.returncode == 0, plain.stderr
    assert harness.calls()[-1].argv == ["compose", "logs", "db-backup"]


# -- one source of backup settings (issue 18, item 2) -------------------------------------


def test_a_setting_in_env_reaches_every_recipe_and_the_service(
    harness: Harness, tmp_path: Path
) -> None:
    """.env as Compose resolves it (docker-compose.yml, `config`) gives db's environment
    to `just db-backup`, `db-backup-cleanup`, `db-backup-status` (the stand-in runs them
    with it) and db-backup's to the scheduler's commands: both keep 2 and judge by
    "@every 30s" (a max age of seconds, not @daily's 26h24m)."""
    from test_compose import compose_config, service_environment

    folder = tmp_path / "project"
    folder.mkdir()
    config = compose_config(folder, 'BACKUP_MAX_COUNT=2\nBACKUP_SCHEDULE="@every 30s"\n')
    envs = {s: service_environment(config, s) for s in ("db", "db-backup")}
    envs_file = tmp_path / "service-env.json"
    envs_file.write_text(json.dumps(envs))
    env = harness.just_env() | {"STANDIN_SERVICE_ENV": str(envs_file)}

    def just(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            harness.just_cmd(*args), env=env, capture_output=True, text=True, timeout=120
        )

    for _ in range(3):
        made = just("db-backup")
        assert made.returncode == 0, made.stderr
        time.sleep(1.1)  # distinct names
    by_recipe = just("db-backup-cleanup", "--dry-run", "--json")
    assert by_recipe.returncode == 0, by_recipe.stderr
    status = just("db-backup-status", "--max-age", "auto", "--json")
    assert status.returncode == 0, status.stderr

    # The service: its own environment, over the test's connection and folder.
    service = harness.target.env() | {
        k: v for k, v in envs["db-backup"].items() if k != "BACKUP_DIR" and not k.startswith("PG")
    }
    del service["DATABASE_URL"]
    by_service = harness.target.run("cleanup", "--dry-run", "--json", env=service)
    assert by_service.returncode == 0, by_service.stderr
    health = harness.target.run("status", "--max-age", "auto", "--json", env=service)
    assert health.returncode == 0, health.stderr

    for result in (by_recipe, by_service):
        plan = json.loads(result.stdout)
        assert plan["policy"]["max_count"] == 2, plan["policy"]
        assert len(plan["delete"]) == 1
    ages = [json.loads(r.stdout)["max_age_seconds"] for r in (status, health)]
    assert ages[0] == ages[1] < 3600  # by "@every 30s", not @daily's 95040 s


# -- db-restore --online: nothing stopped (issue 18) -----------------------------------------


def test_online_restore_stops_nothing(harness: Harness) -> None:
    force_steps(harness)
    harness.set_running("db", *APP_SERVICES, "db-backup")
    result = harness.just("db-restore", DUMP, "--online", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert harness.shorts() == [
        ["velocity-pg", *CHECK, DUMP, "--jobs", "2"],
        ["velocity-pg", *STAGE, DUMP, "--jobs", "2"],
        ["velocity-pg", *SWAP, DUMP, "--jobs", "2"],
        TIDY,
    ]  # no ps, no stop, no start; --online is the recipe's, not velocity-pg's
    assert sorted(harness.running()) == sorted(["db", *APP_SERVICES, "db-backup"])
    assert "no service is stopped" in result.stderr


@pytest.mark.parametrize("status", [1, 130])
def test_online_restore_passes_the_swap_status_through(harness: Harness, status: int) -> None:
    force_steps(harness, swap=status)
    result = harness.just("db-restore", DUMP, "--online")
    assert result.returncode == status
    assert [s for s in harness.shorts() if s[:1] != ["velocity-pg"]] == []
    assert TIDY not in harness.shorts()


def test_online_restore_counts_the_transactions_since_the_stage(harness: Harness) -> None:
    """For real: the app keeps writing between the stage and the swap; the swap says how
    many transactions committed there, and their rows are in the rollback point."""
    needs_verb("restore")
    target = harness.target
    load_varied_schema(target)
    assert harness.just("db-backup").returncode == 0
    name, _manifest, _roles = snapshot_dir(target.backup_dir)
    staged = harness.target.run("restore", name, "--stage", "--yes")
    assert staged.returncode == 0, staged.stderr
    for i in range(25):  # 25 write transactions, each its own session, committed
        with target.connect() as conn:
            conn.execute("INSERT INTO shop.orders (amount) VALUES (%s)", (424242 + i,))
    result = harness.just("db-restore", name, "--online", "--yes", timeout=300)
    assert result.returncode == 0, result.stderr
    found = re.search(
        r"(\d+) transactions committed in '[^']+' between the stage and the swap", result.stdout
    )
    assert found, result.stdout
    # An upper bound: the server counts every transaction in that database, velocity-pg's
    # own reads and autovacuum's included (62 seen on PostgreSQL 17 in CI).
    assert 25 <= int(found.group(1)) <= 250
    assert "rollback point" in found.string
    with target.connect() as conn:
        late = "SELECT count(*) FROM shop.orders WHERE amount >= 424242"
        assert conn.execute(late).fetchone() == (0,)
        rollback = found.string.split("rollback point ")[1].split(",")[0].split()[0]
    with target.connect(rollback.rstrip(".")) as conn:
        assert conn.execute(late).fetchone() == (25,)
    assert harness.running() == ["db", *APP_SERVICES]
