"""Messages to people, through Apprise (``BACKUP_NOTIFY_URLS``): e-mail, Slack, ntfy ...

What it promises:

* **never in the way**: messages go out from one background thread, in order; each
  URL gets :data:`TIMEOUT` seconds to connect and as long to answer (a URL's own
  ``cto=``/``rto=`` may lower them), :data:`ATTEMPTS` tries :data:`BACKOFF` seconds
  apart, then it is given up and logged. A message never fails, blocks or delays a
  run; no exception leaves this module's delivery code;
* **never leaking**: URLs carry secrets (tokens, SMTP passwords). They are shown as
  ``#N (service)`` only, by their position in ``BACKUP_NOTIFY_URLS``; Apprise's own
  logging is captured here (never printed, never propagated to the root logger, so
  ``--debug`` shows none of it) and the reasons taken from it are redacted of every
  part of the URLs;
* **checked at start**: a URL Apprise cannot parse is a :class:`ConfigError` (exit 2)
  naming it by position, before anything runs.

Apprise is an optional dependency (``velocity-pg[notify]``): it is imported only
when ``BACKUP_NOTIFY_URLS`` is set.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from velocity_pg.errors import ConfigError
from velocity_pg.scheduling.outbox import Outbox
from velocity_pg.settings import Settings

#: Seconds each URL gets to connect, and again to answer (a URL's cto=/rto= may lower them).
TIMEOUT = 5.0
ATTEMPTS = 2
#: Seconds between two attempts.
BACKOFF = 2.0
QUEUE_LIMIT = 20
DEFAULT_REPEAT = timedelta(hours=24)
#: Variables, for messages.
URLS_SETTING = "BACKUP_NOTIFY_URLS"
ON_SETTING = "BACKUP_NOTIFY_ON"


class Event(StrEnum):
    """What a message is about; ``BACKUP_NOTIFY_ON`` chooses among them."""

    FAILED = "failed"  # a run (or a manual verb) failed
    OFFSITE = "offsite"  # the off-site copy failed while the local backup succeeded
    VERIFY = "verify"  # a checksum verification or a restore drill failed
    SUSPECT = "suspect"  # a new backup looks wrong next to the previous good one
    RECOVERED = "recovered"  # a success after failures or staleness
    STALE = "stale"  # no successful backup within the allowance
    DIGEST = "digest"  # the periodic "all good" (BACKUP_NOTIFY_DIGEST)
    TEST = "test"  # velocity-pg notify --test


#: Names BACKUP_NOTIFY_ON takes besides the events themselves.
EVENT_GROUPS: dict[str, frozenset[Event]] = {
    "failures": frozenset({Event.FAILED, Event.OFFSITE, Event.VERIFY}),
    "all": frozenset(set(Event) - {Event.TEST}),
}
DEFAULT_ON = "failures,suspect,recovered,stale,digest"


@dataclass(frozen=True)
class Message:
    event: Event
    title: str
    body: str


@dataclass(frozen=True)
class Delivery:
    """What became of a message at one URL."""

    position: int  # 1-based, in BACKUP_NOTIFY_URLS
    service: str
    delivered: bool
    problem: str = ""
    attempts: int = 1

    @property
    def shown(self) -> str:
        return f"#{self.position} ({self.service})"

    def line(self) -> str:
        if self.delivered:
            return f"{self.shown}: delivered"
        return f"{self.shown}: NOT delivered: {self.problem}"


@dataclass(frozen=True)
class NotifyConfig:
    """The notification settings, checked."""

    urls: tuple[str, ...] = field(repr=False)
    events: frozenset[Event]
    repeat: timedelta = DEFAULT_REPEAT
    #: BACKUP_NOTIFY_DIGEST as given (a schedule); None for no digest.
    digest: str | None = None

    def wants(self, event: Event) -> bool:
        return event is Event.TEST or event in self.events


# -- settings ---------------------------------------------------------------------

_SCHEME_START = re.compile(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.\-]*://)")


def split_urls(text: str) -> list[str]:
    """URLs separated by commas or white space; a comma inside a URL (``to=a@x,b@y``) stays."""
    parts = _SCHEME_START.split(text.strip())
    return [part.strip().strip(",").strip() for part in parts if part.strip().strip(",").strip()]


def parse_events(text: str | None) -> frozenset[Event]:
    """``BACKUP_NOTIFY_ON``: event names and groups, comma- or space-separated."""
    words = [w for w in re.split(r"[\s,]+", (text or DEFAULT_ON).strip().lower()) if w]
    names = sorted({*(e.value for e in Event if e is not Event.TEST), *EVENT_GROUPS})
    if not words:
        raise ConfigError(f"{ON_SETTING}={text!r} names no event; use some of {', '.join(names)}")
    events: set[Event] = set()
    for word in words:
        if word in EVENT_GROUPS:
            events |= EVENT_GROUPS[word]
            continue
        try:
            event = Event(word)
        except ValueError:
            event = Event.TEST
        if event is Event.TEST:
            raise ConfigError(
                f"{ON_SETTING} holds {word!r}, which is not an event; use some of "
                f"{', '.join(names)} (default {DEFAULT_ON})"
            )
        events.add(event)
    return frozenset(events)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def import_apprise() -> Any:
    try:
        import apprise
    except ImportError:
        raise ConfigError(
            f"{URLS_SETTING} is set but Apprise is not installed; install velocity-pg[notify] "
            "(pip install 'velocity-pg[notify]'), or leave it empty"
        ) from None
    quiet_apprise()
    return apprise


def check_urls(urls: Sequence[str]) -> None:
    """Each URL must be one Apprise can use; else exit 2, naming it by position only."""
    apprise = import_apprise()
    known = known_schemes(apprise)
    for position, url in enumerate(urls, 1):
        with captured_logs():
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            scheme = url.split("://", 1)[0].lower() if "://" in url else ""
            if scheme and scheme in known:
                why = (
                    f"its scheme {scheme}:// is known, but the rest of it is incomplete or "
                    "malformed (a missing token, host or address)"
                )
            elif scheme and re.fullmatch(r"[a-z][a-z0-9+.\-]{0,20}", scheme):
                why = f"{scheme}:// is not a scheme Apprise knows"
            else:
                why = "it does not start with a scheme (like mailto://, slack://, ntfy://)"
            raise ConfigError(
                f"{URLS_SETTING}: the {ordinal(position)} URL (of {len(urls)}) cannot be used: "
                f"{why}; see https://github.com/caronc/apprise/wiki for its format"
            )


def known_schemes(apprise: Any) -> set[str]:
    try:
        schemas = apprise.Apprise().details()["schemas"]
        return {
            str(p).lower()
            for schema in schemas
            for key in ("protocols", "secure_protocols")
            for p in list(schema.get(key) or [])
        }
    except Exception:  # details() is informative only
        return set()


# -- secrets out of everything shown --------------------------------------------------


def secrets_of(url: str) -> list[str]:
    """The parts of a URL that may be secret: user, password, path parts, query values, and
    the host when it looks like a token rather than a host name (``slack://TOKEN/...``)."""
    found: set[str] = set()
    rest = url.split("://", 1)[1] if "://" in url else url
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        found |= {user, password}
    else:
        hostport = netloc
    host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    if "." not in host and host.lower() != "localhost":
        found.add(host)
    found |= set(path.replace("#", "/").split("/"))
    for pair in re.split(r"[&;]", query):
        _, _, value = pair.partition("=")
        found |= set(value.split(","))
    found.add(url)
    pieces = {unquote(f) for f in found} | found
    # Short pieces (``to``, ``1``) are no secret and would blank out every message.
    return sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True)


