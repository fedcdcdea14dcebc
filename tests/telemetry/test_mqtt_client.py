"""MqttClient against a real Mosquitto (and amqtt for the MQTT 3.1.1 fallback)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from telemetry_helpers import free_port
from waiting import wait_for as _wait

from edge_agent.errors import ConfigError
from edge_agent.mqtt import MqttClient, MqttConfig, Will
from edge_agent.mqtt.client import check_filter
from edge_agent.mqtt.embedded import start_embedded_broker


def _client(url: str, cid: str, **kw) -> MqttClient:
    cfg = MqttConfig.from_url(url, reconnect_min_s=0.05, reconnect_max_s=0.5, keepalive_s=5)
    return MqttClient(config=cfg, client_id=cid, **kw)


def test_roundtrip_over_mqtt5_with_ack(mosquitto) -> None:
    c = _client(mosquitto.url, "dev-a")
    got: list[tuple[str, bytes]] = []
    c.subscribe("edge/dev-a/#", lambda t, p: got.append((t, p)))
    c.connect(5)
    try:
        assert c.protocol == "5"
        acks: list[int] = []
        assert c.publish("edge/dev-a/x", b"hello", on_ack=acks.append)
        _wait(lambda: got and acks)
        assert got == [("edge/dev-a/x", b"hello")] and acks == [0]  # 0: delivered to a subscriber
    finally:
        c.stop()


def test_falls_back_to_mqtt311_on_amqtt() -> None:
    broker = start_embedded_broker("127.0.0.1", free_port())
    c = _client(broker.url, "dev-b")
    got: list[bytes] = []
    c.subscribe("t/#", lambda _t, p: got.append(p))
    try:
        c.connect(10)
        assert c.protocol == "3.1.1"
        assert c.publish("t/1", b"x")
        _wait(lambda: got == [b"x"])
    finally:
        c.stop()
        broker.stop()


def test_resubscribes_after_broker_restart(mosquitto) -> None:
    c = _client(mosquitto.url, "dev-c")
    got: list[bytes] = []
    ups: list[int] = []
    c.subscribe("r/#", lambda _t, p: got.append(p))
    c.add_listener(on_connect=lambda: ups.append(1))
    c.connect(5)
    try:
        mosquitto.stop()
        _wait(lambda: not c.is_connected)
        assert not c.publish("r/1", b"lost")  # refused while down, not silently queued
        mosquitto.start()
        assert c.wait_connected(10)
        _wait(lambda: len(ups) == 2)
        other = _client(mosquitto.url, "other")
        other.connect(5)
        other.publish("r/1", b"after")
        _wait(lambda: got == [b"after"])
        other.stop()
    finally:
        c.stop()


def test_last_will_on_abrupt_loss_and_farewell_on_clean_stop(mosquitto) -> None:
    watcher = _client(mosquitto.url, "watcher")
    seen: list[bytes] = []
    watcher.subscribe("s/dev-d", lambda _t, p: seen.append(p))
    watcher.connect(5)
    c = _client(mosquitto.url, "dev-d", will=Will("s/dev-d", b"lost"),
                farewell=Will("s/dev-d", b"bye"))
    c.connect(5)
    c.publish("s/dev-d", b"up", retain=True)
    _wait(lambda: seen == [b"up"])
    c.stop()
    _wait(lambda: seen == [b"up", b"bye"])
    time.sleep(0.3)
    assert seen == [b"up", b"bye"]  # clean stop: the will is not published
    c2 = _client(mosquitto.url, "dev-d", will=lambda: Will("s/dev-d", b"lost"))
    c2.connect(5)
    # kill the socket under it: the broker sees a broken connection and fires the will
    with c2._lock:
        sock = c2._paho.socket()  # type: ignore[union-attr]
    c2._stop.set()  # no reconnect
    sock.close()
    _wait(lambda: seen[-1:] == [b"lost"])
    c2.stop()
    watcher.stop()


def test_handler_exceptions_and_big_payloads_are_reported_not_fatal(mosquitto) -> None:
    errors: list[tuple[str, str]] = []
    c = _client(mosquitto.url, "dev-e",
                on_handler_error=lambda t, e: errors.append((t, type(e).__name__)))
    ok: list[bytes] = []

    def handler(_t: str, p: bytes) -> None:
        if p == b"boom":
            raise ValueError("boom")
        ok.append(p)

    c.subscribe("h/#", handler, max_bytes=1024)
    c.connect(5)
    try:
        c.publish("h/1", b"boom")
        c.publish("h/1", b"x" * 2048)
        c.publish("h/1", b"fine")
        _wait(lambda: ok == [b"fine"])
        assert errors == [("h/1", "ValueError"), ("h/1", "InvalidRequestError")]
        assert c.is_connected
    finally:
        c.stop()


def test_slow_handler_does_not_block_the_network_thread(mosquitto) -> None:
    release = threading.Event()
    c = _client(mosquitto.url, "dev-f")
    c.subscribe("slow", lambda _t, _p: release.wait(5))
    c.connect(5)
    try:
        c.publish("slow", b"1")
        time.sleep(0.2)
        acks: list[int] = []
        c.publish("other", b"2", on_ack=acks.append)
        _wait(lambda: acks and acks[0] < 0x80, 3)  # acked while the handler is still blocked
    finally:
        release.set()
        c.stop()


@pytest.mark.parametrize("raw, key", [
    ({"url": "http://x"}, "mqtt.url"),
    ({"url": "mqtt://x/path"}, "mqtt.url"),
    ({"url": "mqtt://x", "ca_file": "/nonexistent"}, "mqtt.ca_file"),
    ({"url": "mqtts://x", "ca_file": "/nonexistent"}, "mqtt.ca_file"),
    ({"url": "mqtts://x", "cert_file": __file__}, "mqtt.key_file"),
    ({"url": "mqtt://x", "password": "p"}, "mqtt.password"),
    ({"url": "mqtt://x", "keepalive_s": "30"}, "mqtt.keepalive_s"),
    ({"url": "mqtt://x", "protocol": "4"}, "mqtt.protocol"),
    ({"url": "mqtt://x", "topic_prefix": "a/b"}, "mqtt.topic_prefix"),
    ({"url": "mqtt://x", "bogus": 1}, "mqtt.bogus"),
    ({}, "mqtt.url"),
])
def test_config_errors_name_the_key(raw, key) -> None:
    with pytest.raises(ConfigError) as ei:
        MqttConfig.from_section(raw, "agent.toml")
    assert ei.value.key == key and "agent.toml" in str(ei.value)


def test_config_url_defaults_and_credentials() -> None:
    c = MqttConfig.from_section({"url": "mqtts://u%40x:p%3Aw@broker"}, "f")
    assert (c.host, c.port, c.tls, c.username, c.password) == ("broker", 8883, True, "u@x", "p:w")
    assert "p:w" not in repr(c) and c.url == "mqtts://broker:8883"
    assert MqttConfig.from_url("mqtt://h").port == 1883


@pytest.mark.parametrize("f", ["a/#/b", "a/b#", "a/+b", ""])
def test_bad_filters_are_refused(f: str) -> None:
    with pytest.raises(ValueError):
        check_filter(f)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_subacks_are_tracked_and_a_refused_subscription_is_reported(
        mosquitto, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    """The broker lets anonymous clients subscribe to ok/# only (Mosquitto's dynamic
    security plugin: the ACL file checks only at delivery): wait_subscribed() says when a
    subscription is live, and a refused one is logged and listed instead of silently deaf."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    if not plugin.exists():
        pytest.fail(f"{plugin} is missing: apt-get install mosquitto")
    dynsec = mosquitto.conf.parent / "dynsec.json"
    dynsec.write_text(json.dumps({
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
        "clients": [], "anonymousGroup": "anon",
        "groups": [{"groupname": "anon", "roles": [{"rolename": "ok-reader"}]}],
        "roles": [{"rolename": "ok-reader", "acls": [
            {"acltype": "subscribePattern", "topic": "ok/#", "priority": 0, "allow": True}]}],
    }))
    mosquitto.stop()
    mosquitto.conf.write_text(mosquitto.conf.read_text()
                              + f"plugin {plugin}\nplugin_opt_config_file {dynsec}\n")
    mosquitto.start()
    cfg = MqttConfig.from_url(mosquitto.url, reconnect_min_s=0.05, reconnect_max_s=0.5,
                              keepalive_s=5, protocol=protocol)
    c = MqttClient(config=cfg, client_id=f"acl-{protocol}")
    c.subscribe("ok/early", lambda _t, _p: None)  # renewed on CONNACK
    c.connect(5)
    try:
        assert c.protocol == protocol
        assert c.wait_subscribed("ok/early", 5)
        c.subscribe("ok/late/#", lambda _t, _p: None)  # sent on the live connection
        c.subscribe("secret/#", lambda _t, _p: None)
        assert c.wait_subscribed(["ok/early", "ok/late/#"], 5)
        t0 = time.monotonic()
        assert not c.wait_subscribed(["ok/late/#", "secret/#"], 5)
        assert time.monotonic() - t0 < 4  # a refusal answers at once, not at the timeout
        assert list(c.refused_subscriptions) == ["secret/#"]
        _wait(lambda: any("refused the subscription to secret/#" in r.getMessage()
                          for r in caplog.records), 5, "the refusal logged")
        ups = c.connects
        mosquitto.stop()
        mosquitto.start()
        _wait(lambda: c.connects > ups, 15, "reconnected")
        assert c.wait_subscribed(["ok/early", "ok/late/#"], 5)  # renewed, acked again
        assert not c.wait_subscribed("secret/#", 5)
    finally:
        c.stop()
