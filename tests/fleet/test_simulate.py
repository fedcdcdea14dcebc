"""The simulated fleet: real agents sharing one model, each with its own MQTT client,
store and update state machine; faults injected per device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet_helpers import SimFactory, Workstation
from waiting import wait_for

from edge_agent.update.wire import Audience
from fleet.publish import publish
from fleet.sim_agents import FAULTS, SharedServedModel, assign_faults


def test_faults_are_assigned_by_fraction_reproducibly_and_without_overlap() -> None:
    devs = [f"d{i:03d}" for i in range(200)]
    a = assign_faults(devs, {"fail_probation": 0.05, "drop_link": 0.02, "slow": 0.1}, seed=3)
    assert a == assign_faults(list(reversed(devs)), {"fail_probation": 0.05, "drop_link": 0.02,
                                                     "slow": 0.1}, seed=3)
    counts = {f: sum(1 for v in a.values() if v == f) for f in FAULTS}
    assert counts == {"fail_probation": 10, "drop_link": 4, "slow": 20}
    assert assign_faults(devs, {"slow": 0.1}, seed=4) != assign_faults(devs, {"slow": 0.1},
                                                                       seed=3)


def test_each_simulated_device_is_its_own_agent_but_the_model_is_loaded_once(
        start_sim: SimFactory) -> None:
    sim = start_sim(["s-a", "s-b", "s-c"])
    agents = [d.agent for d in sim.devices.values()]
    assert len({id(a.message_link()) for a in agents}) == 3
    assert len({a.store.root for a in agents}) == 3
    assert {a.message_link().client_id for a in agents} == {"s-a", "s-b", "s-c"}
    served = [a.registry.get("digits") for a in agents]
    assert all(isinstance(s, SharedServedModel) for s in served)
    assert len(sim.cache._models) == 1  # one interpreter pool for the whole process
    assert sim.active_versions("digits") == {"s-a": 1, "s-b": 1, "s-c": 1}


def test_a_group_update_commits_everywhere_except_where_probation_fails(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any) -> None:
    sim = start_sim(["s-a", "s-b", "s-c"], faults={"s-b": "fail_probation"})
    publish(workstation.repo, Path(digits.bundle_v2), workstation.signers(),
            audience=Audience(groups=("sim",)), broker=mosquitto.url, chunk_size=16384)
    wait_for(lambda: sim.active_versions("digits") == {"s-a": 2, "s-b": 1, "s-c": 2}
             and all(_last(d) for d in sim.devices.values()), 30,
             "two commits and one rollback")
    assert _last(sim.devices["s-b"]) == "rolled_back"
    assert _last(sim.devices["s-a"]) == "committed"


def _last(sim_dev: Any) -> str | None:
    for c in sim_dev.agent.components:
        if hasattr(c, "flow") and c.flow is not None and c.flow.state.last is not None:
            return str(c.flow.state.last.result)
    return None


def test_a_device_whose_link_drops_mid_download_goes_offline_then_commits(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any) -> None:
    from fleet_helpers import Recorder

    sim = start_sim(["l-a", "l-b"], faults={"l-a": "drop_link"}, drop_for_s=1.5)
    rec = Recorder(mosquitto.url, "edge/+/status", "rec-status")
    try:
        publish(workstation.repo, Path(digits.bundle_v2), workstation.signers(),
                audience=Audience(groups=("sim",)), broker=mosquitto.url,
                chunk_size=16384)
        wait_for(lambda: sim.active_versions("digits") == {"l-a": 2, "l-b": 2}
                 and _last(sim.devices["l-a"]) == "committed", 40, "both committed")
        proxy = sim.devices["l-a"].proxy
        assert proxy is not None and proxy.cuts >= 1
        states = [d.get("state") for t, d in rec.docs("/status") if t == "edge/l-a/status"]
        assert "offline" in states and states[-1] == "online"
        assert not [d for t, d in rec.docs("/status")
                    if t == "edge/l-b/status" and d.get("state") == "offline"]
    finally:
        rec.close()


def test_simulate_cli_runs_agents_in_worker_processes_and_stops_them_cleanly(
        workstation: Workstation, digits: Any, mosquitto: Any, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from fleet_helpers import Recorder

    root = Path(__file__).resolve().parents[2]
    rec = Recorder(mosquitto.url, "edge/+/status", "rec-status")
    cmd = [sys.executable, "-m", "fleet.cli", "simulate", "6", "--broker", mosquitto.url,
           "--root", str(workstation.root_file), "--bundle", str(digits.bundle),
           "--workdir", str(tmp_path / "fleet"), "--processes", "2", "--id-prefix", "cli",
           "--slow", "34%", "--group", "g1", "--rps", "0"]
    proc = subprocess.Popen(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def online() -> set[str]:
            latest = {t.split("/")[1]: d for t, d in rec.docs("/status")}
            return {k for k, d in latest.items() if d.get("state") == "online"}
        wait_for(lambda: len(online()) == 6, 90, "6 simulated agents online")
        assert online() == {f"cli-{i:03d}" for i in range(6)}
        assert all(d.get("groups") == ["g1"] for _, d in rec.docs("/status"))
        assert sorted(p.name for p in (tmp_path / "fleet").iterdir()) == sorted(online())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "in 2 process(es)" in out and "slow: 2 (" in out
        assert "6 of 6 agents connected" in out
        wait_for(lambda: not online(), 10, "every agent's offline status")
    finally:
        if proc.poll() is None:
            proc.kill()
        rec.close()
