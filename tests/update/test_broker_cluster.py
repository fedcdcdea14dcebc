"""Fleets beyond one broker (issue 18): a real two-node ejabberd cluster, MQTT 3.1.1.

* A real ``edge-agent run`` with ``[mqtt] brokers = [node A, node B]`` serves on node A;
  node A is SIGKILLed; the agent fails over to node B (a fresh birth there), a signed
  update published through node B commits, and ``edge-fleet status --protocol 3.1.1``
  on node B sees the device online with the new version — nothing installed twice.
* A Last Will fired by node A (the agent SIGKILLed) reaches a fleet tool on node B.
* The same agent forced to MQTT 3.1.1 against Mosquitto: birth, a request over MQTT from a
  3.1.1 application (``reply_to`` in the payload), telemetry, a signed update, and the Last
  Will when it is SIGKILLed.

The cluster fixture (:mod:`ejabberd_cluster`) starts both nodes on loopback with their own
ports, data dirs, cookie and epmd, and stops them by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ejabberd_cluster
import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from update_agentproc import ROOT, AgentProcess
from update_helpers import DEVICE, Bundles, Fleet
from waiting import wait_for

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol import Status

pytestmark = pytest.mark.slow


class StatusWatch:
    """``edge/<device>/status`` as a fleet tool on one broker sees it (3.1.1 or 5)."""

    def __init__(self, url: str, protocol: str = "auto") -> None:
        self.docs: list[tuple[float, Status]] = []
        self._lock = threading.Lock()
        cfg = MqttConfig.from_url(url, protocol=protocol, keepalive_s=5,
                                  reconnect_min_s=0.05, reconnect_max_s=0.5)
        self.client = MqttClient(config=cfg, client_id=f"status-watch-{time.time_ns()}")
        self.client.subscribe(Topics(DEVICE).status, self._on)
        self.client.connect(10)

    def _on(self, _topic: str, payload: bytes) -> None:
        st = Status.parse(payload)
        with self._lock:
            self.docs.append((time.monotonic(), st))

    def wait(self, state: str, after: float = 0.0, timeout_s: float = 30.0) -> float:
        """When (monotonic) a status with ``state`` arrived after ``after``."""
        found: list[float] = []

        def check() -> bool:
            with self._lock:
                found[:] = [t for t, s in self.docs if t > after and str(s.state) == state]
            return bool(found)
        wait_for(check, timeout_s, f"status {state!r}")
        return found[0]

    def close(self) -> None:
        self.client.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ejabberd_cluster.Cluster]:
    if not ejabberd_cluster.installed():
        pytest.fail("ejabberd is not installed (apt-get install ejabberd); "
                    "scripts/setup.sh installs it")
    c = ejabberd_cluster.Cluster(tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def serves(a: AgentProcess) -> int | None:
    assert len(a.predict(np.full((1, 8, 8, 1), 0.5, np.float32))["predictions"]) == 1
    return a.serving()


def fleet_status(url: str, *extra: str) -> list[dict[str, Any]]:
    """``edge-fleet status --json`` as an operator runs it (a real process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "fleet.cli", "status", "--broker", url,
                          "--json", "--duration", "2", *extra],
                         cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


@pytest.mark.serial
def test_agent_fails_over_to_the_second_cluster_node_and_an_update_through_it_commits(
        tmp_path: Path, fleet: Fleet, bundles: Bundles,
        cluster: ejabberd_cluster.Cluster) -> None:
    (tmp_path / "device").mkdir()
    a = AgentProcess(tmp_path / "device", fleet, bundles, cluster.urls,
                     mqtt={"reconnect_min_s": 0.2}, probation_min_requests=1)
    on_b = StatusWatch(cluster.b.url, protocol="3.1.1")  # the fleet tools sit on node B
    try:
        a.start()
        assert serves(a) == 1
        on_b.wait("online")  # the birth on node A reached node B (routed by the cluster)
        assert f"connected to {cluster.a.address}" in a.log.read_text()
        before = a.installed()

        killed = time.monotonic()
        cluster.a.kill()
        back = on_b.wait("online", after=killed, timeout_s=30)
        failover_s = back - killed
        print(f"\nnode A SIGKILLed -> agent's birth on node B after {failover_s:.2f} s")
        assert f"connected to {cluster.b.address}" in a.log.read_text()
        assert failover_s < 15, failover_s
        assert a.installed() == before and serves(a) == 1  # nothing moved in the failover

        # a signed update, published (chunks + announcement) through node B
        fleet_b = replace(fleet, broker_url=cluster.b.url)
        t0 = time.monotonic()
        fleet_b.publish(bundles.v2)
        wait_for(lambda: serves(a) == 2, 60, "v2 to serve after the failover")
        wait_for(lambda: a.update_status()["phase"] == "idle" and a.on_disk() == 2, 30,
                 "v2 committed (probation over)")
        print(f"v2 published on node B -> serving {time.monotonic() - t0:.2f} s")
        assert a.installed() == (*before, "2") or a.installed() == ("1", "2"), a.installed()

        rows = {r["device"]: r for r in fleet_status(cluster.b.url, "--protocol", "3.1.1")}
        assert rows[DEVICE]["online"] is True
        assert "2" in rows[DEVICE]["models"], rows[DEVICE]
    finally:
        on_b.close()
        a.stop()


