"""The broker ACL of docs/fleet.md on a real Mosquitto: a device reads only its own and its
groups' topics and writes only its own; a real agent still updates under it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import SimFactory, Workstation
from waiting import wait_for

from edge_agent.errors import BadInputError
from edge_agent.mqtt import MqttClient, MqttConfig
from edge_agent.update.wire import Audience
from fleet.acl import mosquitto_acl
from fleet.publish import publish

PASSWORDS = {"fleet-ops": "ops-pw", "dev-a": "a-pw", "dev-b": "b-pw", "acl-1": "one-pw"}
INVENTORY = {"dev-a": ["line-1"], "dev-b": ["line-2"], "acl-1": ["line-1"]}


def test_the_acl_has_fleet_wide_patterns_and_a_block_per_group_member() -> None:
    text = mosquitto_acl(INVENTORY)
    assert "pattern write edge/%u/#" in text and "pattern read  edge/blobs/#" in text
    assert "pattern read  edge/%u/update/announce" in text
    assert "user dev-b\ntopic read edge/group/line-2/#" in text
    assert "user fleet-ops\ntopic read  edge/+/status" in text
    assert "topic write edge/group/+/update/announce" in text
    with pytest.raises(BadInputError, match="device id"):
        mosquitto_acl({"a/#": ["g"]})
    with pytest.raises(BadInputError, match="group"):
        mosquitto_acl({"a": ["+"]})


@pytest.fixture
def acl_broker(mosquitto: Any, tmp_path: Path) -> Any:
    """The per-test Mosquitto, restarted with passwords and the generated ACL."""
    pw = tmp_path / "passwd"
    for i, (user, secret) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(pw), user,
                        secret], check=True, capture_output=True)
    acl = tmp_path / "acl"
    acl.write_text(mosquitto_acl(INVENTORY))
    mosquitto.stop()
    conf = mosquitto.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
    # (tests/conftest.py already runs mosquitto as root when we are root)
    mosquitto.conf.write_text(conf + f"password_file {pw}\nacl_file {acl}\n")
    mosquitto.start()
    return mosquitto


class Client:
    def __init__(self, broker: Any, user: str) -> None:
        cfg = MqttConfig.from_url(broker.url, username=user, password=PASSWORDS[user])
        self.user = user
        self.got: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.c = MqttClient(config=cfg, client_id=user)
        self.c.subscribe("edge/#", self._on)
        self.c.connect(10)
        if user != "fleet-ops":  # live once our own command comes back through it
            mark = f"edge/{user}/cmd/ready"
            wait_for(lambda: self.send(mark) or mark in self.topics(), 10,
                     f"{user} subscribed")

    def _on(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.got.append((topic, payload))

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.got}

    def senders(self, topic: str) -> set[str]:
        with self._lock:
            return {p.decode() for t, p in self.got if t == topic}

    def send(self, topic: str) -> None:
        assert self.c.publish(topic, self.user.encode(), qos=1)


def test_a_device_cannot_read_or_write_another_devices_topics(acl_broker: Any) -> None:
    a, b = Client(acl_broker, "dev-a"), Client(acl_broker, "dev-b")
    ops = Client(acl_broker, "fleet-ops")
    try:
        wait_for(lambda: a.send("edge/dev-a/status") or "edge/dev-a/status" in ops.topics(),
                 10, "the operator's subscription")
        for t in ("edge/dev-a/cmd/ping", "edge/dev-b/cmd/ping", "edge/dev-b/update/announce",
                  "edge/group/line-1/update/announce", "edge/group/line-2/update/announce",
                  "edge/blobs/abc/0", "edge/dev-a/cmd/done", "edge/dev-b/cmd/done"):
            ops.send(t)
        # dev-a tries to speak for dev-b, forge its announcement, write to a group and to
        # the chunks; then writes its own event (the barrier: same connection, in order).
        for t in ("edge/dev-b/status", "edge/dev-b/events", "edge/dev-b/update/announce",
                  "edge/group/line-1/update/announce", "edge/blobs/abc/1",
                  "edge/dev-a/events"):
            a.send(t)
        wait_for(lambda: "edge/dev-a/cmd/done" in a.topics()
                 and "edge/dev-b/cmd/done" in b.topics()
                 and "edge/dev-a/events" in ops.topics(), 10, "the barrier messages")

        # Each device read only its own commands and announcement, its group, the chunks
        # (not even its own events: devices read what is addressed to them).
        assert a.topics() == {"edge/dev-a/cmd/ready", "edge/dev-a/cmd/ping",
                              "edge/group/line-1/update/announce", "edge/blobs/abc/0",
                              "edge/dev-a/cmd/done"}
        assert b.topics() == {"edge/dev-b/cmd/ready", "edge/dev-b/cmd/ping",
                              "edge/dev-b/update/announce", "edge/group/line-2/update/announce",
                              "edge/blobs/abc/0", "edge/dev-b/cmd/done"}
        # None of dev-a's forgeries reached anyone; its own status and event did.
        assert not {"edge/dev-b/status", "edge/dev-b/events"} & ops.topics()
        assert b.senders("edge/dev-b/update/announce") == {"fleet-ops"}
        assert b.senders("edge/blobs/abc/0") == {"fleet-ops"}
        assert "edge/blobs/abc/1" not in a.topics() | b.topics()
        assert a.senders("edge/group/line-1/update/announce") == {"fleet-ops"}
        assert ops.senders("edge/dev-a/events") == {"dev-a"}
    finally:
        for c in (ops, a, b):
            c.c.stop()


def test_a_real_agent_updates_under_the_acl(acl_broker: Any, start_sim: SimFactory,
                                            workstation: Workstation, digits: Any) -> None:
    sim = start_sim(["acl-1"], groups=("line-1",),
                    extra={"mqtt.username": "acl-1", "mqtt.password": PASSWORDS["acl-1"]})
    admin_url = acl_broker.url.replace("mqtt://", "mqtt://fleet-ops:ops-pw@")
    watcher = Client(acl_broker, "fleet-ops")
    try:
        publish(workstation.repo, Path(digits.bundle_v2), workstation.signers(),
                audience=Audience(groups=("line-1",)), broker=admin_url, chunk_size=16384)
        wait_for(lambda: sim.active_versions("digits") == {"acl-1": 2}, 30, "v2 committed")
        wait_for(lambda: {"edge/acl-1/status", "edge/acl-1/events"} <= watcher.topics(), 10,
                 "the device's status and events")
        agent = sim.devices["acl-1"].agent
        assert not [e for e in agent.events if e.kind == "mqtt.publish_refused"]
        # ... and the operator's tools work under it: status and a rollout's discovery.
        from fleet.status import collect

        def rows() -> list[tuple[str, str]]:
            return [(r.device, r.update) for r in collect(MqttConfig.from_url(admin_url), 0.3)]
        wait_for(lambda: rows() == [("acl-1", "committed digits v2")], 20,
                 "edge-fleet status to show the commit")
    finally:
        watcher.c.stop()
