"""What a device publishes, enveloped: durable (outbox) or live (now or never).

* :meth:`Publisher.durable` — telemetry, events, results: stored in the outbox under the
  next sequence number, delivered in order once the broker is reachable.
* :meth:`Publisher.live` — status and command replies: sent now if connected (else
  dropped and False), carrying the latest sequence number without taking one.

Other components get the agent's publisher with
:func:`edge_agent.mqtt.shared.shared_publisher` (at publish time; None without MQTT).
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.hooks import AgentEvent
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.outbox import Outbox
from edge_agent.mqtt.payloads import envelope
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.kinds import Level
from edge_agent.protocol.messages import Event


class Publisher:
    def __init__(self, topics: Topics, outbox: Outbox, client: MqttClient) -> None:
        self.topics = topics
        self.outbox = outbox
        self.client = client

    def durable(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> int:
        """Queue ``body`` for ``topic``; returns its sequence number. Raises TransportError."""
        device = self.topics.device
        return self.outbox.put(topic, lambda seq: envelope(device, seq, body), retain=retain)

    def event(self, ev: AgentEvent) -> int:
        body = Event(Level(ev.level), ev.kind, ev.message, ev.data, ev.at).to_dict()
        return self.durable(self.topics.events, body)

    def result(self, model: str, body: dict[str, Any]) -> int:
        """A prediction result on ``edge/<device>/results/<model>`` (durable)."""
        return self.durable(self.topics.results(model), body)

    def live(self, topic: str, body: dict[str, Any], *, retain: bool = False, qos: int = 1,
             correlation: bytes | None = None) -> bool:
        props = None
        if correlation is not None and self.client.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        return self.client.publish(topic, self.encode_live(body), qos, retain,
                                   properties=props)

    def encode_live(self, body: dict[str, Any]) -> bytes:
        return envelope(self.topics.device, self.outbox.last_seq(), body)
