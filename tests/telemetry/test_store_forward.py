"""Store-and-forward in-process (fast): a short outage, the cap, and an ACL refusal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from telemetry_helpers import PersistentRecorder, Recorder, create, make_agent, start_mosquitto
from waiting import wait_for

from fleet.watch import SequenceTracker


@pytest.fixture
def broker(tmp_path: Path):
    b = start_mosquitto(tmp_path / "broker")
    yield b
    b.stop()


def _unique(rec: PersistentRecorder) -> list[int]:
    t = SequenceTracker()
    return [d["seq"] for d in rec.docs(("/telemetry", "/events")) if t.accept("x", d["seq"])]


def test_short_outage_delivers_everything_in_order(tmp_path: Path, broker) -> None:
    rec = PersistentRecorder(broker, "edge/sf-1/#")
    agent = make_agent(tmp_path, broker.url, device="sf-1")
    svc = create(agent)
    assert svc is not None
    svc.start()
    try:
        wait_for(lambda: len(rec.docs(("/telemetry",))) >= 5)
        broker.stop()
        time.sleep(2)
        assert svc.outbox.stats().depth >= 10  # queued on disk meanwhile
        broker.start()
        wait_for(lambda: svc.outbox.stats().depth == 0, 20, "the backlog to drain")
        last = svc.outbox.last_seq()
        wait_for(lambda: _unique(rec)[-1:] >= [last], 20)
        got = _unique(rec)
        assert got == list(range(1, len(got) + 1))
    finally:
        svc.stop()
        rec.close()


def test_past_the_cap_the_oldest_are_dropped_counted_and_reported(tmp_path: Path,
                                                                 broker) -> None:
    rec = PersistentRecorder(broker, "edge/sf-2/#")
    agent = make_agent(tmp_path, broker.url, device="sf-2", outbox_max_messages=15)
    svc = create(agent)
    assert svc is not None
    svc.start()
    try:
        wait_for(lambda: len(rec.docs(("/telemetry",))) >= 3)
        broker.stop()
        wait_for(lambda: svc.outbox.stats().dropped >= 10, 20, "the cap to be exceeded")
        assert svc.outbox.stats().depth <= 15
        broker.start()
        wait_for(lambda: [d for d in rec.docs(("/events",)) if d["kind"] == "outbox.dropped"],
                 20, "an outbox.dropped event")
        wait_for(lambda: sum(d["data"]["dropped"] for d in rec.docs(("/events",))
                             if d["kind"] == "outbox.dropped") >= 10, 20,
                 "the drops summed up when delivery resumed")
        evs = [d for d in rec.docs(("/events",)) if d["kind"] == "outbox.dropped"]
        assert len(evs) <= 2 and evs[-1]["level"] == "warning"  # not one per tick
        wait_for(lambda: [d for d in rec.docs(("/telemetry",))
                          if d["queue"]["outbox_dropped"] >= 10], 20, "the count in telemetry")
        got = _unique(rec)
        missing = set(range(1, got[-1] + 1)) - set(got)
        assert missing and len(missing) <= svc.outbox.stats().dropped  # the gap is the drop
    finally:
        svc.stop()
        rec.close()


def test_a_message_the_broker_refuses_is_dropped_and_does_not_block_the_queue(
        tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edge/sf-3/status\ntopic readwrite edge/sf-3/events\n"
                   "topic read edge/#\n")  # telemetry is not writable for this device
    b = start_mosquitto(tmp_path / "broker", f"acl_file {acl}\n")
    rec = Recorder(b.url)
    agent = make_agent(tmp_path, b.url, device="sf-3")
    svc = create(agent)
    assert svc is not None
    svc.start()
    try:
        ev = rec.wait("/events", lambda d: d["kind"] == "mqtt.publish_refused", 15)
        assert ev["data"]["topic"] == "edge/sf-3/telemetry" and ev["data"]["reason"] == 0x87
        wait_for(lambda: svc.outbox.stats().refused >= 5, 15)
        assert svc.outbox.stats().depth < 5  # refused messages do not pile up
        agent.hooks.emit_event("info", "still.flowing", "after refusals")
        rec.wait("/events", lambda d: d["kind"] == "still.flowing")
        assert not rec.on("/telemetry")
        assert len([e for e in rec.on("/events") if e["kind"] == "mqtt.publish_refused"]) == 1
    finally:
        svc.stop()
        rec.close()
        b.stop()
