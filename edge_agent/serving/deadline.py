"""A socket's receive side with a *total* deadline per phase of a request (head, body).

Why: a per-receive socket timeout does not bound a request. A client that sends one byte
every few seconds (slowloris) never trips it and holds its connection, and its thread,
forever; 200 such sockets took every connection slot of the agent. Here each phase has a
deadline for the whole of it:

* waiting for the next request on a kept-alive connection: ``idle_timeout_s`` per receive
  (an idle connection costs nothing but its slot, and is closed when idle that long);
* the request head: ``head_timeout_s`` from its first byte to its empty line;
* the request body: ``body_timeout_s`` from the end of the head to its last byte.

Every receive is given at most what is left of its phase's deadline (and never more than
``idle_timeout_s``); when nothing is left it raises :class:`TimeoutError` naming the phase.
The HTTP side (:mod:`edge_agent.serving.http`) answers 408 and closes the connection. The
deadline and the bounded receive are :mod:`edge_agent.deadline`'s (shared with the update
downloads); this module adds the request phases.
"""

from __future__ import annotations

import socket

from edge_agent.deadline import Deadline, SocketReader


class DeadlineReader(SocketReader):
    """``recv_into`` under the current phase's deadline; wrap it in an ``io.BufferedReader``.

    Raises TimeoutError (the phase's deadline passed, or one receive waited
    ``idle_timeout_s``) and OSError from the socket.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float) -> None:
        super().__init__(sock, idle_timeout_s)
        self.idle_timeout_s = idle_timeout_s
        self._pending_s: float | None = None  # a head deadline that starts at its first byte
        self.phase = "request"
        self.timeout_s = idle_timeout_s

    def await_head(self, head_timeout_s: float) -> None:
        """Idle until the next request's first byte, then ``head_timeout_s`` for its head."""
        self.deadline, self._pending_s = None, head_timeout_s
        self.phase, self.timeout_s = "request head", head_timeout_s

    def start(self, phase: str, timeout_s: float) -> None:
        """From now, ``timeout_s`` in total for ``phase`` (e.g. ``request body``)."""
        self.deadline, self._pending_s = Deadline(timeout_s, f"{phase} not received"), None
        self.phase, self.timeout_s = phase, timeout_s

    def clear(self) -> None:
        """End of a phase: back to the idle timeout (also for the response's writes)."""
        self.deadline = self._pending_s = None
        self._sock.settimeout(self.idle_timeout_s)

    def stalled_error(self) -> Exception:
        if self.deadline is not None:
            return TimeoutError(self.deadline.message())
        return TimeoutError(f"connection idle for {self.idle_timeout_s:g} s")

    def received(self, n: int) -> None:
        if n and self._pending_s is not None:
            self.start(self.phase, self._pending_s)
