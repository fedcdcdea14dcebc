"""Garbage on every topic the telemetry component subscribes to: an error event each time,
an error reply for commands, and an agent that keeps answering."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from telemetry_helpers import Recorder, create, make_agent
from waiting import wait_for

PAYLOADS = {
    "random bytes": os.urandom(512),
    "invalid utf-8": b"\xff\xfe\xfa{",
    "not json": b"{'single': quotes}",
    "json array": b"[1, 2, 3]",
    "json number": b"42",
    "json string": b'"ping"',
    "wrong field types": json.dumps({"id": {"nested": 1}, "args": [1], "request_id": 7,
                                     "label": {"x": 1}}).encode(),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "10 MB": b"{" + b" " * (10 * 1024 * 1024) + b"}",
}
TOPICS = ["cmd/ping", "cmd/reload", "cmd/no-such-command", "feedback"]


@pytest.fixture
def running(tmp_path: Path, mosquitto):
    agent = make_agent(tmp_path, mosquitto.url)
    svc = create(agent)
    assert svc is not None
    rec = Recorder(mosquitto.url)
    svc.start()
    rec.wait("/status")
    yield agent, svc, rec
    rec.close()
    svc.stop()


def test_each_malformed_payload_on_each_topic_is_rejected_and_reported(running) -> None:
    agent, svc, rec = running
    sent = 0
    for topic in TOPICS:
        for payload in PAYLOADS.values():
            rec.send(f"edge/dev-1/{topic}", payload)
            sent += 1
    def bad_events() -> list[dict]:
        return [e for e in rec.on("/events") if e["kind"] == "mqtt.bad_message"]

    # every one is rejected and counted; events are rate-limited per device and kind
    wait_for(lambda: svc.client.rejected_incoming >= sent, 30, "every message rejected")
    wait_for(lambda: len(bad_events()) >= 10, 30, "a burst of error events")
    events = bad_events()
    assert svc.client.rejected_incoming == sent and len(events) == 10
    assert all(e["level"] == "error" for e in events)
    # commands also got an error reply for everything except the oversized payload
    def replies() -> list[dict]:
        return rec.on("/reply/ping") + rec.on("/reply/reload") + rec.on("/reply/no-such-command")
    wait_for(lambda: len(replies()) >= 3 * (len(PAYLOADS) - 1), 15, "the error replies")
    replies = replies()
    assert len(replies) == 3 * (len(PAYLOADS) - 1)
    assert all(r["ok"] is False and r["error"]["type"] == "InvalidRequestError"
               for r in replies)
    assert agent.reloads == 0  # a malformed reload did not reload
    # and the agent is unaffected: still connected, still answering, still publishing
    assert svc.client.is_connected and svc.client.connects == 1
    rec.send("edge/dev-1/cmd/ping", b'{"id": "after"}')
    r = rec.wait("/reply/ping", lambda d: d["id"] == "after")
    assert r["ok"]
    n = len(rec.on("/telemetry"))
    wait_for(lambda: len(rec.on("/telemetry")) > n + 2)


def test_a_flood_is_rate_limited_not_forwarded_one_by_one(running) -> None:
    _agent, svc, rec = running
    for _ in range(60):
        rec.send("edge/dev-1/feedback", b"garbage")
    rec.send("edge/dev-1/cmd/ping", b'{"id": "x"}')
    rec.wait("/reply/ping", lambda d: d["id"] == "x")
    wait_for(lambda: len(rec.on("/events")) >= 10)
    events = [e for e in rec.on("/events") if e["kind"] == "mqtt.bad_message"]
    assert 10 <= len(events) <= 12  # burst of 10 per minute per topic
    assert svc.client.is_connected
