"""A deadline for a whole operation, and a socket reader that never waits past it.

Why: a per-receive socket timeout does not bound an operation. A peer that sends one
byte just before each timeout never trips it and holds the operation (and its thread)
for as long as it likes: 200 slowloris sockets took every REST connection slot, and one
mirror dripping a target wedged the single update worker. Two pieces, used by both:

* :class:`Deadline` — a point on the monotonic clock for one operation (``budget_s`` from
  its start), with :meth:`Deadline.within` for a tighter bound on one part of it (a
  metadata file within the whole download). Pure: the clock is injectable.
* :class:`SocketReader` — a socket's receive side (wrap it in an ``io.BufferedReader``)
  where *every* receive waits at most ``min(per_recv_s, time left)``, so a read loop
  above it (``readline``, ``read(n)``, http.client's header parser) ends at the deadline
  even mid-read, whatever the peer drips.

Users: the update mirrors (:mod:`edge_agent.update.mirror_http`). Raises what the caller chose: the
``error`` of the deadline once it has passed, ``stalled`` when one receive waited
``per_recv_s`` with nothing (both default to TimeoutError), OSError from the socket.
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]
ErrorFactory = Callable[[str], Exception]


class Deadline:
    """``what`` must be done within ``budget_s`` of construction (monotonic clock).

    ``what`` reads as the failure, e.g. ``"request head not received"``: the error raised
    once the deadline has passed says ``"<what> within <budget_s> s"``.
    """

    __slots__ = ("at", "budget_s", "clock", "error", "what")

    def __init__(self, budget_s: float, what: str, *, error: ErrorFactory = TimeoutError,
                 clock: Clock = time.monotonic) -> None:
        self.budget_s = budget_s
        self.what = what
        self.error = error
        self.clock = clock
        self.at = clock() + budget_s

    def left(self) -> float:
        """Seconds until the deadline (<= 0 once it has passed)."""
        return self.at - self.clock()

    def expired(self) -> bool:
        return self.left() <= 0

    def message(self) -> str:
        return f"{self.what} within {self.budget_s:g} s"

    def check(self) -> None:
        """Raise ``error`` if the deadline has passed."""
        if self.expired():
            raise self.error(self.message())

    def timeout(self, cap_s: float) -> float:
        """How long one blocking wait may take: ``min(cap_s, time left)``; raises ``error``
        if nothing is left."""
        left = self.left()
        if left <= 0:
            raise self.error(self.message())
        return min(cap_s, left)

    def within(self, budget_s: float, what: str) -> Deadline:
        """A tighter bound for one part of the operation: ``budget_s`` from now for ``what``,
        but never later than this deadline (then this one, and its message, is returned)."""
        sub = Deadline(budget_s, what, error=self.error, clock=self.clock)
        return sub if sub.at < self.at else self


class SocketReader(io.RawIOBase):
    """``recv_into`` where each receive waits at most ``min(per_recv_s, deadline left)``.

    ``deadline`` may be replaced between reads (a new phase); None means only the
    per-receive bound applies. Wrap in ``io.BufferedReader``.
    """

    def __init__(self, sock: socket.socket | ssl.SSLSocket, per_recv_s: float,
                 deadline: Deadline | None = None, *,
                 stalled: ErrorFactory = TimeoutError) -> None:
        super().__init__()
        self._sock = sock
        self.per_recv_s = per_recv_s
        self.deadline = deadline
        self._stalled = stalled

    def readable(self) -> bool:
        return True

    def stalled_error(self) -> Exception:
        """The error for one receive that waited ``per_recv_s`` with nothing arriving."""
        return self._stalled(f"no data for {self.per_recv_s:g} s")

    def received(self, n: int) -> None:
        """Hook: ``n`` bytes just arrived (a subclass starts a phase on the first byte)."""

    def readinto(self, buf: Any) -> int:
        d = self.deadline
        self._sock.settimeout(self.per_recv_s if d is None else d.timeout(self.per_recv_s))
        try:
            n = self._sock.recv_into(buf)
        except TimeoutError as e:
            if d is not None and d.expired():
                raise d.error(d.message()) from e
            raise self.stalled_error() from e
        self.received(n)
        return n
