"""Agent telemetry over MQTT: status with Last Will, periodic metrics, events, commands,
label feedback and drift monitoring. The agent's wiring (:mod:`edge_agent.wiring`) builds it
from typed :class:`~edge_agent.telemetry.service.TelemetryDeps` when ``[mqtt] url`` is set.
"""
