"""Backoff for announcements whose attempt failed in transport (stalled, dripping, unreachable).

Why it is remembered across restarts: announcements are retained on the broker, so the
same bytes arrive again after every restart and every reconnect. Without a memory of
their failures the single update worker would spend another whole download deadline on
a dripping mirror at once, every time, ahead of any newer announcement. Here the same
announcement (by the sha256 of its payload) waits ``retry_backoff_s`` after its first
failure, twice that after the second, … up to ``retry_backoff_max_s``; an announcement
with other bytes (a new release) is not held back by it.

Pure: :func:`backoff_s`. IO: :class:`RetryBook` keeps ``{digest: failures, not_before}``
in ``<update dir>/retry.json`` (written atomically, at most :data:`MAX_ENTRIES`; a failed
write is logged and the book stays in memory). ``not_before`` is wall-clock time so it
survives a restart; a clock that jumps back never stretches a wait beyond its backoff.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.fsutil import atomic_write_text

log = logging.getLogger(__name__)

MAX_ENTRIES = 64


def backoff_s(failures: int, base_s: float, max_s: float) -> float:
    """Wait after ``failures`` consecutive transport failures: base, 2×base, 4×base … max."""
    if failures <= 0:
        return 0.0
    return min(max_s, base_s * 2.0 ** min(failures - 1, 60))


@dataclass(frozen=True)
class Entry:
    failures: int
    not_before: float  # time.time() before which the announcement is not run again


class RetryBook:
    """The announcements in backoff (see the module docstring). Not thread-safe."""

    def __init__(self, path: Path, base_s: float, max_s: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.base_s = base_s
        self.max_s = max_s
        self.clock = clock
        self._entries: dict[str, Entry] = {}

    def load(self) -> None:
        """Read the book; a missing or unreadable file is an empty book."""
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(raw, dict):
            return
        for digest, e in list(raw.items())[-MAX_ENTRIES:]:
            if isinstance(e, dict) and isinstance(e.get("failures"), int) \
                    and isinstance(e.get("not_before"), (int, float)):
                self._entries[str(digest)] = Entry(e["failures"], float(e["not_before"]))

    def wait_s(self, digest: str) -> float:
        """Seconds before ``digest`` may run again (0: now)."""
        e = self._entries.get(digest)
        if e is None:
            return 0.0
        left = e.not_before - self.clock()
        return max(0.0, min(left, backoff_s(e.failures, self.base_s, self.max_s)))

    def failed(self, digest: str) -> float:
        """Record one more transport failure of ``digest``; returns its backoff."""
        prev = self._entries.pop(digest, None)
        failures = (prev.failures if prev else 0) + 1
        delay = backoff_s(failures, self.base_s, self.max_s)
        self._entries[digest] = Entry(failures, self.clock() + delay)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))
        self._save()
        return delay

    def settled(self, digest: str) -> None:
        """``digest`` ran to an outcome other than a transport failure: forget it."""
        if self._entries.pop(digest, None) is not None:
            self._save()

    def status(self) -> list[dict[str, Any]]:
        return [{"announcement": d[:16], "failures": e.failures,
                 "retry_in_s": round(self.wait_s(d), 1)} for d, e in self._entries.items()]

    def _save(self) -> None:
        doc = {d: {"failures": e.failures, "not_before": e.not_before}
               for d, e in self._entries.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
        except OSError as e:
            log.warning("update: cannot persist the retry backoff (%s); kept in memory", e)
