"""The agent's single MQTT connection, shared by telemetry, MQTT requests and updates.

A broker allows one connection per client id, and the client id is the device id, so
every component that talks MQTT must use the same :class:`MqttClient`::

    from edge_agent.mqtt import shared_client
    client = shared_client(agent)          # None when no [mqtt] url is configured
    if client is not None:
        client.subscribe(f"edge/{agent.device_id}/requests/+", handler)

Subscribing before the client is started is fine (subscriptions are made on connect).
The telemetry component (:mod:`edge_agent.telemetry.service`) owns the lifecycle: it
sets the Last Will, starts the client, and stops it (publishing ``offline``) on shutdown.
Handler exceptions and oversized payloads on *any* subscribed topic become rate-limited
``mqtt.bad_message`` error events on the agent's hooks.

Raises ConfigError (bad ``[mqtt]`` section, naming the key).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Generic, TypeVar

from edge_agent.mqtt.client import MqttClient, Will
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.publisher import Publisher
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.kinds import EventKind

_lock = threading.Lock()
T = TypeVar("T")


class _PerAgent(Generic[T]):
    """One value per live agent object (by identity; agents need not be hashable)."""

    def __init__(self) -> None:
        self._d: dict[int, tuple[weakref.ref[Any], T]] = {}

    def get(self, agent: Any) -> T | None:
        hit = self._d.get(id(agent))
        return hit[1] if hit is not None and hit[0]() is agent else None

    def set(self, agent: Any, value: T) -> None:
        key = id(agent)
        self._d[key] = (weakref.ref(agent, lambda _r: self._d.pop(key, None)), value)


_clients: _PerAgent[MqttClient] = _PerAgent()
_publishers: _PerAgent[Publisher] = _PerAgent()


def register_publisher(agent: Any, publisher: Publisher) -> None:
    """Called by the telemetry component once its outbox is open."""
    with _lock:
        _publishers.set(agent, publisher)


def shared_publisher(agent: Any) -> Publisher | None:
    """The agent's durable publisher (results, events), or None without MQTT telemetry.

    Look it up when publishing, not when constructing: it exists once the telemetry
    component has been created. Example (a watch-folder result)::

        pub = shared_publisher(agent)
        if pub is not None:
            pub.result("digits", {"file": "a.png", "top": [...], "request_id": rid})
    """
    with _lock:
        return _publishers.get(agent)


def config_source(agent: Any) -> str:
    """Where the agent's config came from, for error messages."""
    cfg = getattr(agent, "config", None)
    for attr in ("source", "path", "file"):
        v = getattr(cfg, attr, None)
        if v:
            return str(v)
    return "agent config"


def mqtt_config(agent: Any) -> MqttConfig | None:
    """The validated ``[mqtt]`` section, or None when no broker URL is configured."""
    sections = getattr(getattr(agent, "config", None), "sections", None) or {}
    raw = sections.get("mqtt") or {}
    if not raw or not raw.get("url"):
        return None
    return MqttConfig.from_section(dict(raw), config_source(agent))


class _RateLimit:
    """At most ``burst`` events per ``per_s`` per key; the rest are counted, not sent."""

    def __init__(self, burst: int = 10, per_s: float = 60.0) -> None:
        self.burst, self.per_s = burst, per_s
        self._seen: dict[str, list[float]] = {}
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            times = [t for t in self._seen.get(key, []) if now - t < self.per_s]
            ok = len(times) < self.burst
            if ok:
                times.append(now)
            else:
                self.suppressed += 1
            self._seen[key] = times
            return ok


def shared_client(agent: Any, *, will: Will | None = None) -> MqttClient | None:
    """The agent's MQTT client (created on first call), or None without ``[mqtt] url``."""
    with _lock:
        client = _clients.get(agent)
        if client is not None:
            return client
        cfg = mqtt_config(agent)
        if cfg is None:
            return None
        topics = Topics(agent.device_id, cfg.topic_prefix)
        limiter = _RateLimit()
        hooks = getattr(agent, "hooks", None)

        def on_error(topic: str, exc: BaseException) -> None:
            if hooks is not None and limiter.allow(topic):
                hooks.emit_event("error", EventKind.MQTT_BAD_MESSAGE,
                                 f"message on {topic} rejected: {exc}", topic=topic,
                                 error=type(exc).__name__,
                                 suppressed_before=limiter.suppressed)

        default_will = Will(topics.status, b'{"state":"offline"}', qos=1, retain=True)
        client = MqttClient(config=cfg, client_id=agent.device_id, will=will or default_will,
                            on_handler_error=on_error)
        _clients.set(agent, client)
        return client
