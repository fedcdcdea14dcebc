"""Which requests the HTTP event loop serves itself, without a thread hand-off (issue 17).

Why: handing a request to a pooled thread and its answer back costs two wake-ups, a
selector re-arm and a GIL hand-over each way. For a small model (digits: ~0.2 ms of
handler work) that is most of the request, and it is why a single-threaded uvicorn beat
the pooled loop at c=4. For a slow model (MobileNetV2: tens of ms) or a big body, running
it on the loop would stall every other connection for that long, so those still go to
the pool. This module is the decision, a pure core: no sockets, no threads, no clock (the
loop passes the measured seconds in).

Per request kind (method and path: one model's route), it keeps the handler wall times of
the last ``window`` requests, wherever they ran. A request is served inline when

* its route allows it (``inline=True`` on :meth:`HttpServer.add_route`: the data-plane
  routes, never an admin action that may block on IO),
* its body is at most ``max_body_bytes``,
* nothing of this server is running on the pool (an inline request must not wait behind
  a pooled one for the same interpreter), and
* the fastest of its kind's recent times is at most ``max_s``, or the kind is new (the
  first request is the probe: one request's stall at most, then the times decide).

A request whose work **takes every core anyway** (its route's ``takes_cores()``: one
interpreter with as many threads as the machine has cores, no delegate) gets a larger
budget, ``cores_max_s`` and ``cores_max_body_bytes``. Running it on the pool gains nothing:
its invoke is the only thing that can use the cores, and the loop's reads and writes for
other connections running beside it take a core from one of the invoke's threads, which
the others then wait for (MobileNetV2 raw tensors, 1 × 2 threads on 2 cores: 0.86–0.90 of a
single-threaded uvicorn on the pool, 1.03–1.11 inline). Other connections wait for that
request, as they do in uvicorn; a route's other models, health checks and the dashboard
wait at most ``cores_max_s``.

Why the fastest, not an average: on a loaded board one preempted request takes 20 ms of
wall time for 0.2 ms of work, and a pooled request's time includes its queueing; both
only ever add. The minimum of a short window ignores them, and still follows a model that
really became slow (a new version under the same path) within ``window`` requests.
At most ``max_kinds`` kinds are tracked; others go to the pool.

A kind whose request raised a lasting :class:`~edge_agent.nowait.WouldBlock` (a watched
variant: its invoke waits on an invoker thread, so it can never run on the loop) is
:meth:`InlinePolicy.hold` on the pool for its next ``hold`` requests, then probed again
(the model under that path may have changed): one wasted decode per ``hold`` requests,
not one per request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_S = 0.001  # seconds: handler time a request may hold the loop for
MAX_BODY_BYTES = 64 * 1024  # bytes: bigger bodies decode on the pool
MAX_KINDS = 256  # request kinds tracked (method + path)
WINDOW = 8  # recent handler times kept per kind
HOLD = 64  # requests of a kind kept on the pool after a lasting WouldBlock
CORES_MAX_S = 0.1  # seconds: the same, for a request whose invoke takes every core anyway
CORES_MAX_BODY_BYTES = 1024 * 1024  # bytes: the same (a 224×224×3 tensor or image fits)


@dataclass(slots=True)
class InlinePolicy:
    """Serve-inline decisions from measured handler times (loop thread only: no lock)."""

    max_s: float = MAX_S
    max_body_bytes: int = MAX_BODY_BYTES
    max_kinds: int = MAX_KINDS
    window: int = WINDOW
    hold_requests: int = HOLD
    cores_max_s: float = CORES_MAX_S
    cores_max_body_bytes: int = CORES_MAX_BODY_BYTES
    _times: dict[str, deque[float]] = field(default_factory=dict)
    _fastest: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def inline(self, kind: str, body_bytes: int, pool_busy: int,
               takes_cores: Callable[[], bool] | None = None) -> bool:
        """True if a request of ``kind`` with that body should run on the loop thread.
        ``takes_cores`` (asked only when the plain budget says no) tells if its work takes
        every core anyway (the larger budget)."""
        held = self._held.get(kind)
        if held is not None:
            if held > 1:
                self._held[kind] = held - 1
            else:
                del self._held[kind]
            return False
        if pool_busy:
            return False
        fastest = self._fastest.get(kind)
        if fastest is None and len(self._times) >= self.max_kinds:
            return False  # not tracked: never the probe
        if body_bytes <= self.max_body_bytes and (fastest is None or fastest <= self.max_s):
            return True  # quick, or the probe (tracked from now on)
        return (takes_cores is not None and body_bytes <= self.cores_max_body_bytes
                and (fastest is None or fastest <= self.cores_max_s) and takes_cores())

    def observe(self, kind: str, seconds: float) -> None:
        """A handler of ``kind`` took ``seconds`` of wall time (inline or on the pool)."""
        times = self._times.get(kind)
        if times is None:
            if len(self._times) >= self.max_kinds:
                return
            times = self._times[kind] = deque(maxlen=self.window)
        times.append(seconds)
        self._fastest[kind] = min(times)

    def hold(self, kind: str) -> None:
        """A request of ``kind`` cannot run on the loop (a lasting WouldBlock): send the
        next ``hold_requests`` of its kind to the pool without trying."""
        if kind in self._held or len(self._held) < self.max_kinds:
            self._held[kind] = self.hold_requests

    def fastest_s(self, kind: str) -> float | None:
        """The fastest recent handler time of ``kind`` (None: not measured yet)."""
        return self._fastest.get(kind)
