"""A pool that lends its items in arrival order: the interpreters, the decode permits.

Why (issue 17): ``queue.SimpleQueue`` and ``threading.Semaphore`` let a thread that just
arrived take an item that was released for a waiting thread (the waiter still has to win
the GIL and the lock back), and the waiter that lost goes back to waiting, at the end.
With 16 connections on 2 interpreters that is what made some requests wait several times
as long as others: MobileNetV2 at c=16 had a p99 of 3.4× its mean latency. Here a released
item is handed straight to the longest waiter; a newcomer only gets a free item when
nobody is waiting.

No IO, no clock beyond the waits' timeouts.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")
_NOTHING = object()


class _Waiter:
    __slots__ = ("item", "signal")

    def __init__(self) -> None:
        self.item: object = _NOTHING
        self.signal = threading.Lock()
        self.signal.acquire()  # released once, by the put that hands it an item


class FifoPool(Generic[T]):
    """Items lent first come, first served (:meth:`get`), given back with :meth:`put`.

    Invariant: there are free items only while nobody waits, so :meth:`get_nowait` never
    takes an item from under a waiter. Raises ``queue.Empty`` as ``queue`` does.
    """

    def __init__(self, items: tuple[T, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._free: deque[T] = deque(items)
        self._waiters: deque[_Waiter] = deque()

    def put(self, item: T) -> None:
        """Give ``item`` back: to the longest waiter if there is one, else to the pool."""
        with self._lock:
            if self._waiters:
                w = self._waiters.popleft()
                w.item = item
                w.signal.release()
                return
            self._free.append(item)

    def get_nowait(self) -> T:
        """A free item now. Raises ``queue.Empty`` when none is free.

        No lock: ``deque.popleft`` is atomic, and by the invariant a free item is nobody's
        (items are put in ``_free`` only while nobody waits), so taking one never barges."""
        try:
            return self._free.popleft()
        except IndexError:
            raise queue.Empty from None

    def get(self, timeout: float | None = None) -> T:
        """A free item, waiting in line (at most ``timeout`` seconds). Raises ``queue.Empty``
        on timeout."""
        try:
            return self._free.popleft()  # the uncontended path, as get_nowait
        except IndexError:
            pass
        with self._lock:
            if self._free:
                return self._free.popleft()
            w = _Waiter()
            self._waiters.append(w)
        if not w.signal.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            with self._lock:
                if w.item is _NOTHING:  # not handed anything: leave the line
                    self._waiters.remove(w)
                    raise queue.Empty
            # an item was handed over just as the wait ran out: it is ours
        return w.item  # type: ignore[return-value]  # a T, set by put

    def qsize(self) -> int:
        """Free items right now."""
        return len(self._free)

    def waiting(self) -> int:
        """Threads waiting in line right now."""
        return len(self._waiters)
