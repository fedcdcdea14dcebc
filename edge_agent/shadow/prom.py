"""``/metrics`` for a shadow run: what the candidate's child measured, at scrape time.

Read from the update flow's current (or last) :class:`~edge_agent.shadow.runner.ShadowRun`
(its latest child summary and the agent's own copy counts; nothing is computed here).
Labels: ``model``, ``version`` (the candidate), ``active_version``; the values come from
a verified release and the served model, never from a request. Names: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from edge_agent.shadow.runner import ShadowRun
    from edge_agent.update.service import UpdateService

LABELS = ["model", "version", "active_version"]


def current_run(service: UpdateService | None) -> ShadowRun | None:
    """The update flow's current or last shadow run, if any."""
    flow = service.flow if service is not None else None
    return flow.shadow if flow is not None else None


class ShadowCollector:
    """Shadow gauges and counters (empty families while no shadow ever ran)."""

    def __init__(self, source: Callable[[], ShadowRun | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        run = self.source()
        running = GaugeMetricFamily("edge_agent_shadow_running", "1 while a candidate runs in "
                                    "the shadow of the active version", labels=LABELS)
        counts = {k: CounterMetricFamily(f"edge_agent_shadow_{k}", help_, labels=LABELS)
                  for k, help_ in (
                      ("requests", "Request copies the candidate was compared on"),
                      ("copied", "Request copies sent to the candidate's process"),
                      ("dropped", "Request copies dropped: the shadow queue was full"),
                      ("shed", "Requests not copied: the agent was loaded"),
                      ("errors", "Request copies the candidate failed"))}
        agreement = GaugeMetricFamily("edge_agent_shadow_agreement", "Share of compared "
                                      "samples on which the candidate agrees with the active "
                                      "version", labels=LABELS)
        latency = {q: GaugeMetricFamily(f"edge_agent_shadow_{q}_seconds", f"Invoke-time {q} "
                                        "over the compared requests: of the candidate (its "
                                        "process) and of the active version (the agent)",
                                        labels=[*LABELS, "side"]) for q in ("p50", "p99")}
        if run is not None:
            s = run.summary()
            labels = [run.name, str(run.candidate_version), str(run.active_version)]
            running.add_metric(labels, 1.0 if run.phase == "running" else 0.0)
            for k, fam in counts.items():
                fam.add_metric(labels, float(s.get("sent" if k == "copied" else k) or 0))
            if s.get("agreement") is not None:
                agreement.add_metric(labels, float(s["agreement"]))
            for side, prefix in (("candidate", ""), ("active", "active_")):
                for q, gauge in latency.items():
                    v = s.get(f"{prefix}{q}_ms")
                    if v is not None:
                        gauge.add_metric([*labels, side], float(v) / 1000)
        yield running
        yield from counts.values()
        yield agreement
        yield from latency.values()
