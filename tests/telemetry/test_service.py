"""The telemetry component against a real Mosquitto: birth, telemetry, events, commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telemetry_helpers import Recorder, create, make_agent
from waiting import wait_for

import edge_agent
from edge_agent.errors import ConfigError
from edge_agent.telemetry.service import TelemetryService


@pytest.fixture
def digits_agent(tmp_path: Path, mosquitto, digits):
    agent = make_agent(tmp_path, mosquitto.url, bundles=[digits.bundle])
    svc = create(agent)
    assert isinstance(svc, TelemetryService)
    yield agent, svc
    svc.stop()


def test_no_broker_configured_means_no_component(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, "")
    assert agent.config.mqtt is None and create(agent) is None


def test_bad_telemetry_section_is_refused_at_load_naming_the_file_and_key(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"test-agent.toml: telemetry.interval_s"):
        make_agent(tmp_path, "mqtt://127.0.0.1:1", telemetry={"interval_s": "fast"})


def test_birth_is_retained_and_describes_the_device(digits_agent, recorder: Recorder) -> None:
    agent, svc = digits_agent
    svc.start()
    birth = recorder.wait("/dev-1/status", lambda d: d["state"] == "online")
    assert birth["schema"] == 1 and birth["device"] == "dev-1" and isinstance(birth["seq"], int)
    assert birth["agent_version"] == edge_agent.__version__
    assert birth["profile"] == "generic-x86_64"
    assert birth["runtime"] == {"name": agent.runtime.name, "version": agent.runtime.version}
    [m] = birth["models"]
    assert m["name"] == "digits" and m["active"] == 1
    assert m["versions"][0]["sha256"] == agent.registry.get("digits").manifest.model_sha256
    assert {"telemetry", "cmd:ping", "feedback", "drift"} <= set(birth["capabilities"])
    # a late subscriber still sees it: retained
    late = Recorder(recorder.client.config.url, "edge/+/status", "late")
    try:
        assert late.wait("/status")["state"] == "online"
    finally:
        late.close()


def test_models_changing_republishes_the_birth(digits_agent, recorder: Recorder, digits) -> None:
    from edge_agent.bundle import read_bundle
    agent, svc = digits_agent
    svc.start()
    recorder.wait("/status", lambda d: d["state"] == "online")
    agent.registry.load(read_bundle(digits.bundle_v2))
    recorder.wait("/status", lambda d: d["models"][0]["active"] == 2)


def test_telemetry_reports_system_and_model_figures(digits_agent, recorder: Recorder,
                                                    digits) -> None:
    agent, svc = digits_agent
    svc.start()
    x = np.load(digits.eval_npz)["x"][:16]
    for _ in range(5):
        agent.registry.get("digits").predict(x, source="test")
    with pytest.raises(Exception):  # noqa: B017 - any rejection counts as an error
        agent.registry.get("digits").predict(np.zeros((1, 3, 3, 1), np.float32))
    # the 6 requests may straddle a telemetry interval: add the windows up
    def windows() -> list[dict]:
        return [d["models"]["digits"] for d in recorder.on("/telemetry")
                if d["models"].get("digits", {}).get("requests")]

    wait_for(lambda: sum(m["requests"] for m in windows()) >= 6, 30, "6 requests reported")
    t = recorder.on("/telemetry")[-1]
    s = t["system"]
    for key in ("cpu_percent", "load", "rss_bytes", "mem_available_bytes", "disk_free_bytes"):
        assert s[key] is not None, key
    assert s["rss_bytes"] > 10 << 20 and s["disk_free_bytes"] > 0
    ms = windows()
    assert sum(m["requests"] for m in ms) == 6 and sum(m["errors"] for m in ms) == 1
    assert sum(m["samples"] for m in ms) == 80
    for m in ms:
        lat = m["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert m["requests_per_s"] > 0
    assert ms[-1]["quality"]["samples"] == 80  # a rolling window: all 80 by the last one
    assert abs(sum(ms[-1]["quality"]["class_hist"]) - 1) < 1e-3
    assert t["uptime_s"] > 0 and t["queue"]["outbox"] >= 0 and t["queue"]["requests"] == 0
    assert t["mqtt"]["refused_subscriptions"] == {} and t["mqtt"]["connects"] >= 1


def test_sequence_numbers_are_strictly_increasing_across_topics(digits_agent,
                                                               recorder: Recorder) -> None:
    agent, svc = digits_agent
    svc.start()
    for i in range(5):
        agent.hooks.emit_event("info", "test.event", f"event {i}")
    wait_for(lambda: len(recorder.on("/telemetry")) >= 5 and len(recorder.on("/events")) >= 5)
    durable = sorted((d["seq"] for t, d in recorder.messages
                      if t.endswith(("/telemetry", "/events"))))
    assert durable == list(range(durable[0], durable[0] + len(durable)))  # no gap, no repeat


def test_every_agent_event_is_forwarded(digits_agent, recorder: Recorder) -> None:
    agent, svc = digits_agent
    svc.start()
    agent.hooks.emit_event("error", "model.load_failed", "v3 did not verify", model="digits",
                           version=3)
    ev = recorder.wait("/events", lambda d: d["kind"] == "model.load_failed")
    assert ev["level"] == "error" and ev["message"] == "v3 did not verify"
    assert ev["data"] == {"model": "digits", "version": 3}


def _cmd(recorder: Recorder, name: str, payload: Any = None) -> dict[str, Any]:
    n = len(recorder.on(f"/reply/{name}"))
    raw = payload if isinstance(payload, (bytes, str)) else json.dumps(payload or {})
    recorder.send(f"edge/dev-1/cmd/{name}", raw)
    wait_for(lambda: len(recorder.on(f"/reply/{name}")) > n, what=f"reply to {name}")
    reply: dict[str, Any] = recorder.on(f"/reply/{name}")[-1]
    return reply


def test_commands_ping_models_config_reload(tmp_path: Path, mosquitto, digits,
                                            recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url, bundles=[digits.bundle], username="dev-1",
                       password="hunter2")
    svc = create(agent)
    assert svc is not None
    svc.start()
    try:
        _check_commands(agent, recorder)
    finally:
        svc.stop()


def _check_commands(agent: Any, recorder: Recorder) -> None:
    recorder.wait("/status")
    r = _cmd(recorder, "ping", {"id": "op-1"})
    assert r["ok"] and r["id"] == "op-1" and r["result"]["pong"] is True
    r = _cmd(recorder, "models")
    assert r["ok"] and r["result"][0]["name"] == "digits"
    r = _cmd(recorder, "config")
    assert r["ok"] and r["result"]["mqtt"]["password"] == "***"
    assert "hunter2" not in json.dumps(r)
    r = _cmd(recorder, "reload")
    assert r["ok"] and agent.reloads == 1 and r["result"]["models"][0]["name"] == "digits"


@pytest.mark.parametrize("name", ["install", "rollback", "shutdown"])
def test_unknown_commands_get_an_error_reply_and_change_nothing(digits_agent, recorder,
                                                                name: str) -> None:
    agent, svc = digits_agent
    svc.start()
    recorder.wait("/status")
    before = agent.registry.snapshot()
    r = _cmd(recorder, name, {"args": {"version": 1}})
    assert not r["ok"] and "unknown command" in r["error"]["message"]
    assert "signed update path" in r["error"]["message"]
    assert agent.registry.snapshot() == before and agent.reloads == 0
    assert _cmd(recorder, "ping")["ok"]


def test_mqtt5_response_topic_and_correlation_data_are_honoured(digits_agent, mosquitto) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    _agent, svc = digits_agent
    svc.start()
    got: list[paho.MQTTMessage] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="op", protocol=paho.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(m)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    try:
        c.subscribe("ops/replies/1", qos=1)
        wait_for(lambda: svc.client.is_connected)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "ops/replies/1"
        props.CorrelationData = b"corr-7"
        import time
        time.sleep(0.3)
        c.publish("edge/dev-1/cmd/ping", b"{}", qos=1, properties=props)
        wait_for(lambda: got, what="the reply on the response topic")
        assert json.loads(got[0].payload)["result"]["pong"] is True
        assert got[0].properties.CorrelationData == b"corr-7"
    finally:
        c.loop_stop()
        c.disconnect()


def test_clean_stop_sets_status_offline(digits_agent, recorder: Recorder) -> None:
    _agent, svc = digits_agent
    svc.start()
    recorder.wait("/status", lambda d: d["state"] == "online")
    svc.stop()
    off = recorder.wait("/status", lambda d: d["state"] == "offline")
    assert off["reason"] == "shutdown"


def test_works_with_the_embedded_demo_broker_over_mqtt311(tmp_path: Path) -> None:
    from telemetry_helpers import free_port

    from edge_agent.mqtt.embedded import start_embedded_broker

    broker = start_embedded_broker("127.0.0.1", free_port())
    agent = make_agent(tmp_path, broker.url)
    svc = create(agent)
    assert svc is not None
    rec = Recorder(broker.url)
    try:
        svc.start()
        assert rec.wait("/status", lambda d: d["state"] == "online", 15)["mqtt_protocol"] \
            == "3.1.1"
        rec.wait("/telemetry")
        assert _cmd(rec, "ping")["ok"]
    finally:
        svc.stop()
        rec.close()
        broker.stop()
