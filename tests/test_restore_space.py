"""A real full disk under a restore: a private server whose tablespace is a small tmpfs.

The tmpfs is mounted in a private mount namespace (``unshare -rm``); PostgreSQL refuses
to run as root, so the server and velocity-pg run in a nested user namespace that maps
the caller's own uid back (``unshare --map-user``). Both see the tmpfs, as velocity-pg
sees the server's disk in the db container. The scenario is tests/space_scenario.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from velocity_pg.restore import space

SCENARIO = Path(__file__).with_name("space_scenario.py")


def _namespaces_work() -> bool:
    if not Path("/usr/bin/unshare").exists() or os.geteuid() == 0:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "-rm",
            "unshare",
            "--user",
            f"--map-user={os.getuid()}",
            f"--map-group={os.getgid()}",
            "true",
        ],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(),
    reason="needs unprivileged user namespaces (unshare -rm, unshare --map-user), not root",
)


def run_scenario(tmp_path: Path, scenario: str, size: str) -> dict[str, object]:
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "{mount}" && '
        f"exec unshare --user --map-user={os.getuid()} --map-group={os.getgid()} "
        f'"{sys.executable}" "{SCENARIO}" "{tmp_path}" "{mount}" {scenario}'
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def error_lines(run: object) -> list[str]:
    assert isinstance(run, dict)
    stderr = str(run["stderr"])
    assert "Traceback" not in stderr
    return [ln for ln in stderr.splitlines() if ln.startswith("velocity-pg: error:")]


@needs_namespaces
def test_restore_that_cannot_fit_is_refused_before_anything_changes(tmp_path: Path) -> None:
    """A 40 MiB tablespace holding a 30 MiB database: no room for a second copy."""
    out = run_scenario(tmp_path, "refuse", "40m")
    assert out["backup"]["rc"] == 0, out  # type: ignore[index]
    for step in ("check", "restore"):
        run = out[step]
        assert run["rc"] == 1, run  # type: ignore[index]
        (line,) = error_lines(run)
        assert "not enough free space for the restored copy" in line, line
        assert "tablespace small" in line and "nothing was changed" in line, line
    assert out["databases"] == ["app", "postgres", "template0", "template1"]
    assert out["rows"] == 200000


@needs_namespaces
def test_disk_that_fills_during_the_restore_then_the_next_restore_recovers(
    tmp_path: Path,
) -> None:
    """The check passes; then the tablespace fills up while pg_restore runs. The copy cannot
    be dropped ("checkpoint request failed"): the line says what works, and once space is
    freed the next restore drops the leftover first and succeeds."""
    out = run_scenario(tmp_path, "fills", "64m")
    assert out["backup"]["rc"] == 0, out  # type: ignore[index]
    failed = out["failed"]
    assert failed["rc"] == 1, failed  # type: ignore[index]
    (line,) = error_lines(failed)
    assert "No space left on device" in line, line
    assert "database 'app' was not changed" in line, line
    assert out["rows_after_failure"] == 100000
    if "the unfinished copy was dropped" not in line:
        assert "could not be dropped" in line, line
        assert "free space on it), then run `velocity-pg restore app_" in line, line
        assert "` again, which drops the copy first" in line, line
    again = out["again"]
    assert again["rc"] == 0, again  # type: ignore[index]
    assert "was killed" not in again["stderr"]  # type: ignore[index]
    if "could not be dropped" in line:
        assert "left by an earlier restore that failed" in again["stderr"]  # type: ignore[index]
    assert out["databases"] == ["app", "postgres", "template0", "template1"]
    assert out["rows"] == 100000


@needs_namespaces
def test_restore_drill_that_cannot_fit_does_not_run(tmp_path: Path) -> None:
    """verify --restore builds a whole copy too: on a nearly full data directory (a 64 MiB
    tmpfs) it does not start, and the backup is reported unverified, not good."""
    out = run_scenario(tmp_path, "drill", "64m")
    assert out["backup"]["rc"] == 0, out  # type: ignore[index]
    verify = out["verify"]
    assert verify["rc"] == 1, verify  # type: ignore[index]
    assert "FAILED" in verify["stdout"], verify  # type: ignore[index]
    assert "the restore drill did not run: it needs about" in verify["stdout"]  # type: ignore[index]
    check = out["check"]
    assert check["rc"] == 1, check  # type: ignore[index]
    (line,) = error_lines(check)
    assert "not enough free space" in line and "tablespace pg_default" in line, line
    assert out["databases"] == ["app", "postgres", "template0", "template1"]


def test_space_rule() -> None:
    mib = 1024 * 1024
    # The live database dominates: 1.25 x 100 MiB + 16 MiB.
    assert space.needed_bytes(100 * mib, 10 * mib) == 141 * mib
    # A fresh database: 1.25 x (8 MiB + 1.5 x 40 MiB) + 16 MiB = 101 MiB.
    assert space.needed_bytes(0, 40 * mib) == 101 * mib


def test_system_identifier_is_read_from_pg_control(tmp_path: Path) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(
        (7714457966403423573).to_bytes(8, sys.byteorder) + b"\0" * 100
    )
    assert space.read_system_identifier(tmp_path) == 7714457966403423573
    assert space.read_system_identifier(tmp_path / "nowhere") is None
