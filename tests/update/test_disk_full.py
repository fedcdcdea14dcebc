"""Disk full (and read-only, failing) during an update: an outcome always, never a wedge.

Issue 19 item 6: the failure handler's own ``state.json`` write raised ENOSPC, the
in-memory phase stayed ``downloading`` and every later announcement was dropped as
"arrived while downloading" until a restart.

The black-box test puts the agent's whole store (update dir with staging and
``state.json``, the telemetry outbox, the model store) on a real 40 MiB tmpfs and fills
it while a signed release is being staged: the chunk write really fails with ENOSPC.
That needs ``mount`` (root or CAP_SYS_ADMIN); where it is not allowed, the test skips
and ``test_a_disk_error_while_staging_is_retried_by_the_same_agent_once_cleared``
injects the error with ``EDGE_UPDATE_FAULT=enospc@staging`` instead. The flow's failure
path is also driven with every ``state.json`` write failing (``enospc@state``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_crash import AgentProcess  # the real `edge-agent run` of the crash tests
from update_helpers import (
    DEVICE,
    Bundles,
    DeviceFactory,
    Fleet,
    PinnedDigits,
    assert_nothing_moved,
    signed_release,
)
from waiting import wait_for

from edge_agent.bundle import read_bundle
from edge_agent.hooks import AgentEvent, Hooks
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.outbox import Outbox
from edge_agent.mqtt.publisher import Publisher
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol import RETRIED_CODES, UpdateResult
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime
from edge_agent.store import ModelStore
from edge_agent.update import faults, policy
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import DISK_CODES
from edge_agent.update.flow import FlowDeps, UpdateFlow
from edge_agent.update.staging import Staging
from edge_agent.update.state import (
    MAX_BLOCKED,
    MAX_DONE_COMMANDS,
    MAX_REASON_CHARS,
    MAX_SETTLED,
    RESERVE_BYTES,
    Outcome,
    Phase,
    StateFile,
    UpdateState,
)
from edge_agent.update.wire import Announcement
from fleet.rollout_core import Outcome as RolloutOutcome
from fleet.rollout_core import Target
from fleet.rollout_observe import observe_event, observe_status

DISK_MB = 40  # above update.min_free_bytes (32 MiB): the free-space check passes at first
PAUSE_S = 1.5  # the agent pauses after staging chunk 1; the test fills the disk meanwhile


# --- a small real disk --------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A fresh tmpfs of ``size_mb`` MiB mounted on ``path`` (skips the test if mounting
    is not allowed here); unmounted at exit."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); the "
                    "EDGE_UPDATE_FAULT=enospc@… tests cover the same path")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until its filesystem is full (the kernel says ENOSPC); returns bytes."""
    n = 0
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 4096):
            block = bytes(size)
            while True:
                try:
                    n += f.write(block) or 0
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    assert os.statvfs(path.parent).f_bavail == 0
    return n


# --- observing the device over MQTT and REST --------------------------------------------


class Observer:
    """A real MQTT subscriber to the device's events and retained status."""

    def __init__(self, url: str) -> None:
        self.client = MqttClient(config=MqttConfig.from_url(url), client_id="disk-observer")
        self.topics = Topics(DEVICE)
        self.got: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client.connect(10)
        for t in (self.topics.events, self.topics.status):
            self.client.subscribe(t, self._on)

    def _on(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(ValueError):
            doc = json.loads(payload)
            with self._lock:
                self.got.append((time.time(), topic, doc))  # same host: the device's clock

    def events(self, kind: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, d) for t, topic, d in self.got
                    if topic == self.topics.events and d.get("kind") == kind and t >= since]

    def wait_event(self, kind: str, since: float, timeout_s: float,
                   match: Callable[[dict[str, Any]], bool] = lambda d: True
                   ) -> tuple[float, dict[str, Any]]:
        def found() -> tuple[float, dict[str, Any]] | None:
            hits = [(t, d) for t, d in self.events(kind, since) if match(d["data"])]
            return hits[0] if hits else None
        hit: tuple[float, dict[str, Any]] = wait_for(found, timeout_s, f"{kind} on MQTT")
        return hit

    def last_status(self) -> dict[str, Any]:
        with self._lock:
            docs = [d for _, topic, d in self.got if topic == self.topics.status]
        assert docs, "no status received"
        return docs[-1]

    def close(self) -> None:
        self.client.stop()


