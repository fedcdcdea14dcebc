"""Home Assistant MQTT discovery (``[homeassistant]``) against a real Mosquitto and a real
agent; an install press runs the signed update the fleet announced, never anything else.

The schema rules below are Home Assistant's documented ones (home-assistant.io,
integrations/mqtt "Device discovery payload", integrations/sensor.mqtt,
integrations/update.mqtt):

* a device-based discovery message goes to ``<prefix>/device/<object_id>/config``; its
  root must hold the ``device`` (``dev``) mapping, with ``identifiers`` (``ids``) or
  ``connections``, and the ``origin`` (``o``) mapping, with ``name``; the entities are
  under ``components`` (``cmps``), each with a ``platform`` (``p``) and, for entity
  components, a ``unique_id``; an empty retained payload removes them;
* ``availability`` is a list of mappings each with a ``topic`` (optional
  ``value_template``, ``payload_available`` default ``online``, ``payload_not_available``
  default ``offline``);
* a ``sensor`` requires ``state_topic``;
* an ``update`` entity reads ``state_topic`` (JSON with ``installed_version`` /
  ``latest_version``, optional ``in_progress``) and, to be installable, has a
  ``command_topic`` and the ``payload_install`` it sends there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from update_helpers import CHUNK, DEVICE, Bundles, DeviceFactory, Fleet, assert_nothing_moved
from waiting import wait_for

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.homeassistant.service import HomeAssistantService
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.kinds import EventKind, UpdateResult
from edge_agent.update.wire import ChunkPlan
from fleet.publish import Broker, publish_chunks

ROOT = Path(__file__).resolve().parents[2]
HA = {"homeassistant.enabled": True, "homeassistant.prefix": "homeassistant",
      "homeassistant.state_interval_s": 0.2, "telemetry.interval_s": 0.5}
TOPICS = Topics(DEVICE)
DISCOVERY = f"homeassistant/device/edge_{DEVICE}/config"
PLATFORMS = {"sensor", "update"}
_PATH = re.compile(r"^\{\{ value_json((?:\.[A-Za-z_][A-Za-z0-9_]*|\['[^']+'\])+)"
                   r"( \| tojson)? \}\}$")


class Retained:
    """Subscribe to topics and keep the latest payload of each (retained ones included)."""

    def __init__(self, url: str, *filters: str) -> None:
        self.last: dict[str, bytes] = {}
        self.client = MqttClient(config=MqttConfig.from_url(url),
                                 client_id=f"ha-test-{time.time_ns()}")
        for f in filters:
            self.client.subscribe(f, self._on, qos=1)
        self.client.connect()

    def _on(self, topic: str, payload: bytes) -> None:
        self.last[topic] = payload

    def doc(self, topic: str) -> Any:
        p = self.last.get(topic)
        return json.loads(p) if p else None

    def close(self) -> None:
        self.client.stop()


def render(template: str, payload: bytes) -> Any:
    """Home Assistant's ``value_json`` lookup for the only template form we publish:
    ``{{ value_json.a['b'].c }}`` (optionally ``| tojson``). Fails on anything else, and on
    a path the real payload does not have."""
    m = _PATH.match(template)
    assert m, f"template outside the tested form: {template!r}"
    v: Any = json.loads(payload)
    for key in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^']+)'\]", m.group(1)):
        name = key[0] or key[1]
        assert isinstance(v, dict) and name in v, f"{template}: no {name!r} in {v!r}"
        v = v[name]
    return json.dumps(v) if m.group(2) else v


def _predict(dev: Any, x: np.ndarray) -> None:
    dev.agent.registry.get("digits").predict(x, source="test")


def check_schema(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Home Assistant's documented rules (module docstring); returns the components."""
    dev, origin, cmps = doc.get("dev"), doc.get("o"), doc.get("cmps")
    assert isinstance(dev, dict) and (dev.get("ids") or dev.get("connections")), dev
    assert isinstance(origin, dict) and origin.get("name"), origin
    assert isinstance(cmps, dict) and cmps
    avail = doc.get("availability")
    assert isinstance(avail, list) and avail and all(isinstance(a, dict) and a.get("topic")
                                                     for a in avail), avail
    uids = [c.get("unique_id") for c in cmps.values()]
    assert all(isinstance(u, str) and u for u in uids) and len(set(uids)) == len(uids), uids
    for cid, c in cmps.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cid), cid
        assert c.get("p") in PLATFORMS, c
        if c["p"] == "sensor":
            assert isinstance(c.get("state_topic"), str) and c["state_topic"], c
        if c["p"] == "update":
            assert c.get("state_topic") and c.get("command_topic") and c.get("payload_install"), c
    return cmps


