"""``velocity-pg notify``: the message settings, ``--test`` to each URL; and ``--notify``.

``velocity-pg notify --test`` sends a test message to each URL of
``BACKUP_NOTIFY_URLS`` now and says, per URL (by its position, never its text),
delivered or why not: exit 0 only when every URL took it.

A manual verb given ``--notify`` (``backup``, ``verify``, ``push``, ``cleanup``)
checks the message settings before it starts (exit 2 on a bad one), and at its
end sends a failure message when it failed, or "recovered" when it succeeded
after failures (the state in ``BACKUP_DIR/.velocity-notify.json``, shared with
the scheduler). Its exit status and output stay those of the verb: a message
that cannot be delivered is logged on stderr, and the verb waits at most
:data:`VERB_WAIT` seconds for its messages.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from velocity_pg.errors import ConfigError, ExitStatus, Interrupted, VelocityError
from velocity_pg.scheduling import notify
from velocity_pg.scheduling.notify import Event, NotifyConfig
from velocity_pg.settings import Settings
from velocity_pg.verbs import Failure, Say

#: The longest a manual verb waits, after its work, for its messages to go out.
VERB_WAIT = 20.0


def err(line: str) -> None:
    print(f"velocity-pg: {line}", file=sys.stderr, flush=True)


def require(settings: Settings) -> NotifyConfig:
    config = notify.load(settings, datetime.now(UTC))
    if config is None:
        raise ConfigError(
            "BACKUP_NOTIFY_URLS is not set; set it to one or more Apprise URLs "
            "(mailto://, slack://, ntfy:// ..., see README: Notifications)"
        )
    return config


@dataclass(frozen=True)
class Described:
    """``velocity-pg notify``: the message settings, one line each."""

    shown: list[str]

    def lines(self) -> list[str]:
        return list(self.shown)

    def to_json(self) -> dict[str, object]:
        return {"lines": self.shown}


def show_settings(settings: Settings) -> Described:
    """``velocity-pg notify``."""
    return Described(describe(settings))


def describe(settings: Settings) -> list[str]:
    """What is configured (the URLs by position and service only)."""
    config = notify.load(settings, datetime.now(UTC))
    if config is None:
        return ["Messages: off (BACKUP_NOTIFY_URLS is not set)."]
    apprise = notify.import_apprise()
    lines = [f"Messages to {len(config.urls)} URL(s):"]
    for position, url in enumerate(config.urls, 1):
        with notify.captured_logs():
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        service = getattr(plugin, "service_name", None) or "?"
        lines.append(f"  #{position} ({service})")
    lines.append(f"Events (BACKUP_NOTIFY_ON): {', '.join(sorted(config.events))}")
    lines.append(f"Repeated at most every (BACKUP_NOTIFY_REPEAT): {notify.short(config.repeat)}")
    lines.append(f"Digest (BACKUP_NOTIFY_DIGEST): {config.digest or 'off'}")
    return lines


@dataclass(frozen=True)
class Tested:
    """``velocity-pg notify --test``: what became of the test message at each URL."""

    results: list[notify.Delivery]

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.results)

    def lines(self) -> list[str]:
        return [
            *(r.line() for r in self.results),
            f"{self.delivered} of {len(self.results)} URL(s) took the test message.",
        ]

    def to_json(self) -> dict[str, object]:
        return {"delivered": self.delivered, "urls": len(self.results)}

    def failure(self) -> Failure | None:
        return Failure() if self.delivered < len(self.results) else None


def run_test(settings: Settings, warn: Say) -> Tested:
    """``velocity-pg notify --test``; the log lines on the way go to ``warn`` at the end."""
    results, logged = test(settings)
    for line in logged:
        warn(f"velocity-pg: {line}")
    return Tested(results)


def test(settings: Settings) -> tuple[list[notify.Delivery], list[str]]:
    """Send the test message to each URL now; the results, and the log lines on the way."""
    config = require(settings)
    logged: list[str] = []
    notifier = notify.Notifier(config, logged.append)
    results = notifier.deliver(notify.test_message(notify.origin_of(settings)))
    return results, logged


class Notice:
    """``--notify`` around a manual verb (see the module docstring)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.event = {"verify": Event.VERIFY, "push": Event.OFFSITE}.get(verb, Event.FAILED)
        self.reason: str | None = None
        #: False when the backup the verb made is suspect: it makes nothing fresh.
        self.fresh = True
        self.watch: object | None = None
        self.notifier: notify.Notifier | None = None

    def start(self, settings: Settings) -> None:
        """Check the settings and get ready: called as soon as the verb has its settings."""
        if self.notifier is not None:
            return
        from velocity_pg.scheduling.watch import Watch

        config = require(settings)
        self.notifier = notify.Notifier(config, lambda line: err(line))
        self.watch = Watch(
            settings.backup_dir,
            self.notifier,
            notify.origin_of(settings),
            repeat=config.repeat,
            log=lambda line: err(line),
        )

    def fail(self, reason: str, event: Event | None = None) -> None:
        """What a verb that exits with a status (not an exception) failed at."""
        self.reason = reason
        if event is not None:
            self.event = event

    def __enter__(self) -> Notice:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from velocity_pg.postgres.pgtools import Terminated
        from velocity_pg.scheduling.watch import Watch

        if self.notifier is None or not isinstance(self.watch, Watch):
            return  # never started: the settings were refused first
        what = f"`velocity-pg {self.verb}`"
        now = datetime.now(UTC)
        try:
            if isinstance(exc, Interrupted | KeyboardInterrupt | Terminated):
                return  # stopped, not failed
            if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
                self.watch.succeeded(now, what, frozenset({self.verb}), fresh=self.fresh)
            else:
                if isinstance(exc, VelocityError):
                    reason = exc.message
                elif isinstance(exc, SystemExit):
                    reason = self.reason or f"it exited with status {exc.code}; see its output"
                elif _is_usage(exc):
                    return
                else:
                    reason = f"unexpected {type(exc).__name__}: {exc}"
                self.watch.failed(now, what, self.event, [(self.verb, reason)], always=True)
        except (Interrupted, KeyboardInterrupt, Terminated):
            raise
        except Exception as exc:  # a message never changes the verb's outcome
            err(f"notify: the message failed (unexpected {type(exc).__name__})")
        finally:
            self.notifier.close(VERB_WAIT)


def _is_usage(exc: BaseException) -> bool:
    import click

    return isinstance(exc, click.ClickException | click.exceptions.Exit | click.Abort)


def exit_status(results: list[notify.Delivery]) -> int:
    return ExitStatus.OK if results and all(r.delivered for r in results) else ExitStatus.FAILED
