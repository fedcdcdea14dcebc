"""Per-model prediction quality over a rolling window, and drift against the bundle.

:class:`QualityWindow` keeps the last ``window`` samples' top-1 class, top-1 confidence
and per-channel input means in ring buffers (``add`` is a few numpy slices: it runs on
the prediction path). :meth:`QualityWindow.report` — called by the telemetry loop, not
per prediction — turns them into the class histogram, the confidence histogram (on the
reference's bin edges), their PSI against the bundle's ``drift_reference``, and the input
mean shift in reference standard deviations.

:class:`DriftDetector` turns reports into events with hysteresis: ``drift.detected``
(warning) when the larger PSI crosses ``threshold`` with at least ``min_samples`` in the
window, ``drift.cleared`` (info) once it falls below ``0.8 × threshold``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.bundle import DriftReference, TensorSpec
from edge_agent.monitor.psi import class_share, confidence_share, psi

DEFAULT_EDGES = tuple(i / 10 for i in range(11))
MAX_STAT_ELEMENTS = 1 << 16  # input mean on a strided subsample above this many values


def input_channel_means(raw: np.ndarray, spec: TensorSpec | None) -> np.ndarray | None:
    """Per-sample, per-channel mean of an input batch in model (dequantized) units."""
    if raw.ndim < 2 or raw.size == 0:
        return None
    x = raw.reshape(raw.shape[0], -1, raw.shape[-1]) if raw.ndim > 2 else raw[:, None, :]
    step = max(1, x.shape[1] * x.shape[0] // MAX_STAT_ELEMENTS)
    means: np.ndarray = x[:, ::step, :].mean(axis=1, dtype=np.float64)
    if spec is not None and spec.quantized:
        means = (means - spec.zero_point) * spec.scale
    return means


@dataclass(frozen=True)
class QualityReport:
    samples: int
    class_hist: list[float]
    confidence_edges: list[float]
    confidence_hist: list[float]
    mean_confidence: float | None
    psi_class: float | None
    psi_confidence: float | None
    input_shift_sigma: float | None  # max over channels of |live mean − ref mean| / ref std

    @property
    def psi_max(self) -> float | None:
        vals = [v for v in (self.psi_class, self.psi_confidence) if v is not None]
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "class_hist": self.class_hist,
                "confidence_edges": self.confidence_edges,
                "confidence_hist": self.confidence_hist,
                "mean_confidence": self.mean_confidence,
                "psi": {"class": self.psi_class, "confidence": self.psi_confidence},
                "input_shift_sigma": self.input_shift_sigma}


class QualityWindow:
    """The last ``window`` classified samples of one model version (thread-safe).

    Input statistics are kept apart, over the last ``input_window`` *sampled* inputs:
    computing a mean over every input tensor would cost more than some models' invoke,
    so the caller samples (see :mod:`edge_agent.telemetry.monitoring`).
    """

    def __init__(self, reference: DriftReference | None, classes: int, window: int = 1000,
                 input_window: int = 256) -> None:
        self.reference = reference
        self.classes = max(1, classes if not reference else len(reference.class_hist))
        self.window = window
        self._top1 = np.zeros(window, np.int32)
        self._conf = np.zeros(window, np.float32)
        self._n = 0  # samples ever added
        chans = len(reference.input_mean) if reference else 0
        self.input_window = input_window
        self._means = np.zeros((input_window, chans), np.float64) if chans else None
        self._n_means = 0
        self._lock = threading.Lock()

    def add(self, top1: np.ndarray, confidence: np.ndarray) -> None:
        """Append a batch of predictions (vectorised: call it with many at once)."""
        top1 = np.asarray(top1).reshape(-1)[-self.window:]
        conf = np.asarray(confidence).reshape(-1)[-self.window:]
        k = len(top1)
        if k == 0 or len(conf) != k:
            return
        with self._lock:
            idx = (self._n + np.arange(k)) % self.window
            self._top1[idx] = top1
            self._conf[idx] = conf
            self._n += k

    def add_inputs(self, means: np.ndarray) -> None:
        """Append per-sample channel means, shape (samples, channels); others are ignored."""
        if self._means is None:
            return
        m = np.asarray(means, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != self._means.shape[1] or len(m) == 0:
            return
        m = m[-self.input_window:]
        with self._lock:
            idx = (self._n_means + np.arange(len(m))) % self.input_window
            self._means[idx] = m
            self._n_means += len(m)

    @property
    def samples(self) -> int:
        return min(self._n, self.window)

    def report(self) -> QualityReport:
        with self._lock:
            n = min(self._n, self.window)
            top1 = self._top1[:n].copy()
            conf = self._conf[:n].copy()
            nm = min(self._n_means, self.input_window)
            means = self._means[:nm].copy() if self._means is not None else None
        ref = self.reference
        edges = list(ref.confidence_edges) if ref else list(DEFAULT_EDGES)
        if n == 0:
            return QualityReport(0, [0.0] * self.classes, edges, [0.0] * (len(edges) - 1),
                                 None, None, None, None)
        cls = class_share(top1, self.classes)
        ch = confidence_share(conf, edges)
        psi_c = psi_k = shift = None
        if ref is not None:
            if len(ref.class_hist) == len(cls) and sum(ref.class_hist) > 0:
                psi_c = psi(ref.class_hist, cls)
            if len(ref.confidence_hist) == len(ch) and sum(ref.confidence_hist) > 0:
                psi_k = psi(ref.confidence_hist, ch)
            if means is not None and len(means):
                std = np.maximum(np.asarray(ref.input_std, np.float64), 1e-9)
                shift = float(np.max(np.abs(means.mean(axis=0) - np.asarray(ref.input_mean))
                                     / std))
        return QualityReport(n, [round(float(v), 6) for v in cls], edges,
                             [round(float(v), 6) for v in ch], float(conf.mean()),
                             psi_c, psi_k, shift)


@dataclass(frozen=True)
class DriftChange:
    """A state change worth an event."""

    drifting: bool
    psi: float
    report: QualityReport


class DriftDetector:
    """Hysteresis over :attr:`QualityReport.psi_max` (see module docstring)."""

    def __init__(self, threshold: float = 0.25, min_samples: int = 100) -> None:
        self.threshold = threshold
        self.min_samples = min_samples
        self.drifting = False

    def update(self, report: QualityReport) -> DriftChange | None:
        p = report.psi_max
        if p is None or report.samples < self.min_samples:
            return None
        if not self.drifting and p > self.threshold:
            self.drifting = True
            return DriftChange(True, p, report)
        if self.drifting and p < 0.8 * self.threshold:
            self.drifting = False
            return DriftChange(False, p, report)
        return None
