"""Probation: watch the new version's PredictionRecords and decide commit or roll back.

:func:`judge` is pure (window statistics in, verdict out). :class:`ProbationMonitor` is
the hook subscriber: it keeps a baseline of the active version's latencies and error
rate before the swap and the new version's figures after it. The subscriber only
appends to bounded deques, as hooks.py asks.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from edge_agent.hooks import Hooks, PredictionRecord


@dataclass(frozen=True)
class ProbationPolicy:
    window_s: float
    min_requests: int
    max_error_rate: float
    max_latency_ratio: float
    latency_floor_ms: float


@dataclass(frozen=True)
class WindowStats:
    requests: int
    errors: int
    p95_s: float | None  # of successful requests


@dataclass(frozen=True)
class Verdict:
    decided: bool
    ok: bool
    reason: str


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(0.95 * len(s)))]


def judge(new: WindowStats, base: WindowStats | None, policy: ProbationPolicy, *,
          window_over: bool) -> Verdict:
    """Fail early on clear evidence; pass only when the window is over.

    Errors: the new version fails when its error rate exceeds ``max_error_rate`` above
    the old version's own rate (clients that were already sending bad requests do not
    condemn the new model). With fewer than ``min_requests`` requests only an error
    count that alone exceeds the allowance fails it. Latency: p95 above
    ``max_latency_ratio`` x the old p95 and above ``latency_floor_ms``.
    """
    base_rate = base.errors / base.requests if base and base.requests else 0.0
    allowed = base_rate + policy.max_error_rate
    n = new.requests
    if n:
        rate = new.errors / n
        if rate > allowed and (n >= policy.min_requests
                               or new.errors > allowed * policy.min_requests):
            return Verdict(True, False, f"error rate {rate:.0%} over {n} requests "
                           f"(allowed {allowed:.0%})")
    if (n - new.errors >= policy.min_requests and new.p95_s is not None and base
            and base.p95_s is not None):
        limit = max(base.p95_s * policy.max_latency_ratio, policy.latency_floor_ms / 1000)
        if new.p95_s > limit:
            return Verdict(True, False, f"p95 latency {new.p95_s * 1000:.1f} ms over "
                           f"{limit * 1000:.1f} ms (old p95 {base.p95_s * 1000:.1f} ms)")
    if window_over:
        return Verdict(True, True, f"{n} requests, {new.errors} errors, p95 "
                       f"{'-' if new.p95_s is None else f'{new.p95_s * 1000:.1f} ms'}")
    return Verdict(False, True, "watching")


class _Series:
    def __init__(self, maxlen: int) -> None:
        self.ok: collections.deque[bool] = collections.deque(maxlen=maxlen)
        self.latency: collections.deque[float] = collections.deque(maxlen=maxlen)

    def add(self, rec: PredictionRecord) -> None:
        self.ok.append(rec.ok)
        if rec.ok:
            self.latency.append(rec.latency_s)

    def stats(self) -> WindowStats:
        oks = list(self.ok)
        return WindowStats(len(oks), oks.count(False), p95(list(self.latency)))


class ProbationMonitor:
    """Per model name: a rolling baseline of the active version; a window for the new one."""

    def __init__(self, hooks: Hooks, baseline_size: int = 500) -> None:
        self._lock = threading.Lock()
        self._baseline: dict[tuple[str, int], _Series] = {}
        self._watch: tuple[str, int] | None = None
        self._window = _Series(100_000)
        self._baseline_size = baseline_size
        self._remove = hooks.on_prediction(self._on_record)

    def close(self) -> None:
        self._remove()

    def _on_record(self, rec: PredictionRecord) -> None:
        key = (rec.model, rec.version)
        with self._lock:
            if key == self._watch:
                self._window.add(rec)
                return
            series = self._baseline.get(key)
            if series is None:
                if len(self._baseline) > 32:
                    self._baseline.clear()
                series = self._baseline[key] = _Series(self._baseline_size)
            series.add(rec)

    def start(self, name: str, version: int) -> None:
        """Begin a fresh window for ``name`` v``version``."""
        with self._lock:
            self._watch = (name, version)
            self._window = _Series(100_000)

    def stop(self) -> None:
        with self._lock:
            self._watch = None

    def window(self) -> WindowStats:
        with self._lock:
            return self._window.stats()

    def baseline(self, name: str, version: int | None) -> WindowStats | None:
        if version is None:
            return None
        with self._lock:
            s = self._baseline.get((name, version))
            return s.stats() if s else None


def wait_verdict(monitor: ProbationMonitor, base: WindowStats | None, policy: ProbationPolicy,
                 until: float, stop: threading.Event, poll_s: float = 0.05) -> Verdict:
    """Poll :func:`judge` until decided, the window ends, or ``stop`` is set."""
    while True:
        over = time.time() >= until
        v = judge(monitor.window(), base, policy, window_over=over)
        if v.decided:
            return v
        if stop.wait(min(poll_s, max(0.0, until - time.time()))):
            return Verdict(False, True, "stopped")
