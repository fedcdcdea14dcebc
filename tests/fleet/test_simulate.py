"""The simulated fleet: real agents sharing one model, each with its own MQTT client,
store and update state machine; faults injected per device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import SimFactory
from fleet_helpers import Workstation, wait_for

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
            audience=Audience(groups=("sim",)), broker_url=mosquitto.url, chunk_size=16384)
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
