"""Polling for the tests: the one ``wait_for`` every helper module re-exports.

A plain top-level module (``tests`` is not a package; pytest puts this folder on
``sys.path`` because the root ``conftest.py`` lives here).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout_s: float = 20.0, what: str = "condition",
             *, poll_s: float = 0.02) -> T:
    """Poll ``pred`` until it returns something truthy and return that value.

    Fails the test (``pytest.fail``) naming ``what`` once ``timeout_s`` has passed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """A listener answers on ``host:port``. A connection to itself does not count: while
    nothing listens on a port in the ephemeral range, a client socket given that port as
    its own connects to itself (TCP simultaneous open), which looks like a listener."""
    try:
        s = socket.create_connection((host, port), timeout_s)
    except OSError:
        return False
    with s:
        return bool(s.getsockname() != s.getpeername())
