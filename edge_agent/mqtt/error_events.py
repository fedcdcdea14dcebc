"""Error events about incoming messages: rate-limited per device and kind, sent off-thread.

Why: a flood of bad messages (garbage on every topic, 500 distinct bogus command names)
must neither flood ``edge/<device>/events`` nor slow the MQTT dispatch thread. Emitting an
event logs and writes to the outbox (SQLite); done on the dispatch thread, a flood of them
made its queue overflow, and the commands behind them went unanswered. A limit keyed by the
full topic let every distinct command name through and grew its table without bound.

* :class:`RateLimit` — at most ``burst`` events per ``per_s`` per key. Keys are
  ``(device, kind)``: a small set (``EventKind`` is an enum); the table is capped at
  ``max_keys`` anyway (the least recently used key is forgotten).
* :class:`ErrorEvents` — :meth:`ErrorEvents.report` never blocks: it rate-limits, then
  queues the event for one worker thread (bounded queue; a full queue drops and counts).

Raises nothing: a failing ``emit`` is logged by the worker.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent.hooks import Hooks
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

Emit = Callable[[str, str, str, dict[str, Any]], object]  # (level, kind, message, data)


class RateLimit:
    """At most ``burst`` events per ``per_s`` seconds per key; the rest are counted."""

    def __init__(self, burst: int = 10, per_s: float = 60.0, *, max_keys: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_s, self.max_keys = burst, per_s, max_keys
        self.clock = clock
        self._seen: collections.OrderedDict[tuple[str, str], list[float]] = \
            collections.OrderedDict()
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, str]) -> bool:
        now = self.clock()
        with self._lock:
            times = [t for t in self._seen.pop(key, []) if now - t < self.per_s]
            ok = len(times) < self.burst
            if ok:
                times.append(now)
            else:
                self.suppressed += 1
            self._seen[key] = times  # most recently used last
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            return ok

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class ErrorEvents:
    """Rate-limited ``error`` events for one device, emitted by a worker thread."""

    def __init__(self, device: str, emit: Emit, *, limit: RateLimit | None = None,
                 queue_size: int = 256) -> None:
        self.device = device
        self.emit = emit
        self.limit = limit or RateLimit()
        self.dropped = 0  # rate-allowed events lost because the queue was full
        self._q: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def suppressed(self) -> int:
        return self.limit.suppressed

    def report(self, kind: str, message: str, **data: Any) -> bool:
        """Queue an error event unless rate-limited; True if queued. Never blocks."""
        if not self.limit.allow((self.device, kind)):
            return False
        self._ensure_worker()
        try:
            self._q.put_nowait((kind, message, {**data, "suppressed_before": self.suppressed}))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = NamedThread(target=self._work, daemon=True,
                                                name=f"error-events-{self.device}")
                self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            kind, message, data = item
            try:
                self.emit("error", kind, message, data)
            except Exception:
                log.exception("could not emit the %s event", kind)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Emit what is queued, then stop the worker (it restarts on the next report)."""
        with self._lock:
            t, self._thread = self._thread, None
        if t is None:
            return
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            return
        t.join(timeout_s)


def hook_events(device: str, hooks: Hooks) -> ErrorEvents:
    """Error events for ``device`` emitted through the agent's ``hooks`` (→ the outbox)."""
    return ErrorEvents(device, lambda level, kind, message, data: hooks.emit_event(
        level, kind, message, **data))
