"""The rollout tool answers devices' chunk requests (``edge/+/update/want``), live.

On a cluster whose retained index is per node (ejabberd ``mod_mqtt``; docs/scale.md), a
device on node A never gets the retained chunks published through node B. The device then
asks (:class:`~edge_agent.protocol.wants.ChunkWant`, every ``[update] chunk_want_after_s``
while its subscribed chunks do not come) and :class:`ChunkServer`, which holds the bundle,
publishes the asked chunks again: the cluster routes a live publish to the subscribed
device on any node. Each chunk goes out at most once per ``min_interval_s`` however many
devices ask (one publish reaches every subscriber), wants for other blobs are ignored, and
a malformed want is logged and dropped.
"""

from __future__ import annotations

import logging
import threading
import time

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.topics import UPDATE_WANT, FleetTopics
from edge_agent.protocol import ProtocolError
from edge_agent.protocol.wants import ChunkWant
from edge_agent.update.wire import ChunkPlan, encode_chunk

log = logging.getLogger(__name__)


class ChunkServer:
    """Serve the chunks of one blob (``data`` cut by ``plan``) to devices that ask."""

    def __init__(self, client: MqttClient, prefix: str, sha256: str, data: bytes,
                 plan: ChunkPlan, *, min_interval_s: float = 1.0) -> None:
        self.client = client
        self.topics = FleetTopics(prefix)
        self.sha256 = sha256
        self.data = data
        self.plan = plan
        self.min_interval_s = min_interval_s
        self.served = 0  # chunk publishes made for wants (tests, the run's summary)
        self.wants = 0
        self._sent: dict[int, float] = {}  # chunk → monotonic time it was last re-published
        self._lock = threading.Lock()
        self._undo = client.subscribe(self.topics.filter(UPDATE_WANT), self._on_want, qos=1,
                                      max_bytes=16 * 1024)

    def _on_want(self, topic: str, payload: bytes) -> None:
        try:
            want = ChunkWant.parse(payload)
        except ProtocolError as e:
            log.warning("%s: %s", topic, e)
            return
        if want.blob != self.sha256:
            return
        now = time.monotonic()
        with self._lock:
            self.wants += 1
            due = [i for i in want.chunks if i < self.plan.count
                   and now - self._sent.get(i, -1e9) >= self.min_interval_s]
            for i in due:
                self._sent[i] = now
        for i in due:
            off, n = self.plan.span(i)
            body = encode_chunk(i, self.plan.count, self.plan.length, self.data[off:off + n])
            if self.client.publish(self.topics.chunk(self.sha256, i), body, 1, True):
                with self._lock:
                    self.served += 1

    def close(self) -> None:
        self._undo()
