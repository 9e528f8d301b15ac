"""Packaging as a user installs it (issue 10, "from a new user's first hour")."""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import Target

from velocity_pg import __version__

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_license_file_and_spdx_expression() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the velocity-pg authors" in text
    requires = PYPROJECT["build-system"]["requires"]
    assert requires == ["setuptools>=77"]  # the first to take license-files and SPDX
    assert "!LICENSE" in (REPO / ".dockerignore").read_text().splitlines()
    assert importlib.metadata.metadata("velocity-pg")["License-Expression"] == "MIT"


def test_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "velocity_pg.__version__"
    }
    assert importlib.metadata.version("velocity-pg") == __version__


def test_backups_folder_is_ignored_by_git() -> None:
    """The README's quick start makes `backups/` beside the checkout."""
    assert "backups/" in (REPO / ".gitignore").read_text().splitlines()


def test_tests_use_the_users_psycopg(target: Target) -> None:
    """Plain psycopg over the system libpq (as the image installs it), in every velocity-pg
    the tests run, and no binary driver in what the test extra installs."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not any("binary" in dep for deps in extras.values() for dep in deps)
    system_libpq = ctypes.CDLL("libpq.so.5").PQlibVersion()
    probe = "import json, psycopg; print(json.dumps([psycopg.pq.__impl__, psycopg.pq.version()]))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=target.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["python", system_libpq]


def test_interrupt_tests_pass_with_sigint_ignored(tmp_path: Path) -> None:
    """`nohup pytest` / `pytest &` from a script start the tests with SIGINT ignored.

    The Ctrl+C tests of velocity-pg and of the justfile still see a real Ctrl+C.
    """
    if os.environ.get("VELOCITY_NESTED_TESTS"):
        return  # this very test, inside the run it starts
    tests = [
        "tests/test_restore.py::test_ctrl_c_during_countdown",
        "tests/test_justfile.py::test_ctrl_c_during_countdown_stops_nothing",
    ]
    script = f'trap "" INT; exec {sys.executable} -m pytest -q -p no:cacheprovider ' + " ".join(
        tests
    )
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env={**os.environ, "VELOCITY_NESTED_TESTS": "1"},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
        # The nested run must really start with SIGINT ignored, whatever ours is.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