def serving(a: AgentProcess) -> int:
    models = {m["name"]: m["active"] for m in a.get("/v1/agent/status")["models"]}
    return int(models["digits"])


def predict(a: AgentProcess) -> int:
    """One REST predict; returns how many predictions came back (raises on an HTTP error)."""
    x = [[[[0.5]] * 8] * 8]
    req = urllib.request.Request(f"http://127.0.0.1:{a.port}/v1/models/digits:predict",
                                 json.dumps({"instances": x}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return len(json.loads(r.read())["predictions"])


def disk_view(store: Path) -> dict[str, Any]:
    """What a disk-full failure must not move: installed versions, ``active.json``, trusted
    metadata files (bytes)."""
    models = store / "models" / "digits"
    meta = store / "update" / "metadata"
    return {
        "installed": sorted(p.name for p in models.iterdir() if p.name != "active.json")
        if models.is_dir() else [],
        "active.json": (models / "active.json").read_bytes()
        if (models / "active.json").exists() else None,
        "trusted": {str(p.relative_to(meta)): p.read_bytes()
                    for p in sorted(meta.rglob("*.json")) if p.is_file()}
        if meta.is_dir() else {},
    }


@pytest.fixture
def agent_on_a_small_disk(tmp_path: Path, fleet: Fleet, bundles: Bundles,
                          mosquitto: Any) -> Iterator[AgentProcess]:
    with tmpfs(tmp_path / "store", DISK_MB):
        a = AgentProcess(tmp_path, fleet, bundles, mosquitto.url)
        try:
            yield a
        finally:
            a.stop()


# --- black box: a real full disk under a real agent ---------------------------------------


def test_a_disk_filling_up_while_staging_fails_with_disk_full_and_the_same_agent_commits_later(
        agent_on_a_small_disk: AgentProcess, fleet: Fleet, bundles: Bundles,
        mosquitto: Any) -> None:
    a = agent_on_a_small_disk
    a.start(fault=f"pause@chunk:1:{PAUSE_S}")
    assert a.proc is not None
    pid = a.proc.pid
    obs = Observer(mosquitto.url)
    try:
        assert serving(a) == 1
        before = disk_view(a.store)
        t0 = time.time()
        fleet.publish(bundles.v2)
        wait_for(lambda: (a.update_status().get("progress") or {}).get("chunks", 0) >= 1, 30,
                 "the first chunk staged")
        t_chunk = time.time()
        filled = fill(a.store / "filler")  # a runaway writer takes the rest of the disk
        t_full = time.time()
        assert t_full - t_chunk < PAUSE_S, "filled too late: the download may have finished"

        t_failed, failed = obs.wait_event("update.failed", t0, 30)
        d = failed["data"]
        assert (d["code"], d["name"], d["version"]) == ("disk_full", "digits", 2), d
        assert "No space left on device" in d["reason"] and "downloading" in d["reason"], d
        st = a.update_status()
        assert st["phase"] == "idle", st  # not wedged in "downloading"
        assert (st["last"]["result"], st["last"]["code"]) == ("failed", "disk_full"), st
        # the old model keeps serving; nothing installed; active.json as it was; the trusted
        # metadata is the validly signed v2 release it verified, nothing else
        assert serving(a) == 1 and predict(a) == 1
        after = disk_view(a.store)
        assert after["installed"] == before["installed"] == ["1"], after["installed"]
        # active.json: as it was, or (none before) pinned to what serves, v1, before staging
        assert after["active.json"] == (before["active.json"] or after["active.json"])
        assert json.loads(after["active.json"])["version"] == 1
        assert set(after["trusted"]) >= set(before["trusted"])
        assert {k: v for k, v in after["trusted"].items() if k in before["trusted"]
                and k not in ("timestamp.json", "snapshot.json", "targets.json")} == \
            {k: v for k, v in before["trusted"].items()
             if k not in ("timestamp.json", "snapshot.json", "targets.json")}
        assert not list((a.store / "update" / "staging").glob("*")), "staging not freed"
        # the retained status (live, not through the full outbox) carries the outcome
        wait_for(lambda: ((obs.last_status().get("update") or {}).get("last") or {})
                 .get("result") == "failed", 10, "the failure in the retained status")

        # still full: every retry fails for the disk, the worker stays idle between them
        t_retry, retry = obs.wait_event("update.failed", t_failed + 0.01, 30)
        assert retry["data"]["code"] in ("disk", "disk_full"), retry["data"]
        assert a.update_status()["phase"] in ("idle", "notified", "downloading")

        (a.store / "filler").unlink()  # space is back
        t_freed = time.time()
        t_done, _ = obs.wait_event("update.committed", t_freed, 60,
                                      lambda d: d.get("version") == 2)
        assert a.proc.poll() is None and a.proc.pid == pid, "the agent was restarted"
        assert serving(a) == 2 and predict(a) == 1
        assert disk_view(a.store)["installed"] == ["1", "2"]

        # and the next announcement is taken by the same process too
        t_v3 = time.time()
        fleet.publish(bundles.v3)
        obs.wait_event("update.committed", t_v3, 60, lambda d: d.get("version") == 3)
        assert a.proc.pid == pid and serving(a) == 3
        # the chunk-2 write hit ENOSPC when the pause after chunk 1 ended
        _, progress = obs.wait_event("update.progress", t0, 1, lambda d: d.get("chunks") == 1)
        t_enospc = progress["at"] + PAUSE_S
        print(f"\nfilled {filled / 2**20:.1f} MiB within {1000 * (t_full - t_chunk):.0f} ms "
              f"of chunk 1; ENOSPC → update.failed(disk_full) emitted "
              f"{1000 * (failed['at'] - t_enospc):.0f} ms, received on MQTT "
              f"{1000 * (t_failed - t_enospc):.0f} ms; next retry "
              f"{1000 * (t_retry - t_failed):.0f} ms later ({retry['data']['code']}); space "
              f"freed → v2 committed on MQTT {t_done - t_freed:.2f} s (incl. the {PAUSE_S} s "
              f"fault pause, backoff, probation); v3 committed "
              f"{time.time() - t_v3:.2f} s after publishing")
    finally:
        obs.close()


def test_a_disk_error_while_staging_is_retried_by_the_same_agent_once_cleared(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path with the error injected (runs where mounting a tmpfs is not allowed)."""
    dev = start_device()
    before = dev.snapshot()
    monkeypatch.setenv(faults.ENV, "enospc@staging")
    n = dev.mark()
    fleet.publish(bundles.v2)
    out = dev.outcome(n)
    assert (out.result, out.code, out.version) == ("failed", "disk_full", 2), out
    d = dev.events_of("update.failed")[0].data
    assert (d["code"], d["name"], d["version"]) == ("disk_full", "digits", 2), d
    assert "No space left on device" in d["reason"] and "staging" in d["reason"], d
    assert_nothing_moved(dev, before, accepted=signed_release(fleet.repo))
    assert dev.predict_version(_x()) == 1
    monkeypatch.delenv(faults.ENV)  # the disk is fine again: the retry path takes it
    wait_for(lambda: any(o.result == "committed" for o in dev.svc.outcomes[n:]), 30,
             "v2 committed by the retry")
    assert dev.serving() == 2 and dev.on_disk() == 2


def _x() -> Any:
    import numpy as np

    return np.full((1, 8, 8, 1), 0.5, np.float32)


# --- the flow's failure path with every state.json write failing (no broker) -------------


def _payload(target: str) -> bytes:
    return Announcement(target=target, files={"metadata/1.root.json": b"{}"},
                        chunks=True).to_bytes()


def _flow(tmp_path: Path) -> tuple[UpdateFlow, list[AgentEvent]]:
    hooks = Hooks()
    events: list[AgentEvent] = []
    hooks.on_event(events.append)
    store = ModelStore(tmp_path / "store")
    deps = FlowDeps(registry=ModelRegistry(select_runtime(), hooks), store=store, hooks=hooks,
                    identity=policy.DeviceIdentity(DEVICE, (), "generic-x86_64"),
                    config=UpdateConfig(root_file=tmp_path / "root.json"),
                    update_dir=tmp_path / "update")
    return UpdateFlow(deps, threading.Event()), events


@pytest.mark.parametrize(("fault", "code"), [("enospc", "disk_full"), ("eio", "io_error"),
                                             ("erofs", "read_only")])
def test_every_state_write_failing_still_ends_the_attempt_idle_with_an_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, code: str) -> None:
    # on disk: the stale "downloading" a failed write left behind, with its staged bytes
    sf = StateFile(tmp_path / "update" / "state.json")
    first = _payload("digits/2.tar")
    digest = hashlib.sha256(first).hexdigest()
    sha = "ab" * 32
    sf.store_announcement(digest, first)
    sf.save(UpdateState(phase=Phase.DOWNLOADING, announce_digest=digest, announce_topic="t",
                        target="digits/2.tar", target_sha256=sha, name="digits", version=2,
                        from_version=1))
    staging = Staging(tmp_path / "update" / "staging")
    staging.ensure()
    staging.part(sha).write_bytes(b"\1" * 4096)
    on_disk = sf.path.read_bytes()
    monkeypatch.setenv(faults.ENV, f"{fault}@state")

    flow, events = _flow(tmp_path)
    out = flow.resume()
    assert out is not None and (out.result, out.code) == ("failed", code), out
    assert flow.state.phase == Phase.IDLE and flow.status()["phase"] == "idle"
    assert "state.json not written" in flow.status()["state_error"]
    failed = [e for e in events if e.kind == "update.failed"]
    assert failed and failed[-1].data["code"] == code, events
    assert "state.json not written" in failed[-1].data["state_error"]
    assert sf.path.read_bytes() == on_disk, "a failed write must leave the previous file"
    # lack of space frees the staged download first; other disk errors keep it for resuming
    assert staging.part(sha).exists() == (code != "disk_full")

    # the next announcement is processed, not dropped as "arrived while downloading"
    second = _payload("digits/3.tar")
    out2 = flow.handle(second, "t")
    assert out2 is not None and (out2.result, out2.code) == ("failed", code), out2
    assert flow.state.phase == Phase.IDLE

    # the disk recovers: the state in memory reaches it first thing, and the flow runs again
    monkeypatch.delenv(faults.ENV)
    flow.handle(b"not an announcement", "t")  # rejected without a state change of its own
    saved = json.loads(sf.path.read_text())
    assert (saved["phase"], saved["last"]["result"], saved["last"]["code"]) == \
        ("idle", "failed", code), saved
    out3 = flow.handle(second, "t")
    assert out3 is not None and out3.result == "rejected", out3  # no root.json here
    assert flow.state.phase == Phase.IDLE
    saved = json.loads(sf.path.read_text())
    assert (saved["phase"], saved["last"]["result"]) == ("idle", "rejected"), saved
    assert "state_error" not in flow.status()


def _v2_swapped(tmp_path: Path, update_digits: PinnedDigits
                ) -> tuple[UpdateFlow, list[AgentEvent], ModelStore]:
    """A flow whose store holds digits v1 and v2, v2 active (the swap persisted)."""
    flow, events = _flow(tmp_path)
    store = flow.d.store
    for b in (update_digits.bundle, update_digits.bundle_v2):
        store.install(read_bundle(b))
    store.set_active("digits", 1)
    store.set_active("digits", 2)
    return flow, events, store


def test_a_probation_restart_that_cannot_be_recorded_rolls_back_instead_of_going_uncounted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_digits: PinnedDigits) -> None:
    flow, events, store = _v2_swapped(tmp_path, update_digits)  # then an orderly stop
    flow.state_file.save(UpdateState(phase=Phase.PROBATION, name="digits", version=2,
                                     from_version=1, clean_stop=True))
    flow.state = flow.state_file.load()
    monkeypatch.setenv(faults.ENV, "enospc@state")  # the crash count cannot be written
    out = flow.resume()
    assert out is not None and (out.result, out.code) == ("rolled_back", "disk_full"), out
    assert flow.state.phase == Phase.IDLE and "digits@2" in flow.state.blocked
    assert flow.d.registry.active_version("digits") == 1
    assert store.active_version("digits") == 1 and store.versions("digits") == [1]
    assert [e.data["code"] for e in events if e.kind == "update.rolled_back"] == ["disk_full"]


def _with_reason(reason: str) -> UpdateState:
    return UpdateState(last=Outcome(UpdateResult.FAILED, "transport", reason, at=1.0))


def test_a_state_write_on_a_full_disk_uses_the_reserve_and_a_failed_one_keeps_the_old_file(
        tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 1) as disk:
        sf = StateFile(disk / "update" / "state.json")
        sf.save(_with_reason("a"))
        assert sf.reserve.stat().st_size == RESERVE_BYTES
        fill(disk / "filler")
        with pytest.raises(OSError):  # starting a phase never spends the reserve
            sf.save(_with_reason("no"))
        assert sf.reserve.exists()
        b = _with_reason("b")
        sf.save(b, use_reserve=True)  # the end of an attempt: the reserve makes room
        assert UpdateState.from_json(sf.path.read_text()) == b
        assert not sf.reserve.exists()
        fill(disk / "filler2")  # the rest of what the reserve freed
        with pytest.raises(OSError) as err:
            sf.save(_with_reason("c"), use_reserve=True)
        assert err.value.errno == errno.ENOSPC
        assert UpdateState.from_json(sf.path.read_text()) == b, "the previous file is whole"
        assert sorted(p.name for p in sf.path.parent.iterdir()) == ["state.json"], \
            "a temp file was left behind"
        (disk / "filler").unlink()
        sf.save(_with_reason("d"))
        assert sf.reserve.stat().st_size == RESERVE_BYTES, "the reserve was not recreated"


def test_a_chunk_the_nearly_full_disk_takes_only_part_of_is_a_disk_error(tmp_path: Path
                                                                          ) -> None:
    with tmpfs(tmp_path / "disk", 1) as disk:
        staging = Staging(disk / "staging")
        fd = staging.open_part("ab" * 32, 1 << 16)
        try:
            fill(disk / "filler")
            with open(disk / "filler", "r+b") as f:  # two pages free: a short write
                f.truncate(f.seek(0, os.SEEK_END) - 8192)
            with pytest.raises(OSError) as err:
                staging.write_at(fd, 0, b"\1" * 16384)
            assert err.value.errno == errno.ENOSPC
        finally:
            os.close(fd)


def test_the_largest_state_json_fits_in_its_reserve() -> None:
    name = "m" * 64
    s = UpdateState(phase=Phase.PROBATION, announce_digest="a" * 64, announce_topic="t" * 200,
                    target="t" * 200, target_sha256="b" * 64, name=name, version=2**31,
                    from_version=2**31, phase_at=1e9, probation_until=1e9,
                    last=Outcome(UpdateResult.FAILED, "transport", "x" * 5000, name, 2**31,
                                 1e9),
                    blocked=tuple(f"{name}@{2**31 + i}" for i in range(MAX_BLOCKED)),
                    done_commands=tuple(f"{i:064x}" for i in range(MAX_DONE_COMMANDS)),
                    settled=tuple(f"{i:064x}" for i in range(MAX_SETTLED)))
    assert s.last is not None
    s = s.finish(s.last, block=f"{name}@1")
    assert len(s.last.reason if s.last else "") <= MAX_REASON_CHARS
    assert len(s.blocked) == MAX_BLOCKED
    assert len(s.to_json().encode()) < RESERVE_BYTES * 0.75, len(s.to_json())


# --- the outcome still reaches MQTT when the outbox's disk is full ----------------------


def test_an_event_the_full_outbox_cannot_store_goes_out_live(tmp_path: Path,
                                                            mosquitto: Any) -> None:
    with tmpfs(tmp_path / "disk", 1) as disk:
        outbox = Outbox(disk / "outbox.sqlite3")
        client = MqttClient(config=MqttConfig.from_url(mosquitto.url), client_id=DEVICE)
        obs = Observer(mosquitto.url)
        try:
            client.connect(10)
            pub = Publisher(Topics(DEVICE), outbox, client)
            stored = pub.event(AgentEvent("info", "update.notified", "before", {}))
            assert stored == 1
            fill(disk / "filler")
            seq = pub.event(AgentEvent("warning", "update.failed", "disk full",
                                       {"code": "disk_full", "name": "digits", "version": 2}))
            assert seq is None, "the full outbox stored it?"
            assert outbox.stats().depth == 1  # not stored
            _, doc = obs.wait_event("update.failed", 0.0, 10)
            assert doc["stored"] is False and doc["data"]["code"] == "disk_full"
            assert doc["seq"] == 1  # the latest number, not a new one
        finally:
            obs.close()
            client.stop()
            outbox.close()


# --- the fleet side: a disk failure is the device's trouble, not the release's ----------


@pytest.mark.parametrize("code", sorted(set(DISK_CODES.values()) | {"disk"}))
def test_a_rollout_does_not_count_a_devices_disk_failure_against_the_release(code: str
                                                                            ) -> None:
    assert code in RETRIED_CODES
    t = Target("digits", 2)
    o = observe_event("a", "update.failed", {"name": "digits", "version": 2, "code": code}, t)
    assert o is not None and o.outcome is None, o
    status = {"state": "online", "agent_version": "0", "models": [],
              "update": {"phase": "idle", "last": {"result": "failed", "code": code,
                                                   "reason": "full", "name": "digits",
                                                   "version": 2}}}
    assert observe_status("a", status, t).outcome is None
    status["update"]["last"]["result"] = "rolled_back"  # swapped, then refused: a failure
    assert observe_status("a", status, t).outcome == RolloutOutcome.FAILED


def test_a_rollback_whose_active_json_cannot_be_written_still_ends_serving_the_old_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_digits: PinnedDigits) -> None:
    flow, events, store = _v2_swapped(tmp_path, update_digits)
    flow.d.registry.load(store.load("digits", 2), activate=True, verify=False)
    flow.state_file.save(UpdateState(phase=Phase.PROBATION, name="digits", version=2,
                                     from_version=1))
    flow.state = flow.state_file.load()
    monkeypatch.setenv(faults.ENV, "enospc@active,enospc@state")
    out = flow.resume()  # a crash in probation: roll back, on a disk that refuses writes
    assert out is not None and out.result == "rolled_back", out
    assert flow.state.phase == Phase.IDLE and "digits@2" in flow.state.blocked
    assert flow.d.registry.active_version("digits") == 1
    assert store.versions("digits") == [1] and store.serving_version("digits") == 1
    rb = [e for e in events if e.kind == "update.rolled_back"]
    assert rb and "active.json not written" in rb[-1].data["active_error"], events
    # the disk recovers: the next restart finds nothing left to undo
    monkeypatch.delenv(faults.ENV)
    flow2, _ = _flow(tmp_path)
    flow2.resume()
    assert flow2.d.store.serving_version("digits") == 1