class Redactor:
    """Replaces every secret piece of the URLs with ``***``."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.pieces = sorted({p for url in urls for p in secrets_of(url)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for piece in self.pieces:
            if piece in text:
                text = text.replace(piece, "***")
        return text


# -- Apprise's logging, captured ------------------------------------------------------

_capture = threading.local()


class _Capture(logging.Handler):
    """Keeps Apprise's log records for the thread that is delivering; prints nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(_capture, "records", None)
        if records is not None:
            with contextlib.suppress(Exception):  # a malformed record is no reason
                records.append((record.levelno, record.getMessage()))


_QUIETED = False


def quiet_apprise() -> None:
    """Apprise logs URLs, tokens in paths and payloads: keep its records here, always."""
    global _QUIETED
    if _QUIETED:
        return
    logger = logging.getLogger("apprise")
    logger.handlers[:] = [_Capture()]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    _QUIETED = True


@contextmanager
def captured_logs() -> Iterator[list[tuple[int, str]]]:
    quiet_apprise()
    records: list[tuple[int, str]] = []
    previous = getattr(_capture, "records", None)
    _capture.records = records
    try:
        yield records
    finally:
        _capture.records = previous


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def reason_from(records: Sequence[tuple[int, str]]) -> str:
    """A one-line reason from Apprise's records of a failed delivery (not yet redacted)."""
    warnings = [m for level, m in records if level >= logging.WARNING]
    details = [m for level, m in records if level < logging.WARNING]
    cause = ""
    for detail in details:
        if m := _ERRNO.search(detail):
            cause = m.group(1).strip().lower()
        elif re.search(r"timed? ?out", detail, re.IGNORECASE):
            cause = "timed out"
        elif m := re.search(r"Exception: (.+)", detail):
            cause = m.group(1).strip()[:160]
        else:
            continue
        break
    said = warnings[-1].strip() if warnings else "the service did not accept it"
    said = re.sub(r"\s+", " ", said)
    return f"{said} ({cause})" if cause and cause not in said.lower() else said


