"""The two "ask again" paths of issue 18 (edge_agent.protocol.wants), bounded, on a real
Mosquitto: a flood of chunk wants costs one publish per chunk per second, malformed or
foreign wants cost nothing; a flood of status wants costs one status per second."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from fleet_helpers import Recorder, SimFactory
from waiting import wait_for

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import FleetTopics, Topics
from edge_agent.protocol import ProtocolError
from edge_agent.protocol.wants import MAX_WANTED_CHUNKS, ChunkWant
from edge_agent.update.wire import ChunkPlan, decode_chunk
from fleet.chunk_server import ChunkServer

DATA = bytes(range(256)) * 400  # 102 400 bytes
SHA = hashlib.sha256(DATA).hexdigest()


def _client(url: str, cid: str) -> MqttClient:
    c = MqttClient(config=MqttConfig.from_url(url), client_id=cid)
    c.connect(10)
    return c


@pytest.mark.parametrize("payload, field", [
    (b'{"blob": "abc", "chunks": [0]}', "blob"),
    (b'{"blob": "' + SHA.encode() + b'", "chunks": []}', "chunks"),
    (b'{"blob": "' + SHA.encode() + b'", "chunks": [-1]}', "chunks"),
    (b'{"blob": "' + SHA.encode() + b'", "chunks": [true]}', "chunks"),
    (b'{"blob": "' + SHA.encode() + b'", "chunks": ' + str(list(range(MAX_WANTED_CHUNKS + 1)))
     .encode() + b'}', "chunks"),
    (b"[1]", "-"),
])
def test_a_malformed_chunk_want_is_refused_naming_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as e:
        ChunkWant.parse(payload)
    if field != "-":
        assert e.value.field == field, e.value


def test_a_flood_of_chunk_wants_costs_one_publish_per_chunk_per_second(mosquitto: Any) -> None:
    plan = ChunkPlan.for_data(DATA, 16384)
    server_client = _client(mosquitto.url, "chunk-server")
    server = ChunkServer(server_client, "edge", SHA, DATA, plan, min_interval_s=1.0)
    chunks = Recorder(mosquitto.url, f"edge/blobs/{SHA}/+", "rec-chunks")
    asker = _client(mosquitto.url, "asker")
    try:
        want = ChunkWant(SHA, (0, 2, 99)).to_bytes()  # 99: past the end, ignored
        other = ChunkWant("0" * 64, (0,)).to_bytes()  # another blob: not ours
        for _ in range(50):  # well within one second on loopback
            for w in (want, other, b"not json"):
                asker.publish(Topics("sim-1").update_want, w, 1)
        wait_for(lambda: server.wants >= 50, 10, "the wants to arrive")
        time.sleep(0.5)
        got = sorted(t.rsplit("/", 1)[1] for t in chunks.topics())
        assert got == ["0", "2"], got  # one publish per chunk, nothing for 99 or the other
        assert [decode_chunk(p, 2, plan) for t, p in chunks.messages if t.endswith("/2")] \
            == [DATA[2 * 16384:3 * 16384]]
        time.sleep(1.0)  # a second later the same want is served again
        asker.publish(Topics("sim-1").update_want, want, 1)
        wait_for(lambda: len(chunks.topics()) == 4, 10, "the chunks again after 1 s")
        assert server.served == 4
    finally:
        server.close()
        for c in (server_client, asker):
            c.stop()
        chunks.close()


def test_a_flood_of_status_wants_costs_one_status_per_second(
        start_sim: SimFactory, mosquitto: Any) -> None:
    sim = start_sim(["sim-00"])
    statuses = Recorder(mosquitto.url, "edge/sim-00/status", "rec-status")
    asker = _client(mosquitto.url, "status-asker")
    try:
        wait_for(lambda: statuses.topics(), 10, "the retained birth")
        n0 = len(statuses.topics())
        for _ in range(100):
            asker.publish(FleetTopics("edge").group_status_want("sim"), b"", 1)
        wait_for(lambda: len(statuses.topics()) > n0, 10, "a status in answer")
        time.sleep(1.5)
        answered = len(statuses.topics()) - n0
        assert 1 <= answered <= 2, answered
        assert sim.devices["sim-00"].agent.registry.active_version("digits") == 1
    finally:
        asker.stop()
        statuses.close()
