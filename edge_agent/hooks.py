"""In-process observer hooks: how serving, telemetry, monitoring and updates meet.

The registry emits a :class:`PredictionRecord` for every prediction and an
:class:`AgentEvent` for anything an operator should hear about; telemetry, drift
monitoring and update probation subscribe. Subscribers run on the caller's thread
and must be quick and non-blocking (append to a deque, bump a counter). A subscriber
that raises is logged and skipped; it never breaks a prediction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_agent.bundle import TensorSpec

log = logging.getLogger(__name__)


class _Lazy(Protocol):
    """What a record reads its results from (:class:`edge_agent.registry.Prediction`)."""

    @property
    def top1(self) -> np.ndarray | None: ...
    @property
    def confidence(self) -> np.ndarray | None: ...
    @property
    def probabilities(self) -> np.ndarray | None: ...
    @property
    def outputs(self) -> list[np.ndarray]: ...
    @property
    def raw(self) -> list[np.ndarray]: ...


class PredictionRecord:
    """One served request (a batch of ``batch`` samples) on one model version.

    Built only when someone subscribes (:attr:`Hooks.wants_predictions`). A successful
    prediction's record carries the registry's lazy ``prediction``: ``top1``,
    ``confidence``, ``probabilities`` and ``outputs`` are read from it on first access,
    so a subscriber pays only for what it reads. Treat a record as read-only.
    """

    __slots__ = ("_confidence", "_outputs", "_prediction", "_probabilities", "_top1", "at",
                 "batch", "client", "error", "fault", "input_shape", "input_spec", "inputs",
                 "inputs_raw", "latency_s", "model", "ok", "output_names", "request_id",
                 "source", "version")

    def __init__(self, model: str, version: int, source: str, ok: bool, latency_s: float,
                 batch: int, request_id: str | None = None, error: str | None = None,
                 fault: str | None = None, client: str | None = None,
                 input_shape: tuple[int, ...] | None = None, top1: np.ndarray | None = None,
                 confidence: np.ndarray | None = None,
                 probabilities: np.ndarray | None = None,
                 inputs_raw: np.ndarray | None = None,
                 inputs: Mapping[str, np.ndarray] | None = None,
                 input_spec: TensorSpec | None = None, outputs: list[np.ndarray] | None = None,
                 output_names: tuple[str, ...] = (), at: float | None = None,
                 prediction: _Lazy | None = None) -> None:
        self.model = model
        self.version = version
        self.source = source  # rest | mqtt | watch | camera | cli | probe
        self.ok = ok
        self.latency_s = latency_s  # wall time inside the registry (pre/post + invoke)
        self.batch = batch
        self.request_id = request_id
        self.error = error
        self.fault = fault  # on failure: "client" (bad input) | "model" (model/runtime)
        self.client = client  # who asked, when known (REST peer address); else ``source``
        self.input_shape = input_shape  # of a refused input, when it was an array
        self._top1 = top1
        self._confidence = confidence
        self._probabilities = probabilities
        # the input tensor batch; subscribers must not keep it
        self.inputs_raw = inputs_raw
        # every input tensor batch by input name (``inputs_raw`` is the first of them); the
        # same rule: subscribers copy what they keep
        self.inputs = inputs
        self.input_spec = input_spec  # to dequantize ``inputs_raw``
        self._outputs = outputs
        self.output_names = output_names
        self.at = time.time() if at is None else at
        self._prediction = prediction

    @property
    def top1(self) -> np.ndarray | None:
        """(batch,) predicted class indices (classification)."""
        p = self._prediction
        return self._top1 if p is None else p.top1

    @property
    def confidence(self) -> np.ndarray | None:
        """(batch,) top-1 probability."""
        p = self._prediction
        return self._confidence if p is None else p.confidence

    @property
    def probabilities(self) -> np.ndarray | None:
        """(batch, classes) for quality metrics."""
        p = self._prediction
        return self._probabilities if p is None else p.probabilities

    @property
    def outputs(self) -> list[np.ndarray] | None:
        """Every output, dequantized, batch first, in ``output_names`` order (monitoring of
        the regression/raw heads); subscribers must not keep them."""
        p = self._prediction
        return self._outputs if p is None else p.outputs

    @property
    def outputs_raw(self) -> list[np.ndarray] | None:
        """Every output as the interpreter gave it (tensor dtypes, not dequantized), model
        order; the cheapest copy of a successful answer (the shadow's)."""
        p = self._prediction
        return None if p is None else p.raw

    def __repr__(self) -> str:
        return (f"PredictionRecord({self.model!r} v{self.version}, {self.source}, "
                f"ok={self.ok}, batch={self.batch}, request_id={self.request_id!r})")


@dataclass(frozen=True)
class AgentEvent:
    """Something an operator should see on ``edge/<device>/events``."""

    level: str  # info | warning | error
    kind: str  # e.g. model.loaded, model.load_failed, update.verified, request.rejected
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


PredictionHook = Callable[[PredictionRecord], None]
EventHook = Callable[[AgentEvent], None]
ModelsChangedHook = Callable[[], None]


class Hooks:
    """A tiny thread-safe pub/sub; one instance per agent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pred: list[PredictionHook] = []
        self.wants_predictions = False  # any prediction subscriber (records are built lazily)
        self._event: list[EventHook] = []
        self._models: list[ModelsChangedHook] = []

    def on_prediction(self, cb: PredictionHook) -> Callable[[], None]:
        return self._add(self._pred, cb)

    def _changed(self) -> None:
        self.wants_predictions = bool(self._pred)

    def on_event(self, cb: EventHook) -> Callable[[], None]:
        return self._add(self._event, cb)

    def on_models_changed(self, cb: ModelsChangedHook) -> Callable[[], None]:
        return self._add(self._models, cb)

    def _add(self, lst: list[Any], cb: Any) -> Callable[[], None]:
        with self._lock:
            lst.append(cb)
            self._changed()

        def remove() -> None:
            with self._lock:
                if cb in lst:
                    lst.remove(cb)
                self._changed()
        return remove

    def emit_prediction(self, rec: PredictionRecord) -> None:
        self._call(self._pred, rec)

    def emit_event(self, level: str, kind: str, message: str, **data: Any) -> AgentEvent:
        ev = AgentEvent(level, kind, message, data)
        getattr(log, "warning" if level == "warning" else level if level in ("info", "error")
                else "info")("%s: %s", kind, message)
        self._call(self._event, ev)
        return ev

    def emit_models_changed(self) -> None:
        with self._lock:
            subs = list(self._models)
        for cb in subs:
            try:
                cb()
            except Exception:
                log.exception("models-changed hook failed")

    def _call(self, lst: list[Any], arg: Any) -> None:
        with self._lock:
            subs = list(lst)
        for cb in subs:
            try:
                cb(arg)
            except Exception:
                log.exception("hook %r failed", cb)
