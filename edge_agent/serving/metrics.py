"""Prometheus metrics for serving, fed by the prediction hooks and the HTTP layer.

One :class:`Metrics` per agent, on its own ``CollectorRegistry`` (several agents in one
process, as in tests, never collide). Label values are bounded: model labels come only
from loaded models (never from a request path), HTTP labels from route names.

Besides serving: the standard ``process_*`` metrics (Linux ``/proc``), one
``edge_agent_build_info`` series, and whatever scrape-time collectors the agent adds
(:meth:`Metrics.add_collector`: system sensors, drift and outbox gauges from
:mod:`edge_agent.telemetry.prom`). The classic text format carries no ``*_created``
series (they would be a second, gauge-typed family per counter); the OpenMetrics format
(``Accept: application/openmetrics-text``) is served when asked for. Names, types and
labels: docs/metrics.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from edge_agent.hooks import Hooks, PredictionRecord

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                     5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
OPENMETRICS_CONTENT_TYPE = str(openmetrics.CONTENT_TYPE_LATEST)

# ``*_created`` samples: in the classic text format prometheus_client writes them as a
# separate gauge family per counter/histogram, which Prometheus ingests as extra series.
# Process-wide by the library's design; the agent is the only user of it in its process.
disable_created_metrics()  # type: ignore[no-untyped-call]


def wants_openmetrics(accept: str | None) -> bool:
    """True when the ``Accept`` header asks for OpenMetrics (as Prometheus' scraper does)."""
    return bool(accept) and "application/openmetrics-text" in str(accept).lower()


class _Gauges:
    """Scrape-time gauges (queue depth, in-flight) read from callbacks, never stale."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("edge_agent_queue_depth",
                                  "Requests waiting for an interpreter", labels=["model"])
        busy = GaugeMetricFamily("edge_agent_in_flight", "Requests admitted and not finished",
                                 labels=["model"])
        snap = dict.fromkeys(self.metrics.model_names(), (0, 0))  # served, never queued: 0
        snap.update(self.metrics.queue_source())
        for model, (in_flight, queued) in sorted(snap.items()):
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
        self.model_names: Callable[[], Iterable[str]] = tuple  # served models (gauges at 0)
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
        self.model_variant = Gauge("edge_agent_model_variant_index", "The serving variant of "
                                   "a model version with variants, in the bundle's preference "
                                   "order (0 = the best)", ["model", "version"], registry=r)
        self.model_degraded = Gauge("edge_agent_model_degraded", "1 while a model version "
                                    "serves a less preferred variant after a failure",
                                    ["model", "version"], registry=r)
        self.build = Info("edge_agent_build", "The agent's version and how it runs",
                          registry=r)
        r.register(_Gauges(self))
        ProcessCollector(registry=r)  # process_cpu_seconds_total, _resident_memory_bytes, ...
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

    def set_build_info(self, **labels: str) -> None:
        """``edge_agent_build_info{version, runtime, ...} 1`` (label values bounded)."""
        self.build.info(labels)

    def add_collector(self, collector: Collector) -> None:
        """A scrape-time collector (called on every scrape, so it must be cheap)."""
        self.registry.register(collector)

    def exposition(self, *, openmetrics_format: bool = False) -> tuple[bytes, str]:
        """The body and its content type: OpenMetrics (ends ``# EOF``) or the text format."""
        if openmetrics_format:
            return (bytes(openmetrics.generate_latest(self.registry)),  # type: ignore[no-untyped-call]
                    OPENMETRICS_CONTENT_TYPE)
        return bytes(generate_latest(self.registry)), CONTENT_TYPE
