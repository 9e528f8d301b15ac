"""End to end on a real Docker engine: one `.env` line, BACKUP_NOTIFY_URLS, makes the
db-backup service's failures, staleness and recovery arrive as e-mail.

The SMTP receiver (aiosmtpd, with a login) runs in this test process, bound to the
Docker bridge's gateway address, which the containers reach. The project builds
Dockerfile.db (with the notify extra), comes up, makes its first backup; then `db`
is stopped: the scheduler's runs fail (a FAILED mail), the newest backup grows older
than the allowance (a STALE mail, by the scheduler's own clock); `db` is started
again and the next run succeeds (a RECOVERED mail). No secret of the URL is in the
service's log. Ends with `docker compose down -v --rmi local`.

Opt-in like tests/test_docker_e2e.py::

    VELOCITY_E2E_DOCKER=1 POSTGRES_IMAGE=sandbox/postgres:15-bookworm \\
        .venv/bin/pytest -p no:cacheprovider tests/test_docker_notify.py

The project is named velocity-pg-notify (``VELOCITY_NOTIFY_PROJECT`` for another), never
a real project's name: the final `down -v` deletes its volumes.
"""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from docker_support import bridge_gateway, free_port
from test_docker_e2e import ENGINE_TIMEOUT, chosen_base_image, skip_reason

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("VELOCITY_NOTIFY_PROJECT", "velocity-pg-notify")
USER, DB, PASSWORD = "velocity", "velocity_notify", "notify-Secret-pw"
SMTP_USER, SMTP_PASSWORD = "smtp-user", "Smtp-e2e-Pa55word"


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    def url(self) -> str:
        return (
            f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@{self.host}:{self.port}"
            "?mode=insecure&from=backups@example.com&to=ops@example.com"
        )

    def with_subject(self, needle: str) -> list[EmailMessage]:
        return [m for m in list(self.messages) if needle in str(m["Subject"])]

    def wait_for(self, needle: str, timeout: float) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while not self.with_subject(needle):
            subjects = [str(m["Subject"]) for m in self.messages]
            assert time.monotonic() < deadline, f"no {needle!r} in {subjects}"
            time.sleep(1)
        return self.with_subject(needle)[0]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None
    return str(part.get_content())


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    host = bridge_gateway()
    box = Mailbox(host=host, port=free_port(host))

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(
                email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
            )
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        return AuthResult(success=ok)

    controller = Controller(
        Handler(), hostname=host, port=box.port, authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    yield box
    controller.stop()


@dataclass
class Project:
    env: dict[str, str]
    env_file: Path

    def run(self, *cmd: str, check: bool = True, timeout: float = 1800) -> str:
        result = subprocess.run(
            list(cmd), env=self.env, cwd=REPO, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout + result.stderr

    def compose(self, *args: str, check: bool = True) -> str:
        return self.run("docker", "compose", "--env-file", str(self.env_file), *args, check=check)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "db-backup")

    def wait_for_log(self, needle: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while needle not in (text := self.logs()):
            assert time.monotonic() < deadline, f"{needle!r} not in db-backup's log:\n{text}"
            time.sleep(2)


@pytest.fixture(scope="module")
def project(mailbox: Mailbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("notify-project")
    env_file = folder / ".env"
    env_file.write_text(
        "\n".join(
            [
                f"POSTGRES_IMAGE={chosen_base_image()}",
                f"POSTGRES_USER={USER}",
                f"POSTGRES_PASSWORD={PASSWORD}",
                f"POSTGRES_DB={DB}",
                "BACKUP_SCHEDULE=@every 10s",
                "BACKUP_HEALTH_MAX_AGE=25s",
                "BACKUP_NOTIFY_REPEAT=1h",
                "BACKUP_NOTIFY_NAME=notify-e2e",
                # The one line this is about:
                f"BACKUP_NOTIFY_URLS={mailbox.url()}",
                "",
            ]
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "POSTGRES_", "BACKUP_", "COMPOSE_"))
    }
    env.update(
        COMPOSE_PROJECT_NAME=PROJECT,
        COMPOSE_FILE=str(REPO / "docker-compose.yml"),
        DOCKER_BUILDKIT="0",
        COMPOSE_HTTP_TIMEOUT=ENGINE_TIMEOUT,
    )
    p = Project(env=env, env_file=env_file)
    p.compose("down", "-v", "--remove-orphans", "--rmi", "local")
    try:
        p.compose("up", "-d", "--build", "--wait", "db")
        p.compose("up", "-d", "--build", "db-backup")
        p.wait_for_log("run succeeded")
        yield p
    finally:
        p.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)


def test_failures_staleness_and_recovery_arrive_as_mail(project: Project, mailbox: Mailbox) -> None:
    out = project.compose(
        "exec", "-T", "-u", "postgres", "db", "velocity-pg", "notify", "--test", check=False
    )
    assert "#1 (E-Mail): delivered" in out, out
    mailbox.wait_for("test message", timeout=30)
    assert not mailbox.with_subject("FAILED")  # all good so far: nothing but the test
    project.compose("stop", "db")
    failed = mailbox.wait_for("FAILED (backup)", timeout=120)
    body = text_of(failed)
    assert f"backup of '{DB}' FAILED" in str(failed["Subject"])
    assert "Where: notify-e2e (backups in /backups)" in body
    assert "Reason (backup): " in body
    stale = mailbox.wait_for("are STALE", timeout=120)
    assert "no successful backup within the allowance (25s)" in text_of(stale)
    project.compose("start", "db")
    recovered = mailbox.wait_for("RECOVERED", timeout=180)
    assert "backups were failing or late for " in text_of(recovered)
    log = project.logs()
    assert "messages: 1 URL(s)" in log
    for secret in (SMTP_PASSWORD, SMTP_USER, PASSWORD):
        assert secret not in log
        assert secret not in out
