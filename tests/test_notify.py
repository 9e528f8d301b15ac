"""Messages through Apprise (BACKUP_NOTIFY_URLS), received by real servers on 127.0.0.1.

An SMTP server (aiosmtpd, with a login) receives the mail of ``mailto://`` URLs; an
HTTP server receives JSON webhooks (``json://``) and ntfy posts (``ntfy://``). Faults
are real: a receiver that is not there, one slower than the timeout, one answering
500; a password that stops working for a while; a server that is really stopped
(pg_ctl stop) for longer than the allowance; a drill that fails. Every test checks
that no secret of the URLs shows in any output.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import PASSWORD, Target
from offsite_support import (  # noqa: F401 (fixtures)
    AWS_SECRET,
    Bucket,
    bucket,
    offsite_env,
    s3_endpoint,
)
from test_schedule import (  # noqa: F401 (fixtures)
    OwnServer,
    Scheduler,
    free_port,
    own_role,
    own_server,
    schedulers,
    set_password,
    start,
)

from velocity_pg.scheduling import notify

SMTP_USER = "smtp-user"
SMTP_PASSWORD = "Smtp-Pa55-word-xyz"
HOOK_TOKEN = "hook-token-abcdef123"
TOPIC = "topic-secret-9876"
SECRETS = (SMTP_PASSWORD, HOOK_TOKEN, TOPIC, PASSWORD, AWS_SECRET)


# -- receivers ---------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def url(self) -> str:
        return (
            f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{self.port}"
            "?mode=insecure&from=backups@example.com&to=ops@example.com"
        )

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in list(self.messages)]

    def with_subject(self, needle: str) -> list[EmailMessage]:
        return [m for m in list(self.messages) if needle in str(m["Subject"])]

    def wait_for(self, needle: str, count: int = 1, timeout: float = 60) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.with_subject(needle)) < count:
            assert time.monotonic() < deadline, f"no {needle!r} x{count} in {self.subjects()}"
            time.sleep(0.1)
        return self.with_subject(needle)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None
    return str(part.get_content())


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())

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
        if ok:
            box.logins.append(mechanism)
        return AuthResult(success=ok)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield box
    controller.stop()


@dataclass
class Post:
    path: str
    body: dict[str, Any]


@dataclass
class WebHooks:
    """JSON webhooks and ntfy posts; ``delay``/``status`` make one path slow or broken."""

    port: int = 0
    posts: list[Post] = field(default_factory=list)
    behaviour: dict[str, tuple[float, int]] = field(default_factory=dict)
    server: http.server.ThreadingHTTPServer | None = None

    def json_url(self, name: str = "ok", **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"json://127.0.0.1:{self.port}/{name}/{HOOK_TOKEN}" + (f"?{q}" if q else "")

    def ntfy_url(self) -> str:
        return f"ntfy://127.0.0.1:{self.port}/{TOPIC}"

    def titled(self, needle: str) -> list[Post]:
        return [p for p in list(self.posts) if needle in str(p.body.get("title", ""))]

    def wait_for(self, needle: str, count: int = 1, timeout: float = 60) -> list[Post]:
        deadline = time.monotonic() + timeout
        while len(self.titled(needle)) < count:
            titles = [p.body.get("title") for p in self.posts]
            assert time.monotonic() < deadline, f"no {needle!r} x{count} in {titles}"
            time.sleep(0.1)
        return self.titled(needle)


@pytest.fixture
def hooks() -> Iterator[WebHooks]:
    state = WebHooks()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            name = self.path.strip("/").split("/")[0]
            delay, status = state.behaviour.get(name, (0.0, 200))
            if delay:
                time.sleep(delay)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"raw": raw.decode(errors="replace")}
            state.posts.append(Post(self.path, body))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.server = server
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


FAILING_DRILL_SQL = r"""
CREATE FUNCTION public.refuse_in_drill() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF current_database() LIKE 'velocity_pg_verify_%' THEN
        RAISE EXCEPTION 'this row refuses to be restored in a drill';
    END IF;
    RETURN true;
