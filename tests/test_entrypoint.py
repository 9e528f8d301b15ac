"""`velocity-pg entrypoint -- COMMAND`: the db image's entrypoint (issue 18, item 7).

Run for real as processes. The tests run unprivileged, so the hand-over of the
folder itself (chown to postgres, chmod 0700, as root) is covered by its pure
decision here and for real only by the Docker end-to-end test
(tests/test_docker_e2e.py, the template's root-owned backup-data volume).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from velocity_pg.verbs import entrypoint

VPG = [sys.executable, "-m", "velocity_pg", "entrypoint"]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VPG, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def test_it_becomes_the_command_with_its_arguments_and_status(tmp_path: Path) -> None:
    script = "import sys, json; print(json.dumps(sys.argv[1:])); sys.exit(7)"
    args = ["a b", "$HOME", "--help", "-d", "", "é"]
    result = run("--", sys.executable, "-c", script, *args, BACKUP_DIR=str(tmp_path))
    assert result.returncode == 7, result.stderr
    assert result.stdout.strip() == __import__("json").dumps(args)
    assert result.stderr == ""


def test_the_same_process_keeps_its_pid_and_gets_the_signal(tmp_path: Path) -> None:
    """exec, not a child: the PID is the entrypoint's (PID 1 in the container), and a
    signal sent to it reaches the command (docker stop's SIGINT reaches postgres)."""
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(42))\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [*VPG, "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BACKUP_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        assert int(proc.stdout.readline()) == proc.pid
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 42
    finally:
        proc.kill()
        proc.wait()


def test_the_command_starts_with_no_signal_ignored(tmp_path: Path) -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and an exec keeps what is ignored: reset."""
    result = run("--", "grep", "^SigIgn", "/proc/self/status", BACKUP_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[1], 16) == 0, result.stdout


def test_unprivileged_it_leaves_the_folder_alone(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o755)
    result = run("--", "true", BACKUP_DIR=str(folder))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert result.stderr == ""


def test_refusals_are_one_line() -> None:
    missing = run()
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "velocity-pg: error: entrypoint needs the command to run after it, e.g. "
        "`velocity-pg entrypoint -- docker-entrypoint.sh postgres`"
    ]
    unknown = run("--", "no-such-program-velocity")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "velocity-pg: error: cannot run no-such-program-velocity: not found on PATH; "
        "nothing was started"
    ]


def fake_stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("info", "euid", "expected"),
    [
        (fake_stat(stat.S_IFDIR | 0o755, 0), 0, True),  # the template's root-owned volume
        (fake_stat(stat.S_IFDIR | 0o700, 999), 0, False),  # already postgres's
        (fake_stat(stat.S_IFLNK | 0o777, 0), 0, False),  # a symlink: never followed
        (fake_stat(stat.S_IFREG | 0o644, 0), 0, False),  # not a folder
        (None, 0, False),  # no folder
        (fake_stat(stat.S_IFDIR | 0o755, 0), 999, False),  # not root: cannot and need not
    ],
)
def test_when_the_folder_changes_hands(
    info: os.stat_result | None, euid: int, expected: bool
) -> None:
    assert entrypoint.needs_handover(info, owner_uid=999, euid=euid) is expected
