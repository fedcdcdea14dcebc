"""Watch a fleet for a workstation tool: retained statuses and update events, queued.

:class:`FleetObserver` subscribes (on a client the caller owns) to ``edge/+/status`` and
``edge/+/events``; the MQTT handlers only parse (:mod:`edge_agent.protocol`) and queue,
the caller drains on its own thread. It also keeps the latest status per device, which
answers "who is in group G" (statuses carry ``groups``, also the Last Will) and "is it
online". A message that does not follow the protocol is logged and skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.topics import FleetTopics, Topics
from edge_agent.protocol import Event, ProtocolError, Status

log = logging.getLogger(__name__)

Observed = tuple[str, Status | Event]  # (device, what it said)


class FleetObserver:
    """Latest retained status per device, and every status/event message in arrival order.

    Handlers run on the MQTT dispatch thread and only queue; the rollout thread drains.
    """

    def __init__(self, client: MqttClient, prefix: str = "edge") -> None:
        self.prefix = prefix
        self.client = client
        self.statuses: dict[str, Status] = {}
        self._q: queue.Queue[Observed] = queue.Queue()
        self._lock = threading.Lock()
        self._last_status = time.monotonic()
        topics = FleetTopics(prefix)
        client.subscribe(topics.filter("status"), self._on_status, qos=1)
        client.subscribe(topics.filter("events"), self._on_event, qos=1)

    def _device(self, topic: str, kind: str) -> str | None:
        s = Topics.split(topic, self.prefix)
        return s[0] if s is not None and s[1] == kind else None

    def _on_status(self, topic: str, payload: bytes) -> None:
        device = self._device(topic, "status")
        if device is None or not payload:  # an empty retained message: status deleted
            return
        try:
            st = Status.parse(payload)
        except ProtocolError as e:
            log.warning("%s: %s", topic, e)
            return
        with self._lock:
            self.statuses[device] = st
            self._last_status = time.monotonic()
        self._q.put((device, st))

    def _on_event(self, topic: str, payload: bytes) -> None:
        device = self._device(topic, "events")
        if device is None:
            return
        try:
            self._q.put((device, Event.parse(payload)))
        except ProtocolError as e:
            log.warning("%s: %s", topic, e)

    def ask(self, group: str) -> None:
        """Ask every member of ``group`` to publish its status again (``status/want``):
        a status retained on another cluster node may not reach us (protocol.wants)."""
        self.client.publish(FleetTopics(self.prefix).group_status_want(group), b"", 1, False)
        with self._lock:
            self._last_status = time.monotonic()  # settle() waits for the answers

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

    def drain(self) -> list[Observed]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def members(self, group: str) -> list[str]:
        with self._lock:
            return sorted(d for d, st in self.statuses.items() if group in st.groups)

    def status(self, device: str) -> Status | None:
        with self._lock:
            return self.statuses.get(device)
