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


VERBS = [
    *("backup", "list", "verify", "status", "cleanup", "restore", "push", "pull", "schedule"),
    "notify",
    "entrypoint",
    *("pin", "unpin", "accept"),
    *("serve", "report"),
]


def test_global_options_after_the_verb(target: Target) -> None:
    """`velocity-pg backup --backup-dir x`: every global option works after the verb too."""
    load_varied_schema(target)
    other = target.workdir / "elsewhere"
    other.mkdir()
    env = target.env(BACKUP_DIR=str(target.workdir / "missing"), PGHOST="", PGDATABASE="")
    result = target.run(
        "backup",
        "--backup-dir",
        str(other),
        "--host",
        target.host,
        "--port",
        str(target.port),
        "-U",
        target.user,
        "-d",
        target.dbname,
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    name = json.loads(result.stdout)["name"]
    assert (other / name).is_file()
    result = target.run("list", "--backup-dir", str(other), env=env)
    assert result.returncode == 0, result.stderr
    assert name in result.stdout
    env_file = target.workdir / "custom.env"
    env_file.write_text(f"BACKUP_DIR={other}\n")
    result = target.run(
        "list", "--json", "--env-file", str(env_file), env=target.env(BACKUP_DIR="")
    )
    assert result.returncode == 0, result.stderr
    assert [b["name"] for b in json.loads(result.stdout)["backups"]] == [name]
    result = target.run("list", "--debug", env=target.env(BACKUP_DIR=str(other / "nope")))
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_top_level_help_lists_every_verb_uncut(target: Target) -> None:
    result = target.run("--help")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:")[1]
    listed = [
        line.split()[0]
        for line in commands.splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    ]
    assert sorted(listed) == sorted(VERBS)
    assert "..." not in commands
    summary = " ".join(commands.split())
    assert "a failed restore changes nothing." in summary
    for verb in VERBS:
        assert verb in result.stdout.split("Commands:")[0]  # the description names them all


def test_errors_name_the_option_the_user_typed(target: Target) -> None:
    result = target.run(
        "cleanup", "--max-count", "0", "--dry-run", env=target.env(BACKUP_MAX_COUNT="5")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "velocity-pg: error: --max-count '0' is out of range; "
        "it must be a whole number between 1 and 2147483647"
    )
    result = target.run("cleanup", "--dry-run", env=target.env(BACKUP_MAX_COUNT="0"))
    assert result.returncode == 2
    assert "BACKUP_MAX_COUNT='0' is out of range" in result.stderr
    result = target.run("--port", "nope", "backup")
    assert result.returncode == 2
    assert "--port 'nope' is not a whole number" in result.stderr


def test_restore_output_says_how_many_sessions_the_swap_ended(target: Target) -> None:
    load_varied_schema(target)
    result = target.run("backup", "--json")
    name = json.loads(result.stdout)["name"]
    with target.connect(), target.connect():
        result = target.run("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert "2 sessions of it ended by the swap." in result.stdout
