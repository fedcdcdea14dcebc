"""Glue between the prediction hook and :mod:`edge_agent.monitor`: one place that knows
which model version a prediction came from, its drift reference and its labels.

Nothing here runs per prediction on the serving path except :meth:`sample_inputs`, and
that only a few times a second: the telemetry component queues records and hands them
over in batches (:meth:`add_many`, vectorised). ``report`` runs in the telemetry loop: it
computes histograms, PSI and feedback metrics, and raises ``drift.detected`` /
``drift.cleared`` events through the agent's hooks.

Per head (the manifest's ``heads``): the class and confidence histograms, their PSI and
label feedback exist only for a model's class head; every regression or raw head gets
output statistics (:mod:`edge_agent.monitor.outputs`), against the bundle's reference
for that head when it carries one. Feedback for a model without a class head is refused
with an :class:`~edge_agent.errors.InvalidRequestError` saying so.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_agent.errors import EdgeError, InvalidRequestError, NotFoundError
from edge_agent.hooks import PredictionRecord
from edge_agent.monitor.feedback import (
    FeedbackItem,
    FeedbackResult,
    FeedbackTracker,
    PredictionMemory,
    Remembered,
)
from edge_agent.monitor.outputs import WATCHED, OutputWindow, per_sample_values
from edge_agent.monitor.quality import DriftDetector, QualityWindow, input_channel_means
from edge_agent.protocol.kinds import EventKind
from edge_agent.telemetry.config import TelemetryConfig
from edge_agent.telemetry.sample import (
    AT,
    CLASSES,
    CONF,
    OK,
    OUTPUT_NAMES,
    OUTPUTS,
    REQUEST_ID,
    SCORE,
    TOP1,
    Sample,
    column,
    split_by_model,
)

EmitEvent = Callable[..., Any]  # Hooks.emit_event(level, kind, message, **data)


@dataclass(frozen=True)
class _Watch:
    """What is watched of one model version: the class head's window (inputs too), and
    the other heads' output statistics."""

    version: int
    quality: QualityWindow
    class_head: bool
    outputs: OutputWindow


class ModelMonitor:
    """Quality windows, drift detectors and label feedback for every served model."""

    def __init__(self, registry: Any, cfg: TelemetryConfig, emit_event: EmitEvent) -> None:
        self.registry = registry
        self.cfg = cfg
        self.emit_event = emit_event
        self.memory = PredictionMemory(cfg.prediction_memory, cfg.prediction_ttl_s)
        self.feedback = FeedbackTracker(self.memory, cfg.feedback_window)
        self._watches: dict[str, _Watch] = {}
        self._detectors: dict[str, DriftDetector] = {}
        self._lock = threading.Lock()

    def _watch(self, model: str, version: int, classes: int) -> _Watch:
        with self._lock:
            cur = self._watches.get(model)
            if cur is not None and cur.version == version:
                return cur
            ref = manifest = None
            try:
                manifest = self.registry.get(model, version).manifest
                ref = manifest.drift_reference
            except NotFoundError:
                pass  # records of a model not (or no longer) served: classify what they carry
            head = None if manifest is None else manifest.class_head
            class_head = manifest is None or head is not None
            if head is not None:
                classes = math.prod(head.shape[1:])
            heads = {} if manifest is None else {
                o.name: manifest.head(o.name) for o in manifest.outputs
                if manifest.head(o.name) in WATCHED}
            w = _Watch(version, QualityWindow(ref, classes, self.cfg.quality_window),
                       class_head,
                       OutputWindow(heads, ref.outputs if ref else {}, self.cfg.quality_window,
                                    drift_sigma=self.cfg.output_drift_sigma,
                                    min_samples=self.cfg.drift_min_samples))
            self._watches[model] = w  # a new version starts afresh
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
        if not rec.ok or rec.inputs_raw is None:
            return
        means = input_channel_means(rec.inputs_raw, rec.input_spec)
        if means is not None:
            self._watch(rec.model, rec.version, self._classes(rec)).quality.add_inputs(means)

    def add_many(self, batch: list[Sample]) -> None:
        """Fold queued samples into the windows and the request-id memory (vectorised)."""
        if not batch:
            return
        for (model, version), rows in split_by_model(batch).items():
            rows = [s for s in rows if s[OK]]
            classified = [s for s in rows if s[TOP1] is not None and s[CONF] is not None]
            if classified:
                top1s = column(classified, TOP1)
                classes = (classified[-1][CLASSES]
                           or int(max(int(np.max(t)) for t in top1s)) + 1)
                w = self._watch(model, version, classes)
                w.quality.add(np.concatenate(top1s), np.concatenate(column(classified, CONF)))
                self.memory.remember_many(
                    (s[REQUEST_ID], Remembered(model, version, s[TOP1], s[SCORE], classes,
                                               s[AT]))
                    for s in classified if s[REQUEST_ID])
            with_outputs = [s for s in rows if s[OUTPUTS] is not None]
            if with_outputs:
                self._add_outputs(self._watch(model, version, 1), with_outputs)

    @staticmethod
    def _add_outputs(w: _Watch, rows: list[Sample]) -> None:
        """Each watched head's per-sample values, one concatenation per head."""
        names: tuple[str, ...] = rows[0][OUTPUT_NAMES]
        for pos, name in enumerate(names):
            if name not in w.outputs.heads:
                continue
            vals = [per_sample_values(s[OUTPUTS][pos], w.outputs.heads[name]) for s in rows
                    if s[OUTPUT_NAMES] == names]
            w.outputs.add(name, np.concatenate(vals))

    def apply_feedback(self, items: list[FeedbackItem]) -> FeedbackResult:
        """Join label feedback to remembered predictions. Raises InvalidRequestError,
        counting nothing, when an item names a served model without a class head."""
        labels: dict[str, Sequence[str]] = {}
        for name in sorted({it.model for it in items if it.model is not None}):
            try:
                m = self.registry.get(name).manifest
            except EdgeError:
                continue
            if m.class_head is None:
                raise InvalidRequestError(
                    f"feedback: model {name!r} has no class head (task {m.task!r}, heads "
                    f"{', '.join(f'{o.name}: {m.head(o.name)}' for o in m.outputs)}); "
                    f"label feedback needs one")
        for name in self.registry.names():
            try:
                labels[name] = list(self.registry.get(name).manifest.labels)
            except EdgeError:
                continue
        return self.feedback.apply(items, labels)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: ``quality`` (histograms, PSI and drift flag of the class head, input
        shift, ``outputs`` statistics of the other heads) and ``feedback`` metrics."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            watches = dict(self._watches)
            detectors = dict(self._detectors)
        for name, watch in watches.items():
            version, w = watch.version, watch.quality
            rep = w.report()
            det = detectors[name]
            change = det.update(rep) if watch.class_head else None
            q: dict[str, Any] = rep.to_dict() if watch.class_head else {
                "samples": 0, "input_shift_sigma": rep.input_shift_sigma}
            heads = watch.outputs.report()
            if heads:
                q["outputs"] = {n: h.to_dict() for n, h in heads.items()}
                if not watch.class_head:
                    q["samples"] = max(h.samples for h in heads.values())
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
