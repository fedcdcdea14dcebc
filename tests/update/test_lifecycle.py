"""Probation, rollback, key rotation, retention, mirrors and outages, with the real agent."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from update_forge import announce, evil_http_server, forge_release
from update_helpers import CHUNK, DEVICE, GROUP, ME, Bundles, DeviceFactory, Fleet
from waiting import wait_for

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.errors import InvalidRequestError
from edge_agent.update.wire import Audience, Command, TargetSpec, announce_topic
from fleet.publish import rollback, sign_bundle
from fleet.serve import RepoServer

TOPIC = announce_topic(DEVICE)


def commit(dev: Any, fleet: Fleet, bundle: Path, version: int, **kw: Any) -> None:
    n = dev.mark()
    fleet.publish(bundle, **kw)
    out = dev.outcome(n)
    assert (out.result, out.version) == ("committed", version), out


def test_errors_during_probation_roll_back_automatically(
        fleet: Fleet, bundles: Bundles, wide_v3: Path, start_device: DeviceFactory,
        x_digits: np.ndarray) -> None:
    """v3 loads and passes its golden vectors, but every 8x8 request now fails."""
    dev = start_device(probation_s=20.0, probation_min_requests=10)
    failures: list[str] = []
    served: list[int] = []
    stop = threading.Event()

    def client() -> None:  # an in-process source feeding fixed-size tensors (camera, MQTT)
        while not stop.is_set():
            try:
                served.append(dev.predict_version(x_digits[:1]))
            except InvalidRequestError as e:
                failures.append(str(e))
            time.sleep(0.002)

    t = threading.Thread(target=client)
    t.start()
    try:
        wait_for(lambda: len(served) > 20, 10, "baseline traffic on v1")
        n = dev.mark()
        fleet.publish(wide_v3)
        out = dev.outcome(n, timeout_s=40)
    finally:
        stop.set()
        t.join()
    assert (out.result, out.code) == ("rolled_back", "probation"), out
    assert "error rate 100%" in out.reason
    assert failures and all("expected shape [batch, 16, 16, 1]" in f for f in failures)
    assert dev.serving() == 1 and dev.on_disk() == 1
    assert dev.agent.store.versions("digits") == [1]
    ev = dev.events_of("update.rolled_back")[-1]
    assert ev.level == "error" and ev.data["restored"] == 1 and "error rate" in ev.data["reason"]
    assert served[-1] == 1
    n = dev.mark()
    fleet.publish(wide_v3)  # re-signed and re-announced: still never installed again
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "bundle") and "rolled back" in out.reason


def test_key_rotation_is_followed_and_old_keys_are_rejected(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    commit(dev, fleet, bundles.v2, 2)
    k, roots = fleet.keys, fleet.signers("root-a", "root-b")
    fleet.repo.rotate("timestamp", add=[k["timestamp-2"].public],
                      remove=[k["timestamp"].public.keyid], signers=roots)
    fleet.repo.rotate("targets", add=[k["targets-c"].public],
                      remove=[k["targets-b"].public.keyid], signers=roots)
    commit(dev, fleet, bundles.v3, 3,
           signers=["targets-a", "targets-c", "snapshot", "timestamp-2"])
    assert dev.trusted()["root"] == 3
    before = dev.trusted()
    v4 = sign_bundle.__globals__["read_bundle"](bundles.v4)  # only for its tar below
    from edge_agent.bundle import tar_bytes
    from edge_agent.update.wire import ChunkPlan

    data = tar_bytes(v4)
    target = ("models/digits/digits-4.tar", data,
              TargetSpec("model", ME, "digits", 4, ("generic-x86_64",),
                         ChunkPlan.for_data(data, CHUNK)))
    n = dev.mark()  # the old timestamp key
    announce(fleet.broker_url, TOPIC, target[0], forge_release(
        fleet.repo, target=target, targets_by=fleet.signers("targets-a", "targets-c"),
        snapshot_by=fleet.signers("snapshot"), timestamp_by=fleet.signers("timestamp")))
    out = dev.outcome(n)
    assert (out.code, out.result) == ("untrusted", "rejected")
    assert "timestamp was signed by 0/1 keys" in out.reason
    assert dev.trusted() == before
    n = dev.mark()  # the old targets key, with the current online keys
    announce(fleet.broker_url, TOPIC, target[0], forge_release(
        fleet.repo, target=target, targets_by=fleet.signers("targets-a", "targets-b"),
        snapshot_by=fleet.signers("snapshot"), timestamp_by=fleet.signers("timestamp-2"),
        bump=2))
    out = dev.outcome(n)
    assert out.code == "untrusted" and "targets was signed by 1/2 keys" in out.reason
    assert dev.trusted()["targets"] == before["targets"] and dev.trusted()["root"] == 3
    assert dev.serving() == 3 and dev.on_disk() == 3


def test_signed_rollback_command_restores_the_previous_version(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device()
    commit(dev, fleet, bundles.v2, 2)
    n = dev.mark()
    pub = rollback(fleet.repo, fleet.signers(), audience=ME, name="digits", to_version=None,
                   broker=fleet.broker_url)
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rolled_back", "command"), out
    assert dev.serving() == 1 and dev.on_disk() == 1
    assert dev.events_of("update.rollback_command")
    n = dev.mark()  # the same signed command, re-wrapped: carried out once only
    announce(fleet.broker_url, TOPIC, pub.target, json.loads(pub.announcement)["files"]
             and _files(pub.announcement))
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "command_replayed"), out
    assert dev.serving() == 1 and dev.on_disk() == 1
    n = dev.mark()  # v2 is not re-installed by the next release
    fleet.publish(bundles.v2)
    assert dev.outcome(n).code == "bundle" and dev.serving() == 1


def _files(raw: bytes) -> dict[str, bytes]:
    import base64

    return {k: base64.b64decode(v) for k, v in json.loads(raw)["files"].items()}


def test_unsigned_rollback_command_is_rejected(fleet: Fleet, bundles: Bundles,
                                               start_device: DeviceFactory) -> None:
    dev = start_device()
    commit(dev, fleet, bundles.v2, 2)
    before, n = dev.trusted(), dev.mark()
    cmd = Command("rollback", "digits", 1, uuid.uuid4().hex)
    data = cmd.to_bytes()
    path = f"commands/{cmd.id}.json"
    files = forge_release(fleet.repo, target=(path, data, TargetSpec("command", ME)),
                          targets_by=fleet.signers("rogue"), snapshot_by=[], timestamp_by=[])
    files[f"targets/commands/{hashlib.sha256(data).hexdigest()}.{cmd.id}.json"] = data
    announce(fleet.broker_url, TOPIC, path, files)
    out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "untrusted") and "signed by 0/1" in out.reason
    assert dev.serving() == 2 and dev.on_disk() == 2 and dev.trusted() == before


def test_only_the_last_versions_are_kept(fleet: Fleet, bundles: Bundles,
                                         start_device: DeviceFactory) -> None:
    dev = start_device(keep_versions=2)
    for b, v in ((bundles.v2, 2), (bundles.v3, 3), (bundles.v4, 4)):
        commit(dev, fleet, b, v)
    assert dev.agent.store.versions("digits") == [3, 4]
    assert dev.agent.store.previous_version("digits") == 3


def test_group_announcement_and_http_mirror(fleet: Fleet, bundles: Bundles,
                                           start_device: DeviceFactory) -> None:
    dev = start_device()
    srv = RepoServer(fleet.repo.path, port=0).start()
    try:
        commit(dev, fleet, bundles.v2, 2, audience=Audience((), (GROUP,)),
               http_url=srv.url, mqtt_chunks=False)
    finally:
        srv.stop()
    ev = dev.events_of("update.downloaded")[-1]
    assert ev.data["sources"] == ["http"]
    assert dev.events_of("update.notified")[-1].data["topic"] == \
        f"edge/group/{GROUP}/update/announce"


def test_truncated_http_download_fails_then_resumes_where_it_stopped(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    dev = start_device(retry_backoff_s=1.0)
    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="truncate") as (url, mode):
        path, signed, _ = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                      chunk_size=CHUNK, mirrors=(url,))  # signed: usable
        assert signed == data
        n = dev.mark()
        announce(fleet.broker_url, TOPIC, path, fleet.repo.announce_files(), mirrors=(url,))
        out = dev.outcome(n)
        assert (out.result, out.code) == ("failed", "transport"), out
        assert "truncated" in out.reason and dev.serving() == 1 and dev.on_disk() == 1
        mode["mode"] = "ok"  # the mirror recovers; the retry continues from staging
        out = dev.outcome(n + 1)
    assert (out.result, out.version) == ("committed", 3), out
    ev = dev.events_of("update.downloaded")[-1]
    assert ev.data["resumed_chunks"] >= 2
    assert ev.data["resumed_chunks"] + ev.data["written_chunks"] == -(-len(data) // CHUNK)


def test_broker_restart_mid_download_resumes_without_starting_over(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory, mosquitto: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_UPDATE_FAULT", "pause@chunk:2:3.0")  # broker restarts meanwhile
    dev = start_device(chunk_window=1)
    client = dev.svc.deps.client
    assert client is not None
    connects = client.connects
    n = dev.mark()
    pub = fleet.publish(bundles.v2)
    assert pub.chunks >= 5
    wait_for(lambda: dev.svc.flow and dev.svc.flow.progress.get("chunks") == 2, 10,
             "2 chunks received")
    mosquitto.stop()
    time.sleep(0.5)
    mosquitto.start()
    out = dev.outcome(n, timeout_s=40)
    assert (out.result, out.version) == ("committed", 2), out
    assert client.connects > connects  # it really reconnected
    ev = dev.events_of("update.downloaded")[-1]
    assert ev.data["written_chunks"] == pub.chunks  # every chunk written exactly once
    assert dev.serving() == 2


def test_swap_under_rest_load_fails_no_request(fleet: Fleet, bundles: Bundles,
                                               start_device: DeviceFactory,
                                               x_digits: np.ndarray) -> None:
    dev = start_device()
    assert dev.agent.http is not None
    host, port = dev.agent.http.address
    body = json.dumps({"instances": x_digits[:1].tolist()}).encode()
    codes: list[int] = []
    stop = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        while not stop.is_set():
            conn.request("POST", "/v1/models/digits:predict", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            codes.append(r.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(codes) > 30, 10, "load on v1")
        commit(dev, fleet, bundles.v2, 2)
        seen = len(codes)
        wait_for(lambda: len(codes) > seen + 30, 10, "load on v2")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(codes) == {200}, {c: codes.count(c) for c in set(codes)}


def test_mirrors_outside_the_allowlist_are_never_contacted(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    """The announcement is untrusted: it must not make the device fetch arbitrary URLs."""
    dev = start_device(mirror_allowlist=["https://updates.example/"])
    path, data, _ = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                chunk_size=CHUNK)
    with evil_http_server(data, mode="ok") as (url, state):
        hits: list[str] = []
        state["hook"] = hits
        n = dev.mark()
        announce(fleet.broker_url, TOPIC, path, fleet.repo.announce_files(), mirrors=(url,))
        out = dev.outcome(n)
    assert (out.result, out.code) == ("rejected", "announcement"), out
    assert "no usable source" in out.reason and url in out.reason and hits == []
    assert dev.events_of("update.downloading")[-1].data["ignored_mirrors"] == [url]
    assert dev.serving() == 1
