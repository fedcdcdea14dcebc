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
The HTTP side (:mod:`edge_agent.serving.http`) answers 408 and closes the connection.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any


class DeadlineReader(io.RawIOBase):
    """``recv_into`` under the current phase's deadline; wrap it in an ``io.BufferedReader``.

    Raises TimeoutError (the phase's deadline passed, or one receive waited
    ``idle_timeout_s``) and OSError from the socket.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self.idle_timeout_s = idle_timeout_s
        self._deadline: float | None = None
        self._pending_s: float | None = None  # a head deadline that starts at its first byte
        self.phase = "request"
        self.timeout_s = idle_timeout_s

    def readable(self) -> bool:
        return True

    def await_head(self, head_timeout_s: float) -> None:
        """Idle until the next request's first byte, then ``head_timeout_s`` for its head."""
        self._deadline, self._pending_s = None, head_timeout_s
        self.phase, self.timeout_s = "request head", head_timeout_s

    def start(self, phase: str, timeout_s: float) -> None:
        """From now, ``timeout_s`` in total for ``phase`` (e.g. ``request body``)."""
        self._deadline, self._pending_s = time.monotonic() + timeout_s, None
        self.phase, self.timeout_s = phase, timeout_s

    def clear(self) -> None:
        """End of a phase: back to the idle timeout (also for the response's writes)."""
        self._deadline = self._pending_s = None
        self._sock.settimeout(self.idle_timeout_s)

    def readinto(self, buf: Any) -> int:
        timeout = self.idle_timeout_s
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.phase} not received within {self.timeout_s:g} s")
            timeout = min(timeout, left)
        self._sock.settimeout(timeout)
        try:
            n = self._sock.recv_into(buf)
        except TimeoutError as e:
            raise TimeoutError(f"{self.phase} not received within {self.timeout_s:g} s"
                               if self._deadline is not None else
                               f"connection idle for {self.idle_timeout_s:g} s") from e
        if n and self._pending_s is not None:
            self.start(self.phase, self._pending_s)
        return n