END $$;
CREATE TABLE public.picky (id int CHECK (public.refuse_in_drill()));
INSERT INTO public.picky VALUES (1);
"""


# -- pure parts ----------------------------------------------------------------------------


def test_urls_split_on_commas_and_spaces_but_not_inside_a_url() -> None:
    text = " mailto://u:p@h?to=a@x.com,b@x.com , slack://T/B/C\njson://h/p,"
    assert notify.split_urls(text) == [
        "mailto://u:p@h?to=a@x.com,b@x.com",
        "slack://T/B/C",
        "json://h/p",
    ]


def test_events_and_their_groups() -> None:
    assert notify.parse_events(None) == frozenset(
        {"failed", "offsite", "verify", "suspect", "recovered", "stale", "digest"}
    )
    assert notify.parse_events("failures") == {"failed", "offsite", "verify"}
    assert notify.parse_events("stale, recovered") == {"stale", "recovered"}
    with pytest.raises(notify.ConfigError, match="'sometimes', which is not an event"):
        notify.parse_events("stale sometimes")


def test_redaction_takes_every_part_of_a_url_out() -> None:
    urls = [
        f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@smtp.example.com:2525?to=ops@example.com",
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
        "ntfy://ntfy.sh/my%2Dsecret-topic",
    ]
    redact = notify.Redactor(urls)
    said = (
        f"login {SMTP_USER} with {SMTP_PASSWORD} failed; POST hooks.slack.com/services/"
        "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ; topic my-secret-topic"
    )
    shown = redact(said)
    for secret in (SMTP_PASSWORD, SMTP_USER, "T1JJ3T3L2", "TIiajkdnlazkcOXrIdevi7FQ", "my-secret"):
        assert secret not in shown
    assert "smtp.example.com" not in redact(urls[0])


def test_a_reason_is_one_line_with_its_cause() -> None:
    records = [
        (10, "JSON POST URL: http://127.0.0.1:9/x"),
        (30, "A Connection error occurred sending JSON notification to 127.0.0.1."),
        (10, "Socket Exception: ... [Errno 111] Connection refused'))"),
    ]
    assert notify.reason_from(records) == (
        "A Connection error occurred sending JSON notification to 127.0.0.1. (connection refused)"
    )
    assert notify.ordinal(2) == "2nd" and notify.ordinal(11) == "11th"


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {"BACKUP_NOTIFY_URLS": f"json://127.0.0.1/{HOOK_TOKEN}, nosuch://{TOPIC}"},
            "BACKUP_NOTIFY_URLS: the 2nd URL (of 2) cannot be used: nosuch:// is not a scheme",
        ),
        (
            {"BACKUP_NOTIFY_URLS": f"json://127.0.0.1/{HOOK_TOKEN} slack://{TOPIC}"},
            "the 2nd URL (of 2) cannot be used: its scheme slack:// is known, but the rest",
        ),
        ({"BACKUP_NOTIFY_URLS": " , "}, "BACKUP_NOTIFY_URLS holds no URL"),
        (
            {"BACKUP_NOTIFY_URLS": "json://127.0.0.1/x", "BACKUP_NOTIFY_ON": "failures,often"},
            "BACKUP_NOTIFY_ON holds 'often'",
        ),
        (
            {"BACKUP_NOTIFY_URLS": "json://127.0.0.1/x", "BACKUP_NOTIFY_REPEAT": "daily"},
            "BACKUP_NOTIFY_REPEAT 'daily' is not a duration",
        ),
        (
            {"BACKUP_NOTIFY_URLS": "json://127.0.0.1/x", "BACKUP_NOTIFY_DIGEST": "@fortnightly"},
            "BACKUP_NOTIFY_DIGEST:",
        ),
    ],
)
def test_bad_message_settings_exit_2_before_anything_runs(
    target: Target, env: dict[str, str], reason: str
) -> None:
    for args in (("schedule",), ("schedule", "--once"), ("backup", "--notify"), ("notify",)):
        result = target.run(*args, env=target.env(**env), timeout=60)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], (args, result.stderr)
        assert result.stdout == ""
        no_secrets(result.stderr)
        assert list(target.backup_dir.iterdir()) == []
    # Without --notify a manual backup does not read them: a typo never stops it.
    plain = target.run("backup", env=target.env(**env))
    assert plain.returncode == 0, plain.stderr


def test_notify_needs_urls(target: Target) -> None:
    shown = target.run("notify")
    assert shown.returncode == 0 and "Messages: off" in shown.stdout
    for args in (("notify", "--test"), ("backup", "--notify")):
        result = target.run(*args)
        assert result.returncode == 2 and "BACKUP_NOTIFY_URLS is not set" in result.stderr


# -- notify --test ---------------------------------------------------------------------------


def test_notify_test_says_per_url_delivered_or_why_not(
    target: Target, mailbox: Mailbox, hooks: WebHooks
) -> None:
    hooks.behaviour = {"slow": (6.0, 200), "broken": (0.0, 500)}
    urls = [
        mailbox.url(),
        hooks.json_url(),
        hooks.ntfy_url(),
        f"json://127.0.0.1:{free_port()}/down/{HOOK_TOKEN}",  # nobody listens
        hooks.json_url("slow", rto="1"),  # slower than its (lowered) timeout
        hooks.json_url("broken"),
    ]
    env = target.env(BACKUP_NOTIFY_URLS=" ".join(urls), BACKUP_NOTIFY_NAME="shop-prod")
    started = time.monotonic()
    result = target.run("--debug", "notify", "--test", env=env)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#1 (E-Mail): delivered"
    assert lines[1] == "#2 (JSON): delivered"
    assert lines[2] == "#3 (ntfy): delivered"
    assert lines[3].startswith("#4 (JSON): NOT delivered: ") and "connection refused" in lines[3]
    assert lines[4].startswith("#5 (JSON): NOT delivered: ") and "timed out" in lines[4].lower()
    assert lines[5].startswith("#6 (JSON): NOT delivered: ") and "500" in lines[5]
    assert lines[6] == "3 of 6 URL(s) took the test message."
    assert "trying again" in result.stderr  # retried within the run
    assert took < 45, took  # bounded: timeouts and a few attempts
    no_secrets(result.stdout, result.stderr)
    # What arrived: the same subject and body everywhere.
    (mail,) = mailbox.wait_for("test message")
    assert mail["Subject"] == "velocity-pg on shop-prod: test message"
    assert mail["To"] == "ops@example.com" and mailbox.logins
    body = text_of(mail)
    assert f"Database: {target.dbname}" in body and "velocity-pg notify --test" in body
    posts = hooks.wait_for("test message", 2)
    hook = next(p for p in posts if p.path.startswith("/ok/"))
    assert hook.body["title"] == "velocity-pg on shop-prod: test message"
    assert f"Database: {target.dbname}" in hook.body["message"]
    ntfy = next(p for p in posts if p.body.get("topic") == TOPIC)
    assert ntfy.body["title"] == "velocity-pg on shop-prod: test message"


def test_notify_shows_the_urls_by_position_and_service_only(target: Target) -> None:
    env = target.env(
        BACKUP_NOTIFY_URLS=f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@smtp.example.com "
        f"ntfys://ntfy.sh/{TOPIC}",
        BACKUP_NOTIFY_ON="failures",
        BACKUP_NOTIFY_REPEAT="6h",
    )
    result = target.run("notify", env=env)
    assert result.returncode == 0, result.stderr
    assert "#1 (E-Mail)" in result.stdout and "#2 (ntfy)" in result.stdout
    assert "Events (BACKUP_NOTIFY_ON): failed, offsite, verify" in result.stdout
    assert "6h" in result.stdout
    no_secrets(result.stdout, result.stderr)


# -- the scheduler ---------------------------------------------------------------------------


def test_a_failing_run_is_told_once_then_its_recovery(
    target: Target,
    schedulers: list[Scheduler],
    own_role: tuple[str, str],
    mailbox: Mailbox,
    hooks: WebHooks,
) -> None:
    role, password = own_role
    set_password(target, role, "changed-for-a-while")
    s = start(
        schedulers,
        target,
        PGUSER=role,
        PGPASSWORD=password,
        BACKUP_NOTIFY_URLS=f"{mailbox.url()},{hooks.json_url()}",
        BACKUP_NOTIFY_NAME="shop-prod",
        BACKUP_NOTIFY_REPEAT="1h",
    )
    s.wait_for(lambda: s.count("run FAILED") >= 3, what="three failed runs")
    (failed,) = mailbox.wait_for("FAILED (backup)")
    subject = f"velocity-pg on shop-prod: backup of '{target.dbname}' FAILED (backup)"
    assert failed["Subject"] == subject
    body = text_of(failed)
    assert "What happened: the scheduled run started at " in body
    assert re.search(r"Reason \(backup\): .*password authentication failed", body)
    assert "What to do: " in body
    assert s.count("failed again; not told again") >= 1  # the same failure: not repeated
    set_password(target, role, password)
    (recovered,) = mailbox.wait_for("RECOVERED")
    assert "backups were failing or late for " in text_of(recovered)
    hooks.wait_for("RECOVERED")
    s.stop()
    assert s.proc.returncode == 0, s.stderr
    assert len(mailbox.with_subject("FAILED")) == 1  # told once within BACKUP_NOTIFY_REPEAT
    assert len(hooks.titled("FAILED (backup)")) == 1
    state = json.loads((target.backup_dir / ".velocity-notify.json").read_text())
    assert state["failing_since"] is None and state["last_success"]
    assert (target.backup_dir / ".velocity-notify.json").stat().st_mode & 0o777 == 0o600
    no_secrets(s.text(), s.stderr)
    assert password not in s.text()


def test_an_unreachable_server_goes_stale_is_told_again_then_recovers(
    target: Target, schedulers: list[Scheduler], own_server: OwnServer, hooks: WebHooks
) -> None:
    own_server.stop()  # unreachable from the start: no backup at all
    s = start(
        schedulers,
        target,
        BACKUP_NOTIFY_URLS=hooks.json_url(),
        BACKUP_NOTIFY_ON="stale,recovered",
        BACKUP_HEALTH_MAX_AGE="3s",
        BACKUP_NOTIFY_REPEAT="4s",
        **own_server.env(),
    )
    (stale,) = hooks.wait_for("are STALE", timeout=30)
    assert "There is no backup at all" in stale.body["message"]
    assert "no successful backup within the allowance (3s)" in stale.body["message"]
    hooks.wait_for("are still STALE", timeout=30)
    assert hooks.titled("FAILED") == []  # BACKUP_NOTIFY_ON leaves failures out
    own_server.start()
    (recovered,) = hooks.wait_for("RECOVERED", timeout=30)
    assert "succeeded; backups were failing or late for " in recovered.body["message"]
    stale_count = len(hooks.titled("STALE"))
    time.sleep(5)  # fresh now: no more stale messages
    assert len(hooks.titled("STALE")) == stale_count
    s.stop()
    assert s.proc.returncode == 0, s.stderr
    assert "notify: backups are stale" in s.text()
    no_secrets(s.text(), s.stderr)


def test_a_hanging_dump_goes_stale_by_the_schedulers_own_clock(
    target: Target, schedulers: list[Scheduler], hooks: WebHooks
) -> None:
    """No run fails: the first one hangs (a table lock), and the clock still says stale."""
    with target.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    locker = target.connect(autocommit=False)
    try:
        locker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        s = start(
            schedulers,
            target,
            BACKUP_NOTIFY_URLS=hooks.json_url(),
            BACKUP_HEALTH_MAX_AGE="2s",
        )
        hooks.wait_for("are STALE", timeout=30)
        assert s.count("run FAILED") == 0 and s.count("run succeeded") == 0
    finally:
        locker.rollback()
        locker.close()
    hooks.wait_for("RECOVERED", timeout=30)
    s.stop()
    assert s.proc.returncode == 0


def test_a_failing_drill_is_told_as_a_failed_check(target: Target, hooks: WebHooks) -> None:
    with target.connect() as conn:
        conn.execute(FAILING_DRILL_SQL)
    env = target.env(BACKUP_NOTIFY_URLS=hooks.json_url(), BACKUP_VERIFY="restore")
    result = target.run("schedule", "--once", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "verify: FAILED" in result.stdout
    (post,) = hooks.wait_for("failed its check (verify)", timeout=5)
    assert "Reason (verify): " in post.body["message"]
    assert "Do not rely on that backup" in post.body["message"]
    no_secrets(result.stdout, result.stderr)


def test_a_suspect_backup_is_logged_and_told(target: Target, hooks: WebHooks) -> None:
    with target.connect() as conn:
        conn.execute("CREATE TABLE big AS SELECT generate_series(1, 2000) AS id")
        conn.execute("ANALYZE big")
    assert target.run("backup").returncode == 0
    with target.connect() as conn:
        conn.execute("DELETE FROM big")
        conn.execute("ANALYZE big")
    env = target.env(BACKUP_NOTIFY_URLS=hooks.json_url())
    result = target.run("schedule", "--once", env=env)
    assert result.returncode == 0, result.stdout + result.stderr  # a valid backup still
    assert "SUSPECT, see below" in result.stdout
    assert "WARNING: backup " in result.stdout
    assert "looks wrong: table public.big 2,000 -> 0 rows" in result.stdout
    (post,) = hooks.wait_for("looks WRONG", timeout=10)
    assert "table public.big 2,000 -> 0 rows" in post.body["message"]
    assert "check the database now" in post.body["message"]
    assert "Pin: The last good backup " in post.body["message"]
    assert "is now pinned automatically" in post.body["message"]
    assert "automatic pin: the last good backup " in result.stdout
    # Not wanted: logged, not sent.
    hooks.posts.clear()
    quiet = target.env(BACKUP_NOTIFY_URLS=hooks.json_url(), BACKUP_NOTIFY_ON="failures")
    result = target.run("schedule", "--once", env=quiet)
    assert result.returncode == 0 and "looks wrong" in result.stdout
    assert not hooks.titled("looks WRONG")


def test_an_off_site_failure_is_told_as_such_while_the_local_backup_is_fine(
    target: Target, bucket: Bucket, hooks: WebHooks
) -> None:
    env = target.env(**offsite_env(bucket), BACKUP_NOTIFY_URLS=hooks.json_url())
    env["BACKUP_S3_URL"] = f"s3://{bucket.name}-missing/db"  # a bucket that is not there
    result = target.run("schedule", "--once", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "push: FAILED" in result.stdout and "backup: ok" in result.stdout
    (post,) = hooks.wait_for("off-site copy FAILED (push)", timeout=5)
    assert post.body["title"].endswith("the local backup is fine")
    assert "The local backup was made and is safe" in post.body["message"]
    assert "Reason (push): " in post.body["message"]
    # A manual backup with --notify, its copy failing: the same kind of message.
    manual = target.run("backup", "--notify", env=env)
    assert manual.returncode == 1
    (told,) = hooks.wait_for("off-site copy FAILED (backup)", timeout=5)
    assert "NOT copied off-site" in told.body["message"]
    no_secrets(result.stdout, result.stderr, manual.stdout, manual.stderr)


def test_a_digest_comes_on_its_schedule(
    target: Target, schedulers: list[Scheduler], hooks: WebHooks
) -> None:
    s = start(
        schedulers,
        target,
        BACKUP_SCHEDULE="@every 1h",
        BACKUP_NOTIFY_URLS=hooks.json_url(),
        BACKUP_NOTIFY_DIGEST="@every 3s",
    )
    digests = hooks.wait_for("digest", 2, timeout=40)
    s.stop()
    second = digests[1].body["message"]
    assert "What happened: all good. Runs since the last digest: 0 succeeded, 0 failed." in (second)
    assert "Local backups: 1, " in second and "(+0 B since the last digest)" in second
    assert "Last restore drill: none recorded" in second


# -- manual verbs ------------------------------------------------------------------------------


def test_manual_verbs_tell_failures_and_recovery_with_notify(
    target: Target, mailbox: Mailbox, hooks: WebHooks
) -> None:
    urls = f"{mailbox.url()} {hooks.json_url()}"
    bad = target.run(
        "backup", "--notify", env=target.env(BACKUP_NOTIFY_URLS=urls, PGPASSWORD="wrong-pw")
    )
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr  # still one line
    (mail,) = mailbox.wait_for("FAILED (backup)", timeout=5)
    assert "What happened: `velocity-pg backup` failed at backup." in text_of(mail)
    # Without --notify: nothing is sent.
    target.run("backup", env=target.env(BACKUP_NOTIFY_URLS=urls, PGPASSWORD="wrong-pw"))
    good = target.run("backup", "--notify", env=target.env(BACKUP_NOTIFY_URLS=urls))
    assert good.returncode == 0, good.stderr
    mailbox.wait_for("RECOVERED", timeout=5)
    assert len(mailbox.messages) == 2
    # verify: a damaged backup is a failed check.
    dump = next(p for p in target.backup_dir.iterdir() if p.name.endswith(".dump"))
    with dump.open("r+b") as f:
        f.truncate(dump.stat().st_size // 2)
    checked = target.run("verify", "--notify", env=target.env(BACKUP_NOTIFY_URLS=urls))
    assert checked.returncode == 1
    (post,) = hooks.wait_for("failed its check (verify)", timeout=5)
    assert dump.name in post.body["message"]
    # cleanup and push take --notify too (push without off-site settings fails: told).
    cleaned = target.run("cleanup", "--notify", env=target.env(BACKUP_NOTIFY_URLS=urls))
    assert cleaned.returncode == 0, cleaned.stderr
    # A good cleanup says nothing of the failed check: no "recovered" for it.
    assert len(mailbox.with_subject("RECOVERED")) == 1
    pushed = target.run("push", "--notify", env=target.env(BACKUP_NOTIFY_URLS=urls))
    assert pushed.returncode != 0
    hooks.wait_for("(push)", timeout=5)
    no_secrets(bad.stdout, bad.stderr, good.stdout, good.stderr, checked.stdout, checked.stderr)


def test_a_dead_or_broken_receiver_never_fails_or_holds_up_a_backup(
    target: Target, hooks: WebHooks
) -> None:
    hooks.behaviour = {"broken": (0.0, 500)}
    urls = f"{hooks.json_url('broken')} json://127.0.0.1:{free_port()}/down/{HOOK_TOKEN}"
    env = target.env(BACKUP_NOTIFY_URLS=urls)
    bad = target.run("backup", "--notify", env=target.env(BACKUP_NOTIFY_URLS=urls, PGPORT="1"))
    assert bad.returncode == 1
    started = time.monotonic()
    good = target.run("backup", "--notify", env=env)  # recovered: to be sent, and it cannot be
    took = time.monotonic() - started
    assert good.returncode == 0, good.stderr
    assert "Backup created" in good.stdout
    assert "recovered message to #1 (JSON) failed after 2 attempt(s)" in good.stderr
    assert "#2 (JSON) failed after 2 attempt(s)" in good.stderr
    assert "the backups are not affected" in good.stderr
    assert took < 30, took
    no_secrets(bad.stdout, bad.stderr, good.stdout, good.stderr)


def test_a_scheduler_with_a_dead_receiver_keeps_its_rhythm(
    target: Target, schedulers: list[Scheduler], hooks: WebHooks
) -> None:
    hooks.behaviour = {"slow": (8.0, 200)}
    s = start(
        schedulers,
        target,
        PGPORT="1",  # every run fails, and its message goes to a slow receiver
        BACKUP_NOTIFY_URLS=hooks.json_url("slow"),
        BACKUP_NOTIFY_REPEAT="1s",
    )
    s.wait_for(lambda: s.count("run FAILED") >= 4, timeout=30, what="four runs")
    elapsed = s.stop()
    assert s.proc.returncode == 0
    assert elapsed < 8, elapsed  # a stuck message never holds up the stop either
    no_secrets(s.text(), s.stderr)
