"""MQTT transport: one self-healing connection per agent, topics, payloads, outbox.

Public surface (everything else is an implementation detail)::

    MqttConfig      the validated [mqtt] section (from_section / from_url)
    MqttClient      the connection: start/connect/stop, subscribe, publish, is_connected
    Will, Message   Last Will / farewell messages; incoming message with MQTT 5 fields
    Topics          the topic scheme for one device
    Publisher       enveloped durable (outbox) and live publishes
    MqttError, MqttConnectError

The names are resolved on first use (PEP 562): reading ``[mqtt]`` settings
(``edge_agent.mqtt.config``) must not import paho-mqtt, ``ssl`` or ``sqlite3`` into an
agent that has no ``[mqtt] url`` (docs/agent.md#footprint).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.mqtt.client import MqttClient, Will
    from edge_agent.mqtt.config import MqttConfig
    from edge_agent.mqtt.dispatch import Message
    from edge_agent.mqtt.errors import MqttConnectError, MqttError
    from edge_agent.mqtt.publisher import Publisher
    from edge_agent.mqtt.topics import Topics

_WHERE = {"MqttClient": "client", "Will": "client", "MqttConfig": "config",
          "Message": "dispatch", "MqttConnectError": "errors", "MqttError": "errors",
          "Publisher": "publisher", "Topics": "topics"}

__all__ = [
    "Message",
    "MqttClient",
    "MqttConfig",
    "MqttConnectError",
    "MqttError",
    "Publisher",
    "Topics",
    "Will",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{where}"), name)
