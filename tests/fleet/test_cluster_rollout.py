"""A staged rollout across a real two-node ejabberd cluster, node A killed mid-rollout.

20 simulated devices (real agents: fleet.sim_agents) connect to node A with
``brokers = [A, B]``; the rollout tool and ``edge-fleet status`` sit on node B. ejabberd
routes live messages between nodes but answers retained lookups from a per-node index
(tests/ejabberd_cluster.py), so this also proves the design does not lean on retained
messages crossing nodes: the rollout finds the group by asking (``status/want``), devices
on A get their chunks by asking (``update/want``, answered by the rollout tool), and after
node A dies they fail over to B and carry on. Every device commits v2 exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ejabberd_cluster
import pytest
from fleet_helpers import Recorder, Workstation
from waiting import wait_for

from edge_agent.store import ModelStore
from fleet.rollout import Rollout, RolloutRequest
from fleet.rollout_core import Outcome, Policy
from fleet.sim_agents import SimFleet, SimSpec

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
N = 20


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


def _committed_events(rec: Recorder) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic, doc in rec.docs("/events"):
        if doc.get("kind") == "update.committed":
            d = topic.split("/")[1]
            out[d] = out.get(d, 0) + 1
    return out


def test_rollout_on_node_b_survives_killing_node_a_and_every_device_commits_once(
        tmp_path: Path, workstation: Workstation, digits: Any,
        cluster: ejabberd_cluster.Cluster) -> None:
    devices = [f"sim-{i:02d}" for i in range(N)]
    spec = SimSpec(broker_url=cluster.urls, root_file=workstation.root_file,
                   bundle=digits.bundle, workdir=tmp_path / "sim", devices=tuple(devices),
                   probation_s=1.0, rps=5.0, extra={"update.chunk_want_after_s": 1.0})
    sim = SimFleet(spec)
    events = Recorder(cluster.b.url, "edge/+/events", "rec-events-b")
    try:
        sim.start()
        assert sim.wait_connected(30), f"{sim.connected()} of {N} connected"
        lines: list[str] = []
        req = RolloutRequest(bundle=digits.bundle_v2, repo=workstation.repo.path,
                             broker=cluster.b.url, group="sim",
                             policy=Policy("10%", "30%", 0.10, 60.0),
                             state_path=tmp_path / "rollout.json", chunk_size=16384)
        result: list[Any] = []
        t0 = time.monotonic()
        runner = threading.Thread(
            target=lambda: result.append(Rollout(req, workstation.signers(),
                                                 say=lines.append).run()), daemon=True)
        runner.start()
        # kill node A as soon as the second wave is announced: its devices are mid-update
        wait_for(lambda: any(line.startswith("wave 1:") for line in lines), 90,
                 f"the second wave ({lines})")
        killed = time.monotonic()
        cluster.a.kill()
        runner.join(150)
        assert result, f"the rollout did not finish: {lines}"
        took = time.monotonic() - t0
        st = result[0]
        print(f"\n{N} devices, node A killed {killed - t0:.1f} s in; rollout "
              f"{st.status} after {took:.1f} s\n" + "\n".join(lines))

        assert st.status == "completed", lines
        assert {d: r.outcome for d, r in st.devices.items()} == \
            dict.fromkeys(devices, Outcome.COMMITTED), lines
        assert any("answered" in line and "chunk request" in line for line in lines), \
            "devices on node A never had to ask for chunks: the test does not show it"
        for d in devices:  # v2 installed and serving once; v1 kept; nothing else
            store = ModelStore(tmp_path / "sim" / d / "store")
            assert sorted(p.name for p in (store.models_dir / "digits").iterdir()
                          if p.name != "active.json") == ["1", "2"], d
            assert sim.devices[d].active("digits") == 2, d
        wait_for(lambda: _committed_events(events) == dict.fromkeys(devices, 1), 30,
                 "one update.committed per device")
        time.sleep(1.0)
        assert _committed_events(events) == dict.fromkeys(devices, 1)  # not twice

        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env["PYTHONPATH"] = str(ROOT)
        out = subprocess.run([sys.executable, "-m", "fleet.cli", "status", "--broker",
                              cluster.b.url, "--group", "sim", "--json"],
                             cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        rows = {r["device"]: r for r in json.loads(out.stdout)}
        assert sorted(rows) == devices
        assert all(r["online"] is True and "2" in r["models"] for r in rows.values()), rows
    finally:
        events.close()
        sim.stop()
