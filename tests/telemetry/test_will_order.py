"""The Last Will sorts after the births of its connection (edge_agent.protocol.order): a
consumer keeping the newest status shows a SIGKILLed device offline, whatever order the
birth and the Will reach it in; a later connection's birth still wins over an old Will."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from telemetry_helpers import AgentProcess, Recorder, start_mosquitto

from edge_agent.mqtt.config import MqttConfig
from edge_agent.protocol import DeviceState, Status
from edge_agent.protocol.order import newer_status
from fleet.status import StatusCollector, collect

TOPIC = "edge/will-1/status"


def _rows(*docs: dict[str, Any]) -> Any:
    col = StatusCollector()
    for d in docs:
        col.ingest(TOPIC, json.dumps(d).encode())
    (row,) = col.rows()
    return row


def test_sigkilled_agent_shows_offline_in_the_fleet_tools_whatever_the_order(
        tmp_path: Path, digits: Any) -> None:
    broker = start_mosquitto(tmp_path / "broker")
    rec = Recorder(broker.url, "edge/+/status")
    agent = AgentProcess(tmp_path / "agent", broker.url, "will-1", interval_s=0.2,
                         bundles=(digits.bundle,))
    try:
        agent.start()
        birth = rec.wait("/will-1/status", lambda d: d["state"] == "online", 60)
        # a few telemetry ticks: the durable seq moves on past the Will's, fixed at CONNECT
        rec_t = Recorder(broker.url, "edge/will-1/telemetry", "tele")
        rec_t.wait("/telemetry", lambda d: d["seq"] > birth["seq"] + 2, 30)
        rec_t.close()
        agent.kill()
        will = rec.wait("/will-1/status", lambda d: d["state"] == "offline", 15)
        births = [d for d in rec.on("/will-1/status") if d["state"] == "online"]
        assert will["reason"] == "connection lost" and will["boot_id"] == birth["boot_id"]
        # the bug: by seq and ts alone the Will looks older than the birth before it
        assert will["seq"] <= births[-1]["seq"] and will["ts"] < births[-1]["ts"]
        assert will["session"] == births[-1]["session"] == 1
        for b in births:
            assert newer_status(b, will) and not newer_status(will, b)
        assert _rows(*births, will).online is False  # live order
        assert _rows(will, *births).online is False  # retained Will first, stale birth late
        # the retained status, read by `edge-fleet status`
        (row,) = collect(MqttConfig.from_url(broker.url), duration_s=1.0)
        assert row.device == "will-1" and row.online is False
    finally:
        rec.close()
        agent.stop()
        broker.stop()


def _status(state: DeviceState, boot: str, session: int, seq: int, ts: float) -> dict[str, Any]:
    doc = Status(state, "0.1.0", boot_id=boot, session=session).to_dict()
    return {"schema": 1, "device": "will-1", "seq": seq, "ts": ts, **doc}


def test_a_later_connections_birth_wins_over_the_previous_will() -> None:
    on, off = DeviceState.ONLINE, DeviceState.OFFLINE
    will_1 = _status(off, "b1", 1, 10, 100.0)  # fixed at the first CONNECT
    birth_1 = _status(on, "b1", 1, 40, 160.0)  # later in connection 1: higher seq and ts
    birth_2 = _status(on, "b1", 2, 41, 170.0)  # after a reconnect, same boot
    new_boot = _status(on, "b2", 1, 41, 180.0)  # after a restart
    assert newer_status(birth_1, will_1)
    assert newer_status(will_1, birth_2) and not newer_status(birth_2, will_1)
    assert newer_status(will_1, new_boot) and not newer_status(new_boot, will_1)
    assert _rows(birth_1, will_1, birth_2).online is True
    assert _rows(birth_1, birth_2, will_1).online is True  # a stale Will arriving late
