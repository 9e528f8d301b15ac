"""docker-compose.yml, Dockerfile.db and .env.example, read as files (no engine needed).

Where Compose is installed, `docker compose config` (v2; else Compose v1's
`docker-compose config`) resolves them with a .env, as every compose command does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from velocity_pg import settings
from velocity_pg.postgres import compression

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def db(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["db"]
    assert isinstance(service, dict)
    return service


def test_project_name(compose: dict[str, Any]) -> None:
    assert compose["name"] == "django-velocity"


def test_db_builds_from_dockerfile_db_with_the_base_image_as_argument(db: dict[str, Any]) -> None:
    assert db["build"]["context"] == "."
    assert db["build"]["dockerfile"] == "Dockerfile.db"
    assert (REPO / "Dockerfile.db").is_file()
    # The template's own image: an existing postgres-data volume keeps its major and C library.
    assert db["build"]["args"]["POSTGRES_IMAGE"] == "${POSTGRES_IMAGE:-postgres:16-alpine}"
    dockerfile = (REPO / "Dockerfile.db").read_text()
    assert "ARG POSTGRES_IMAGE=postgres:16-alpine\nFROM ${POSTGRES_IMAGE}\n" in dockerfile


def test_backup_and_data_volumes_are_named_volumes(
    compose: dict[str, Any], db: dict[str, Any]
) -> None:
    mounts = dict(m.rsplit(":", 1) for m in db["volumes"])
    assert mounts["backup-data"] == "/backups"
    # The template's names; POSTGRES_DATA_VOLUME picks another for a newer major.
    data = "${POSTGRES_DATA_VOLUME:-postgres-data}"
    assert mounts[data] == "/var/lib/postgresql/data"
    assert set(compose["volumes"]) >= {"backup-data", "postgres-data"}


def test_the_data_volumes_of_newer_majors_are_declared(compose: dict[str, Any]) -> None:
    """`just db-upgrade` moves db to one of them (POSTGRES_DATA_VOLUME): Compose refuses a
    volume the file does not declare, and creates only the one db uses."""
    for major in (16, 17, 18):
        assert f"postgres-data-{major}" in compose["volumes"]


def test_healthcheck_uses_pg_isready(db: dict[str, Any]) -> None:
    check = db["healthcheck"]
    assert check["test"][0] == "CMD-SHELL"
    assert "pg_isready" in check["test"][1]
    assert "-h 127.0.0.1" in check["test"][1]  # the real server, not the init-time one
    assert {"interval", "timeout", "retries"} <= set(check)


def test_settings_come_from_env_with_velocity_pg_defaults(db: dict[str, Any]) -> None:
    env = db["environment"]
    assert env["BACKUP_DIR"] == settings.DEFAULT_BACKUP_DIR == "/backups"
    for name, default in (
        ("BACKUP_MAX_AGE_DAYS", settings.DEFAULT_MAX_AGE_DAYS),
        ("BACKUP_MAX_COUNT", settings.DEFAULT_MAX_COUNT),
        ("BACKUP_MIN_KEEP", settings.DEFAULT_MIN_KEEP),
        ("BACKUP_NICE", settings.DEFAULT_DUMP_NICE),
        ("BACKUP_TCP_TIMEOUT", settings.DEFAULT_TCP_TIMEOUT),
        ("BACKUP_COMPRESSION", compression.DEFAULT.spec),
    ):
        assert env[name] == f"${{{name}:-{default}}}"
    assert env["BACKUP_KEEP_PREVIOUS"] == "${BACKUP_KEEP_PREVIOUS:-true}"
    # Never `:?`: it would make every compose command (every just recipe) fail.
    assert env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"
    assert env["POSTGRES_USER"] == "${POSTGRES_USER:-postgres}"
    assert env["POSTGRES_DB"] == "${POSTGRES_DB:-velocity}"


def test_no_scripts_are_mounted(db: dict[str, Any]) -> None:
    assert all(not m.split(":")[0].startswith((".", "/")) for m in db["volumes"])


def test_env_example_has_every_setting_compose_reads() -> None:
    example = (REPO / ".env.example").read_text()
    values = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    text = (REPO / "docker-compose.yml").read_text()
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert read == set(values), "docker-compose.yml and .env.example disagree"
    defaults = dict(re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", text))
    for name, default in defaults.items():
        assert values[name] == default, f"{name}: .env.example says {values[name]!r}"
    assert values["POSTGRES_PASSWORD"] == ""  # no default password


# -- the db-backup service (velocity-pg schedule) ---------------------------------------


@pytest.fixture(scope="module")
def db_backup(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["db-backup"]
    assert isinstance(service, dict)
    return service


def test_db_backup_is_the_db_image_running_the_scheduler(
    db: dict[str, Any], db_backup: dict[str, Any]
) -> None:
    assert db_backup["build"] == db["build"]  # the same image: pg_dump matches the server
    assert db_backup["command"] == ["velocity-pg", "schedule"]
    assert db_backup["user"] == "postgres"  # backups owned like `just db-backup`'s
    assert db_backup["init"] is True
    assert db_backup["restart"] == "unless-stopped"
    assert db_backup["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert db_backup["volumes"] == ["backup-data:/backups"]


def test_db_backup_connects_to_db_with_the_db_settings(
    db: dict[str, Any], db_backup: dict[str, Any]
) -> None:
    env, db_env = db_backup["environment"], db["environment"]
    assert env["PGHOST"] == "db"
    assert env["PGUSER"] == db_env["POSTGRES_USER"]
    assert env["PGPASSWORD"] == db_env["POSTGRES_PASSWORD"]
    assert env["PGDATABASE"] == db_env["POSTGRES_DB"]
    assert env["DATABASE_URL"] == "${DATABASE_URL:-}"  # the password, when no POSTGRES_PASSWORD
    shared = [name for name in db_env if name.startswith(("BACKUP_", "AWS_")) or name == "TZ"]
    assert {"BACKUP_S3_URL", "AWS_SECRET_ACCESS_KEY", "BACKUP_SCHEDULE", "TZ"} <= set(shared)
    for name in shared:  # retention, off-site copies, the schedule: the same as db's
        assert env[name] == db_env[name], name
    assert env["BACKUP_SCHEDULE"] == f"${{BACKUP_SCHEDULE:-{settings.DEFAULT_SCHEDULE}}}"
    assert env["BACKUP_VERIFY"] == f"${{BACKUP_VERIFY:-{settings.DEFAULT_VERIFY}}}"
    assert env["TZ"] == "${TZ:-UTC}"
    for name in ("BACKUP_PING_URL", "BACKUP_METRICS_FILE"):
        assert env[name] == f"${{{name}:-}}"


def test_the_status_page_is_off_by_default_and_published_on_loopback_only(
    db_backup: dict[str, Any],
) -> None:
    assert db_backup["environment"]["BACKUP_HTTP_ADDR"] == "${BACKUP_HTTP_ADDR:-}"
    # No host port of its own unless asked (BACKUP_HTTP_PORT): Docker picks a free one, so
    # two projects on one host never collide over a page that is off (seen on a real
    # engine: the second project's db-backup did not start, "port is already allocated").
    assert db_backup["ports"] == ["127.0.0.1:${BACKUP_HTTP_PORT:-}:8070"]


def test_turning_the_status_page_on_leaves_the_database_service_unchanged(
    tmp_path: Path,
) -> None:
    """BACKUP_HTTP_ADDR is db-backup's alone: in db's environment, a change of it made
    `docker compose up -d` recreate db (the database restarted, the app's connections
    dropped) just to turn a read-only page on (seen on a real engine,
    tests/test_docker_page.py)."""
    off = compose_config(tmp_path, "BACKUP_HTTP_ADDR=\n")
    on = compose_config(tmp_path, "BACKUP_HTTP_ADDR=0.0.0.0:8070\n")
    assert "BACKUP_HTTP_ADDR" not in service_environment(on, "db")
    assert on["services"]["db"] == off["services"]["db"]
    assert service_environment(on, "db-backup")["BACKUP_HTTP_ADDR"] == "0.0.0.0:8070"


def test_the_status_page_address_and_port_resolve(tmp_path: Path) -> None:
    config = compose_config(tmp_path, "BACKUP_HTTP_ADDR=0.0.0.0:8070\nBACKUP_HTTP_PORT=18070\n")
    assert service_environment(config, "db-backup")["BACKUP_HTTP_ADDR"] == "0.0.0.0:8070"
    ports = config["services"]["db-backup"]["ports"]
    published = [
        (p["host_ip"], str(p["published"]), int(p["target"])) if isinstance(p, dict) else p
        for p in ports
    ]
    assert published in (
        [("127.0.0.1", "18070", 8070)],
        ["127.0.0.1:18070:8070"],  # Compose v1 prints the short form
    ), published
    # The address velocity-pg reads from it: every address in the container, port 8070.
    from velocity_pg.scheduling.http import parse_addr

    assert parse_addr("0.0.0.0:8070") == ("0.0.0.0", 8070)  # noqa: S104


def test_db_backup_health_is_freshness(db_backup: dict[str, Any]) -> None:
    check = db_backup["healthcheck"]
    assert check["test"] == ["CMD", "velocity-pg", "status", "--max-age", "auto"]
    assert {"interval", "timeout", "retries", "start_period"} <= set(check)
    # `up --wait` waits for the first probe: 10 s, not a minute. Not start_interval:
    # Compose v1 refuses the file with it (test_compose_v1_refuses_start_interval).
    assert check["interval"] == "10s"
    assert "start_interval" not in check


def test_comments_name_the_stop_signal_the_image_sends() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    assert "SIGTERM" not in text  # the postgres image's STOPSIGNAL is SIGINT
    assert "SIGINT" in text
    assert "built once" not in text  # Compose builds the image once per service


# -- the files as Compose and just read them --------------------------------------------


def compose_command() -> list[str]:
    """`docker compose` (v2) where it runs, else `docker-compose` (v1, or v2's standalone
    binary: Debian 13's docker-compose package is Compose v2)."""
    import shutil
    import subprocess

    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("needs Docker Compose (v2 plugin or v1 docker-compose) for `config`")


def compose_major(command: list[str]) -> int:
    """1 for Compose v1 (docker-compose 1.x), also behind a `docker compose` shim that
    calls itself 2.x (the docker sandbox's: "... running docker-compose 1.29.2"); else 2."""
    import subprocess

    out = subprocess.run(
        [*command, "version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return 1 if re.search(r"docker-compose(?: version)? 1\.", out) else 2


def compose_config(folder: Path, env_text: str, compose_text: str | None = None) -> dict[str, Any]:
    """The project as Compose resolves it (`config`, no engine needed) with this .env."""
    import subprocess

    command = compose_command()
    text = (REPO / "docker-compose.yml").read_text() if compose_text is None else compose_text
    if compose_major(command) == 1:
        # Compose v1 knows no top-level `name:` (the project name); nothing else changes.
        text = re.sub(r"^name: .*\n", "", text, flags=re.M)
    (folder / "docker-compose.yml").write_text(text)
    (folder / ".env").write_text(env_text)
    result = subprocess.run(
        [*command, "config"], cwd=folder, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


def service_environment(config: dict[str, Any], service: str) -> dict[str, str]:
    env = config["services"][service]["environment"]
    if isinstance(env, list):  # v1 may print a list of NAME=value
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_every_compose_command_works_with_no_password_set(tmp_path: Path) -> None:
    """The template's .env has no POSTGRES_PASSWORD: `config` (so every command) works."""
    template_env = "DATABASE_URL=postgres://postgres:postgres@db:5432/velocity\n"
    config = compose_config(tmp_path, template_env)
    backup_env = service_environment(config, "db-backup")
    assert backup_env["DATABASE_URL"] == "postgres://postgres:postgres@db:5432/velocity"
    assert backup_env["PGPASSWORD"] == ""
    # velocity-pg reads it so: db's host, user and database, DATABASE_URL's password.
    connection = settings.settings_from_values(backup_env).connection
    assert (connection.host, connection.user, connection.dbname) == ("db", "postgres", "velocity")
    assert connection.password == "postgres"


def data_volume_source(config: dict[str, Any]) -> str:
    """The volume db's data directory is on, from `config` (v2's long form, v1's short)."""
    for mount in config["services"]["db"]["volumes"]:
        if isinstance(mount, dict):
            if mount["target"] == "/var/lib/postgresql/data":
                return str(mount["source"])
        elif mount.split(":")[1] == "/var/lib/postgresql/data":
            return str(mount.split(":")[0])
    raise AssertionError(config["services"]["db"]["volumes"])


def test_postgres_data_volume_in_env_moves_db_to_a_new_volume(tmp_path: Path) -> None:
    """Without the line: the template's postgres-data; with it, the named one (what `just
    db-upgrade` reads back from `config` to tell the old volume from the new)."""
    assert data_volume_source(compose_config(tmp_path, "")) == "postgres-data"
    moved = compose_config(tmp_path, "POSTGRES_DATA_VOLUME=postgres-data-17\n")
    assert data_volume_source(moved) == "postgres-data-17"


def test_a_setting_in_env_reaches_db_and_db_backup_alike(tmp_path: Path) -> None:
    env_text = 'BACKUP_MAX_COUNT=2\nBACKUP_SCHEDULE="@every 30s"\nTZ=Europe/Berlin\n'
    config = compose_config(tmp_path, env_text)
    db_env, backup_env = (service_environment(config, s) for s in ("db", "db-backup"))
    for name, value in (
        ("BACKUP_MAX_COUNT", "2"),
        ("BACKUP_SCHEDULE", "@every 30s"),
        ("TZ", "Europe/Berlin"),
    ):
        assert db_env[name] == backup_env[name] == value, name
    shared = {k for k in db_env if k.startswith(("BACKUP_", "AWS_")) or k == "TZ"}
    # Every backup setting but the scheduler's own status page address (db-backup's alone).
    assert shared | {"BACKUP_HTTP_ADDR"} == {
        k for k in backup_env if k.startswith(("BACKUP_", "AWS_")) or k == "TZ"
    }
    assert all(db_env[k] == backup_env[k] for k in shared)


def test_only_compose_v2_accepts_start_interval(tmp_path: Path) -> None:
    """Why db-backup's health check has no start_interval: Compose v1 rejects the file,
    Compose v2 (2.20 and later) accepts it. CI runs this with v1 on Debian 12 and v2 on
    Debian 13 (each one's docker-compose package)."""
    import subprocess

    command = compose_command()
    text = "services:\n  a:\n    image: x\n    healthcheck:\n      test: [CMD, 'true']\n"
    (tmp_path / "docker-compose.yml").write_text(text + "      start_interval: 5s\n")
    result = subprocess.run(
        [*command, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    if compose_major(command) == 1:
        assert result.returncode != 0
        assert "start_interval" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def env_lines(text: str) -> dict[str, str]:
    """NAME=value lines, as written (the values unparsed)."""
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


def just_dotenv(folder: Path, env_text: str, names: list[str]) -> dict[str, str]:
    """What the real `just` (set dotenv-load, as the template's justfile has) reads."""
    import json
    import subprocess

    from conftest import just_program

    (folder / ".env").write_text(env_text)
    (folder / "show.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({n: os.environ.get(n, '<unset>') for n in sys.argv[1:]}))\n"
    )
    (folder / "justfile").write_text(
        f"set dotenv-load := true\n\nshow:\n    @{sys.executable} show.py {' '.join(names)}\n"
    )
    result = subprocess.run(
        [just_program(), "--justfile", str(folder / "justfile"), "show"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert isinstance(values, dict)
    return values


def test_env_example_loads_in_just_and_compose_alike(tmp_path: Path) -> None:
    """The shipped .env.example, as just's dotenv loader and as Compose read it."""
    from dotenv import dotenv_values

    text = (REPO / ".env.example").read_text()
    names = sorted(env_lines(text))
    (tmp_path / "just").mkdir()
    by_just = just_dotenv(tmp_path / "just", text, names)
    config = compose_config(tmp_path, text)
    by_compose = service_environment(config, "db-backup")
    expected = {k: v or "" for k, v in dotenv_values(REPO / ".env.example").items()}
    for name in names:
        assert by_just[name] == expected[name], name
        if name in by_compose:
            assert by_compose[name] == (expected[name] or by_compose[name]), name


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of a markdown page, dedented to its fence."""
    found: list[tuple[str, str]] = []
    fence: tuple[str, str, list[str]] | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith("```"):
            fence = (line[: len(line) - len(stripped)], stripped[3:].strip(), [])
        elif fence is not None and stripped == "```":
            found.append((fence[1], "".join(f"{x}\n" for x in fence[2])))
            fence = None
        elif fence is not None:
            fence[2].append(line.removeprefix(fence[0]))
    return found


def is_env_file(code: str) -> bool:
    """A block that is lines of a .env file: NAME=value and comments, no commands."""
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
    value = r"""[A-Z][A-Z0-9_]*=("[^"]*"|'[^']*'|[^\s"']*)(\s+#.*)?"""
    return bool(lines) and all(re.fullmatch(value, line) for line in lines)


def test_every_env_line_the_docs_show_loads_in_just(tmp_path: Path) -> None:
    """`BACKUP_SCHEDULE=@every 30s` unquoted makes just refuse the whole .env (the README
    and every page of docs/)."""
    from dotenv import dotenv_values

    blocks = "\n".join(
        code
        for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        for language, code in fenced_blocks(page.read_text())
        if language in ("", "sh", "ini", "dotenv", "env") and is_env_file(code)
    )
    lines = [f"{k}={v}" for k, v in env_lines(blocks).items() if "$" not in v]
    assert any(line.startswith("BACKUP_SCHEDULE=") for line in lines)
    text = "".join(f"{line}\n" for line in lines)
    (tmp_path / "readme.env").write_text(text)
    by_just = just_dotenv(tmp_path, text, sorted(env_lines(text)))
    for name, value in dotenv_values(tmp_path / "readme.env").items():
        assert by_just[name] == (value or ""), name


# -- the guide's result on both of the template's compose files (docs/adoption.md) -------

#: The `db` service's environment in the Django Velocity template's two compose files
#: (rbrenaget/django-velocity): docker-compose.yml writes the values, and
#: docker-compose.production.yml reads them from .env with defaults. Only this shape is
#: kept here; the template's .env names the database in DATABASE_URL alone.
TEMPLATE_DB_ENVIRONMENTS = {
    "docker-compose.yml": {
        "POSTGRES_DB": "velocity",
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "postgres",
    },
    "docker-compose.production.yml": {
        "POSTGRES_DB": "${POSTGRES_DB:-velocity}",
        "POSTGRES_USER": "${POSTGRES_USER:-postgres}",
        "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:-postgres}",
    },
}
TEMPLATE_ENV = "DATABASE_URL=postgres://postgres:postgres@db:5432/velocity\n"


def block(text: str, start: str) -> str:
    """The lines of this repository's docker-compose.yml from ``start`` to the next blank
    line at the same or a lower indentation: what the guide has users copy."""
    lines = text.splitlines()
    first = lines.index(start)
    indent = len(start) - len(start.lstrip())
    end = first + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    return "\n".join(lines[first:end]).rstrip() + "\n"


def adopted(db_environment: dict[str, str]) -> str:
    """A template compose file after the guide's steps 2 and 4: db builds Dockerfile.db and
    merges x-backup-settings into its own environment; db-backup copied as it is."""
    ours = (REPO / "docker-compose.yml").read_text()
    image = block(ours, "x-db-image: &db-image").replace("context: .", "context: ./velocity-pg")
    shared = block(ours, "x-backup-settings: &backup-settings")
    db_backup = block(ours, "  db-backup:")
    template_env = "".join(f'      {k}: "{v}"\n' for k, v in db_environment.items())
    return (
        f"{image}\n{shared}\nservices:\n"
        "  db:\n    build: *db-image\n    environment:\n      <<: *backup-settings\n"
        f"{template_env}    volumes:\n      - postgres-data:/var/lib/postgresql/data\n"
        f"      - backup-data:/backups\n\n{db_backup}\n"
        "volumes:\n  postgres-data:\n  backup-data:\n"
    )


@pytest.mark.parametrize("template_file", sorted(TEMPLATE_DB_ENVIRONMENTS))
def test_the_guide_on_the_templates_files_gives_one_source_of_settings(
    tmp_path: Path, template_file: str
) -> None:
    text = adopted(TEMPLATE_DB_ENVIRONMENTS[template_file])
    env_text = TEMPLATE_ENV + 'BACKUP_MAX_COUNT=2\nBACKUP_SCHEDULE="@every 30s"\n'
    (tmp_path / "velocity-pg").mkdir()  # the build context; some Compose versions check it
    config = compose_config(tmp_path, env_text, text)
    db_env, backup_env = (service_environment(config, s) for s in ("db", "db-backup"))
    for name in ("BACKUP_MAX_COUNT", "BACKUP_SCHEDULE", "TZ", "BACKUP_MAX_AGE_DAYS"):
        assert db_env[name] == backup_env[name], name
    assert db_env["BACKUP_MAX_COUNT"] == "2"
    assert db_env["BACKUP_SCHEDULE"] == "@every 30s"
    # The template's .env unchanged: db-backup reaches db's database with its password.
    connection = settings.settings_from_values(backup_env).connection
    assert (connection.host, connection.user, connection.dbname) == ("db", "postgres", "velocity")
    assert connection.password == "postgres"
    # And velocity-pg in db (just db-*) reads db's own values: the same database.
    in_db = settings.settings_from_values(db_env).connection
    assert (in_db.user, in_db.dbname) == ("postgres", "velocity")
