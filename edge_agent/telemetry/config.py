"""The ``[telemetry]`` config section.

Example (TOML; every key optional)::

    [telemetry]
    interval_s = 15            # default: the device profile's telemetry_interval_s
    enabled = true             # periodic telemetry (status, events and commands stay on)
    latency_samples = 4096     # per model and interval, for p50/p90/p99
    quality_window = 1000      # predictions in the rolling class/confidence histograms
    drift_threshold = 0.25     # PSI above which drift.detected is raised
    drift_min_samples = 200    # no drift verdict on fewer predictions
    output_drift_sigma = 1.0   # a regression/raw head's mean moved this many reference stds
    feedback_window = 1000     # labelled samples behind accuracy/precision/recall/F1/AUC
    prediction_memory = 10000  # request ids remembered for joining label feedback ...
    prediction_ttl_s = 3600    # ... and for how long
    commands = true            # answer edge/<device>/cmd/<name>

Read by :func:`edge_agent.config.load_config` through the one config reader; raises
:class:`~edge_agent.errors.ConfigError` naming ``telemetry.<key>`` and where it was set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from edge_agent.config_reader import Table, section


@dataclass(frozen=True)
class TelemetryConfig:
    """``[telemetry]``; ``interval_s`` None means the device profile's interval."""

    interval_s: float | None = None
    enabled: bool = True
    latency_samples: int = 4096
    quality_window: int = 1000
    drift_threshold: float = 0.25
    drift_min_samples: int = 200
    output_drift_sigma: float = 1.0  # reference standard deviations (quality.outputs.drift)
    feedback_window: int = 1000
    prediction_memory: int = 10_000
    prediction_ttl_s: float = 3600.0
    commands: bool = True

    def interval_or(self, default_s: float) -> float:
        """The telemetry period: the configured one, else ``default_s`` (the profile's)."""
        return self.interval_s if self.interval_s is not None else float(default_s)

    @classmethod
    def from_section(cls, raw: dict[str, Any] | None, source: str, *,
                     default_interval_s: float) -> TelemetryConfig:
        """Validate a raw ``[telemetry]`` mapping on its own, filling in the interval."""
        cfg = cls.parse(section(raw, "telemetry", source))
        return replace(cfg, interval_s=cfg.interval_or(default_interval_s))

    @classmethod
    def parse(cls, t: Table) -> TelemetryConfig:
        """Validate the ``[telemetry]`` table. Raises ConfigError naming the key and where it
        was set (file or environment variable)."""
        d = cls
        cfg = cls(
            interval_s=t.opt_number("interval_s", 0.01, exclusive=False),
            enabled=t.flag("enabled", d.enabled),
            latency_samples=t.integer("latency_samples", d.latency_samples, 1),
            quality_window=t.integer("quality_window", d.quality_window, 1),
            drift_threshold=t.number("drift_threshold", d.drift_threshold, 0.0),
            drift_min_samples=t.integer("drift_min_samples", d.drift_min_samples, 1),
            output_drift_sigma=t.number("output_drift_sigma", d.output_drift_sigma, 0.0),
            feedback_window=t.integer("feedback_window", d.feedback_window, 1),
            prediction_memory=t.integer("prediction_memory", d.prediction_memory, 1),
            prediction_ttl_s=t.number("prediction_ttl_s", d.prediction_ttl_s, 0.0),
            commands=t.flag("commands", d.commands),
        )
        t.finish()
        return cfg
