"""Bounded work admission: never more than ``workers + queue_size`` requests per model.

A request is admitted (or refused at once) only *after* its whole body has arrived (the
HTTP server reads it under ``body_timeout_s`` before the handler runs), so a client that drips
its body holds its own connection, never one of these slots. Parsing and decoding happen
inside the slot, so their memory is bounded by ``capacity``. Admitted requests then wait
for one of the model's interpreters (the registry's pool); that wait is the queue, and its
depth is ``in_flight - workers``. Refusal raises :class:`Overloaded` (HTTP 503 with
``Retry-After``). There is no thread hand-off: the connection's thread runs the model,
which keeps the per-request overhead to a lock and two counter updates.

Decoding (a JSON body → tensors) additionally holds one of ``workers`` decode permits
(:meth:`Admission.decoding`, shared by every model of the agent): all admitted requests
may have their bodies in memory, but only ``workers`` of them are expanded into Python
objects at once (a 3 MB JSON body becomes ~10–25 MB of them), so peak memory is bounded
by bodies + ``workers`` decodes, not by ``capacity`` decodes. A request that waits longer
than ``decode_wait_s`` for a permit is refused (503). Permits are handed out in arrival
order (:class:`~edge_agent.fifo.FifoPool`), as the model's interpreters are.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from edge_agent import memtrim
from edge_agent.errors import TransportError
from edge_agent.fifo import FifoPool
from edge_agent.nowait import WouldBlock, waiting_forbidden


class Overloaded(TransportError):
    """The work queue for a model is full; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """Per-model counters of admitted requests, with a fixed capacity each."""

    def __init__(self, workers: int, queue_size: int, *, retry_after_s: int = 1,
                 decode_wait_s: float = 30.0) -> None:
        self.workers = max(1, workers)
        self.decode_wait_s = decode_wait_s
        self._decodes: FifoPool[bool] = FifoPool((True,) * self.workers)  # in arrival order
        self.queue_size = max(0, queue_size)
        self.capacity = self.workers + self.queue_size
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._in: dict[str, int] = {}

    def try_enter(self, model: str) -> bool:
        with self._lock:
            n = self._in.get(model, 0)
            if n >= self.capacity:
                return False
            self._in[model] = n + 1
            return True

    def leave(self, model: str) -> None:
        with self._lock:
            n = self._in.get(model, 0) - 1
            if n > 0:
                self._in[model] = n
            else:
                self._in.pop(model, None)

    @contextmanager
    def slot(self, model: str) -> Iterator[None]:
        """Hold one admission for ``model``. Raises Overloaded when all are taken."""
        if not self.try_enter(model):
            raise Overloaded(f"model {model!r} is busy: {self.workers} running and "
                             f"{self.queue_size} queued requests; retry later",
                             retry_after_s=self.retry_after_s)
        try:
            yield
        finally:
            self.leave(model)

    @contextmanager
    def decoding(self, body_bytes: int) -> Iterator[None]:
        """Hold one of the ``workers`` decode permits while a body becomes tensors; after
        a large body, give the freed heap back (:mod:`edge_agent.memtrim`). Raises
        Overloaded when no permit frees up within ``decode_wait_s``, and WouldBlock at once
        on a thread that must not wait (the HTTP loop: it then hands the request over)."""
        try:
            permit = (self._decodes.get_nowait() if waiting_forbidden()
                      else self._decodes.get(timeout=self.decode_wait_s))
        except queue.Empty:
            if waiting_forbidden():
                raise WouldBlock("every decode permit is taken") from None
            raise Overloaded(f"request decoding is busy ({self.workers} at a time, none free "
                             f"within {self.decode_wait_s:g} s); retry later",
                             retry_after_s=self.retry_after_s) from None
        try:
            yield
        finally:
            self._decodes.put(permit)
            memtrim.after_request(body_bytes)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """``{model: (in_flight, queued)}`` for metrics and status."""
        with self._lock:
            return {m: (n, max(0, n - self.workers)) for m, n in self._in.items()}

    def queue_depth(self) -> int:
        return sum(q for _, q in self.snapshot().values())

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in.values())
