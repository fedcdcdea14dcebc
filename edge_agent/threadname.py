"""OS-level thread names: what ``top -H``, ``ps -L`` and ``/proc/PID/task/*/comm`` show.

Python before 3.14 leaves every thread it starts named after the process (``python``), so
an operator looking at a busy or leaking agent cannot tell the HTTP workers from the gRPC
pool or the telemetry loop. :class:`NamedThread`, :class:`NamedTimer` and the pool initializer
:func:`name_this_thread` give each thread its Python name at the OS level too (Linux keeps
the first 15 bytes). Elsewhere, or when libc is not reachable, they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from functools import cache
from typing import Any

PR_SET_NAME = 15  # <linux/prctl.h>
MAX_BYTES = 15  # the kernel's TASK_COMM_LEN less the terminating NUL


@cache
def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def name_this_thread(name: str | None = None) -> None:
    """Set the calling thread's OS name (default: its Python name), cut to 15 bytes."""
    prctl = _prctl()
    if prctl is None:
        return
    raw = (name or threading.current_thread().name).encode("utf-8", "replace")[:MAX_BYTES]
    prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)


class NamedThread(threading.Thread):
    """A ``threading.Thread`` that carries its name down to the OS thread."""

    def run(self) -> None:
        name_this_thread(self.name)
        super().run()


class NamedTimer(NamedThread, threading.Timer):
    """A ``threading.Timer`` that does the same (``run`` goes on to the timer's wait)."""
