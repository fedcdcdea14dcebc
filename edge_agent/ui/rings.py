"""Bounded history for the dashboard: time-bucketed series and recent predictions.

Pure data structures (no IO, no threads of their own, no clock: callers pass ``now``).
Every structure has a fixed capacity, so a dashboard left open for a day costs the same
memory as one open for a minute:

* :class:`SeriesRing` — ``buckets`` fixed-width time buckets (default 360 × 10 s = 1 h)
  of count, latency sum and latency max per model.
* :class:`SampleRing` — the last ``capacity`` (time, value dict) samples (PSI, quality,
  system), one per sampling tick.
* :class:`PredictionRing` — the last ``capacity`` predictions with their top-k and an
  optional thumbnail of at most ``THUMB_PX`` × ``THUMB_PX`` pixels.
"""

from __future__ import annotations

import base64
import collections
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

THUMB_PX = 32  # a thumbnail's longest side, in pixels


@dataclass
class _Bucket:
    start: float = 0.0
    count: int = 0
    errors: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0


class SeriesRing:
    """Per-key counts and latencies in ``buckets`` buckets of ``width_s`` seconds."""

    def __init__(self, *, buckets: int = 360, width_s: float = 10.0, max_keys: int = 64) -> None:
        if buckets < 1 or width_s <= 0 or max_keys < 1:
            raise ValueError("buckets, width_s and max_keys must be positive")
        self.buckets, self.width_s, self.max_keys = buckets, width_s, max_keys
        self._rings: dict[str, list[_Bucket]] = {}

    def add(self, key: str, now: float, latency_s: float, ok: bool = True) -> None:
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= self.max_keys:
                return  # a bounded number of models; further names are not charted
            ring = self._rings[key] = [_Bucket(start=-1.0) for _ in range(self.buckets)]
        start = math.floor(now / self.width_s) * self.width_s
        b = ring[int(start / self.width_s) % self.buckets]
        if b.start != start:
            b.start, b.count, b.errors, b.latency_sum_s, b.latency_max_s = start, 0, 0, 0.0, 0.0
        b.count += 1
        b.errors += 0 if ok else 1
        b.latency_sum_s += latency_s
        b.latency_max_s = max(b.latency_max_s, latency_s)

    def series(self, now: float) -> dict[str, Any]:
        """Per key, oldest first: bucket start, requests/s, mean and max latency (ms)."""
        first = math.floor(now / self.width_s) * self.width_s - (self.buckets - 1) * self.width_s
        out: dict[str, Any] = {"width_s": self.width_s, "start": first, "models": {}}
        for key, ring in self._rings.items():
            rows = []
            for b in sorted((b for b in ring if b.start >= first), key=lambda b: b.start):
                rows.append([b.start, round(b.count / self.width_s, 3),
                             round(1000 * b.latency_sum_s / b.count, 3) if b.count else None,
                             round(1000 * b.latency_max_s, 3), b.errors])
            out["models"][key] = rows
        return out


class SampleRing:
    """The last ``capacity`` samples: ``(time, {name: value})``."""

    def __init__(self, capacity: int = 360) -> None:
        self._d: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(
            maxlen=capacity)

    def add(self, now: float, values: dict[str, Any]) -> None:
        self._d.append((now, values))

    def rows(self) -> list[list[Any]]:
        return [[t, v] for t, v in self._d]

    def __len__(self) -> int:
        return len(self._d)


class PredictionRing:
    """The last ``capacity`` predictions (JSON-able dicts, newest last) with a sequence number."""

    def __init__(self, capacity: int = 20) -> None:
        self._d: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.seq = 0

    def add(self, entry: dict[str, Any]) -> None:
        self.seq += 1
        self._d.append({**entry, "seq": self.seq})

    def since(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self._d if e["seq"] > seq]

    def __len__(self) -> int:
        return len(self._d)


def top_k(probabilities: np.ndarray, labels: tuple[str, ...] | list[str], k: int = 3
          ) -> list[dict[str, Any]]:
    """The ``k`` best classes of one probability row, as ``{label, score}``."""
    row = np.asarray(probabilities, dtype=np.float64).ravel()
    k = min(k, row.size)
    idx = np.argpartition(-row, k - 1)[:k] if k else np.array([], dtype=np.int64)
    idx = idx[np.argsort(-row[idx])]
    return [{"label": labels[i] if i < len(labels) else str(int(i)),
             "score": round(float(row[i]), 4)} for i in idx]


def thumbnail(sample: np.ndarray) -> dict[str, Any] | None:
    """A tiny grey or RGB thumbnail of one image-like input (H×W, H×W×1 or H×W×3), or None.

    Nearest-neighbour subsampling to at most :data:`THUMB_PX` per side and a min-max
    stretch to 0..255: a few microseconds, no image codec. The page draws the bytes on a
    canvas (``{"w", "h", "c", "data": base64}``).
    """
    a = np.asarray(sample)
    if a.ndim == 3 and a.shape[-1] in (1, 3):
        pass
    elif a.ndim == 2:
        a = a[..., None]
    else:
        return None
    h, w, c = a.shape
    if h < 2 or w < 2 or a.dtype.kind not in "uif":
        return None
    step = max(1, math.ceil(max(h, w) / THUMB_PX))
    small = a[::step, ::step].astype(np.float32)
    lo, hi = float(small.min()), float(small.max())
    scaled = (small - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(small)
    px = np.clip(scaled, 0, 255).astype(np.uint8)
    return {"w": int(px.shape[1]), "h": int(px.shape[0]), "c": int(c),
            "data": base64.b64encode(px.tobytes()).decode()}
