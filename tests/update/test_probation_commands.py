"""Issue 19, items 1-2: probation that clients cannot game; signed commands that cannot be
replayed. The real agent (its real HTTP server, real Mosquitto, the real update flow)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
import uuid
from typing import Any

import numpy as np
from update_forge import announce
from update_helpers import DEVICE, ME, Bundles, DeviceFactory, Fleet
from waiting import wait_for

from edge_agent.protocol.kinds import UpdatePhase
from edge_agent.update.wire import Command, TargetSpec, announce_topic
from fleet.publish import rollback

TOPIC = announce_topic(DEVICE)


def _post(port: int, body: bytes, ctype: str = "application/json") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/models/digits:predict", body, {"Content-Type": ctype})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def _commit(dev: Any, fleet: Fleet, bundle: Any, version: int) -> None:
    n = dev.mark()
    fleet.publish(bundle)
    out = dev.outcome(n)
    assert (out.result, out.version) == ("committed", version), out


def test_malformed_requests_during_probation_neither_roll_back_nor_block_the_release(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory,
        x_digits: np.ndarray) -> None:
    """Before: two malformed requests → ``rolled_back … error rate 100%`` and v2 blocked."""
    dev = start_device(probation_s=4.0, probation_min_requests=2)
    assert dev.agent.http is not None
    port = dev.agent.http.address[1]
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.svc.flow is not None
    flow = dev.svc.flow
    wait_for(lambda: flow.state.phase == UpdatePhase.PROBATION, 20, "v2 on probation")
    good = json.dumps({"instances": x_digits[:1].tolist()}).encode()
    wrong_shape = json.dumps({"instances": [[[1.0, 2.0, 3.0]]]}).encode()
    overflow = json.dumps({"instances": np.full((1, 8, 8, 1), 1e39).tolist()}).encode()
    codes = []
    for _ in range(10):  # unauthenticated garbage, on the version under probation
        codes += [_post(port, wrong_shape), _post(port, overflow), _post(port, b"{not json"),
                  _post(port, b"\x00" * 7, "application/octet-stream")]
    assert set(codes) == {400}, codes
    assert dev.agent.registry.active_version("digits") == 2  # it really hit v2
    assert flow.monitor.window().refused >= 30
    assert {_post(port, good) for _ in range(3)} == {200}
    out = dev.outcome(n, timeout_s=30)
    assert (out.result, out.version) == ("committed", 2), out
    assert "client errors not counted" in out.reason
    assert dev.serving() == 2 and dev.on_disk() == 2
    assert flow.state.blocked == ()
    assert not dev.events_of("update.rolled_back")
    assert _post(port, good) == 200


def test_the_release_signs_how_much_evidence_probation_needs(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    """``--probation-min-requests`` travels signed; the device's config is only the floor."""
    from edge_agent.update.wire import ProbationTerms

    dev = start_device(probation_s=0.3, probation_min_requests=2)
    n = dev.mark()
    fleet.publish(bundles.v2, probation=ProbationTerms(min_requests=50, min_clients=3))
    out = dev.outcome(n)
    assert (out.result, out.version) == ("committed", 2), out
    ev = dev.events_of("update.probation")[-1]
    assert (ev.data["min_requests"], ev.data["min_clients"]) == (50, 3)
    spec = [tf.custom for p, tf in fleet.repo.targets().items() if p.endswith("digits-2.tar")]
    assert spec[0]["edge"]["probation"] == {"min_requests": 50, "min_clients": 3}


# --- signed commands ---------------------------------------------------------------------------


def _files(raw: bytes) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in json.loads(raw)["files"].items()}


def _sign_command(fleet: Fleet, cmd: Command) -> tuple[str, dict[str, bytes]]:
    """Sign ``cmd`` into the repository exactly as ``edge-fleet rollback`` does."""
    data = cmd.to_bytes()
    path = f"commands/{cmd.id}.json"
    fleet.repo.add_targets({path: (data, TargetSpec("command", ME))}, fleet.signers())
    files = fleet.repo.announce_files()
    files[f"targets/commands/{hashlib.sha256(data).hexdigest()}.{cmd.id}.json"] = data
    return path, files


def _unchanged(dev: Any, serving: int, versions: list[int]) -> None:
    assert dev.serving() == serving and dev.on_disk() == serving
    assert dev.agent.store.versions("digits") == versions
    assert dev.svc.flow.state.blocked == ()


def test_a_recorded_rollback_command_replayed_after_a_newer_release_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    _commit(dev, fleet, bundles.v2, 2)
    n = dev.mark()
    pub = rollback(fleet.repo, fleet.signers(), audience=ME, name="digits", to_version=None,
                   broker=fleet.broker_url)
    assert dev.outcome(n).result == "rolled_back" and dev.serving() == 1
    _commit(dev, fleet, bundles.v3, 3)
    assert pub.target not in fleet.repo.targets()  # the release dropped the command
    recorded = _files(pub.announcement)
    cmd_file = {k: v for k, v in recorded.items() if k.startswith("targets/")}
    before = dev.svc.flow.state.blocked
    for files in (recorded, {**fleet.repo.announce_files(), **cmd_file}):  # as is; re-wrapped
        n = dev.mark()
        announce(fleet.broker_url, TOPIC, pub.target, files)
        out = dev.outcome(n)
        assert out.result == "rejected", out
    assert dev.svc.flow.state.blocked == before == ("digits@2",)
    assert dev.serving() == 3 and dev.on_disk() == 3
    assert dev.agent.store.versions("digits") == [1, 3]


def test_an_expired_rollback_command_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    _commit(dev, fleet, bundles.v2, 2)
    cmd = Command("rollback", "digits", None, uuid.uuid4().hex, from_version=2,
                  expires_at=time.time() - 1)
    path, files = _sign_command(fleet, cmd)
    n = dev.mark()
    announce(fleet.broker_url, TOPIC, path, files)
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "command_expired"), out
    _unchanged(dev, 2, [1, 2])
    assert cmd.id not in dev.svc.flow.state.done_commands


def test_a_rollback_command_for_another_from_version_is_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    _commit(dev, fleet, bundles.v2, 2)
    _commit(dev, fleet, bundles.v3, 3)
    cmd = Command("rollback", "digits", None, uuid.uuid4().hex, from_version=2,
                  expires_at=time.time() + 3600)
    path, files = _sign_command(fleet, cmd)
    n = dev.mark()
    announce(fleet.broker_url, TOPIC, path, files)
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "command_version"), out
    assert "serves v3" in out.reason
    _unchanged(dev, 3, [1, 2, 3])


def test_a_rollback_command_carried_out_once_is_rejected_the_second_time(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    _commit(dev, fleet, bundles.v2, 2)
    _commit(dev, fleet, bundles.v3, 3)
    cmd = Command("rollback", "digits", 2, uuid.uuid4().hex, from_version=3,
                  expires_at=time.time() + 3600)
    path, files = _sign_command(fleet, cmd)
    n = dev.mark()
    announce(fleet.broker_url, TOPIC, path, files)
    assert dev.outcome(n).result == "rolled_back" and dev.serving() == 2
    blocked = dev.svc.flow.state.blocked
    n = dev.mark()  # the same command, re-signed into fresh metadata (a new digest)
    fleet.repo.refresh_timestamp(fleet.signers())
    files = {**files, **fleet.repo.announce_files()}
    announce(fleet.broker_url, TOPIC, path, files)
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "command_replayed"), out
    assert dev.serving() == 2 and dev.on_disk() == 2
    assert dev.svc.flow.state.blocked == blocked == ("digits@3",)
