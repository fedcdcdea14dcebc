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
from typing import Any

import numpy as np

from edge_agent.bundle import TensorSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionRecord:
    """One served request (a batch of ``batch`` samples) on one model version."""

    model: str
    version: int
    source: str  # rest | mqtt | watch | camera | cli | probe
    ok: bool
    latency_s: float  # wall time inside the registry (pre/post-processing + invoke)
    batch: int
    request_id: str | None = None
    error: str | None = None
    fault: str | None = None  # on failure: "client" (bad input) | "model" (model/runtime)
    client: str | None = None  # who asked, when known (REST peer address); else ``source``
    input_shape: tuple[int, ...] | None = None  # of a refused input, when it was an array
    top1: np.ndarray | None = None  # (batch,) predicted class indices (classification)
    confidence: np.ndarray | None = None  # (batch,) top-1 probability
    probabilities: np.ndarray | None = None  # (batch, classes) for quality metrics
    inputs_raw: np.ndarray | None = None  # the input tensor batch; subscribers must not keep it
    # every input tensor batch by input name (``inputs_raw`` is the first of them); the
    # same rule: subscribers copy what they keep
    inputs: Mapping[str, np.ndarray] | None = None
    input_spec: TensorSpec | None = None  # to dequantize ``inputs_raw``
    # every output, dequantized, batch first, in ``output_names`` order (monitoring of the
    # regression/raw heads); subscribers must not keep them
    outputs: list[np.ndarray] | None = None
    output_names: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)


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
        self._event: list[EventHook] = []
        self._models: list[ModelsChangedHook] = []

    def on_prediction(self, cb: PredictionHook) -> Callable[[], None]:
        return self._add(self._pred, cb)

    def on_event(self, cb: EventHook) -> Callable[[], None]:
        return self._add(self._event, cb)

    def on_models_changed(self, cb: ModelsChangedHook) -> Callable[[], None]:
        return self._add(self._models, cb)

    def _add(self, lst: list[Any], cb: Any) -> Callable[[], None]:
        with self._lock:
            lst.append(cb)

        def remove() -> None:
            with self._lock:
                if cb in lst:
                    lst.remove(cb)
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
