"""Pings in the Healthchecks convention: ``URL/start``, ``URL`` (success), ``URL/fail``.

Healthchecks.io, Uptime Kuma's push monitors and Cronitor understand it. Each
ping is a POST whose body is the run's summary lines. Pings go out from one
background thread, in order, so a slow or dead endpoint never delays a run: a
ping that fails (timeout, refused, 5xx, a malformed answer) is retried a few
times with short timeouts and logged; then it is given up. Never more than :data:`QUEUE_LIMIT`
pings wait: when an endpoint is down for long, the oldest are dropped (and
logged), so memory stays flat. A failure of any kind (a malformed or cut answer
too) is logged and never ends the thread: the next ping still goes out. The URL
may hold a secret token: logs show its scheme and host only.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from velocity_pg import __version__
from velocity_pg.scheduling.config import mask_url
from velocity_pg.scheduling.outbox import Outbox

ATTEMPTS = 3
TIMEOUT = 5.0  # seconds per attempt
BACKOFF = (1.0, 2.0)  # seconds to wait before the second and third attempt
QUEUE_LIMIT = 20
MAX_BODY = 10_000  # Healthchecks keeps the first 10 kB (100 kB on paid plans)


class Kind(StrEnum):
    START = "start"
    SUCCESS = "success"
    FAIL = "fail"


def ping_url(base: str, kind: Kind) -> str:
    """``base/start``, ``base``, ``base/fail``; a query string (Uptime Kuma) stays at the end."""
    if kind is Kind.SUCCESS:
        return base
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + f"/{kind}"))


@dataclass(frozen=True)
class Ping:
    kind: Kind
    body: str


class Pinger:
    """Sends pings in order from a background thread; see the module docstring."""

    def __init__(
        self,
        url: str,
        log: Callable[[str], None],
        *,
        attempts: int = ATTEMPTS,
        timeout: float = TIMEOUT,
        backoff: tuple[float, ...] = BACKOFF,
    ) -> None:
        self.url = url
        self.shown = mask_url(url)
        self.log = log
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self._outbox: Outbox[Ping] = Outbox(
            "velocity-pg-pings",
            self._deliver,
            limit=QUEUE_LIMIT,
            dropped=lambda ping: self.log(
                f"ping {ping.kind} to {self.shown} dropped: too many pings waiting"
            ),
            failed=lambda ping, exc: self.log(
                f"ping {ping.kind} to {self.shown} failed (unexpected "
                f"{type(exc).__name__}); giving up on it (the run is not affected)"
            ),
            lost=lambda n: self.log(f"{n} ping(s) to {self.shown} not sent before stopping"),
        )

    def send(self, kind: Kind, body: str) -> None:
        """Queue a ping; returns at once."""
        self._outbox.put(Ping(kind, body[:MAX_BODY]))

    def drain(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the queued pings to go out; True if they did."""
        return self._outbox.drain(wait)

    def close(self, wait: float) -> None:
        """Send what is queued (waiting at most ``wait`` seconds), then stop."""
        self._outbox.close(wait)

    def _deliver(self, ping: Ping) -> None:
        target = ping_url(self.url, ping.kind)
        shown = mask_url(target) + ("" if ping.kind is Kind.SUCCESS else f" ({ping.kind})")
        problem = ""
        for attempt in range(1, self.attempts + 1):
            problem, retry = self._post(target, ping.body)
            if not problem:
                return
            if not retry or attempt == self.attempts:
                break
            self.log(f"ping to {shown} failed ({problem}); trying again")
            time.sleep(self.backoff[min(attempt - 1, len(self.backoff) - 1)])
        self.log(f"ping to {shown} failed ({problem}); giving up on it (the run is not affected)")

    def _post(self, target: str, body: str) -> tuple[str, bool]:
        """('', _) when delivered, else (the problem, whether trying again may help)."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in config
            target,
            data=body.encode("utf-8", "replace"),
            method="POST",
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "User-Agent": f"velocity-pg/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read(1024)
            return "", False
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code == 429
        except urllib.error.URLError as exc:
            return str(exc.reason), True
        except (TimeoutError, OSError) as exc:
            return type(exc).__name__ if not str(exc) else str(exc), True
        except http.client.InvalidURL:
            return "the URL is not valid", False
        except http.client.HTTPException as exc:
            # A malformed or cut answer (BadStatusLine, IncompleteRead): the endpoint's
            # fault, maybe passing. Named by its kind only: its text may echo the URL.
            return f"a malformed HTTP answer: {type(exc).__name__}", True
