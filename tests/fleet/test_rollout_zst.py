"""``edge-fleet rollout`` of a ``.tar.zst`` bundle (issue 14 part 5): the compressed bytes
are what is signed, chunked and downloaded, and the rollout commits on real (simulated)
agents over a real Mosquitto."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fleet_helpers import SimFactory, Workstation

from edge_agent import bundle_zstd
from edge_agent.bundle import read_bundle, tar_bytes, write_bundle
from fleet.rollout import Rollout, RolloutRequest, render_report
from fleet.rollout_core import Outcome, Policy, summary


def test_a_tar_zst_rollout_moves_the_compressed_bytes_and_commits(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any,
        tmp_path: Path) -> None:
    bundle = read_bundle(digits.bundle_v2)
    zst = write_bundle(bundle, tmp_path / "digits-v2.tar.zst")
    data, tar = zst.read_bytes(), tar_bytes(bundle)
    assert bundle_zstd.is_zstd(data) and len(data) < len(tar)
    sim = start_sim(["sim-00", "sim-01"])
    said: list[str] = []
    req = RolloutRequest(bundle=zst, repo=workstation.repo.path, broker=mosquitto.url,
                         group="sim", policy=Policy("1", "100%", 0.10, 30.0),
                         state_path=tmp_path / "rollout.json", chunk_size=8192)
    ro = Rollout(req, workstation.signers(), say=said.append)
    assert ro.target.sha256 == hashlib.sha256(data).hexdigest()  # the compressed bytes
    st = ro.run()
    assert f"{len(data)} bytes zstd of {len(tar)} raw" in said[0]
    assert st.status == "completed", render_report(summary(st))
    assert {r.outcome for r in st.devices.values()} == {Outcome.COMMITTED}
    assert {d.active(bundle.name) for d in sim.devices.values()} == {bundle.version}
