"""Issue 19 item 3: a dripping mirror cannot wedge the update worker.

Black-box where the item is: a real ``edge-agent run`` process, a real Mosquitto, and a
real HTTP server that sends a valid response head and then the real, validly signed
bundle one byte every ``DRIP_S`` — under the agent's per-read timeout, so no single read
ever times out. The deadline configuration used (and quoted by the figures these tests
print) is ``download_timeout_s = 3``, ``http_timeout_s = 2``.

The agent's own view comes from its ``edge/<device>/events`` (real MQTT), its REST
status, and its store and trust directories on disk. Pure cores (deadline, mirror
choice, backoff) and the MQTT and metadata paths are tested in-process below.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from update_agentproc import AgentProcess
from update_forge import announce, chunk_payloads, evil_http_server
from update_helpers import (
    CHUNK,
    DEVICE,
    GROUP,
    ME,
    TRUSTED_FILE,
    Bundles,
    DeviceFactory,
    Fleet,
    assert_nothing_moved,
    signed_release,
)
from waiting import wait_for

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.deadline import Deadline
from edge_agent.mqtt import MqttClient, MqttConfig
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.messages import Event
from edge_agent.update.errors import DownloadDeadlineError
from edge_agent.update.mirrors import MirrorChoice, allowed
from edge_agent.update.retry import RetryBook, backoff_s
from edge_agent.update.wire import Audience, announce_topic, chunk_topic
from fleet.publish import Broker, sign_bundle

DEADLINE_S = 3.0  # update.download_timeout_s
PER_READ_S = 2.0  # update.http_timeout_s
DRIP_S = 0.5  # one byte per DRIP_S: every single read succeeds well within PER_READ_S
SLACK_S = 1.5  # scheduling on 2 shared cores
TOPIC = announce_topic(DEVICE)


# --- the device as a process, seen from outside -------------------------------------------


class DeviceEvents:
    """The agent's ``edge/<device>/events``, as a fleet tool sees them."""

    def __init__(self, broker_url: str) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        cfg = MqttConfig.from_url(broker_url, reconnect_min_s=0.05, reconnect_max_s=0.5,
                                  keepalive_s=5)
        self.client = MqttClient(config=cfg, client_id="deadline-test-events")
        self.client.subscribe(Topics(DEVICE).events, self._on)
        self.client.connect(10)

    def _on(self, _topic: str, payload: bytes) -> None:
        ev = Event.parse(payload)
        with self._lock:
            self.events.append(ev)

    def wait(self, kind: str, pred: Callable[[Event], bool] = lambda _e: True,
             timeout_s: float = 30.0) -> Event:
        found: list[Event] = []

        def check() -> bool:
            with self._lock:
                found[:] = [e for e in self.events if e.kind == kind and pred(e)]
            return bool(found)
        wait_for(check, timeout_s, f"event {kind}")
        return found[0]

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def close(self) -> None:
        self.client.stop()


@pytest.fixture
def events(mosquitto: Any) -> Iterator[DeviceEvents]:
    ev = DeviceEvents(mosquitto.url)
    yield ev
    ev.close()


@pytest.fixture
def agent(tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any
          ) -> Iterator[Callable[..., AgentProcess]]:
    procs: list[AgentProcess] = []

    def make(**update: Any) -> AgentProcess:
        a = AgentProcess(tmp_path / "device", fleet, bundles, mosquitto.url,
                         download_timeout_s=DEADLINE_S, http_timeout_s=PER_READ_S,
                         **update)
        procs.append(a)
        return a
    (tmp_path / "device").mkdir()
    yield make
    for a in procs:
        a.stop()


def serves(a: AgentProcess) -> int | None:
    """The active digits version, after a real prediction over REST succeeded."""
    assert len(a.predict(np.full((1, 8, 8, 1), 0.5, np.float32))["predictions"]) == 1
    return a.serving()


# --- (a) a dripping signed mirror is abandoned at the deadline; the next update runs -------


