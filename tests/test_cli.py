"""The command line as a user meets it: version, help, list, exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env

from velocity_pg import __version__

VERBS = ["backup", "list", "status", "verify", "cleanup"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "velocity_pg", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "velocity-pg"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_help_on_every_verb(verb: str, tmp_path: Path) -> None:
    # Help works even when the settings are broken: it reads none of them.
    result = run(verb, "--help", cwd=tmp_path, env={"BACKUP_MAX_COUNT": "oops"})
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_unknown_verb_is_usage_error(tmp_path: Path) -> None:
    result = run("frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_bad_setting_is_exit_2_one_line(tmp_path: Path) -> None:
    result = run(
        "list", cwd=tmp_path, env={"BACKUP_MAX_AGE_DAYS": "-3", "BACKUP_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "velocity-pg: error: BACKUP_MAX_AGE_DAYS='-3' is out of range; "
        "it must be a whole number between 1 and 100000"
    ]


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = run("--debug", "list", cwd=tmp_path, env={"BACKUP_DIR": str(tmp_path / "missing")})
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    result = run("list", cwd=tmp_path, env={"BACKUP_DIR": str(tmp_path / "missing")})
    assert "Traceback" not in result.stderr


class TestList:
    def test_lists_newest_first_with_sizes(self, tmp_path: Path) -> None:
        folder = tmp_path / "b"
        folder.mkdir()
        (folder / "velocity_2026-01-01_000000.dump").write_bytes(b"x" * 2048)
        (folder / "velocity_2026-02-01_120000.dump").write_bytes(b"x" * 10)
        (folder / "my_app_2026-01-15_000000.dump").write_bytes(b"x" * 10)  # another database
        (folder / "velocity_2026-02-01_120000.dump.json").write_text("{}")  # a manifest
        (folder / ".velocity-tmp-1-a.partial").write_bytes(b"x")
        (folder / "README").write_text("x")
        result = run("list", cwd=tmp_path, env={"BACKUP_DIR": str(folder)})
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == [
            "NAME",
            "DATABASE",
            "SIZE",
            "CREATED",
            "(UTC)",
            "AGE",
            "PINNED",
            "CONTENTS",
            "VERIFIED",
        ]
        assert lines[1].split()[:2] == ["velocity_2026-02-01_120000.dump", "velocity"]
        assert "2026-02-01 12:00:00" in lines[1]
        assert lines[2].split()[:2] == ["my_app_2026-01-15_000000.dump", "my_app"]
        assert lines[3].split()[:2] == ["velocity_2026-01-01_000000.dump", "velocity"]
        assert "2.0 KiB" in lines[3]
        assert "partial" not in result.stdout
        assert "README" not in result.stdout
        assert lines[-1].startswith("3 backup(s)")

    def test_json(self, tmp_path: Path) -> None:
        (tmp_path / "velocity_2026-01-01_000000.dump").write_bytes(b"x" * 5)
        (tmp_path / "a%2Fb_2025-01-01_000000.dump").write_bytes(b"x" * 5)
        result = run("list", "--json", cwd=tmp_path, env={"BACKUP_DIR": str(tmp_path)})
        assert result.returncode == 0
        data = json.loads(result.stdout)
        entry, other = data["backups"]
        assert (other["name"], other["database"]) == ("a%2Fb_2025-01-01_000000.dump", "a/b")
        assert entry["name"] == "velocity_2026-01-01_000000.dump"
        assert entry["database"] == "velocity"
        assert entry["size_bytes"] == 5
        assert entry["created_at"] == "2026-01-01T00:00:00+00:00"
        assert entry["age_seconds"] > 0

    def test_empty_folder_is_friendly(self, tmp_path: Path) -> None:
        result = run("list", cwd=tmp_path, env={"BACKUP_DIR": str(tmp_path)})
        assert result.returncode == 0
        assert "No backups yet" in result.stdout

    def test_missing_folder_is_an_error(self, tmp_path: Path) -> None:
        result = run("list", cwd=tmp_path, env={"BACKUP_DIR": str(tmp_path / "nope")})
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"velocity-pg: error: backup folder {tmp_path / 'nope'} does not exist; "
            "create it or set BACKUP_DIR"
        )

    def test_env_file_in_working_directory(self, tmp_path: Path) -> None:
        (tmp_path / "velocity_2026-01-01_000000.dump").write_bytes(b"x")
        (tmp_path / ".env").write_text(f"BACKUP_DIR={tmp_path}\n")
        result = run("list", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["backups"]) == 1

    def test_explicit_env_file_and_cli_override(self, tmp_path: Path) -> None:
        other = tmp_path / "other"
        other.mkdir()
        env_file = tmp_path / "custom.env"
        env_file.write_text(f"BACKUP_DIR={tmp_path}\n")
        result = run("--env-file", str(env_file), "--backup-dir", str(other), "list", cwd=tmp_path)
        assert result.returncode == 0
        assert str(other) in result.stdout
        result = run("--env-file", str(tmp_path / "missing.env"), "list", cwd=tmp_path)
        assert result.returncode == 2