def test_homeassistant_discovery_follows_the_documented_schema_and_maps_our_topics(
        start_device: DeviceFactory, mosquitto: Any, x_digits: np.ndarray) -> None:
    dev = start_device(config=HA)
    seen = Retained(mosquitto.url, "homeassistant/#", TOPICS.status, TOPICS.telemetry,
                    TOPICS.ha_state)
    try:
        wait_for(lambda: seen.doc(DISCOVERY), 20, "the discovery document")
        _predict(dev, x_digits[:2])
        wait_for(lambda: "digits" in (seen.doc(TOPICS.telemetry) or {}).get("models", {})
                 and (seen.doc(TOPICS.ha_state) or {}).get("models", {}).get("digits", {})
                 .get("label") is not None, 20, "telemetry and ha/state after a prediction")
        doc = seen.doc(DISCOVERY)
        cmps = check_schema(doc)
        # every unique id is this device's (two devices never collide)
        assert all(c["unique_id"].startswith(f"edge_{DEVICE}_") for c in cmps.values())
        by_platform = sorted(c["p"] for c in cmps.values())
        assert by_platform.count("update") == 1 and by_platform.count("sensor") == 7
        # availability is our retained status, through its value_template
        (avail,) = doc["availability"]
        assert avail["topic"] == TOPICS.status
        assert render(avail["value_template"], seen.last[TOPICS.status]) \
            == avail["payload_available"] == "online"
        # every sensor's template resolves in the real payload of its topic
        for c in cmps.values():
            if c["p"] != "sensor":
                continue
            topic = c["state_topic"]
            assert topic in (TOPICS.telemetry, TOPICS.ha_state), topic
            value = render(c["value_template"], seen.last[topic])
            assert value is None or isinstance(value, (int, float, str)), (c, value)
        (upd,) = [c for c in cmps.values() if c["p"] == "update"]
        state = json.loads(render(upd["value_template"], seen.last[TOPICS.ha_state]))
        assert state["installed_version"] == state["latest_version"] == "1"
        assert state["in_progress"] is False
        assert upd["command_topic"] == TOPICS.ha_install
        assert json.loads(upd["payload_install"]) == {"model": "digits"}
    finally:
        seen.close()


def test_homeassistant_sensors_show_the_last_label_and_confidence(
        start_device: DeviceFactory, mosquitto: Any, x_digits: np.ndarray) -> None:
    dev = start_device(config=HA)
    seen = Retained(mosquitto.url, "homeassistant/#", TOPICS.ha_state)
    try:
        wait_for(lambda: seen.doc(DISCOVERY), 20, "discovery")
        served = dev.agent.registry.get("digits")
        want = served.predict(x_digits[3:4], source="test")
        assert want.top1 is not None and want.confidence is not None
        labels = served.manifest.labels
        label = labels[int(want.top1[0])] if labels else str(int(want.top1[0]))
        conf = round(float(want.confidence[0]), 4)
        wait_for(lambda: (seen.doc(TOPICS.ha_state) or {}).get("models", {})
                 .get("digits", {}).get("confidence") == conf, 10, "the prediction in ha/state")
        cmps = seen.doc(DISCOVERY)["cmps"]
        payload = seen.last[TOPICS.ha_state]
        assert render(cmps[f"edge_{DEVICE}_digits_label"]["value_template"], payload) == label
        assert render(cmps[f"edge_{DEVICE}_digits_confidence"]["value_template"],
                      payload) == conf
    finally:
        seen.close()


