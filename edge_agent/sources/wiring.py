"""Which input sources a configuration asks for, built against one registry and MQTT link.

Kept apart from the agent so the agent's life cycle reads in one screen; the agent starts
each factory's source and turns a failure into a ``source.failed`` event.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_agent.config import AgentConfig
from edge_agent.hooks import Hooks
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import ModelRegistry
from edge_agent.sources.base import (
    DurablePublisher,
    FanOut,
    JsonlSink,
    MessageLink,
    MqttSink,
    ResultSink,
    Source,
)
from edge_agent.sources.camera import CameraSource, open_frames
from edge_agent.sources.mqtt_requests import MqttRequestSource
from edge_agent.sources.watch import WatchFolderSource

SourceFactory = Callable[[], Source]


def wants_link(c: AgentConfig) -> bool:
    """Does any configured source need the MQTT connection?"""
    return (c.mqtt_requests.enabled or (c.watch.enabled and c.watch.publish_mqtt)
            or (c.camera.enabled and c.camera.publish_mqtt))


def source_factories(c: AgentConfig, registry: ModelRegistry, hooks: Hooks, *,
                     link: MessageLink | None,
                     durable: Callable[[], DurablePublisher | None] | None = None
                     ) -> list[SourceFactory]:
    """One factory per enabled source; calling it may raise EdgeError / OSError."""
    a = c.agent
    device = a.device_id
    prefix = c.mqtt.topic_prefix if c.mqtt is not None else "edge"

    def sink(jsonl: Path | None, mqtt: bool, what: str) -> ResultSink:
        sinks: list[ResultSink] = [JsonlSink(jsonl)] if jsonl else []
        if mqtt and link is not None:
            sinks.append(MqttSink(link, device, prefix=prefix, durable=durable))
        if not sinks:
            hooks.emit_event("warning", EventKind.SOURCE_NO_OUTPUT,
                             f"{what} results go nowhere: set {what}.jsonl, or "
                             f"{what}.publish_mqtt with an [mqtt] url")
        return FanOut(sinks)

    out: list[SourceFactory] = []
    if c.mqtt_requests.enabled and link is not None:
        mqtt_link = link
        out.append(lambda: MqttRequestSource(
            mqtt_link, registry, device, c.mqtt_requests, max_batch=c.http.max_batch,
            max_image_pixels=a.max_image_pixels, threads=registry.workers, prefix=prefix,
            hooks=hooks))
    if c.watch.enabled:
        out.append(lambda: WatchFolderSource(
            c.watch, registry, sink(c.watch.jsonl, c.watch.publish_mqtt, "watch"),
            max_image_pixels=a.max_image_pixels))
    if c.camera.enabled and c.camera.model:
        model = c.camera.model
        out.append(lambda: CameraSource(
            open_frames(c.camera.device, width=c.camera.width, height=c.camera.height),
            registry, model, sink(c.camera.jsonl, c.camera.publish_mqtt, "camera"),
            interval_s=c.camera.interval_s, top_k=c.camera.top_k,
            max_frames=c.camera.max_frames))
    return out
