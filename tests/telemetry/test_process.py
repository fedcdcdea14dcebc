"""The real agent process (`edge-agent run`) against a real Mosquitto: Last Will on
SIGKILL, a new birth on restart, and store-and-forward through broker outages (with and
without an agent restart in the middle): every sequence number arrives once, in order."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import (
    AgentProcess,
    PersistentRecorder,
    Recorder,
    start_mosquitto,
)
from waiting import wait_for

from fleet.watch import SequenceTracker


@pytest.fixture
def broker(tmp_path: Path):
    b = start_mosquitto(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture
def agent_proc(tmp_path: Path, broker):
    procs: list[AgentProcess] = []

    def make(device: str, **kw: Any) -> AgentProcess:
        p = AgentProcess(tmp_path / device, broker.url, device, **kw)
        procs.append(p)
        return p
    yield make
    for p in procs:
        p.stop()


def test_sigkill_turns_status_offline_via_last_will_and_restart_publishes_a_birth(
        broker, agent_proc, digits) -> None:
    rec = Recorder(broker.url, "edge/+/status")
    agent = agent_proc("kill-1", interval_s=1.0, bundles=(digits.bundle,))
    try:
        agent.start()
        birth = rec.wait("/kill-1/status", lambda d: d["state"] == "online", 60)
        assert birth["models"][0]["name"] == "digits", agent.tail()
        agent.kill()
        off = rec.wait("/kill-1/status", lambda d: d["state"] == "offline", 15)
        assert off["reason"] == "connection lost" and off["device"] == "kill-1"
        late = Recorder(broker.url, "edge/+/status", "late")  # it is retained
        assert late.wait("/kill-1/status")["state"] == "offline"
        late.close()
        agent.start()
        again = rec.wait("/kill-1/status", lambda d: d["state"] == "online"
                         and d["boot_id"] != birth["boot_id"], 60)
        assert again["seq"] >= birth["seq"]  # the sequence never goes back
        assert agent.stop() == 0
        bye = rec.wait("/kill-1/status", lambda d: d["state"] == "offline"
                       and d["reason"] == "shutdown", 15)
        assert bye["device"] == "kill-1"
    finally:
        rec.close()


# ---- store-and-forward through outages --------------------------------------------------

OUTAGE_S = 30.0
RATE_HZ = 10.0


def _check_stream(rec: PersistentRecorder, outage: tuple[float, float]) -> dict[str, int]:
    """Every durable message once (after dropping QoS 1 resends by seq), in order, none
    missing; returns counts for the assertion messages."""
    docs = rec.docs(("/telemetry", "/events"))
    tracker = SequenceTracker()
    firsts = [d["seq"] for d in docs if tracker.accept(d["device"], d["seq"])]
    assert firsts, "nothing arrived"
    assert firsts[0] == 1, f"the stream starts at {firsts[0]}, not 1"
    assert firsts == list(range(1, len(firsts) + 1)), (
        f"gaps or reordering: {sorted(set(range(1, firsts[-1] + 1)) - set(firsts))[:20]} "
        "missing")
    during = [d for d in docs if d.get("interval_s") and outage[0] < d["ts"] < outage[1]]
    dups = sum(tracker.duplicates.values())
    return {"unique": len(firsts), "during_outage": len(during), "duplicates": dups,
            "raw": len(docs)}


def _wait_caught_up(rec: PersistentRecorder, after_ts: float, timeout_s: float = 60) -> None:
    wait_for(lambda: any(d["ts"] > after_ts for d in rec.docs(("/telemetry",))), timeout_s,
             "live telemetry after the backlog")


@pytest.mark.slow
def test_broker_outage_of_30s_loses_and_repeats_nothing(broker, agent_proc) -> None:
    rec = PersistentRecorder(broker, "edge/out-1/#")
    agent = agent_proc("out-1", interval_s=1 / RATE_HZ)
    try:
        agent.start()
        wait_for(lambda: len(rec.docs(("/telemetry",))) >= 20, 60, "telemetry before the outage")
        broker.stop()
        t0 = time.time()
        time.sleep(OUTAGE_S)
        t1 = time.time()
        broker.start()
        _wait_caught_up(rec, time.time() + 1)
        assert agent.stop() == 0
        time.sleep(1)
        counts = _check_stream(rec, (t0, t1))
        # 10 Hz for 30 s: ~300 messages were produced with the broker down, and all arrived
        assert counts["during_outage"] >= 0.9 * OUTAGE_S * RATE_HZ, counts
        assert counts["duplicates"] <= 50, counts  # only resends of unacknowledged messages
        print("outage:", json.dumps(counts))
    finally:
        rec.close()


@pytest.mark.slow
def test_broker_outage_with_agent_sigkill_and_restart_inside_it(broker, agent_proc) -> None:
    rec = PersistentRecorder(broker, "edge/out-2/#")
    agent = agent_proc("out-2", interval_s=1 / RATE_HZ)
    try:
        agent.start()
        wait_for(lambda: len(rec.docs(("/telemetry",))) >= 20, 60, "telemetry before the outage")
        broker.stop()
        t0 = time.time()
        time.sleep(OUTAGE_S / 3)
        agent.kill()  # crash with the backlog on disk only
        agent.start()
        time.sleep(t0 + OUTAGE_S - time.time())
        t1 = time.time()
        broker.start()
        _wait_caught_up(rec, time.time() + 1)
        assert agent.stop() == 0
        time.sleep(1)
        counts = _check_stream(rec, (t0, t1))
        # the restart costs a few seconds of telemetry (process start), not messages
        assert counts["during_outage"] >= 0.6 * OUTAGE_S * RATE_HZ, counts
        assert counts["duplicates"] <= 50, counts
        print("outage+restart:", json.dumps(counts))
    finally:
        rec.close()


def test_real_agent_rest_predictions_and_feedback_reach_telemetry(broker, agent_proc,
                                                                 digits) -> None:
    import re
    import urllib.request

    import numpy as np

    rec = Recorder(broker.url, "edge/e2e-1/#")
    agent = agent_proc("e2e-1", interval_s=0.5, bundles=(digits.bundle,))
    try:
        agent.start()
        rec.wait("/status", lambda d: d["state"] == "online", 60)
        wait_for(lambda: re.search(r"ready: .* on (http://[\d.:]+)", agent.tail()), 30,
                 "the agent's HTTP address")
        url = re.search(r"ready: .* on (http://[\d.:]+)", agent.tail()).group(1)  # type: ignore[union-attr]
        ev = np.load(digits.eval_npz)
        for i in range(20):
            req = urllib.request.Request(
                f"{url}/v1/models/digits:predict", method="POST",
                data=json.dumps({"instances": ev["x"][i:i + 1].tolist()}).encode(),
                headers={"Content-Type": "application/json", "X-Request-Id": f"e2e-{i}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
        fb = [{"request_id": f"e2e-{i}", "label": int(ev["y"][i])} for i in range(20)]
        req = urllib.request.Request(f"{url}/v1/models/digits:feedback", method="POST",
                                     data=json.dumps(fb).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["accepted"] == 20
        t = rec.wait("/telemetry", lambda d: d["models"].get("digits", {})
                     .get("feedback", {}).get("samples") == 20, 20)
        m = t["models"]["digits"]
        assert m["total_requests"] >= 20 and m["feedback"]["accuracy"] > 0.8
        assert m["quality"]["samples"] >= 20
    finally:
        rec.close()