@pytest.mark.serial
def test_a_dripping_mirror_is_abandoned_at_the_deadline_and_the_next_update_commits(
        fleet: Fleet, bundles: Bundles, agent: Callable[..., AgentProcess],
        events: DeviceEvents) -> None:
    a = agent(retry_backoff_s=60.0)
    a.start()
    assert serves(a) == 1
    before = a.snapshot()
    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="drip", drip_s=DRIP_S) as (url, mirror):
        # a valid release whose only source is the (signed) dripping mirror
        fleet.publish(bundles.v3, http_url=url, mqtt_chunks=False)
        started = events.wait("update.downloading", lambda e: e.data.get("version") == 3)
        assert started.data["mirrors"] == [url] and started.data["ignored_mirrors"] == []
        wait_for(lambda: mirror["requests"], 5, "the agent to ask the dripping mirror")
        assert serves(a) == 1  # serving goes on while the worker waits on the drip
        fleet.publish(bundles.v4)  # a new release, queued behind the dripping one (MQTT)
        failed = events.wait("update.failed", timeout_s=DEADLINE_S + 20)
        wait_for(lambda: mirror["closed"], 2 * DRIP_S + SLACK_S,
                 "the agent to close the dripping connection")
        committed = events.wait("update.committed", lambda e: e.data.get("version") == 4)
    assert (failed.data["code"], failed.data["version"]) == ("deadline", 3), failed.data
    assert "download_timeout_s" in failed.data["reason"] and url in failed.data["reason"]
    abandon_s = failed.at - started.at
    next_s = committed.at - failed.at
    print(f"\n[figure] deadline {DEADLINE_S:g} s, per-read {PER_READ_S:g} s, drip 1 B/"
          f"{DRIP_S:g} s: downloading -> abandoned {abandon_s:.2f} s; abandoned -> v4 "
          f"committed {next_s:.2f} s")
    assert abandon_s <= DEADLINE_S + SLACK_S, abandon_s
    assert next_s <= 10.0, next_s
    # v3 was never installed; v4 is; the trusted metadata is exactly what was signed
    assert a.installed() == (*before.installed, "4") and serves(a) == 4 == a.on_disk()
    assert a.trusted_files() == {**before.trusted_files, **{
        TRUSTED_FILE[r]: b for r, b in signed_release(fleet.repo).items()}}


def test_while_a_drip_is_abandoned_nothing_is_installed_and_the_old_model_serves(
        fleet: Fleet, bundles: Bundles, agent: Callable[..., AgentProcess],
        events: DeviceEvents) -> None:
    a = agent(retry_backoff_s=60.0)
    a.start()
    before = a.snapshot()
    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="drip", drip_s=DRIP_S) as (url, _mirror):
        fleet.publish(bundles.v3, http_url=url, mqtt_chunks=False)
        failed = events.wait("update.failed", timeout_s=DEADLINE_S + 20)
        assert failed.data["code"] == "deadline", failed.data
        st = a.update_status()
    assert st["phase"] == "idle" and st["last"]["code"] == "deadline", st
    assert st["retry_pending"] == 1 and st["backoff"][0]["failures"] == 1, st
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))
    assert serves(a) == 1
    assert not events.of("update.activated") and not events.of("update.committed")


# --- (b) an announced mirror nobody trusted is never contacted ------------------------------


def test_an_unsigned_mirror_outside_the_allowlist_is_never_contacted(
        fleet: Fleet, bundles: Bundles, agent: Callable[..., AgentProcess],
        events: DeviceEvents) -> None:
    """The default allowlist is empty: the announcement alone cannot send the device to a
    URL, for metadata (a file left out of the announcement) or for the target."""
    a = agent()
    a.start()
    before = a.snapshot()
    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="ok") as (url, mirror):
        mirror["metadata"] = {}  # it would serve anything it was asked for
        path, signed, _ = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                      chunk_size=CHUNK)  # signed, but with no mirror in it
        assert signed == data
        files = fleet.repo.announce_files()
        ts = next(k for k in files if k.endswith("timestamp.json"))
        mirror["metadata"] = {ts: files[ts]}
        announce(fleet.broker_url, TOPIC, path, {k: v for k, v in files.items() if k != ts},
                 mirrors=(url,))  # timestamp only "on the mirror"
        no_meta = events.wait("update.rejected")
        assert_nothing_moved(a, before)  # nothing trusted at all
        announce(fleet.broker_url, TOPIC, path, files, mirrors=(url,))  # target only there
        no_target = events.wait("update.rejected", lambda e: e is not no_meta and
                                e.data.get("version") == 3)
        downloading = events.wait("update.downloading")
        assert mirror["requests"] == [], mirror["requests"]
    assert no_meta.data["code"] == "announcement" and url in no_meta.data["reason"]
    assert "timestamp.json" in no_meta.data["reason"]
    assert no_target.data["code"] == "announcement", no_target.data
    assert "no usable source" in no_target.data["reason"] and url in no_target.data["reason"]
    assert downloading.data["ignored_mirrors"] == [url] and downloading.data["mirrors"] == []
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))
    assert serves(a) == 1


