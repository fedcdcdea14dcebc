"""The broker ACL of docs/fleet.md on a real Mosquitto: a device reads only its own and its
groups' topics and writes only its own; a real agent still updates under it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import SimFactory
from fleet_helpers import Workstation, wait_for

from edge_agent.errors import BadInputError
from edge_agent.mqtt import MqttClient, MqttConfig
from edge_agent.update.wire import Audience
from fleet.acl import mosquitto_acl
from fleet.publish import publish

PASSWORDS = {"fleet-admin": "admin-pw", "dev-a": "a-pw", "dev-b": "b-pw", "acl-1": "one-pw"}
INVENTORY = {"dev-a": ["line-1"], "dev-b": ["line-2"], "acl-1": ["line-1"]}


def test_the_acl_has_one_pattern_pair_and_a_block_per_group_member() -> None:
    text = mosquitto_acl(INVENTORY)
    assert "pattern readwrite edge/%u/#" in text and "pattern read edge/blobs/#" in text
    assert "user dev-b\ntopic read edge/group/line-2/#" in text
    assert "user fleet-admin\ntopic readwrite edge/#" in text
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
        # The subscription is live once our own message comes back through it.
        mark = f"edge/{user}/reply/ready"
        wait_for(lambda: self.send(mark) or mark in self.topics(), 10, f"{user} subscribed")

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
    admin, a, b = (Client(acl_broker, u) for u in ("fleet-admin", "dev-a", "dev-b"))
    try:
        for t in ("edge/dev-a/cmd/ping", "edge/dev-b/cmd/ping", "edge/dev-b/update/announce",
                  "edge/group/line-1/update/announce", "edge/group/line-2/update/announce",
                  "edge/blobs/abc/0", "edge/dev-a/cmd/done", "edge/dev-b/cmd/done"):
            admin.send(t)
        # dev-a tries to speak for dev-b, forge its announcement, write to a group and to
        # the chunks; then writes its own event (the barrier: same connection, in order).
        for t in ("edge/dev-b/status", "edge/dev-b/events", "edge/dev-b/update/announce",
                  "edge/group/line-1/update/announce", "edge/blobs/abc/1",
                  "edge/dev-a/events"):
            a.send(t)
        wait_for(lambda: "edge/dev-a/cmd/done" in a.topics()
                 and "edge/dev-b/cmd/done" in b.topics()
                 and "edge/dev-a/events" in admin.topics()
                 and "edge/dev-a/events" in a.topics(), 10, "the barrier messages")

        assert a.topics() == {"edge/dev-a/cmd/ping", "edge/group/line-1/update/announce",
                              "edge/blobs/abc/0", "edge/dev-a/cmd/done", "edge/dev-a/events",
                              "edge/dev-a/reply/ready"}
        assert b.topics() == {"edge/dev-b/cmd/ping", "edge/dev-b/update/announce",
                              "edge/group/line-2/update/announce", "edge/blobs/abc/0",
                              "edge/dev-b/cmd/done", "edge/dev-b/reply/ready"}
        # None of dev-a's forgeries reached anyone; its own event did.
        assert not {"edge/dev-b/status", "edge/dev-b/events", "edge/blobs/abc/1"} \
            & (admin.topics() | b.topics())
        for c in (admin, b):
            assert c.senders("edge/dev-b/update/announce") == {"fleet-admin"}
            assert "dev-a" not in c.senders("edge/group/line-1/update/announce")
        assert admin.senders("edge/dev-a/events") == {"dev-a"}
    finally:
        for c in (admin, a, b):
            c.c.stop()


def test_a_real_agent_updates_under_the_acl(acl_broker: Any, start_sim: SimFactory,
                                            workstation: Workstation, digits: Any) -> None:
    sim = start_sim(["acl-1"], groups=("line-1",),
                    extra={"mqtt.username": "acl-1", "mqtt.password": PASSWORDS["acl-1"]})
    admin_url = acl_broker.url.replace("mqtt://", "mqtt://fleet-admin:admin-pw@")
    watcher = Client(acl_broker, "fleet-admin")
    try:
        publish(workstation.repo, Path(digits.bundle_v2), workstation.signers(),
                audience=Audience(groups=("line-1",)), broker_url=admin_url, chunk_size=16384)
        wait_for(lambda: sim.active_versions("digits") == {"acl-1": 2}, 30, "v2 committed")
        wait_for(lambda: {"edge/acl-1/status", "edge/acl-1/events"} <= watcher.topics(), 10,
                 "the device's status and events")
        agent = sim.devices["acl-1"].agent
        assert not [e for e in agent.events if e.kind == "mqtt.publish_refused"]
    finally:
        watcher.c.stop()
