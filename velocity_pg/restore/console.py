"""What a restore says while it runs: lines on stderr, a progress line, the countdown.

Shared by the restore, its stage and undo modes, and the machinery they call.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from velocity_pg.errors import VelocityError
from velocity_pg.postgres import db

COUNTDOWN_SECONDS = 5


class Console:
    """Lines on stderr (``velocity-pg: ...``) and, on a terminal, a progress line."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty() if tty is None else tty
        self._open = False
        self._last = 0.0

    def say(self, text: str) -> None:
        self.end_progress()
        print(f"velocity-pg: {text}", file=self.stream, flush=True)

    def progress(self, text: str, *, force: bool = False) -> None:
        """Rewrite the progress line (terminals only, at most 10 times a second)."""
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(f"\r\033[Kvelocity-pg: {text}")
        self.stream.flush()
        self._open = True

    def end_progress(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def countdown(console: Console, seconds: int, sleep: Callable[[float], None] = time.sleep) -> None:
    """One line a second; Ctrl+C raises KeyboardInterrupt (nothing has changed yet)."""
    for remaining in range(seconds, 0, -1):
        if remaining == seconds:
            console.say(f"starting in {remaining} s; press Ctrl+C to cancel")
        else:
            console.say(f"{remaining}...")
        sleep(1)


def describe(exc: BaseException) -> str:
    """One line for an error: ours say it themselves; psycopg's and others' are flattened."""
    if isinstance(exc, VelocityError):
        return exc.message
    import psycopg

    if isinstance(exc, psycopg.Error):
        return db.one_line(exc)
    return f"unexpected {type(exc).__name__}: {db.one_line(exc)}"