# --- (c) the retained dripping announcement after a restart ---------------------------------


@pytest.mark.serial
def test_the_retained_dripping_announcement_does_not_hold_back_a_new_update_after_a_restart(
        fleet: Fleet, bundles: Bundles, agent: Callable[..., AgentProcess],
        events: DeviceEvents) -> None:
    a = agent(retry_backoff_s=60.0)
    a.start()
    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="drip", drip_s=DRIP_S) as (url, mirror):
        # retained on the group topic: every (re)start of the agent receives it again
        fleet.publish(bundles.v3, audience=Audience((), (GROUP,)), http_url=url,
                      mqtt_chunks=False)
        first = events.wait("update.failed", timeout_s=DEADLINE_S + 20)
        assert first.data["code"] == "deadline", first.data
        a.stop()
        asked = len(mirror["requests"])
        a.start()
        wait_for(lambda: a.update_status()["retry_pending"] == 1, 10,
                 "the retained announcement to be received and held back")
        t0 = time.time()
        fleet.publish(bundles.v4)  # a new release on the device topic (MQTT chunks)
        committed = events.wait("update.committed", lambda e: e.data.get("version") == 4)
        assert len(mirror["requests"]) == asked, "the dripping mirror was asked again at once"
    took = committed.at - t0
    print(f"\n[figure] after a restart with the dripping announcement retained (deadline "
          f"{DEADLINE_S:g} s, backoff 60 s): v4 published -> committed {took:.2f} s")
    assert took <= 10.0, took
    assert serves(a) == 4
    assert {e.at for e in events.of("update.failed")} == {first.at}  # not retried meanwhile


# --- in-process: every source under the deadline ------------------------------------------


def test_mqtt_chunks_dripping_faster_than_the_stall_timeout_end_at_the_deadline(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    """Chunks that keep coming (one every 0.1 s: never a stall) but would take ~9 s."""
    dev = start_device(download_timeout_s=2.0, stall_timeout_s=10.0, chunk_window=1,
                       retry_backoff_s=60.0)
    before = dev.snapshot()
    path, data, spec = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                   chunk_size=1024)
    assert spec.chunks is not None and spec.chunks.count > 40
    sha = hashlib.sha256(data).hexdigest()
    n = dev.mark()
    announce(fleet.broker_url, TOPIC, path, fleet.repo.announce_files(), chunked=True)
    b = Broker(fleet.broker_url)
    try:
        for i, payload in enumerate(chunk_payloads(data, spec.chunks)):  # the drip
            b.publish(chunk_topic(sha, i), payload)
            b.flush()
            if len(dev.svc.outcomes) > n:
                break
            time.sleep(0.1)
    finally:
        b.close()
    out = dev.outcome(n)
    assert (out.result, out.code) == ("failed", "deadline"), out
    assert "MQTT chunks" in out.reason, out.reason
    assert_nothing_moved(dev, before, accepted=signed_release(fleet.repo))
    assert dev.serving() == 1


@pytest.mark.serial
def test_a_dripping_allowlisted_mirror_serving_metadata_is_cut_at_metadata_timeout_s(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory) -> None:
    data = tar_bytes(read_bundle(bundles.v3))
    with evil_http_server(data, mode="drip", drip_s=0.2) as (url, mirror):
        dev = start_device(mirror_allowlist=[url], metadata_timeout_s=1.0,
                           download_timeout_s=30.0, http_timeout_s=2.0, retry_backoff_s=60.0)
        before = dev.snapshot()
        path, _, _ = sign_bundle(fleet.repo, bundles.v3, fleet.signers(), audience=ME,
                                 chunk_size=CHUNK)
        files = fleet.repo.announce_files()
        ts = next(k for k in files if k.endswith("timestamp.json"))
        mirror["metadata"] = {ts: files[ts]}
        n = dev.mark()
        t0 = time.monotonic()
        announce(fleet.broker_url, TOPIC, path, {k: v for k, v in files.items() if k != ts},
                 mirrors=(url,))
        out = dev.outcome(n)
        took = time.monotonic() - t0
    assert (out.result, out.code) == ("failed", "deadline"), out
    assert "metadata_timeout_s" in out.reason and "timestamp.json" in out.reason, out.reason
    assert took < 1.0 + SLACK_S + 1.0, took
    assert [p for _, p in mirror["requests"]] == ["/metadata/2.root.json",  # (404: none)
                                                  "/metadata/timestamp.json"]
    assert_nothing_moved(dev, before)


