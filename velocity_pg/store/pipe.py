"""The one runner for programs that are not PostgreSQL's (``age``): streaming filters.

A :class:`Filter` runs a program with an argument list (never a shell),
feeds its stdin from a reader in a thread, and is itself a reader of the
program's stdout: bytes flow through in fixed-size chunks, so a dump of any
size passes with flat memory. Secrets never go in the argument list (age's
identity is a file name given with ``-i``).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from velocity_pg.errors import CommandFailed
from velocity_pg.postgres.pgtools import child_env, log_command, stop

CHUNK = 1 << 20
_STDERR_LIMIT = 64 * 1024


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Filter:
    """``source`` -> program -> :meth:`read`. Use as a context manager, then :meth:`finish`."""

    def __init__(
        self, cmd: Sequence[str], source: Reader, env: Mapping[str, str] | None = None
    ) -> None:
        log_command(cmd)
        self.program = Path(cmd[0]).name
        self._source = source
        self._proc = subprocess.Popen(
            list(cmd),
            env=child_env(env or {}),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._feed_error: BaseException | None = None
        self._stderr = bytearray()
        self._feeder = threading.Thread(target=self._feed, name=f"{self.program}-feed", daemon=True)
        self._drainer = threading.Thread(
            target=self._drain, name=f"{self.program}-stderr", daemon=True
        )
        self._feeder.start()
        self._drainer.start()

    def _feed(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while chunk := self._source.read(CHUNK):
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # the program died: its exit status says why
        except BaseException as exc:  # the source failed (network, disk)
            self._feed_error = exc
            # Killed, not given an end of input: its output must not end as if the
            # input had been whole (age would finish a truncated stream cleanly).
            with contextlib.suppress(OSError):
                self._proc.kill()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _drain(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        while chunk := stderr.read(4096):
            if len(self._stderr) < _STDERR_LIMIT:
                self._stderr.extend(chunk)

    def read(self, size: int = -1, /) -> bytes:
        """The program's output; at its end, the source's failure is raised (never a
        clean end of a stream cut short)."""
        stdout = self._proc.stdout
        assert stdout is not None
        data = stdout.read(size)
        if not data and size != 0:
            self._feeder.join()
            if self._feed_error is not None:
                raise self._feed_error
        return data

    def readinto_all(self, sink: Writer) -> None:
        """Copy the program's whole output into ``sink``, chunk by chunk."""
        while chunk := self.read(CHUNK):
            sink.write(chunk)

    def finish(self) -> None:
        """Wait for the program; raise if it or the source failed."""
        self._feeder.join()
        stdout = self._proc.stdout
        assert stdout is not None
        # Whatever is left unread (nothing, normally) must not block the program.
        while stdout.read(CHUNK):
            pass
        returncode = self._proc.wait()
        self._drainer.join()
        if self._feed_error is not None:
            raise self._feed_error
        if returncode != 0:
            raise CommandFailed(
                self.program, returncode, self._stderr.decode("utf-8", errors="replace")
            )

    def abort(self) -> None:
        """Stop the program and the feeder (after a failure elsewhere, or a stop).

        Waits briefly: a feeder stuck reading a stalled network source is a daemon
        thread, left to its read timeout; it never holds up a stop.
        """
        stop(self._proc, grace=2.0)
        with contextlib.suppress(OSError):
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        self._feeder.join(timeout=2)
        self._drainer.join(timeout=2)

    def __enter__(self) -> Filter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.abort()


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


def run_quietly(cmd: Sequence[str], stdin: bytes = b"") -> tuple[int, str]:
    """Run a short program to completion (a probe); its exit status and stderr."""
    log_command(cmd)
    try:
        result = subprocess.run(
            list(cmd),
            env=child_env({}),
            input=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
            timeout=30,
        )
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: did not answer within 30 s"
    return result.returncode, result.stderr.decode("utf-8", errors="replace")
