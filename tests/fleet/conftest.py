"""Fixtures for the fleet tests: keys, a repository, and simulated fleets on a real broker.

Everything is real: Mosquitto (tests/conftest.py), Ed25519 keys and TUF metadata, the
in-process :class:`edge_agent.app.Agent` with its telemetry and update components
(many per process, sharing one LiteRT model: fleet.sim_agents). Faults are injected
through the simulator's seams (failing predictions, a TCP relay that cuts the link).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import SimFactory, Workstation, make_keys, make_workstation

from fleet.sim_agents import SimFleet, SimSpec


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("fleet-keys"))


@pytest.fixture
def workstation(tmp_path: Path, key_dir: Path) -> Workstation:
    return make_workstation(tmp_path, key_dir)




@pytest.fixture
def start_sim(tmp_path: Path, workstation: Workstation, digits: Any, mosquitto: Any
              ) -> Iterator[SimFactory]:
    """Start a simulated fleet: ``start_sim(devices, faults={...}, **spec_fields)``."""
    fleets: list[SimFleet] = []

    def make(devices: list[str], **kw: Any) -> SimFleet:
        kw.setdefault("probation_s", 1.0)
        kw.setdefault("rps", 5.0)
        spec = SimSpec(broker_url=mosquitto.url, root_file=workstation.root_file,
                       bundle=digits.bundle, workdir=tmp_path / f"sim{len(fleets)}",
                       devices=tuple(devices), **kw)
        sim = SimFleet(spec)
        fleets.append(sim)
        sim.start()
        assert sim.wait_connected(20), f"{sim.connected()} of {len(devices)} connected"
        return sim

    yield make
    for f in reversed(fleets):
        f.stop()
