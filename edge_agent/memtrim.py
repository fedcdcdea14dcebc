"""Give freed heap back to the OS: glibc's allocator tuned at start, ``malloc_trim`` after
a large request.

Why: parsing a 3 MB JSON body makes ~10 MB of small Python objects on the handler
thread's malloc arena; freed, they stay in the arena (glibc returns only the top of a
heap on its own), so after a burst at c=16 the agent kept 234–315 MB. ``malloc_trim(0)``
releases the free pages of every arena (``madvise``). It costs about a millisecond against
the tens of milliseconds such a request takes, so it runs after every request whose body
was at least :data:`TRIM_AFTER_BYTES` (``bench/memory.py`` measures the effect). A no-op
where there is no glibc (musl, macOS).

Trimming alone left 45 MB of a burst behind, spread over the handler threads' arenas, so
``edge-agent run`` also sets, at start (:func:`tune`, unless the environment already sets
the matching ``MALLOC_*`` variable): at most :data:`ARENA_MAX` arenas (glibc's default is
8 per core) and a fixed mmap threshold of :data:`MMAP_THRESHOLD` (glibc raises it up to
32 MB after freeing a large block, so later request bodies land in the heap instead of
being mapped and unmapped). Measured with ``bench/memory.py`` / tests/agent/
test_memory_bounds.py: RSS after a c=16 burst of 3 MB bodies back to within 2 MB of idle.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

TRIM_AFTER_BYTES = 1 << 20  # bodies from 1 MiB up leave enough behind to be worth it
ARENA_MAX = 2
MMAP_THRESHOLD = 256 << 10
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's mallopt parameter numbers

_lock = threading.Lock()
_libc: Any = None
_loaded = False


def _glibc() -> Any:
    """glibc with ``malloc_trim`` and ``mallopt``, or None."""
    global _libc, _loaded
    with _lock:
        if not _loaded:
            _loaded = True
            import ctypes  # on first use: nothing else in the agent needs it

            for name in ("libc.so.6", None):  # None: the symbols already in the process
                try:
                    lib = ctypes.CDLL(name)
                    lib.malloc_trim.argtypes = [ctypes.c_size_t]
                    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                except (OSError, AttributeError):
                    continue
                _libc = lib
                break
    return _libc


def tune(env: Mapping[str, str] | None = None) -> list[str]:
    """Cap the arenas and fix the mmap threshold (see module docstring), each unless the
    environment sets it; call before threads start. Returns what was set."""
    e = os.environ if env is None else env
    lib = _glibc()
    done: list[str] = []
    if lib is None:
        return done
    for var, param, value in (("MALLOC_ARENA_MAX", _M_ARENA_MAX, ARENA_MAX),
                              ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if var not in e and lib.mallopt(param, value) == 1:
            done.append(f"{var}={value}")
    return done


def trim() -> bool:
    """``malloc_trim(0)`` now; False where it is not available."""
    lib = _glibc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def after_load() -> bool:
    """Collect the garbage that start-up left (manifest JSON, golden vectors, bundle
    members) and give its free pages back: ``edge-agent run`` calls it once the models
    are loaded and the agent is ready, so idle RSS is what serving holds
    (docs/agent.md#footprint). False where trimming is not available."""
    import gc

    gc.collect()
    return trim()


def after_request(body_bytes: int) -> None:
    """Trim if the request's body was at least TRIM_AFTER_BYTES."""
    if body_bytes >= TRIM_AFTER_BYTES:
        trim()
