"""Give freed heap back to the OS after a large request (glibc ``malloc_trim``).

Why: parsing a 3 MB JSON body makes ~10 MB of small Python objects on the handler
thread's malloc arena; freed, they stay in the arena (glibc returns only the top of a
heap on its own), so after a burst at c=16 the agent kept 234–315 MB. ``malloc_trim(0)``
releases the free pages of every arena (``madvise``). It costs about a millisecond against
the tens of milliseconds such a request takes, so it runs after every request whose body
was at least :data:`TRIM_AFTER_BYTES` (``bench/memory.py`` measures the effect). A no-op
where there is no glibc (musl, macOS). ``ctypes`` is imported on first use only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

TRIM_AFTER_BYTES = 1 << 20  # bodies from 1 MiB up leave enough behind to be worth it

_lock = threading.Lock()
_trim: Callable[[int], Any] | None = None
_loaded = False


def _load() -> Callable[[int], Any] | None:
    import ctypes  # not at import: the agent's idle footprint does not need it

    for name in ("libc.so.6", None):  # None: the symbols already in the process
        try:
            fn = ctypes.CDLL(name).malloc_trim
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_size_t]
        fn.restype = ctypes.c_int
        return fn
    return None


def trim() -> bool:
    """``malloc_trim(0)`` now; False where it is not available."""
    global _trim, _loaded
    with _lock:
        if not _loaded:
            _trim, _loaded = _load(), True
    if _trim is None:
        return False
    _trim(0)
    return True


def after_request(body_bytes: int) -> None:
    """Trim if the request's body was at least TRIM_AFTER_BYTES."""
    if body_bytes >= TRIM_AFTER_BYTES:
        trim()
