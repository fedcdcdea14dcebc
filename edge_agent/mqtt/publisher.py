"""What a device publishes, enveloped: durable (outbox) or live (now or never).

* :meth:`Publisher.durable` — telemetry, events, results: stored in the outbox under the
  next sequence number, delivered in order once the broker is reachable.
* :meth:`Publisher.live` — status and command replies: sent now if connected (else
  dropped and False), carrying the latest sequence number without taking one.

An event the outbox cannot store (its disk is full or failing) is sent live instead,
marked ``"stored": false``: an outcome is not lost with the disk that refused it.

Other components get the agent's publisher with
:func:`edge_agent.mqtt.shared.shared_publisher` (at publish time; None without MQTT).
"""

from __future__ import annotations

import logging
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.errors import TransportError
from edge_agent.hooks import AgentEvent
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.outbox import Outbox
from edge_agent.mqtt.payloads import envelope
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.kinds import Level
from edge_agent.protocol.messages import Event

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, topics: Topics, outbox: Outbox, client: MqttClient) -> None:
        self.topics = topics
        self.outbox = outbox
        self.client = client

    def durable(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> int:
        """Queue ``body`` for ``topic``; returns its sequence number. Raises TransportError."""
        device = self.topics.device
        return self.outbox.put(topic, lambda seq: envelope(device, seq, body), retain=retain)

    def event(self, ev: AgentEvent) -> int | None:
        """Queue ``ev`` on the events topic; returns its sequence number.

        When the outbox cannot store it (TransportError: disk full, read-only, failing)
        the event goes out live, now or never, with ``"stored": false`` and the latest
        sequence number (not a new one): None then.
        """
        body = Event(Level(ev.level), ev.kind, ev.message, ev.data, ev.at).to_dict()
        try:
            return self.durable(self.topics.events, body)
        except TransportError as e:
            sent = self.live(self.topics.events, {**body, "stored": False})
            log.error("%s; event %s %s live", e, ev.kind, "sent" if sent else "lost (offline)")
            return None

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
