"""What a new user meets in the first hour (issue 10): the README's quick start as written,
options where a user puts them, messages that name what the user typed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Target, load_varied_schema


def quick_start(target: Target) -> Path:
    """The README's layout: a `backups/` folder in the folder velocity-pg runs from."""
    backups = target.workdir / "backups"
    backups.mkdir()
    return backups


def test_restore_a_relative_path_into_the_backup_folder(target: Target) -> None:
    """`restore backups/velocity_....dump` with `--backup-dir backups` (item 14)."""
    load_varied_schema(target)
    backups = quick_start(target)
    env = target.env()
    del env["BACKUP_DIR"]
    result = target.run("--backup-dir", "backups", "backup", "--json", env=env)
    assert result.returncode == 0, result.stderr
    name = json.loads(result.stdout)["name"]
    assert (backups / name).is_file()

    result = target.run("--backup-dir", "backups", "restore", f"backups/{name}", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert f"from {name}" in result.stdout

    # A path that leads out of the folder is still refused, before anything runs.
    shutil.copy(backups / name, target.workdir / name)
    result = target.run("--backup-dir", "backups", "restore", f"./{name}", "--yes", env=env)
    assert result.returncode == 2
    assert "is not a file in the backup folder" in result.stderr