def test_a_last_will_fired_by_node_a_reaches_a_fleet_tool_on_node_b(
        tmp_path: Path, fleet: Fleet, bundles: Bundles,
        cluster: ejabberd_cluster.Cluster) -> None:
    (tmp_path / "device").mkdir()
    a = AgentProcess(tmp_path / "device", fleet, bundles, cluster.urls)
    on_b = StatusWatch(cluster.b.url)
    try:
        a.start()
        on_b.wait("online")
        assert f"connected to {cluster.a.address}" in a.log.read_text()
        killed = time.monotonic()
        os.kill(a.pid, signal.SIGKILL)
        assert a.proc is not None
        a.proc.wait(10)
        on_b.wait("offline", after=killed, timeout_s=30)  # node A's Will, routed to B
    finally:
        on_b.close()
        a.stop()


def _mqtt311(url: str, cid: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv311)
    c.connect(urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 1883, 10)
    c.loop_start()
    return c


def test_an_agent_speaking_mqtt_3_1_1_gets_a_signed_update_and_its_last_will_fires(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any) -> None:
    (tmp_path / "device").mkdir()
    a = AgentProcess(tmp_path / "device", fleet, bundles, mosquitto.url,
                     mqtt={"protocol": "3.1.1"}, telemetry={"interval_s": 0.5},
                     probation_min_requests=1)
    watch = StatusWatch(mosquitto.url, protocol="3.1.1")
    app = _mqtt311(mosquitto.url, "app-311")  # an application that only speaks 3.1.1
    got: dict[str, list[bytes]] = {}
    app.on_message = lambda _c, _u, m: got.setdefault(m.topic, []).append(bytes(m.payload))
    app.subscribe([("replies/app-311", 1), (Topics(DEVICE).telemetry, 1)])
    try:
        a.start()
        watch.wait("online")
        assert "(MQTT 3.1.1)" in a.log.read_text()
        assert serves(a) == 1
        # a request over MQTT 3.1.1: no response topic, reply_to in the payload
        req = {"id": "r-1", "instances": np.full((1, 8, 8, 1), 0.5).tolist(),
               "reply_to": "replies/app-311"}
        app.publish(Topics(DEVICE).infer("digits"), json.dumps(req), qos=1)
        wait_for(lambda: got.get("replies/app-311"), 20, "the reply over MQTT 3.1.1")
        reply = json.loads(got["replies/app-311"][0])
        assert reply["id"] == "r-1" and reply["version"] == 1 and len(reply["predictions"]) == 1
        wait_for(lambda: got.get(Topics(DEVICE).telemetry), 20, "telemetry over MQTT 3.1.1")
        fleet.publish(bundles.v2)
        wait_for(lambda: serves(a) == 2, 60, "v2 to serve over MQTT 3.1.1")
        wait_for(lambda: a.update_status()["phase"] == "idle" and a.on_disk() == 2, 30,
                 "v2 committed (probation over)")
        assert a.installed() == ("1", "2"), a.installed()
        killed = time.monotonic()
        assert a.proc is not None
        os.kill(a.pid, signal.SIGKILL)
        a.proc.wait(10)
        watch.wait("offline", after=killed, timeout_s=30)  # the broker sent the Last Will
    finally:
        app.loop_stop()
        app.disconnect()
        watch.close()
        a.stop()
