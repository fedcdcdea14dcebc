"""The ``[telemetry]`` config section.

Example (TOML; every key optional)::

    [telemetry]
    interval_s = 15            # default: the device profile's telemetry_interval_s
    enabled = true             # periodic telemetry (status, events and commands stay on)
    latency_samples = 4096     # per model and interval, for p50/p90/p99
    quality_window = 1000      # predictions in the rolling class/confidence histograms
    drift_threshold = 0.25     # PSI above which drift.detected is raised
    drift_min_samples = 200    # no drift verdict on fewer predictions
    feedback_window = 1000     # labelled samples behind accuracy/precision/recall/F1/AUC
    prediction_memory = 10000  # request ids remembered for joining label feedback ...
    prediction_ttl_s = 3600    # ... and for how long
    commands = true            # answer edge/<device>/cmd/<name>

Raises :class:`~edge_agent.errors.ConfigError` naming ``telemetry.<key>``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edge_agent.errors import ConfigError


@dataclass(frozen=True)
class TelemetryConfig:
    interval_s: float
    enabled: bool = True
    latency_samples: int = 4096
    quality_window: int = 1000
    drift_threshold: float = 0.25
    drift_min_samples: int = 200
    feedback_window: int = 1000
    prediction_memory: int = 10_000
    prediction_ttl_s: float = 3600.0
    commands: bool = True

    @classmethod
    def from_section(cls, raw: dict[str, Any] | None, source: str, *,
                     default_interval_s: float) -> TelemetryConfig:
        """Validate the raw ``[telemetry]`` mapping. Raises ConfigError naming the key."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        for k in raw:
            if k not in known:
                raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})",
                                  source=source, key=f"telemetry.{k}")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            key = f"telemetry.{f.name}"
            if f.type == "bool":
                if not isinstance(v, bool):
                    raise ConfigError(f"expected true or false, got {v!r}", source=source, key=key)
            elif f.type == "int":
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ConfigError(f"expected an integer >= 1, got {v!r}", source=source,
                                      key=key)
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"expected a number > 0, got {v!r}", source=source, key=key)
            kw[f.name] = float(v) if f.type == "float" else v
        kw.setdefault("interval_s", float(default_interval_s))
        if kw["interval_s"] < 0.01:
            raise ConfigError(f"must be >= 0.01, got {kw['interval_s']}", source=source,
                              key="telemetry.interval_s")
        return cls(**kw)
