"""Watch a fleet for a workstation tool: retained statuses and update events, queued.

:class:`FleetObserver` subscribes (on a client the caller owns) to ``edge/+/status`` and
``edge/+/events``; the MQTT handlers only decode and queue, the caller drains on its own
thread. It also keeps the latest status per device, which answers "who is in group G"
(statuses carry ``groups``, also the Last Will) and "is it online".
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.payloads import decode


class FleetObserver:
    """Latest retained status per device, and every status/event message in arrival order.

    Handlers run on the MQTT dispatch thread and only queue; the rollout thread drains.
    """

    def __init__(self, client: MqttClient, prefix: str = "edge") -> None:
        self.prefix = prefix
        self.statuses: dict[str, dict[str, Any]] = {}
        self._q: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self._lock = threading.Lock()
        self._last_status = time.monotonic()
        client.subscribe(f"{prefix}/+/status", self._on_status, qos=1)
        client.subscribe(f"{prefix}/+/events", self._on_event, qos=1)

    def _device(self, topic: str) -> str | None:
        parts = topic.split("/")
        return parts[1] if len(parts) == 3 and parts[0] == self.prefix else None

    def _on_status(self, topic: str, payload: bytes) -> None:
        device, doc = self._device(topic), decode(payload)
        if device is None or doc is None:
            return
        with self._lock:
            self.statuses[device] = doc
            self._last_status = time.monotonic()
        self._q.put((device, "status", doc))

    def _on_event(self, topic: str, payload: bytes) -> None:
        device, doc = self._device(topic), decode(payload)
        if device is not None and doc is not None:
            self._q.put((device, "event", doc))

    def settle(self, max_s: float, quiet_s: float = 0.5) -> None:
        """Wait for the retained statuses to arrive: until none came for ``quiet_s``."""
        deadline = time.monotonic() + max_s
        start = time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                last = self._last_status
            if time.monotonic() - max(last, start) >= quiet_s:
                return
            time.sleep(0.05)

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def members(self, group: str) -> list[str]:
        with self._lock:
            return sorted(d for d, doc in self.statuses.items()
                          if isinstance(doc.get("groups"), list) and group in doc["groups"])

    def status(self, device: str) -> dict[str, Any] | None:
        with self._lock:
            return self.statuses.get(device)
