"""The queue behind pings and messages (velocity_pg.scheduling.outbox), without a server."""

from __future__ import annotations

import threading

from velocity_pg.scheduling.outbox import Outbox


def make(deliver: object, log: list[str], limit: int = 10) -> Outbox[int]:
    return Outbox(
        "test-outbox",
        deliver,  # type: ignore[arg-type]
        limit=limit,
        dropped=lambda item: log.append(f"dropped {item}"),
        failed=lambda item, exc: log.append(f"failed {item}: {type(exc).__name__}"),
        lost=lambda n: log.append(f"lost {n}"),
    )


def test_items_go_out_in_order_and_an_error_does_not_end_the_thread() -> None:
    sent: list[int] = []
    log: list[str] = []

    def deliver(item: int) -> None:
        if item == 2:
            raise RuntimeError("boom")
        sent.append(item)

    box = make(deliver, log)
    for item in (1, 2, 3):
        box.put(item)
    assert box.drain(10)
    box.close(1)
    assert sent == [1, 3]
    assert log == ["failed 2: RuntimeError"]


def test_a_full_queue_drops_its_oldest_and_close_counts_what_is_left() -> None:
    gate = threading.Event()
    log: list[str] = []
    box = make(lambda item: gate.wait(10), log, limit=2)
    box.put(1)  # taken by the thread, which then waits at the gate
    assert not box.drain(0.2)
    for item in (2, 3, 4):
        box.put(item)
    assert log == ["dropped 2"]
    box.close(0.1)
    assert log == ["dropped 2", "lost 3"]  # 3 and 4 waiting, 1 in flight
    gate.set()
