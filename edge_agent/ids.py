"""Cheap unique ids: a random 64-bit prefix drawn once per process, then a counter.

``request_id()`` is 32 lower-case hex characters, the shape of ``uuid4().hex`` (what the
agent answered before), unique within a process and, thanks to the random prefix, across
restarts and devices; it costs a counter increment instead of ``os.urandom`` per request.
Not a secret: never use it where unpredictability matters (tokens, nonces).
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)  # next() on a count is atomic under the GIL


def request_id() -> str:
    """A new id: ``<16 hex random per process><16 hex counter>``."""
    return f"{_PREFIX}{next(_COUNTER):016x}"