def test_a_mirror_cannot_redirect_the_device_or_drip_its_response_head(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Real sockets: a 302 to another host is an error, not followed; a response head
    dripped one byte per 0.2 s (each receive well within the 0.5 s per-read bound) ends
    at the 1 s deadline; no proxy from the environment is used."""
    import socket

    from tuf.api.exceptions import DownloadHTTPError

    from edge_agent.update.mirror_http import get

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9/")  # would refuse: never used
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/targets/t.tar"
    requests: list[bytes] = []

    def serve(reply: bytes, gap_s: float) -> None:
        c, _ = srv.accept()
        with c:
            requests.append(c.recv(4096))
            for i in range(len(reply)):
                try:
                    c.sendall(reply[i:i + 1] if gap_s else reply[i:])
                except OSError:
                    return
                if not gap_s:
                    return
                time.sleep(gap_s)

    def attempt(reply: bytes, gap_s: float) -> tuple[BaseException, float]:
        t = threading.Thread(target=serve, args=(reply, gap_s))
        t.start()
        t0 = time.monotonic()
        try:
            with pytest.raises((DownloadHTTPError, DownloadDeadlineError)) as e:
                get(url, deadline=Deadline(1.0, "test download not complete",
                                           error=DownloadDeadlineError), read_timeout_s=0.5)
            return e.value, time.monotonic() - t0
        finally:
            t.join(5)

    try:
        err, _ = attempt(b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/x\r\n"
                         b"Content-Length: 0\r\n\r\n", 0)
        assert isinstance(err, DownloadHTTPError) and err.status_code == 302
        assert "not followed" in str(err)
        err, took = attempt(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: 1\r\n" * 50 + b"\r\n", 0.2)
        assert isinstance(err, DownloadDeadlineError) and "within 1 s" in str(err)
        assert 0.9 < took < 1.0 + SLACK_S, took
    finally:
        srv.close()
    assert len(requests) == 2 and all(r.startswith(b"GET /targets/t.tar HTTP/1.1") and
                                      b"Host: 127.0.0.1:" in r for r in requests), requests


# --- pure cores -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_deadline_bounds_each_wait_by_the_time_left_and_names_what_was_late() -> None:
    clock = FakeClock()
    d = Deadline(3.0, "downloads not complete", error=DownloadDeadlineError, clock=clock)
    assert d.timeout(20.0) == 3.0
    clock.t += 2.5
    assert d.timeout(20.0) == pytest.approx(0.5) and d.timeout(0.1) == 0.1
    part = d.within(10.0, "metadata not received")
    assert part is d  # the whole operation ends first
    assert d.within(0.2, "metadata not received").timeout(20.0) == pytest.approx(0.2)
    clock.t += 0.5
    with pytest.raises(DownloadDeadlineError, match="downloads not complete within 3 s"):
        d.timeout(20.0)
    with pytest.raises(DownloadDeadlineError):
        d.check()


def test_mirrors_are_used_only_when_the_config_or_the_signed_entry_names_them() -> None:
    good, evil = "https://updates.example/line-3/", "http://evil.example/"
    c = MirrorChoice((evil, good), ("https://updates.example",))
    assert c.for_metadata() == (good,)
    assert c.for_target(()) == (good,) and c.ignored() == (evil,)
    signed = ("https://cdn.example/repo",)
    assert c.for_target(signed) == (good, "https://cdn.example/repo/")
    assert MirrorChoice((evil,), ()).for_metadata() == ()  # the default trusts nothing
    assert MirrorChoice((evil,), ()).for_target((evil,)) == (evil,)
    assert not allowed("https://updates.example.evil/", ("https://updates.example",))
    assert not allowed("https://updates.example@evil/", ("https://updates.example",))


def test_backoff_doubles_per_failure_of_the_same_announcement_and_survives_a_restart(
        tmp_path: Path) -> None:
    assert [backoff_s(n, 30, 3600) for n in range(1, 9)] == \
        [30, 60, 120, 240, 480, 960, 1920, 3600]
    clock = FakeClock()
    book = RetryBook(tmp_path / "retry.json", 30, 3600, clock=clock)
    assert book.failed("a") == 30 and book.failed("a") == 60
    again = RetryBook(tmp_path / "retry.json", 30, 3600, clock=clock)  # after a restart
    again.load()
    assert again.wait_s("a") == 60 and again.wait_s("b") == 0
    clock.t -= 10_000  # the wall clock jumps back: the wait never exceeds the backoff
    assert again.wait_s("a") == 60
    again.settled("a")
    assert again.wait_s("a") == 0
