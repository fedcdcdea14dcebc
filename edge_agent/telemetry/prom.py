"""Scrape-time Prometheus collectors for what telemetry knows: sensors, drift, the outbox.

The same figures telemetry publishes on MQTT, on ``/metrics`` too (docs/metrics.md):

* :class:`SystemCollector` — CPU temperature, every thermal zone, the Raspberry Pi
  throttling flags; read from sysfs at scrape time (a few small file reads), present with
  or without ``[mqtt]``. A sensor the board lacks is left out, never a scrape error.
* :class:`TelemetryCollector` — per model, the drift PSI, the drift flag and the window's
  sample count from the last telemetry tick (``report`` has side effects, drift events,
  so a scrape never runs it; the gauges are as fresh as ``[telemetry] interval_s``), and
  the outbox's depth, bytes, oldest age, dropped and refused counts (one indexed SQLite
  read per scrape).

Every label value is bounded: model names come from served models, zone names and flags
from the board.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from edge_agent.telemetry.system import THROTTLE_BITS, SystemSampler

if TYPE_CHECKING:
    from edge_agent.mqtt.outbox import OutboxStats

log = logging.getLogger(__name__)

QualitySource = Callable[[], Mapping[str, Mapping[str, Any]]]  # model → report["quality"]


class SystemCollector:
    """Temperature and throttling gauges from a :class:`SystemSampler`'s sensors."""

    def __init__(self, sampler: SystemSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        s = self.sampler
        zones = s.thermal_zones()
        temp = GaugeMetricFamily("edge_agent_cpu_temperature_celsius",
                                 "CPU temperature from the device profile's sensor")
        t = s.cpu_temp(zones)
        if t is not None:
            temp.add_metric([], t)
        yield temp
        zone = GaugeMetricFamily("edge_agent_thermal_zone_celsius",
                                 "Temperature of each thermal zone", labels=["zone"])
        for name, value in sorted(zones.items()):
            zone.add_metric([name], value)
        yield zone
        thr = GaugeMetricFamily("edge_agent_throttled",
                                "Raspberry Pi firmware throttling flags (1 = set)",
                                labels=["flag"])
        flags = s.throttled()
        if flags is not None:
            for name in THROTTLE_BITS.values():
                thr.add_metric([name], 1.0 if flags.get(name) else 0.0)
        yield thr


class TelemetryCollector:
    """Drift gauges (last telemetry tick) and outbox gauges (now)."""

    def __init__(self, quality: QualitySource, outbox: Callable[[], OutboxStats]) -> None:
        self.quality = quality
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        yield from self._drift()
        yield from self._outbox()

    def _drift(self) -> Iterator[Metric]:
        psi = GaugeMetricFamily("edge_agent_drift_psi",
                                "Population stability index of the predictions against the "
                                "bundle's reference (max of class and confidence)",
                                labels=["model", "version", "histogram"])
        drifting = GaugeMetricFamily("edge_agent_drifting",
                                     "1 while the model's predictions are drifting",
                                     labels=["model", "version"])
        samples = GaugeMetricFamily("edge_agent_drift_window_samples",
                                    "Predictions in the drift window", labels=["model",
                                                                               "version"])
        for model, q in sorted(self.quality().items()):
            v = str(q.get("version", ""))
            for hist, value in sorted((q.get("psi") or {}).items()):
                if isinstance(value, (int, float)):
                    psi.add_metric([model, v, str(hist)], float(value))
            drifting.add_metric([model, v], 1.0 if q.get("drift") else 0.0)
            samples.add_metric([model, v], float(q.get("samples") or 0))
        yield psi
        yield drifting
        yield samples

    def _outbox(self) -> Iterator[Metric]:
        try:
            ob = self.outbox()
        except Exception as e:  # a damaged outbox must not break the scrape
            log.warning("metrics: outbox unreadable: %s", e)
            return
        for name, doc, value in (
                ("edge_agent_outbox_messages", "Messages waiting in the MQTT outbox", ob.depth),
                ("edge_agent_outbox_bytes", "Payload bytes waiting in the MQTT outbox",
                 ob.bytes),
                ("edge_agent_outbox_oldest_age_seconds", "Age of the oldest waiting message",
                 ob.oldest_age_s or 0.0)):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
        for name, doc, total in (
                ("edge_agent_outbox_dropped", "Messages dropped unsent at the outbox cap",
                 ob.dropped),
                ("edge_agent_outbox_refused", "Messages the broker refused", ob.refused)):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(total))
            yield c