# -- sending ----------------------------------------------------------------------


class Notifier:
    """Sends messages to each URL from a background thread; see the module docstring."""

    def __init__(
        self,
        config: NotifyConfig,
        log: Callable[[str], None],
        *,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
    ) -> None:
        self.config = config
        self.log = log
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.redact = Redactor(config.urls)
        self._apprise = import_apprise()
        self._outbox: Outbox[Message] = Outbox(
            "velocity-pg-notify",
            self._deliver_all,
            limit=QUEUE_LIMIT,
            dropped=lambda message: self.log(
                f"notify: message {message.title!r} dropped: too many waiting"
            ),
            failed=lambda message, exc: self.log(
                f"notify: unexpected {type(exc).__name__} while sending; given up"
            ),
            lost=lambda n: self.log(f"notify: {n} message(s) not delivered before stopping"),
        )

    # the queue ---------------------------------------------------------------------

    def send(self, message: Message) -> bool:
        """Queue a message if its event is wanted; returns at once (True when queued)."""
        if not self.config.wants(message.event):
            return False
        self._outbox.put(message)
        return True

    def drain(self, wait: float) -> bool:
        return self._outbox.drain(wait)

    def close(self, wait: float) -> None:
        """Deliver what is queued (waiting at most ``wait`` seconds), then stop."""
        self._outbox.close(wait)

    def _deliver_all(self, message: Message) -> None:
        for result in self.deliver(message):
            if not result.delivered:
                self.log(
                    f"notify: {message.event} message to {result.shown} failed after "
                    f"{result.attempts} attempt(s) ({result.problem}); given up "
                    "(the backups are not affected)"
                )

    # delivery ------------------------------------------------------------------------

    def deliver(self, message: Message) -> list[Delivery]:
        """Send ``message`` to every URL now, in this thread; what became of it at each."""
        return [
            self.deliver_one(position, url, message)
            for position, url in enumerate(self.config.urls, 1)
        ]

    def deliver_one(self, position: int, url: str, message: Message) -> Delivery:
        from velocity_pg.postgres.pgtools import Terminated

        service = "?"
        problem = ""
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            with captured_logs() as records:
                try:
                    plugin = self._apprise.Apprise.instantiate(url, suppress_exceptions=True)
                    if plugin is None:
                        return Delivery(position, service, False, "Apprise cannot parse it", 1)
                    service = str(getattr(plugin, "service_name", None) or "?")
                    self._limit_timeouts(plugin)
                    ok = bool(plugin.notify(body=message.body, title=message.title))
                except Terminated:
                    raise  # SIGTERM in the main thread (notify --test): a stop
                except Exception as exc:
                    ok = False
                    records.append((logging.WARNING, f"unexpected {type(exc).__name__}: {exc}"))
            if ok:
                return Delivery(position, service, True, "", attempt)
            problem = self.redact(reason_from(records))
            if attempt < self.attempts:
                self.log(
                    f"notify: {message.event} message to #{position} ({service}) failed "
                    f"({problem}); trying again"
                )
                time.sleep(self.backoff)
        return Delivery(position, service, False, problem, attempt)

    def _limit_timeouts(self, plugin: Any) -> None:
        for name in ("socket_connect_timeout", "socket_read_timeout"):
            current = getattr(plugin, name, None)
            if isinstance(current, int | float) and current > 0:
                setattr(plugin, name, min(float(current), self.timeout))
            elif hasattr(plugin, name):
                setattr(plugin, name, self.timeout)


