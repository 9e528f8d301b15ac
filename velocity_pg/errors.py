"""The tool's errors: each carries the one line a user sees and the exit status."""

from __future__ import annotations

import re
from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit statuses (httpie-style: one named value per outcome)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


class VelocityError(Exception):
    """An error with a message meant for the user.

    The message is one line that says what failed and how to fix it.
    """

    exit_status: ExitStatus = ExitStatus.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(VelocityError):
    """Bad usage or configuration, found before anything ran."""

    exit_status = ExitStatus.USAGE


class OperationFailed(VelocityError):
    """An operation was attempted and failed; nothing was lost."""

    exit_status = ExitStatus.FAILED


class Interrupted(BaseException):
    """Ctrl+C, SIGTERM or SIGHUP stopped an operation after it cleaned up.

    The message says what state things were left in ("nothing was changed"). Like
    ``KeyboardInterrupt`` and ``pgtools.Terminated`` (what a signal raises), it is a
    ``BaseException``, never an ``Exception``: code that catches failures (a failed
    S3 call, a failed scheduled step, a verification that failed) never takes a stop
    for one; ``finally`` blocks still clean up. Exit status 130.
    """

    exit_status = ExitStatus.INTERRUPTED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LockBusy(OperationFailed):
    """Another velocity-pg process holds a lock this operation needs."""


class ManifestUnreadable(OperationFailed):
    """A backup's manifest exists but cannot be read or makes no sense."""


class CommandFailed(OperationFailed):
    """A PostgreSQL client program (pg_dump, pg_restore) failed."""

    def __init__(self, program: str, returncode: int, stderr: str) -> None:
        self.program = program
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{program} failed: {describe_failure(returncode, stderr)}")


def describe_failure(returncode: int, stderr: str) -> str:
    """Summarise a failed program run in one line, keeping its own reason."""
    import signal

    reason = first_error_line(stderr)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        killed = f"killed by {name}"
        return f"{killed} ({reason})" if reason else killed
    return reason or f"exit status {returncode}"


#: At most this many lines of detail follow the error line, each cut to this length.
_MAX_DETAIL_LINES = 6
_MAX_DETAIL_CHARS = 300
_PROGRAM_RE = re.compile(r"[a-z][a-z0-9_]*: ")  # "pg_dump: "; libpq's are "DETAIL: "


def first_error_line(stderr: str) -> str:
    """The most telling line of a PostgreSQL tool's stderr, on one line.

    pg_dump/pg_restore prefix lines with ``program: error:``; the lines that explain it
    follow: libpq's own lines (``DETAIL:``, ``HINT:``, "server closed the connection
    unexpectedly" and its indented continuations) and the tool's ``program: detail:`` and
    ``program: hint:`` lines (PostgreSQL 15+: the server's reason, the query that waited
    for a lock), up to the tool's next message. The error line and those lines are joined.
    """
    raw = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    if not raw:
        return ""
    for i, line in enumerate(raw):
        if "error:" in line or "FATAL:" in line:
            parts = [line.strip()]
            for follow in raw[i + 1 : i + 1 + _MAX_DETAIL_LINES]:
                text = follow.strip()
                program = _PROGRAM_RE.match(text)
                if program is not None:
                    after = text[program.end() :]
                    if not after.startswith(("detail: ", "hint: ")):
                        break  # the tool's next message
                    text = after  # "pg_dump: detail: ..." -> "detail: ..."
                elif text.startswith("Command was:"):
                    break  # older tools: the whole statement follows, any length
                if len(text) > _MAX_DETAIL_CHARS:
                    text = text[: _MAX_DETAIL_CHARS - 3] + "..."
                parts.append(text)
            return " ".join(parts)
    return raw[-1].strip()
