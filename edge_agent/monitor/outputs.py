"""Output statistics of the heads that are not a class head (``regression``, ``raw``,
a detection model's ``scores``).

A class head is watched through its class and confidence histograms
(:mod:`edge_agent.monitor.quality`); a regression or raw head has no classes, so what
drift means for it is the head's value moving: :class:`OutputWindow` keeps, per head, the
last ``window`` per-sample values (the sample's mean over the head's values — the value
itself for a one-value regression head) in a ring buffer and reports their live mean,
standard deviation, minimum and maximum, plus ``shift_sigma`` = |live mean − reference
mean| / reference std when the bundle's ``drift_reference.outputs`` carries the head's
calibration-time statistics, and ``drift`` — the head's value moved more than
``drift_sigma`` reference standard deviations over at least ``min_samples`` samples (None
without a reference, or on fewer samples).

A detection model's ``scores`` head is watched through its per-sample *top* score (the
most confident detection: what moves when objects stop being found, or the camera
changes); its ``boxes``, ``classes`` and ``count`` are not watched (a mean of box
coordinates or of class ids says nothing). :data:`WATCHED` and :func:`per_sample_values`
are the one place these rules live; the converter's drift reference uses them too.

Pure numpy, no transport; ``add`` is vectorised (the telemetry loop calls it with every
queued prediction at once).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.manifest import OutputReference

WATCHED = ("regression", "raw", "scores")  # head kinds with output statistics


def per_sample_values(output: np.ndarray, kind: str = "raw") -> np.ndarray:
    """One float per sample of a batch-first output: the mean over the sample's values,
    or for a ``scores`` head the largest (the top detection's score)."""
    o = np.asarray(output)
    if o.ndim == 0 or len(o) == 0:
        return np.zeros(0, np.float64)
    flat = o.reshape(len(o), -1)
    if flat.shape[1] == 1:
        return flat[:, 0].astype(np.float64)
    if kind == "scores":
        top: np.ndarray = flat.max(axis=1).astype(np.float64)
        return top
    means: np.ndarray = flat.mean(axis=1, dtype=np.float64)
    return means


@dataclass(frozen=True)
class HeadStats:
    """What one head's values looked like over the window."""

    kind: str  # WATCHED: regression | raw | scores
    samples: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    shift_sigma: float | None  # None without a reference for this head
    reference: bool = False  # the bundle carries this head's calibration statistics
    drift: bool | None = None  # shift_sigma over the threshold (None: no verdict)

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 6)
        return {"kind": self.kind, "samples": self.samples, "mean": r(self.mean),
                "std": r(self.std), "min": r(self.min), "max": r(self.max),
                "shift_sigma": r(self.shift_sigma), "reference": self.reference,
                "drift": self.drift}


class OutputWindow:
    """The last ``window`` per-sample values of each watched head (thread-safe)."""

    def __init__(self, heads: Mapping[str, str], references: Mapping[str, OutputReference],
                 window: int = 1000, *, drift_sigma: float = 1.0,
                 min_samples: int = 200) -> None:
        self.heads = dict(heads)  # name -> kind, the heads watched here (no class head)
        self.references = {n: r for n, r in references.items() if n in self.heads}
        self.window = window
        self.drift_sigma, self.min_samples = drift_sigma, min_samples
        self._vals = {n: np.zeros(window, np.float64) for n in self.heads}
        self._n = dict.fromkeys(self.heads, 0)
        self._lock = threading.Lock()

    def add(self, name: str, values: Sequence[float] | np.ndarray) -> None:
        """Append per-sample values of head ``name`` (unknown heads are ignored)."""
        buf = self._vals.get(name)
        if buf is None:
            return
        v = np.asarray(values, np.float64).reshape(-1)[-self.window:]
        if len(v) == 0:
            return
        with self._lock:
            idx = (self._n[name] + np.arange(len(v))) % self.window
            buf[idx] = v
            self._n[name] += len(v)

    def report(self) -> dict[str, HeadStats]:
        out: dict[str, HeadStats] = {}
        for name, kind in self.heads.items():
            with self._lock:
                n = min(self._n[name], self.window)
                v = self._vals[name][:n].copy()
            ref = self.references.get(name)
            finite = v[np.isfinite(v)]
            if len(finite) == 0:  # nothing yet, or only NaN/inf values
                out[name] = HeadStats(kind, n, None, None, None, None, None, ref is not None)
                continue
            mean = float(finite.mean())
            shift = (abs(mean - ref.mean) / max(ref.std, 1e-9)) if ref is not None else None
            drift = (shift > self.drift_sigma if shift is not None
                     and len(finite) >= self.min_samples else None)
            out[name] = HeadStats(kind, n, mean, float(finite.std()), float(finite.min()),
                                  float(finite.max()), shift, ref is not None, drift)
        return out