# -- the messages ------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Who sends: the name (BACKUP_NOTIFY_NAME, else the host name), the folder, the database."""

    name: str
    folder: str
    database: str | None

    def header(self) -> list[str]:
        return [
            f"Where: {self.name} (backups in {self.folder})",
            f"Database: {self.database if self.database is not None else '(not named)'}",
        ]

    @property
    def of(self) -> str:
        return f"{self.database!r}" if self.database is not None else "the database"


def short(delta: timedelta) -> str:
    from velocity_pg.scheduling.timetable import human_duration

    return human_duration(delta)


def failure_message(
    origin: Origin, event: Event, what: str, failures: Sequence[tuple[str, str]]
) -> Message:
    """A run or verb that failed: ``what`` says which (``the scheduled run``, ``velocity-pg
    backup``), ``failures`` each failed step and its one-line reason."""
    steps = ", ".join(name for name, _ in failures)
    if event is Event.OFFSITE:
        title = (
            f"velocity-pg on {origin.name}: off-site copy FAILED ({steps}); "
            "the local backup is fine"
        )
        todo = (
            "The local backup was made and is safe. Check the off-site store (credentials, "
            "bucket, network), then copy it with `velocity-pg push` (`just db-backup-push`)."
        )
    elif event is Event.VERIFY:
        title = f"velocity-pg on {origin.name}: backup of {origin.of} failed its check ({steps})"
        todo = (
            "Do not rely on that backup. Run `velocity-pg verify --restore` on it to see the "
            "problem, and make a new backup (`velocity-pg backup`)."
        )
    else:
        title = (
            f"velocity-pg on {origin.name}: backup of {origin.of} FAILED ({steps})"
            if any(name == "backup" for name, _ in failures)
            else f"velocity-pg on {origin.name}: backups of {origin.of}: {steps} FAILED"
        )
        todo = (
            "Existing backups are untouched. Read the log (`docker compose logs db-backup`, "
            "or the output of the command), fix the cause, and check with `velocity-pg backup`."
        )
    lines = [
        *origin.header(),
        f"What happened: {what} failed at {steps}.",
        *(f"Reason ({name}): {reason}" for name, reason in failures),
        f"What to do: {todo}",
    ]
    return Message(event, title, "\n".join(lines))


def suspect_message(origin: Origin, name: str, why: str, pinned: str = "") -> Message:
    """A new backup that looks wrong (store/anomaly.py): ``why`` names the tables and numbers;
    ``pinned`` what became of the automatic pin of the good backup before it."""
    title = f"velocity-pg on {origin.name}: backup of {origin.of} looks WRONG ({name})"
    lines = [
        *origin.header(),
        f"What happened: the new backup {name} was made, but it looks wrong: {why}.",
        *([f"Pin: {pinned[0].upper()}{pinned[1:]}."] if pinned else []),
        "What to do: check the database now (a table emptied or dropped by mistake?). The "
        "backup is kept; the earlier good backups are what a restore of the lost data needs "
        f"(`velocity-pg list` marks the suspect ones). If the change was intended: "
        f"`velocity-pg accept {name}`.",
    ]
    return Message(Event.SUSPECT, title, "\n".join(lines))


