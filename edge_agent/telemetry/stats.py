"""Per-model request statistics, collected from the prediction hook, reported per interval.

``record_many`` folds a batch of records (the telemetry component queues them from the
prediction hook and hands them over several times a second): counters, and latencies into
a reservoir (past ``latency_samples`` per interval it keeps a uniform sample).
``snapshot`` is called by the telemetry loop; it returns the interval's figures and
starts a new interval.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.hooks import PredictionRecord
from edge_agent.telemetry.sample import (
    BATCH,
    LATENCY,
    OK,
    SOURCE,
    Sample,
    column,
    sample_of,
    split_by_model,
)


@dataclass
class _Interval:
    version: int = 0
    requests: int = 0
    samples: int = 0
    errors: int = 0
    latencies: np.ndarray = field(default_factory=lambda: np.empty(0))
    seen: int = 0  # latencies offered to the reservoir this interval
    total_requests: int = 0
    total_errors: int = 0
    sources: Counter[str] = field(default_factory=Counter)


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """The ``qs`` percentiles (0–100) of ``values`` (not empty), linearly interpolated
    between the closest ranks: ``np.percentile``'s default method, to within rounding.

    Why not ``np.percentile``: it calls ``np.unique``, whose first call imports
    ``numpy.ma`` (~18 ms of import under the GIL, 2.4). That landed in the first telemetry
    tick after the first requests, and the threads queueing for the GIL meanwhile
    doubled the tick's wake-ups (tests/telemetry/test_idle_wakeups.py); the agent needs
    nothing else from ``numpy.ma``."""
    a = np.sort(values)
    pos = np.asarray(qs, dtype=np.float64) / 100.0 * (len(a) - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, len(a) - 1)
    return [float(v) for v in a[lo] + (a[hi] - a[lo]) * (pos - lo)]


class ModelStats:
    """Counters and latency percentiles per model (thread-safe)."""

    def __init__(self, latency_samples: int = 4096) -> None:
        self.latency_samples = latency_samples
        self._lock = threading.Lock()
        self._models: dict[str, _Interval] = {}
        self._since = time.monotonic()
        self._rng = np.random.default_rng(0)

    def record(self, rec: PredictionRecord) -> None:
        self.record_many([sample_of(rec)])

    def record_many(self, batch: list[Sample]) -> None:
        if not batch:
            return
        groups = split_by_model(batch)
        with self._lock:
            for (name, version), rows in groups.items():
                m = self._models.get(name)
                if m is None:
                    m = self._models[name] = _Interval(latencies=np.empty(0))
                m.version = version
                oks = column(rows, OK)
                n = len(rows)
                errors = n - sum(oks)
                m.requests += n
                m.total_requests += n
                m.errors += errors
                m.total_errors += errors
                batches = column(rows, BATCH)
                m.samples += sum(batches) if not errors else \
                    sum(b for b, ok in zip(batches, oks, strict=True) if ok)
                m.sources.update(column(rows, SOURCE))
                self._reservoir(m, np.asarray(column(rows, LATENCY), dtype=np.float64))

    def _reservoir(self, m: _Interval, lat: np.ndarray) -> None:
        """Vitter's algorithm R, vectorised: a uniform sample of this interval's latencies."""
        cap = self.latency_samples
        room = max(0, cap - len(m.latencies))
        if room:
            m.latencies = np.concatenate([m.latencies, lat[:room]])
            m.seen += min(room, len(lat))
            lat = lat[room:]
        if len(lat):
            # element k of the rest is the (seen + k + 1)-th seen: it replaces slot j if j < cap
            j = self._rng.integers(0, np.arange(m.seen + 1, m.seen + len(lat) + 1))
            keep = j < cap
            m.latencies[j[keep]] = lat[keep]  # later ones overwrite earlier, as in order
            m.seen += len(lat)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The interval's figures per model; resets the interval (totals keep counting)."""
        now = time.monotonic()
        with self._lock:
            dt = max(now - self._since, 1e-9)
            self._since = now
            out: dict[str, dict[str, Any]] = {}
            for name, m in self._models.items():
                lat = m.latencies * 1000.0
                p50, p90, p99 = ([round(v, 3) for v in percentiles(lat, (50, 90, 99))]
                                 if len(lat) else (None, None, None))
                out[name] = {
                    "version": m.version,
                    "requests": m.requests, "samples": m.samples, "errors": m.errors,
                    "requests_per_s": round(m.requests / dt, 3),
                    "samples_per_s": round(m.samples / dt, 3),
                    "latency_ms": {"p50": p50, "p90": p90, "p99": p99},
                    "total_requests": m.total_requests, "total_errors": m.total_errors,
                    "sources": dict(m.sources),
                }
                m.requests = m.samples = m.errors = m.seen = 0
                m.latencies = np.empty(0)
                m.sources = Counter()
            return out
