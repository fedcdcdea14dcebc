"""MQTT transport: one self-healing connection per agent, topics, payloads, outbox.

Public surface (everything else is an implementation detail)::

    MqttConfig      the validated [mqtt] section (from_section / from_url)
    MqttClient      the connection: start/connect/stop, subscribe, publish, is_connected
    Will, Message   Last Will / farewell messages; incoming message with MQTT 5 fields
    Topics          the topic scheme for one device
    Publisher       enveloped durable (outbox) and live publishes
    MqttError, MqttConnectError
"""

from edge_agent.mqtt.client import MqttClient, Will
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.dispatch import Message
from edge_agent.mqtt.errors import MqttConnectError, MqttError
from edge_agent.mqtt.publisher import Publisher
from edge_agent.mqtt.topics import Topics

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
