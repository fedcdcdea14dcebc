"""Glue between the prediction hook and :mod:`edge_agent.monitor`: one place that knows
which model version a prediction came from, its drift reference and its labels.

``on_prediction`` is on the serving path (ring-buffer appends, one dict insert);
``report`` runs in the telemetry loop: it computes histograms, PSI and feedback metrics,
and raises ``drift.detected`` / ``drift.cleared`` events through the agent's hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from edge_agent.errors import EdgeError, NotFoundError
from edge_agent.hooks import PredictionRecord
from edge_agent.monitor.feedback import (
    FeedbackItem,
    FeedbackResult,
    FeedbackTracker,
    PredictionMemory,
    Remembered,
)
from edge_agent.monitor.quality import DriftDetector, QualityWindow, input_channel_means
from edge_agent.telemetry.config import TelemetryConfig

EmitEvent = Callable[..., Any]  # Hooks.emit_event(level, kind, message, **data)


class ModelMonitor:
    """Quality windows, drift detectors and label feedback for every served model."""

    def __init__(self, registry: Any, cfg: TelemetryConfig, emit_event: EmitEvent) -> None:
        self.registry = registry
        self.cfg = cfg
        self.emit_event = emit_event
        self.memory = PredictionMemory(cfg.prediction_memory, cfg.prediction_ttl_s)
        self.feedback = FeedbackTracker(self.memory, cfg.feedback_window)
        self._windows: dict[str, tuple[int, QualityWindow]] = {}
        self._detectors: dict[str, DriftDetector] = {}
        self._lock = threading.Lock()

    def _window(self, rec: PredictionRecord, classes: int) -> QualityWindow:
        cur = self._windows.get(rec.model)
        if cur is not None and cur[0] == rec.version:
            return cur[1]
        with self._lock:
            cur = self._windows.get(rec.model)
            if cur is not None and cur[0] == rec.version:
                return cur[1]
            ref = None
            try:
                ref = self.registry.get(rec.model, rec.version).manifest.drift_reference
            except NotFoundError:
                pass
            w = QualityWindow(ref, classes, self.cfg.quality_window)
            self._windows[rec.model] = (rec.version, w)  # a new version starts afresh
            self._detectors[rec.model] = DriftDetector(self.cfg.drift_threshold,
                                                       self.cfg.drift_min_samples)
            return w

    def on_prediction(self, rec: PredictionRecord) -> None:
        if not rec.ok or rec.top1 is None or rec.confidence is None:
            return
        classes = rec.probabilities.shape[1] if rec.probabilities is not None \
            and rec.probabilities.ndim == 2 else int(np.max(rec.top1)) + 1
        means = None
        if rec.inputs_raw is not None:
            means = input_channel_means(rec.inputs_raw, rec.input_spec)
        self._window(rec, classes).add(rec.top1, rec.confidence, means)
        if rec.request_id:
            score = rec.probabilities[:, 1].copy() if classes == 2 and \
                rec.probabilities is not None else None
            self.memory.remember(rec.request_id, Remembered(
                rec.model, rec.version, np.asarray(rec.top1).copy(), score, classes, rec.at))

    def apply_feedback(self, items: list[FeedbackItem]) -> FeedbackResult:
        labels: dict[str, Sequence[str]] = {}
        for name in self.registry.names():
            try:
                labels[name] = list(self.registry.get(name).manifest.labels)
            except EdgeError:
                continue
        return self.feedback.apply(items, labels)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: ``quality`` (histograms, PSI, drift flag) and ``feedback`` metrics."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            windows = dict(self._windows)
            detectors = dict(self._detectors)
        for name, (version, w) in windows.items():
            rep = w.report()
            det = detectors[name]
            change = det.update(rep)
            q = rep.to_dict()
            q.update(version=version, drift=det.drifting, drift_threshold=det.threshold,
                     reference=w.reference is not None)
            out.setdefault(name, {})["quality"] = q
            if change is not None:
                data = {"model": name, "version": version, "psi": round(change.psi, 4),
                        "psi_class": rep.psi_class, "psi_confidence": rep.psi_confidence,
                        "input_shift_sigma": rep.input_shift_sigma, "samples": rep.samples,
                        "threshold": det.threshold}
                if change.drifting:
                    self.emit_event("warning", "drift.detected",
                                    f"{name} v{version}: prediction distribution drifted "
                                    f"(PSI {change.psi:.3f} > {det.threshold:g})", **data)
                else:
                    self.emit_event("info", "drift.cleared",
                                    f"{name} v{version}: back within the reference (PSI "
                                    f"{change.psi:.3f})", **data)
        for name in self.feedback.models():
            m = self.feedback.metrics(name)
            if m is not None:
                out.setdefault(name, {})["feedback"] = asdict(m)
        return out
