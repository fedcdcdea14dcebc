"""Interpreters and decode permits are lent first come, first served (issue 17, c=16 p99).

With ``queue.SimpleQueue`` / ``threading.Semaphore`` an item released for a waiting thread
could be taken by a thread that arrived later, and the waiter went back to the end of the
line: at c=16 on MobileNetV2 some requests waited 3× the mean. These tests pin the order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import pytest

from edge_agent.fifo import FifoPool
from edge_agent.serving.admission import Admission, Overloaded


def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def waiter(pool: FifoPool[str], got: list[str], name: str) -> threading.Thread:
    def run() -> None:
        item = pool.get(timeout=5)
        got.append(name)
        pool.put(item)

    t = threading.Thread(target=run, name=name)
    t.start()
    return t


def test_a_released_item_goes_to_the_longest_waiter() -> None:
    pool = FifoPool(("interp",))
    held = pool.get_nowait()
    got: list[str] = []
    threads = []
    for i, name in enumerate(("first", "second", "third")):
        threads.append(waiter(pool, got, name))
        until(lambda i=i: pool.waiting() == i + 1)  # type: ignore[misc]
    pool.put(held)
    for t in threads:
        t.join(5)
    assert got == ["first", "second", "third"]
    assert pool.qsize() == 1 and pool.waiting() == 0


def test_a_newcomer_cannot_take_an_item_released_for_a_waiter() -> None:
    pool = FifoPool(("interp",))
    held = pool.get_nowait()
    got: list[str] = []
    t = waiter(pool, got, "waiting")
    until(lambda: pool.waiting() == 1)
    pool.put(held)  # handed to the waiter, even before it runs again
    with pytest.raises(queue.Empty):
        pool.get_nowait()  # the barging a SimpleQueue allowed
    t.join(5)
    assert got == ["waiting"]
    assert pool.get_nowait() == "interp"


def test_a_timed_out_waiter_leaves_the_line() -> None:
    pool = FifoPool(("interp",))
    held = pool.get_nowait()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        pool.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05
    assert pool.waiting() == 0
    pool.put(held)  # nobody waits: back in the pool, not handed to the one that left
    assert pool.qsize() == 1


def test_decode_permits_are_handed_out_in_arrival_order() -> None:
    adm = Admission(workers=1, queue_size=4, decode_wait_s=5.0)
    order: list[str] = []

    def decode(name: str) -> None:
        with adm.decoding(0):
            order.append(name)

    with adm.decoding(0):
        threads = []
        for i, name in enumerate(("a", "b", "c")):
            t = threading.Thread(target=decode, args=(name,))
            t.start()
            threads.append(t)
            until(lambda i=i: adm._decodes.waiting() == i + 1)  # type: ignore[misc]
    for t in threads:
        t.join(5)
    assert order == ["a", "b", "c"]


def test_a_decode_permit_not_freed_in_time_is_503() -> None:
    adm = Admission(workers=1, queue_size=0, decode_wait_s=0.05)
    with adm.decoding(0), pytest.raises(Overloaded, match="1 at a time, none free"), \
            adm.decoding(0):
        pass
    with adm.decoding(0):  # the permit came back
        pass
