"""Staged rollouts against a real Mosquitto and real (simulated) agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Recorder, SimFactory, Workstation
from waiting import wait_for

from fleet.rollout import Rollout, RolloutRequest, render_report
from fleet.rollout_core import Outcome, Policy, RolloutStateError, WaveStatus, summary

ROOT = Path(__file__).resolve().parents[2]


def _ids(n: int) -> list[str]:
    return [f"sim-{i:02d}" for i in range(n)]


def _announced(rec: Recorder) -> list[str]:
    """Device ids whose announce topic received a (non-empty) announcement."""
    return [t.split("/")[1] for t, p in list(rec.messages) if p]


def test_rollout_halts_when_the_canary_wave_fails_and_later_waves_never_hear_of_it(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any,
        tmp_path: Path) -> None:
    devices = _ids(20)
    sim = start_sim(devices, faults={"sim-00": "fail_probation", "sim-01": "fail_probation"})
    sim.devices["sim-03"].agent.stop()  # offline: counted, not waited for, retracted
    rec = Recorder(mosquitto.url, "edge/+/update/announce", "rec-announce")
    group_rec = Recorder(mosquitto.url, "edge/group/#", "rec-group")
    try:
        req = RolloutRequest(bundle=digits.bundle_v2, repo=workstation.repo.path,
                             broker=mosquitto.url, group="sim",
                             policy=Policy("20%", "25%", 0.10, 30.0, rollback=True),
                             state_path=tmp_path / "rollout.json", chunk_size=16384)
        lines: list[str] = []
        st = Rollout(req, workstation.signers(), say=lines.append).run()
        wave0 = set(devices[:4])
        healthy = {"sim-02"}

        assert st.status == "halted"
        assert [w.status for w in st.waves] == [WaveStatus.HALTED] + [WaveStatus.PENDING] * 4
        assert "over the 10% threshold" in st.waves[0].verdict
        assert {d for d, r in st.devices.items() if r.outcome == Outcome.FAILED} \
            == {"sim-00", "sim-01"}
        assert all("probation" in st.devices[d].detail for d in ("sim-00", "sim-01"))
        assert all(st.devices[d].outcome == Outcome.SKIPPED for d in devices[4:])
        # The wave's in-flight devices were followed to the end, then rolled back (signed).
        assert {d for d in healthy if st.devices[d].outcome == Outcome.COMMITTED} == healthy
        assert set(st.rolled_back) == healthy
        wait_for(lambda: all(sim.active_versions("digits")[d] == 1 for d in healthy), 20,
                 "the signed wave rollback")
        rep = summary(st)
        assert rep["status"] == "halted" and rep["outcomes"]["skipped"] == 16
        assert set(rep["problems"]) >= {"sim-00", "sim-01"}
        text = render_report(rep)
        assert "wave 0: halted" in text and "sim-00: failed: rolled_back: probation" in text
        assert "signed rollback sent to: sim-02" in text
        assert st.devices["sim-03"].outcome == Outcome.OFFLINE
        # The offline device's retained announcement was withdrawn: it will not install
        # the halted update when it comes back.
        late = Recorder(mosquitto.url, "edge/sim-03/update/announce", "rec-late")
        try:
            time.sleep(0.5)
            assert [p for _, p in late.messages if p] == []
        finally:
            late.close()
        assert any("HALTED" in line for line in lines)

        # Later waves never received the announcement: not on their topics, not on the
        # group topic, and their update machines never left idle.
        wait_for(lambda: _announced(rec), 5, "the recorder to see wave 0")
        assert set(_announced(rec)) <= wave0  # (incl. the rollback commands to wave 0)
        assert not [t for t in group_rec.topics() if t.endswith("/update/announce")]
        for d in devices[4:]:
            agent = sim.devices[d].agent
            assert agent.registry.active_version("digits") == 1
            assert not [e for e in agent.events if e.kind.startswith("update.")], d
        # The failing devices rolled themselves back and still serve v1.
        assert sim.active_versions("digits")["sim-00"] == 1
        assert sim.active_versions("digits")["sim-01"] == 1
        # The state file says the same, and re-running publishes nothing.
        n = len(rec.messages)
        again = Rollout(req, workstation.signers(), say=lines.append).run()
        assert again.status == "halted" and len(rec.messages) == n
    finally:
        rec.close()
        group_rec.close()


def test_rollout_passes_every_wave_counts_offline_devices_and_is_idempotent(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any,
        tmp_path: Path) -> None:
    devices = _ids(6)
    sim = start_sim(devices)
    sim.devices["sim-03"].agent.stop()  # offline (its retained status still names the group)
    rec = Recorder(mosquitto.url, "edge/#", "rec-all")
    try:
        req = RolloutRequest(bundle=digits.bundle_v2, repo=workstation.repo.path,
                             broker=mosquitto.url, group="sim",
                             policy=Policy("1", "50%", 0.10, 30.0),
                             state_path=tmp_path / "rollout.json", chunk_size=16384)
        st = Rollout(req, workstation.signers(), say=lambda _m: None).run()
        assert st.status == "completed", render_report(summary(st))
        assert [len(w.devices) for w in st.waves] == [1, 3, 2]
        outcomes = {d: r.outcome for d, r in st.devices.items()}
        assert outcomes.pop("sim-03") == Outcome.OFFLINE
        assert set(outcomes.values()) == {Outcome.COMMITTED}
        assert st.group_announced
        wait_for(lambda: any(t == "edge/group/sim/update/announce" for t in rec.topics()), 5,
                 "the group announcement after the last wave")
        n = len([t for t in rec.topics() if t.endswith("/update/announce")])
        assert Rollout(req, workstation.signers(), say=lambda _m: None).run().status \
            == "completed"
        assert len([t for t in rec.topics() if t.endswith("/update/announce")]) == n
        # A different bundle cannot reuse this state file.
        other = RolloutRequest(**{**req.__dict__, "bundle": digits.bundle})
        with pytest.raises(RolloutStateError, match="--restart"):
            Rollout(other, workstation.signers(), say=lambda _m: None).run()
    finally:
        rec.close()


def test_a_killed_rollout_resumes_from_its_state_file_without_reannouncing(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any,
        tmp_path: Path) -> None:
    devices = _ids(20)
    start_sim(devices, probation_s=2.5)
    rec = Recorder(mosquitto.url, "edge/+/update/announce", "rec-announce")
    state = tmp_path / "rollout.json"
    cmd = [sys.executable, "-m", "fleet.cli", "rollout", str(digits.bundle_v2),
           "--repo", str(workstation.repo.path), "--broker", mosquitto.url, "--group", "sim",
           "--canary", "10%", "--step", "30%", "--max-failure", "10%", "--wait", "60s",
           "--state", str(state), "--chunk-size", "16384", *workstation.key_args()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)

        def wave1_waiting() -> bool:
            try:
                doc = json.loads(state.read_text())
            except (OSError, ValueError):
                return False
            return bool(doc["waves"][1]["status"] == "waiting")
        wait_for(wave1_waiting, 60, "wave 1 to be announced and waiting")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = json.loads(state.read_text())
        assert killed_at["status"] == "running"
        assert killed_at["waves"][0]["status"] == "passed"
        before = _announced(rec)

        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "resuming rollout" in second.stdout
        assert "wave 0:" not in second.stdout.split("resuming")[1].split("\n  wave")[0]
        done = json.loads(state.read_text())
        assert done["status"] == "completed"
        assert {d["outcome"] for d in done["devices"].values()} == {"committed"}
        # Every device heard the announcement exactly once, across both runs.
        wait_for(lambda: len(_announced(rec)) >= 20, 10, "all announcements")
        after = _announced(rec)
        assert sorted(after) == sorted(devices), after
        assert set(before) == set(devices[:8])  # waves 0 and 1, before the kill
    finally:
        rec.close()
