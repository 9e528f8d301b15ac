"""Steps that must not stop halfway: Ctrl+C, SIGTERM and SIGHUP held back, never dropped."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def shielded(*, deliver: bool = True) -> Iterator[list[int]]:
    """Hold back Ctrl+C, SIGTERM and SIGHUP while a step that must not stop halfway runs.

    Yields the list of signals that arrived meanwhile. A signal is deferred, never
    dropped: with ``deliver`` (the default) the first one is handed, as the section
    ends, to the handler that was in place before it (Ctrl+C: KeyboardInterrupt;
    SIGTERM, SIGHUP: :class:`~velocity_pg.postgres.pgtools.Terminated`; the
    scheduler's own), so the run stops right there, as it would have without the
    shield. ``deliver=False`` is for a section that is the run's point of no return
    (the swap): the caller finishes and reports the signals it was given.
    """
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    try:
        previous = {sig: signal.signal(sig, note) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals go elsewhere anyway
        yield received
        return
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if deliver and received:
            first = signal.Signals(received[0])
            deliver_signal(first, previous[first])


def signal_name(signum: int) -> str:
    """How messages name a stop signal: "Ctrl+C", "SIGTERM", "SIGHUP"."""
    return "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name


def deliver_signal(signum: int, handler: SignalHandler) -> None:
    """Act on a signal that was held back, as ``handler`` (the one it would have met) says."""
    if callable(handler):
        handler(signum, None)  # raises: KeyboardInterrupt, Terminated, ...
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action: the process ends, as it would have
    # SIG_IGN, or a handler installed outside Python: it was not ours to act on