class _NoChunks(Broker):
    """Fault injection: the fleet's chunk publishes are lost (the announcement is not)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        if "/blobs/" not in topic:
            super().publish(topic, payload, retain=retain)


def _press(url: str, payload: bytes) -> None:
    b = Broker(url)
    try:
        b.publish(TOPICS.ha_install, payload, retain=False)
        b.flush(10.0)
    finally:
        b.close()


def test_homeassistant_install_press_runs_the_announced_signed_update(
        start_device: DeviceFactory, fleet: Fleet, bundles: Bundles, mosquitto: Any) -> None:
    # the announcement arrives but its chunks do not: the update fails in transport and
    # waits out an hour's backoff
    dev = start_device(config=HA, retry_backoff_s=3600.0, stall_timeout_s=1.5)
    before = dev.snapshot()
    seen = Retained(mosquitto.url, TOPICS.ha_state)
    mark = dev.mark()
    pub = fleet.publish(bundles.v2, connect=_NoChunks)
    assert dev.outcome(mark, 30).result == UpdateResult.FAILED
    assert dev.serving() == 1
    ha = next(c for c in dev.agent.components if isinstance(c, HomeAssistantService))
    wait_for(lambda: (seen.doc(TOPICS.ha_state) or {}).get("models", {}).get("digits", {})
             .get("update", {}).get("latest_version") == "2", 10,
             "the update entity offering v2")
    # the chunks come (retained) — nothing happens before the press: the backoff holds
    data = tar_bytes(read_bundle(bundles.v2))
    b = Broker(mosquitto.url)
    try:
        publish_chunks(b, data, ChunkPlan.for_data(data, CHUNK), pub.sha256)
        b.flush(30.0)
    finally:
        b.close()
    time.sleep(1.0)
    assert dev.mark() == mark + 1 and dev.serving() == 1
    # Home Assistant's install press: the signed update runs now and commits
    _press(mosquitto.url, json.dumps({"model": "digits"}).encode())
    out = dev.outcome(mark + 1, 60)
    assert out.result == UpdateResult.COMMITTED and dev.serving() == 2
    assert ha.presses == 1
    assert dev.events_of(EventKind.UPDATE_VERIFIED)  # through the signed path
    wait_for(lambda: seen.doc(TOPICS.ha_state)["models"]["digits"]["update"]
             == {"installed_version": "2", "latest_version": "2", "in_progress": False,
                 "title": "digits"}, 10, "the update entity up to date")
    assert before.serving == 1
    seen.close()


def test_homeassistant_install_press_with_nothing_announced_is_refused_and_moves_nothing(
        start_device: DeviceFactory, mosquitto: Any) -> None:
    dev = start_device(config=HA)
    ha = next(c for c in dev.agent.components if isinstance(c, HomeAssistantService))
    before = dev.snapshot()
    # The press topic is not retained: press only once the agent is subscribed. Its discovery
    # document is published after its subscriptions on the same connection, so seeing it
    # means the broker holds the subscription (the CI flake: a press sent before that).
    seen = Retained(mosquitto.url, "homeassistant/#")
    wait_for(lambda: seen.doc(DISCOVERY), 20, "the discovery document")
    seen.close()
    _press(mosquitto.url, json.dumps({"model": "digits"}).encode())
    ev = wait_for(lambda: [e for e in dev.events_of(EventKind.UPDATE_REJECTED)
                           if e.data.get("code") == "nothing_announced"], 10,
                  "an update.rejected event")
    assert "the fleet has announced no update" in ev[0].message
    _press(mosquitto.url, b'{"model": "../../etc", "url": "http://evil/x.tar"}')
    wait_for(lambda: [e for e in dev.events_of(EventKind.UPDATE_REJECTED)
                      if e.data.get("code") == "bad_press"], 10, "the bad press refused")
    _press(mosquitto.url, json.dumps({"model": "digits", "pad": "x" * 300}).encode())
    wait_for(lambda: [e for e in dev.events_of(EventKind.MQTT_BAD_MESSAGE)
                      if TOPICS.ha_install in e.message], 10, "the oversized press refused")
    time.sleep(0.5)
    assert ha.presses == 2  # the oversized one never reached the handler
    assert_nothing_moved(dev, before)
    assert dev.svc.idle()


def test_homeassistant_remove_publishes_empty_retained_configs(
        start_device: DeviceFactory, mosquitto: Any, tmp_path: Path) -> None:
    dev = start_device(config=HA)
    seen = Retained(mosquitto.url, "homeassistant/#", TOPICS.ha_state)
    wait_for(lambda: seen.doc(DISCOVERY) and seen.doc(TOPICS.ha_state), 20, "discovery")
    seen.close()
    dev.agent.stop()  # uninstall: the service is stopped first
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\ndevice_id = "{DEVICE}"\n[mqtt]\nurl = "{mosquitto.url}"\n'
                   '[homeassistant]\nenabled = true\n')
    p = subprocess.run([sys.executable, "-m", "edge_agent.cli", "homeassistant-remove",
                        "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert DISCOVERY in p.stdout
    after = Retained(mosquitto.url, "homeassistant/#", TOPICS.ha_state, TOPICS.status)
    try:
        wait_for(lambda: TOPICS.status in after.last, 10, "the retained status (still there)")
        time.sleep(0.3)
        assert DISCOVERY not in after.last and TOPICS.ha_state not in after.last
    finally:
        after.close()
