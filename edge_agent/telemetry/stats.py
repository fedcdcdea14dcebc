"""Per-model request statistics, collected from the prediction hook, reported per interval.

``record`` runs on the serving thread for every prediction: it takes a lock, bumps
counters and appends one latency (bounded: past ``latency_samples`` per interval the
reservoir keeps a uniform sample). ``snapshot`` is called by the telemetry loop; it
returns the interval's figures and starts a new interval.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.hooks import PredictionRecord


@dataclass
class _Interval:
    version: int = 0
    requests: int = 0
    samples: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies offered to the reservoir
    total_requests: int = 0
    total_errors: int = 0
    sources: dict[str, int] = field(default_factory=dict)


class ModelStats:
    """Counters and latency percentiles per model (thread-safe)."""

    def __init__(self, latency_samples: int = 4096) -> None:
        self.latency_samples = latency_samples
        self._lock = threading.Lock()
        self._models: dict[str, _Interval] = {}
        self._since = time.monotonic()
        self._rng = random.Random(0)

    def record(self, rec: PredictionRecord) -> None:
        with self._lock:
            m = self._models.get(rec.model)
            if m is None:
                m = self._models[rec.model] = _Interval()
            m.version = rec.version
            m.requests += 1
            m.total_requests += 1
            m.sources[rec.source] = m.sources.get(rec.source, 0) + 1
            if rec.ok:
                m.samples += rec.batch
            else:
                m.errors += 1
                m.total_errors += 1
            m.seen += 1
            if len(m.latencies) < self.latency_samples:
                m.latencies.append(rec.latency_s)
            else:  # reservoir sampling (Vitter's algorithm R)
                j = self._rng.randrange(m.seen)
                if j < self.latency_samples:
                    m.latencies[j] = rec.latency_s

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The interval's figures per model; resets the interval (totals keep counting)."""
        now = time.monotonic()
        with self._lock:
            dt = max(now - self._since, 1e-9)
            self._since = now
            out: dict[str, dict[str, Any]] = {}
            for name, m in self._models.items():
                lat = np.asarray(m.latencies, dtype=np.float64) * 1000.0
                p50, p90, p99 = (np.percentile(lat, [50, 90, 99]).round(3).tolist()
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
                m.latencies = []
                m.sources = {}
            return out
