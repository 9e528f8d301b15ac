"""A queue of things to send, worked off in order by one daemon thread.

The pings (:mod:`pings`) and the messages (:mod:`notify`) both go out this way: queuing
returns at once, so a slow or dead receiver never holds up a run; a full queue drops its
oldest item; nothing an item does ends the thread; and on stop, what is queued gets a
bounded time to go out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    """``deliver`` called for each item put, in order, in a thread named ``name``.

    ``dropped(item)`` is told of an item pushed out of a full queue (``limit`` items),
    ``failed(item, exc)`` of an unexpected error in ``deliver`` (the thread goes on), and
    ``lost(count)`` of the items still waiting when :meth:`close` gave up on them.
    """

    def __init__(
        self,
        name: str,
        deliver: Callable[[T], None],
        *,
        limit: int,
        dropped: Callable[[T], None],
        failed: Callable[[T, Exception], None],
        lost: Callable[[int], None],
    ) -> None:
        self.name = name
        self._deliver = deliver
        self._limit = limit
        self._dropped = dropped
        self._failed = failed
        self._lost = lost
        self._queue: deque[T] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def put(self, item: T) -> None:
        """Queue ``item``; returns at once (the thread starts with the first item)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            if len(self._queue) >= self._limit:
                self._dropped(self._queue.popleft())
            self._queue.append(item)
            self._cond.notify()

    def drain(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the queue to go out; True if it did."""
        deadline = time.monotonic() + wait
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, wait: float) -> None:
        """Send what is queued (waiting at most ``wait`` seconds), then stop the thread."""
        if not self.drain(wait):
            with self._cond:
                lost = len(self._queue) + (1 if self._busy else 0)
            self._lost(lost)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(item)
            except Exception as exc:  # an item must never end this thread
                self._failed(item, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
