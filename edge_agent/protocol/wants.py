"""Asking for what a broker's retained store should have delivered (issue 18).

The update design relies on retained messages: update chunks on ``edge/blobs/<sha>/<i>``,
announcements, and statuses that fleet tools read at start. A clustered broker may keep
its retained index per node (ejabberd's ``mod_mqtt`` does: a retained message published on
node B is not delivered to a new subscriber on node A; docs/scale.md), so both sides can
also *ask*, and a live answer reaches the asker on any node:

``edge/<device>/update/want``  device → fleet tools. :class:`ChunkWant`: "I am subscribed
                               to these chunks of blob <sha> and none came"; the rollout
                               tool, which holds the blob, publishes them again.
``edge/group/<g>/status/want`` fleet tools → devices (empty payload): every member
                               publishes its status again (the retained birth), so a tool
                               on another node than the devices still sees the fleet.

Pure: no MQTT, no clock. Raises :class:`~edge_agent.protocol.ProtocolError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from edge_agent.protocol.fields import Fields, ProtocolError, tname
from edge_agent.protocol.messages import decode_object

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_WANTED_CHUNKS = 256  # one want names at most this many chunks (the device's window)


@dataclass(frozen=True)
class ChunkWant:
    """``{"blob": "<sha256>", "chunks": [0, 3]}`` on ``edge/<device>/update/want``."""

    blob: str
    chunks: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return json.dumps({"blob": self.blob, "chunks": list(self.chunks)},
                          separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes) -> ChunkWant:
        """A want as a fleet tool reads it; every field checked, chunk list bounded."""
        what = "update want"
        d = decode_object(payload, what)
        f = Fields(d, what)
        blob = f.text("blob", required=True)
        if not SHA256_RE.match(blob):
            raise f.fail("blob", "expected a lowercase hex sha256")
        raw = d.get("chunks")
        if not isinstance(raw, list) or not raw:
            raise f.fail("chunks", f"expected a non-empty list, got {tname(raw)}")
        if len(raw) > MAX_WANTED_CHUNKS:
            raise f.fail("chunks", f"at most {MAX_WANTED_CHUNKS}, got {len(raw)}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 20
                   for i in raw):
            raise ProtocolError(what, "chunks", "expected chunk indexes (integers >= 0)")
        return cls(blob, tuple(sorted(set(raw))))
