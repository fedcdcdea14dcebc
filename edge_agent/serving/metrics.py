"""Prometheus metrics for serving, fed by the prediction hooks and the HTTP layer.

One :class:`Metrics` per agent, on its own ``CollectorRegistry`` (several agents in one
process, as in tests, never collide). Label values are bounded: model labels come only
from loaded models (never from a request path), HTTP labels from route names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edge_agent.hooks import Hooks, PredictionRecord

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                     5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Gauges:
    """Scrape-time gauges (queue depth, in-flight) read from callbacks, never stale."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("edge_agent_queue_depth",
                                  "Requests waiting for an interpreter", labels=["model"])
        busy = GaugeMetricFamily("edge_agent_in_flight", "Requests admitted and not finished",
                                 labels=["model"])
        for model, (in_flight, queued) in sorted(self.metrics.queue_source().items()):
            depth.add_metric([model], queued)
            busy.add_metric([model], in_flight)
        yield depth
        yield busy
        up = GaugeMetricFamily("edge_agent_uptime_seconds", "Seconds since the agent started")
        up.add_metric([], time.time() - self.metrics.started_at)
        yield up


class Metrics:
    """Counters and histograms; ``attach(hooks)`` subscribes to predictions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.time()
        self.queue_source: Callable[[], Mapping[str, tuple[int, int]]] = dict
        r = self.registry
        self.requests = Counter("edge_agent_requests", "Prediction requests per model",
                                ["model", "version", "source"], registry=r)
        self.errors = Counter("edge_agent_request_errors",
                              "Failed prediction requests per model",
                              ["model", "version", "source"], registry=r)
        self.latency = Histogram("edge_agent_request_latency_seconds",
                                 "Time inside the model (pre/post-processing and invoke)",
                                 ["model", "source"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.samples = Counter("edge_agent_samples", "Instances predicted per model",
                               ["model", "version"], registry=r)
        self.rejected = Counter("edge_agent_rejected", "Requests refused before the model",
                                ["model", "reason"], registry=r)
        self.http = Counter("edge_agent_http_responses", "HTTP responses by route and status",
                            ["route", "code"], registry=r)
        self.http_latency = Histogram("edge_agent_http_request_duration_seconds",
                                      "HTTP request time, socket read to response written",
                                      ["route"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.grpc = Counter("edge_agent_grpc_responses", "gRPC responses by method and status",
                            ["method", "code"], registry=r)
        self.grpc_latency = Histogram("edge_agent_grpc_request_duration_seconds",
                                      "gRPC request time, message decoded to response built",
                                      ["method"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.models_loaded = Gauge("edge_agent_models_loaded", "Model versions in memory",
                                   registry=r)
        r.register(_Gauges(self))
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            with self._lock:
                c = self._children.setdefault(key, metric.labels(*labels))
        return c

    def attach(self, hooks: Hooks) -> Callable[[], None]:
        return hooks.on_prediction(self.observe_prediction)

    def observe_prediction(self, rec: PredictionRecord) -> None:
        v = str(rec.version)
        self._child(self.requests, rec.model, v, rec.source).inc()
        if rec.ok:
            self._child(self.samples, rec.model, v).inc(rec.batch)
            self._child(self.latency, rec.model, rec.source).observe(rec.latency_s)
        else:
            self._child(self.errors, rec.model, v, rec.source).inc()

    def observe_http(self, route: str, code: int, seconds: float) -> None:
        self._child(self.http, route, str(code)).inc()
        self._child(self.http_latency, route).observe(seconds)

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        self._child(self.grpc, method, code).inc()
        self._child(self.grpc_latency, method).observe(seconds)

    def reject(self, model: str, reason: str) -> None:
        self._child(self.rejected, model, reason).inc()

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
