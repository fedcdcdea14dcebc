"""Hostile MQTT input against a real in-process agent (telemetry + MQTT requests on one
connection) and a real Mosquitto: replies cannot be aimed at the device's own topics,
payload limits are the subscription's own, a 5000-digit literal is bad input, and a flood
of bogus commands is answered one by one with a bounded number of error events."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from agent_helpers import DigitsEval
from waiting import wait_for

MIB = 1024 * 1024
DEVICE = "edge/dev1"
BIG_INT = "1" * 5000


class Spy:
    """A paho MQTT 5 client subscribed to everything; records (topic, payload) in order."""

    def __init__(self, host: str, port: int, client_id: str = "spy") -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv5)
        self.c.on_message = self._on
        ready = threading.Event()
        self.c.on_subscribe = lambda *_a: ready.set()
        self.c.connect(host, port)
        self.c.loop_start()
        self.c.subscribe("#", qos=1)
        assert ready.wait(5)

    def _on(self, _c: Any, _u: Any, m: Any) -> None:
        with self._lock:
            self.got.append((m.topic, bytes(m.payload)))

    def on(self, topic: str) -> list[Any]:
        with self._lock:
            rows = [p for t, p in self.got if t == topic]
        out = []
        for p in rows:
            try:
                out.append(json.loads(p))
            except ValueError:
                out.append(p)
        return out

    def send(self, topic: str, payload: bytes | str, response_topic: str | None = None) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
        data = payload.encode() if isinstance(payload, str) else payload
        self.c.publish(topic, data, qos=1, properties=props).wait_for_publish(10)

    def wait(self, topic: str, pred: Any = lambda _d: True, timeout_s: float = 15) -> Any:
        found: list[Any] = []

        def check() -> bool:
            found[:] = [d for d in self.on(topic) if isinstance(d, dict) and pred(d)]
            return bool(found)
        wait_for(check, timeout_s, f"a message on {topic}")
        return found[-1]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def device(start_agent: Any, digits: Any, mosquitto: Any) -> Any:
    agent = start_agent(digits.bundle, components=["telemetry"], **{
        "mqtt.url": mosquitto.url, "telemetry.interval_s": 0.5,
        "mqtt_requests.max_payload_bytes": 4 * MIB})
    spy = Spy(mosquitto.host, mosquitto.port)
    spy.wait(f"{DEVICE}/status", lambda d: d["state"] == "online")
    yield agent, spy
    spy.close()


def _bad_events(spy: Spy) -> list[dict[str, Any]]:
    return [e for e in spy.on(f"{DEVICE}/events") if isinstance(e, dict)
            and e.get("kind") == "mqtt.bad_message"]


# ---- item 10: reply_to / response topic inside the device's namespace ------------------

OWN_TOPICS = ["cmd/reload", "cmd/config", "telemetry", "status", "events"]


def test_reply_to_the_devices_own_topics_is_refused_and_answered_on_the_default_topic(
        device: Any, digits_eval: DigitsEval) -> None:
    agent, spy = device
    x = digits_eval.x[:1].tolist()
    for i, own in enumerate(OWN_TOPICS):
        spy.send(f"{DEVICE}/infer/digits", json.dumps(
            {"id": f"rt-{i}", "reply_to": f"{DEVICE}/{own}", "instances": x}))
        spy.send(f"{DEVICE}/infer/digits", json.dumps({"id": f"v5-{i}", "instances": x}),
                 response_topic=f"{DEVICE}/{own}")
    results = f"{DEVICE}/results/digits"
    wanted = {f"{p}-{i}" for p in ("rt", "v5") for i in range(len(OWN_TOPICS))}
    wait_for(lambda: wanted <= {r.get("id") for r in spy.on(results)}, 20, "every refusal")
    for r in spy.on(results):
        assert r["code"] == 403 and "reply prefix" in r["error"] and "predictions" not in r
    # nothing was published on the device's own topics except its own enveloped messages
    assert spy.on(f"{DEVICE}/cmd/reload") == [] and spy.on(f"{DEVICE}/cmd/config") == []
    for own in ("telemetry", "status", "events"):
        for doc in spy.on(f"{DEVICE}/{own}"):
            assert doc.get("schema") == 1 and doc.get("device") == "dev1", (own, doc)
            assert "predictions" not in doc and "code" not in doc
    assert not [e for e in spy.on(f"{DEVICE}/events") if e.get("kind") == "agent.reloaded"]
    assert any("refused" in e["message"] for e in _bad_events(spy))  # reported
    # and the agent keeps answering, on an allowed reply topic
    spy.send(f"{DEVICE}/infer/digits", json.dumps(
        {"id": "ok", "reply_to": "replies/app-1", "instances": x}))
    assert spy.wait("replies/app-1")["predictions"]
    assert agent.registry.get("digits").version == 1


# ---- item 13: the subscription's own payload limit ---------------------------------------

def test_a_2_mib_request_is_answered_and_one_over_the_limit_gets_413(
        device: Any, digits_eval: DigitsEval) -> None:
    _agent, spy = device
    x = json.dumps(digits_eval.x[:1].tolist())
    big = '{"id": "two-mib", "instances": ' + x + " " * (2 * MIB) + "}"
    spy.send(f"{DEVICE}/infer/digits", big)
    r = spy.wait(f"{DEVICE}/results/digits", lambda d: d.get("id") == "two-mib", 30)
    assert len(r["predictions"]) == 1
    over = '{"id": "too-big", "instances": ' + x + " " * (4 * MIB) + "}"
    spy.send(f"{DEVICE}/infer/digits", over)
    r = spy.wait(f"{DEVICE}/results/digits", lambda d: d.get("code") == 413, 30)
    assert r["id"] is None and "max_payload_bytes" in r["error"]  # refused unparsed


# ---- item 11: a 5000-digit integer literal ---------------------------------------------

def test_a_5000_digit_literal_in_a_command_request_or_feedback_is_bad_input(
        device: Any, digits_eval: DigitsEval) -> None:
    _agent, spy = device
    spy.send(f"{DEVICE}/cmd/ping", '{"id": "big", "args": {"n": ' + BIG_INT + "}}")
    r = spy.wait(f"{DEVICE}/reply/ping")
    assert r["ok"] is False and r["error"]["type"] == "InvalidRequestError"
    assert "not JSON" in r["error"]["message"]
    spy.send(f"{DEVICE}/infer/digits", '{"id": "big", "version": ' + BIG_INT + "}")
    r = spy.wait(f"{DEVICE}/results/digits")
    assert r["code"] == 400 and "not JSON" in r["error"]
    spy.send(f"{DEVICE}/feedback", '[{"request_id": "a", "label": ' + BIG_INT + "}]")
    wait_for(lambda: any(e["data"]["topic"] == f"{DEVICE}/feedback"
                         for e in _bad_events(spy)), 15, "the feedback error event")
    ev = next(e for e in _bad_events(spy) if e["data"]["topic"] == f"{DEVICE}/feedback")
    assert ev["data"]["error"] == "InvalidRequestError"
    spy.send(f"{DEVICE}/cmd/ping", '{"id": "after"}')
    assert spy.wait(f"{DEVICE}/reply/ping", lambda d: d["id"] == "after")["ok"]


# ---- item 12: a flood of distinct bogus command names ---------------------------------

def test_500_distinct_bogus_commands_are_each_answered_with_a_bounded_number_of_events(
        device: Any) -> None:
    agent, spy = device
    n = 500
    for i in range(n):
        spy.c.publish(f"{DEVICE}/cmd/bogus-{i}", json.dumps({"id": f"c-{i}"}), qos=1)
    def answered() -> set[str]:
        with spy._lock:
            return {t for t, _p in spy.got if t.startswith(f"{DEVICE}/reply/bogus-")}
    wait_for(lambda: len(answered()) == n, 60, "a reply to every bogus command")
    for i in range(n):
        (r,) = spy.on(f"{DEVICE}/reply/bogus-{i}")
        assert r["id"] == f"c-{i}" and r["ok"] is False
        assert "unknown command" in r["error"]["message"] or "busy" in r["error"]["message"]
    time.sleep(1.0)  # let the event worker catch up
    events = _bad_events(spy)
    assert 1 <= len(events) <= 10  # per device and kind, not per topic
    client = agent.components[0].client
    assert client.rejected_incoming >= n and client.dropped_incoming == 0
    spy.send(f"{DEVICE}/cmd/ping", '{"id": "after"}')
    assert spy.wait(f"{DEVICE}/reply/ping", lambda d: d["id"] == "after")["ok"]


def test_the_error_event_table_is_bounded() -> None:
    from edge_agent.mqtt.error_events import RateLimit

    t = [0.0]
    limit = RateLimit(burst=2, per_s=60, max_keys=8, clock=lambda: t[0])
    allowed = sum(limit.allow(("dev1", f"kind-{i}")) for i in range(1000))
    assert allowed == 1000 and len(limit) == 8  # the table never grows past max_keys
    assert [limit.allow(("dev1", "k")) for _ in range(4)] == [True, True, False, False]
    assert limit.suppressed == 2
