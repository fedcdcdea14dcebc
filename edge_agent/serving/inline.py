"""Which requests the HTTP event loop serves itself, without a thread hand-off (issue 17).

Why: handing a request to a pooled thread and its answer back costs two wake-ups, a
selector re-arm and a GIL hand-over each way. For a small model (digits: ~0.2 ms of
handler work) that is most of the request, and it is why a single-threaded uvicorn beat
the pooled loop at c=4. For a slow model (MobileNetV2: tens of ms) or a big body, running
it on the loop would stall every other connection for that long, so those still go to
the pool. This module is the decision, a pure core: no sockets, no threads, no clock (the
loop passes the measured seconds in).

Per request kind (method and path: one model version's route), it keeps a moving average
of the handler's wall time. A request is served inline when

* its route allows it (``inline=True`` on :meth:`HttpServer.add_route`: the data-plane
  routes, never an admin action that may block on IO),
* its body is at most ``max_body_bytes``,
* nothing of this server is running on the pool (an inline request must not wait behind
  a pooled one for the same interpreter), and
* its kind's average is at most ``max_s``, or the kind is new (the first one is the probe:
  one stall of one request at most, then the average decides).

Samples: inline runs and pooled runs that had the pool to themselves move the average;
a pooled run that shared the pool is an upper bound of the real service time (it includes
queueing), so it moves the average only down. That way a kind sent to the pool by one slow
call (a GC pause) comes back once the pool shows it is fast, and queueing never sends a
fast kind to the pool. At most ``max_kinds`` kinds are tracked; others go to the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_S = 0.001  # seconds: handler time a request may hold the loop for
MAX_BODY_BYTES = 64 * 1024  # bytes: bigger bodies decode on the pool
MAX_KINDS = 256  # request kinds tracked (method + path)
_ALPHA = 0.25  # weight of a new sample in the moving average


@dataclass(slots=True)
class InlinePolicy:
    """Serve-inline decisions from measured handler times (loop thread only: no lock)."""

    max_s: float = MAX_S
    max_body_bytes: int = MAX_BODY_BYTES
    max_kinds: int = MAX_KINDS
    _avg: dict[str, float] = field(default_factory=dict)

    def inline(self, kind: str, body_bytes: int, pool_busy: int) -> bool:
        """True if a request of ``kind`` with that body should run on the loop thread."""
        if pool_busy or body_bytes > self.max_body_bytes:
            return False
        avg = self._avg.get(kind)
        if avg is None:
            return len(self._avg) < self.max_kinds  # the probe (tracked from now on)
        return avg <= self.max_s

    def observe(self, kind: str, seconds: float, *, shared: bool) -> None:
        """A handler of ``kind`` took ``seconds``; ``shared``: other requests were on the
        pool meanwhile (the time is an upper bound, so it only lowers the average)."""
        avg = self._avg.get(kind)
        if avg is None:
            if len(self._avg) < self.max_kinds:
                self._avg[kind] = seconds
            return
        if shared and seconds >= avg:
            return
        self._avg[kind] = avg + _ALPHA * (seconds - avg)

    def average_s(self, kind: str) -> float | None:
        """The moving average for ``kind`` (None: not measured yet)."""
        return self._avg.get(kind)
