"""Settings precedence and validation (pure, no database)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from velocity_pg.errors import ConfigError
from velocity_pg.settings import Connection, load_settings, settings_from_values


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(environ={})
    assert s.backup_dir == Path("/backups")
    assert (s.max_age_days, s.max_count, s.min_keep) == (30, 50, 1)
    assert s.connection == Connection()


def test_precedence_cli_over_env_over_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BACKUP_DIR=/from-dotenv\nBACKUP_MAX_COUNT=7\nBACKUP_MAX_AGE_DAYS=3\n")
    s = load_settings(
        environ={"BACKUP_MAX_COUNT": "8", "BACKUP_DIR": "/from-env"},
        env_file=env_file,
        overrides={"BACKUP_DIR": "/from-cli", "PGHOST": None},
    )
    assert s.backup_dir == Path("/from-cli")
    assert s.max_count == 8  # env beats .env
    assert s.max_age_days == 3  # .env beats default


def test_dotenv_does_not_leak_into_os_environ(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("VELOCITY_LEAK_CHECK=1\nPGPASSWORD=from-file\n")
    s = load_settings(environ={}, env_file=env_file)
    assert s.connection.password == "from-file"
    assert "VELOCITY_LEAK_CHECK" not in os.environ


def test_missing_default_env_file_is_fine(tmp_path: Path) -> None:
    assert load_settings(environ={}, env_file=tmp_path / ".env").max_count == 50


def test_missing_explicit_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={}, env_file=tmp_path / "nope.env", env_file_required=True)


def test_libpq_variables_beat_postgres_image_variables() -> None:
    s = settings_from_values(
        {
            "PGUSER": "pguser",
            "POSTGRES_USER": "imguser",
            "POSTGRES_PASSWORD": "imgpw",
            "POSTGRES_DB": "imgdb",
        }
    )
    assert s.connection.user == "pguser"
    assert s.connection.password == "imgpw"
    assert s.connection.dbname == "imgdb"


def test_postgres_image_variables_alone_work() -> None:
    """Inside the official image: POSTGRES_USER alone names the user and the database."""
    s = settings_from_values({"POSTGRES_USER": "app"})
    assert s.connection.user == "app"
    assert s.connection.dbname == "app"


def test_empty_values_fall_through() -> None:
    s = settings_from_values({"PGUSER": "", "POSTGRES_USER": "app", "BACKUP_MAX_COUNT": ""})
    assert s.connection.user == "app"
    assert s.max_count == 50


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("BACKUP_MAX_AGE_DAYS", "abc", "not a whole number"),
        ("BACKUP_MAX_AGE_DAYS", "-1", "out of range"),
        ("BACKUP_MAX_AGE_DAYS", "0", "out of range"),
        ("BACKUP_MAX_AGE_DAYS", "1.5", "not a whole number"),
        ("BACKUP_MAX_COUNT", "0", "out of range"),
        ("BACKUP_MAX_COUNT", "ten", "not a whole number"),
        ("BACKUP_MIN_KEEP", "0", "out of range"),
        ("BACKUP_NICE", "20", "out of range"),
        ("BACKUP_NICE", "-1", "out of range"),
        ("PGPORT", "0", "out of range"),
        ("PGPORT", "70000", "out of range"),
        ("PGPORT", "port", "not a whole number"),
    ],
)
def test_bad_values_are_config_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        settings_from_values({key: value})
    assert key in info.value.message
    assert info.value.exit_status == 2


def test_backup_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        settings_from_values({"BACKUP_DIR": str(f)})


def test_password_hidden_from_repr() -> None:
    s = settings_from_values({"PGPASSWORD": "hunter2-secret"})
    assert "hunter2-secret" not in repr(s)
    assert s.connection.password == "hunter2-secret"


# -- a higher layer wins over every name of the setting in a lower one (issue 10, item 13) --


@pytest.mark.parametrize(
    ("dotenv", "environ", "field", "expected"),
    [
        ("PGDATABASE=from-dotenv", {"POSTGRES_DB": "from-env"}, "dbname", "from-env"),
        ("POSTGRES_DB=from-dotenv", {"PGDATABASE": "from-env"}, "dbname", "from-env"),
        ("PGUSER=from-dotenv", {"POSTGRES_USER": "from-env"}, "user", "from-env"),
        ("PGPASSWORD=from-dotenv", {"POSTGRES_PASSWORD": "from-env"}, "password", "from-env"),
        # The image's default database (named after POSTGRES_USER) is the lowest of all.
        (
            "POSTGRES_USER=u\nPGDATABASE=from-dotenv",
            {"POSTGRES_USER": "env"},
            "dbname",
            "from-dotenv",
        ),
    ],
)
def test_environment_beats_every_name_in_dotenv(
    tmp_path: Path, dotenv: str, environ: dict[str, str], field: str, expected: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(dotenv + "\n")
    s = load_settings(environ=environ, env_file=env_file)
    assert getattr(s.connection, field) == expected


def test_command_line_beats_every_name_in_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PGDATABASE=from-dotenv\n")
    s = load_settings(
        environ={"POSTGRES_DB": "env-db", "PGDATABASE": "env-db2", "POSTGRES_USER": "env-user"},
        env_file=env_file,
        overrides={"PGDATABASE": "cli-db", "PGUSER": "cli-user"},
    )
    assert (s.connection.dbname, s.connection.user) == ("cli-db", "cli-user")
    assert s.connection.command_line == {"dbname", "user"}


def test_within_one_layer_the_libpq_name_wins() -> None:
    s = settings_from_values({"POSTGRES_DB": "img", "PGDATABASE": "pg"})
    assert s.connection.dbname == "pg"
    assert s.connection.command_line == frozenset()


def test_errors_name_the_option_the_user_typed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"BACKUP_MAX_COUNT": "5"}, overrides={"BACKUP_MAX_COUNT": "0"})
    assert (
        info.value.message
        == "--max-count '0' is out of range; it must be a whole number between 1 and 2147483647"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={"PGPORT": "x"})
    assert info.value.message.startswith("--port 'x' is not a whole number")


def test_errors_name_the_variable_and_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BACKUP_MIN_KEEP=0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, env_file=env_file)
    assert info.value.message == (
        f"BACKUP_MIN_KEEP='0' (in {env_file}) is out of range; "
        "it must be a whole number between 1 and 2147483647"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"BACKUP_MAX_COUNT": "0"}, env_file=env_file)
    assert (
        info.value.message == "BACKUP_MAX_COUNT='0' is out of range; "
        "it must be a whole number between 1 and 2147483647"
    )
