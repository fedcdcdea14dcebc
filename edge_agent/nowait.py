"""Threads that must never wait: the HTTP event loop, which runs quick requests itself.

Why: :mod:`edge_agent.serving.http_loop` serves a request measured quick on its own thread
(no hand-off), and while it does, no other socket is served. If that request then waited,
for an interpreter held by a gRPC or MQTT request, a decode permit, or a test's fault
injection, every connection would wait with it. So the places that can wait (the
interpreter pool, the decode permits) ask :func:`waiting_forbidden` first and, on such a
thread, raise :class:`WouldBlock` instead of waiting; the loop catches it and hands the
request to its pool, where waiting is fine. No work is lost: nothing was invoked yet.

:class:`WouldBlock` is a signal between the loop and those places, not part of the error
tree (:mod:`edge_agent.errors`): it never reaches a client.
"""

from __future__ import annotations

import threading

_local = threading.local()


class WouldBlock(Exception):
    """Raised instead of waiting, on a thread that called :func:`forbid_waiting`.

    ``lasting``: the wait is not a moment's contention but how this request kind runs (a
    watched variant's invoke waits on its invoker thread): the loop stops trying such
    requests itself for a while instead of decoding each one twice."""

    def __init__(self, message: str, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting


def forbid_waiting() -> None:
    """From now on, the calling thread gets :class:`WouldBlock` where it would wait."""
    _local.forbidden = True


def waiting_forbidden() -> bool:
    """True on a thread that must not wait (the HTTP event loop)."""
    return getattr(_local, "forbidden", False)
