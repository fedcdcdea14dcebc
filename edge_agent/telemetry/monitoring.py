"""Glue between the prediction hook and :mod:`edge_agent.monitor`: one place that knows
which model version a prediction came from, its drift reference and its labels.

Nothing here runs per prediction on the serving path except :meth:`sample_inputs`, and
that only a few times a second: the telemetry component queues records and hands them
over in batches (:meth:`add_many`, vectorised). ``report`` runs in the telemetry loop: it
computes histograms, PSI and feedback metrics, and raises ``drift.detected`` /
``drift.cleared`` events through the agent's hooks.
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
from edge_agent.protocol.kinds import EventKind
from edge_agent.telemetry.config import TelemetryConfig
from edge_agent.telemetry.sample import (
    AT,
    CLASSES,
    CONF,
    OK,
    REQUEST_ID,
    SCORE,
    TOP1,
    Sample,
    column,
    split_by_model,
)

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

    def _window(self, model: str, version: int, classes: int) -> QualityWindow:
        with self._lock:
            cur = self._windows.get(model)
            if cur is not None and cur[0] == version:
                return cur[1]
            ref = None
            try:
                ref = self.registry.get(model, version).manifest.drift_reference
            except NotFoundError:
                pass
            w = QualityWindow(ref, classes, self.cfg.quality_window)
            self._windows[model] = (version, w)  # a new version starts afresh
            self._detectors[model] = DriftDetector(self.cfg.drift_threshold,
                                                   self.cfg.drift_min_samples)
            return w

    @staticmethod
    def _classes(rec: PredictionRecord) -> int:
        p = rec.probabilities
        if p is not None and p.ndim == 2:
            return int(p.shape[1])
        return int(np.max(rec.top1)) + 1 if rec.top1 is not None and len(rec.top1) else 1

    def sample_inputs(self, rec: PredictionRecord) -> None:
        """Per-channel input means of one request (the caller decides how often)."""
        if not rec.ok or rec.inputs_raw is None or rec.top1 is None:
            return
        means = input_channel_means(rec.inputs_raw, rec.input_spec)
        if means is not None:
            self._window(rec.model, rec.version, self._classes(rec)).add_inputs(means)

    def add_many(self, batch: list[Sample]) -> None:
        """Fold queued samples into the windows and the request-id memory (vectorised)."""
        if not batch:
            return
        for (model, version), rows in split_by_model(batch).items():
            rows = [s for s in rows if s[OK] and s[TOP1] is not None and s[CONF] is not None]
            if not rows:
                continue
            top1s = column(rows, TOP1)
            classes = rows[-1][CLASSES] or int(max(int(np.max(t)) for t in top1s)) + 1
            self._window(model, version, classes).add(np.concatenate(top1s),
                                                      np.concatenate(column(rows, CONF)))
            self.memory.remember_many(
                (s[REQUEST_ID], Remembered(model, version, s[TOP1], s[SCORE], classes, s[AT]))
                for s in rows if s[REQUEST_ID])

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
                    self.emit_event("warning", EventKind.DRIFT_DETECTED,
                                    f"{name} v{version}: prediction distribution drifted "
                                    f"(PSI {change.psi:.3f} > {det.threshold:g})", **data)
                else:
                    self.emit_event("info", EventKind.DRIFT_CLEARED,
                                    f"{name} v{version}: back within the reference (PSI "
                                    f"{change.psi:.3f})", **data)
        for name in self.feedback.models():
            m = self.feedback.metrics(name)
            if m is not None:
                out.setdefault(name, {})["feedback"] = asdict(m)
        return out