def recovered_message(origin: Origin, what: str, failing_for: timedelta) -> Message:
    title = f"velocity-pg on {origin.name}: backups of {origin.of} RECOVERED"
    lines = [
        *origin.header(),
        f"What happened: {what} succeeded; backups were failing or late for {short(failing_for)}.",
        "What to do: nothing; check that the backups since look right (`velocity-pg status`).",
    ]
    return Message(Event.RECOVERED, title, "\n".join(lines))


def stale_message(
    origin: Origin,
    newest: str | None,
    age: timedelta | None,
    allowance: timedelta,
    stale_for: timedelta,
    again: bool,
) -> Message:
    state = "still STALE" if again else "STALE"
    title = f"velocity-pg on {origin.name}: backups of {origin.of} are {state}"
    seen = (
        f"The newest backup, {newest}, is {short(age)} old"
        if newest is not None and age is not None
        else "There is no backup at all"
    )
    lines = [
        *origin.header(),
        f"What happened: no successful backup within the allowance ({short(allowance)}). "
        f"{seen}; stale for {short(stale_for)}.",
        "Reason: runs are failing, hanging or not happening (the database server "
        "unreachable, a dump that does not end, the scheduler stopped).",
        "What to do: look at the scheduler's log (`docker compose logs db-backup`) and "
        "`velocity-pg status`; make a backup by hand if it can wait no longer.",
    ]
    return Message(Event.STALE, title, "\n".join(lines))


def digest_message(origin: Origin, lines: Sequence[str]) -> Message:
    title = f"velocity-pg on {origin.name}: backups of {origin.of}: digest"
    return Message(Event.DIGEST, title, "\n".join([*origin.header(), *lines]))


def test_message(origin: Origin) -> Message:
    title = f"velocity-pg on {origin.name}: test message"
    lines = [
        *origin.header(),
        "What happened: `velocity-pg notify --test` sent this to check BACKUP_NOTIFY_URLS.",
        "What to do: nothing; failures, staleness and recoveries will arrive here.",
    ]
    return Message(Event.TEST, title, "\n".join(lines))


# -- loading -------------------------------------------------------------------------


def load(settings: Settings, now: datetime | None = None) -> NotifyConfig | None:
    """The BACKUP_NOTIFY_* settings checked (exit 2 on a bad one); None when no URL is set."""
    from velocity_pg.scheduling.timetable import parse_duration, parse_schedule, parse_timezone

    events = parse_events(settings.notify_on)
    repeat = (
        DEFAULT_REPEAT
        if settings.notify_repeat is None
        else parse_duration(settings.notify_repeat, "BACKUP_NOTIFY_REPEAT")
    )
    digest = settings.notify_digest.strip() if settings.notify_digest else None
    if digest:
        try:
            parse_schedule(digest, parse_timezone(settings.timezone), probe=now)
        except ConfigError as exc:
            raise ConfigError(
                "BACKUP_NOTIFY_DIGEST: " + exc.message.replace("BACKUP_SCHEDULE", "it")
            ) from None
    if settings.notify_urls is None:
        return None
    urls = tuple(split_urls(settings.notify_urls))
    if not urls:
        raise ConfigError(
            f"{URLS_SETTING} holds no URL (only blanks and commas); give Apprise URLs "
            "(mailto://, slack://, ntfy:// ...), or leave it empty to send no messages"
        )
    check_urls(urls)
    return NotifyConfig(urls=urls, events=events, repeat=repeat, digest=digest or None)


def origin_of(settings: Settings) -> Origin:
    import socket

    name = (settings.notify_name or "").strip() or socket.gethostname() or "this host"
    return Origin(name=name, folder=str(settings.backup_dir), database=settings.database)
