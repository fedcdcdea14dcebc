"""Agent telemetry over MQTT: status with Last Will, periodic metrics, events, commands,
label feedback and drift monitoring. The agent loads it as an optional component from
``edge_agent.telemetry.service:create``.
"""
