"""What every input source shares: the interface, the MQTT seam, result sinks, classify.

A *source* turns something outside (an MQTT request, a file in a folder, a camera frame)
into a registry prediction and hands the result to *sinks* (a JSON-lines file, an MQTT
topic). Sources own their threads; ``start()`` returns at once and ``stop()`` joins.

The MQTT seam is :class:`MessageLink`: exactly the two methods of the agent's MQTT client
(``edge_agent.mqtt.client.MqttClient``), so sources never import paho and tests can plug
any client in. A link may call a subscription handler with an extra keyword
``response_topic=`` (the MQTT 5 Response Topic); handlers here accept it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.mqtt.dispatch import Message
from edge_agent.mqtt.topics import Topics
from edge_agent.registry import ModelRegistry, Prediction, ServedModel
from edge_agent.serving.codec import image_batch

log = logging.getLogger(__name__)



@runtime_checkable
class MessageLink(Protocol):
    """The part of an MQTT client that sources use (:class:`edge_agent.mqtt.MqttClient`).

    ``subscribe_message`` hands over the whole :class:`~edge_agent.mqtt.Message` (MQTT 5
    response topic and correlation data included) and returns an unsubscribe callable.
    ``max_bytes`` is the subscription's own payload limit; ``on_oversize`` hears about a
    payload over it instead of ``handler`` (so it can still be answered).
    """

    def subscribe_message(self, topic_filter: str, handler: Callable[[Message], None],
                          qos: int = 1, *, max_bytes: int | None = None,
                          on_oversize: Callable[[Message], None] | None = None
                          ) -> Callable[[], None]: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any: ...


@runtime_checkable
class Source(Protocol):
    """An input source: started after models load, stopped before they unload."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ResultSink(Protocol):
    def emit(self, result: dict[str, Any]) -> None: ...


def infer_topic(device_id: str, model: str = "+", prefix: str = "edge") -> str:
    """``edge/<device>/infer/<model>`` (``+``: the filter over every model)."""
    t = Topics(device_id, prefix)
    return t.infer_filter if model == "+" else t.infer(model)


def results_topic(device_id: str, model: str, prefix: str = "edge") -> str:
    """``edge/<device>/results/<model>``."""
    return Topics(device_id, prefix).results(model)


class JsonlSink:
    """Appends one JSON object per line; each line is flushed and fsynced (survives a crash)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def emit(self, result: dict[str, Any]) -> None:
        line = json.dumps(result, separators=(",", ":"), sort_keys=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class DurablePublisher(Protocol):
    """The telemetry component's outbox publisher (``edge_agent.mqtt.Publisher``)."""

    def result(self, model: str, body: dict[str, Any]) -> Any: ...


class MqttSink:
    """Publishes each result as JSON to ``edge/<device>/results/<model>``.

    When ``durable()`` returns a publisher (the telemetry component's outbox, looked up at
    publish time), results survive broker outages; otherwise they go out live on ``link``.
    """

    def __init__(self, link: MessageLink | None, device_id: str, *, qos: int = 1,
                 prefix: str = "edge",
                 durable: Callable[[], DurablePublisher | None] | None = None) -> None:
        self.link, self.device_id, self.qos, self.prefix = link, device_id, qos, prefix
        self.durable = durable

    def emit(self, result: dict[str, Any]) -> None:
        model = str(result.get("model", "unknown"))
        pub = self.durable() if self.durable is not None else None
        if pub is not None:
            pub.result(model, result)
        elif self.link is not None:
            self.link.publish(results_topic(self.device_id, model, self.prefix),
                              json.dumps(result, separators=(",", ":")).encode(), self.qos)


class FanOut:
    """Several sinks; one failing sink is logged and never stops the others."""

    def __init__(self, sinks: list[ResultSink]) -> None:
        self.sinks = sinks

    def emit(self, result: dict[str, Any]) -> None:
        for s in self.sinks:
            try:
                s.emit(result)
            except Exception:
                log.exception("result sink %r failed", s)


def top_k_result(served: ServedModel, pred: Prediction, k: int, **extra: Any) -> dict[str, Any]:
    """One sample's labels and scores, as every source reports them."""
    top = served.top_k(pred, k)[0]
    return {"model": served.name, "version": served.version,
            "labels": [c["label"] for c in top], "scores": [c["score"] for c in top],
            "top_k": top, "at": round(time.time(), 3), **extra}


def classify_image(registry: ModelRegistry, model: str, data: bytes, *, version: int | None,
                   k: int, source: str, request_id: str | None, max_pixels: int,
                   **extra: Any) -> dict[str, Any]:
    """Encoded image bytes → top-k result. Raises NotFoundError / InvalidRequestError."""
    served = registry.get(model, version)
    if served.class_position is None:
        raise InvalidRequestError(f"model {model!r} has no class head (task "
                                  f"{served.manifest.task!r})")
    x = image_batch(served, [data], max_pixels)
    pred = served.predict(x, source=source, request_id=request_id)
    return top_k_result(served, pred, k, source=source, **extra)


def classify_array(registry: ModelRegistry, model: str, x: np.ndarray, *, version: int | None,
                   k: int, source: str, request_id: str | None,
                   **extra: Any) -> dict[str, Any]:
    """One model-unit sample (H, W, C) → top-k result."""
    served = registry.get(model, version)
    pred = served.predict(x[None, ...], source=source, request_id=request_id)
    return top_k_result(served, pred, k, source=source, **extra)
