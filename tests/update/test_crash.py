"""SIGKILL of the agent process at every point of the update flow.

A real ``edge-agent run`` subprocess with ``EDGE_UPDATE_FAULT=kill@<point>`` kills itself
right after reaching ``<point>`` (after ``state.json`` says so, for a phase). Then the
test checks the disk (the active version is the old or the new one, and every installed
version is complete and hash-verified), restarts the agent without the fault and checks
that it serves the old or the new model and that the update completed or was given up
cleanly (state idle, outcome recorded).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from update_agentproc import AgentProcess
from update_helpers import ME, Bundles, Fleet
from waiting import wait_for

from edge_agent.bundle import read_bundle
from edge_agent.store import ModelStore
from fleet.publish import rollback

# point → (expected outcome after the restart, version then serving)
POINTS = {
    "notified": ("committed", 2),
    "downloading": ("committed", 2),
    "chunk:2": ("committed", 2),
    "verifying": ("committed", 2),
    "test_loading": ("committed", 2),
    "golden": ("committed", 2),
    "swapping": ("committed", 2),
    "installed": ("committed", 2),
    "activated": ("committed", 2),
    "persisted": ("committed", 2),  # swap persisted: probation runs again, then commits
    "probation": ("rolled_back", 1),  # a crash of the new model during probation
    "committed": ("committed", 2),
}


@pytest.fixture
def agent_proc(tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any) -> Any:
    a = AgentProcess(tmp_path, fleet, bundles, mosquitto.url)
    yield a
    a.stop()


def assert_never_partial(store_dir: Path) -> int | None:
    """Every installed version verifies; the active one is installed. Returns it."""
    store = ModelStore(store_dir)
    for v in store.versions("digits"):
        b = read_bundle(store.version_dir("digits", v), verify_hash=True)
        assert b.version == v
    active = store.active_version("digits")
    assert active in (None, *store.versions("digits"))
    return store.serving_version("digits")


def settle(a: AgentProcess) -> dict[str, Any]:
    return wait_for(lambda: (s := a.update_status())["phase"] == "idle" and s.get("last")
                    and s, 30, "the resumed update to settle")


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_at_every_point_serves_old_or_new_and_settles(
        point: str, agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles) -> None:
    agent_proc.start(fault=f"kill@{point}")
    fleet.publish(bundles.v2, audience=ME)
    agent_proc.wait_killed()
    assert assert_never_partial(agent_proc.store) in (1, 2)
    agent_proc.start()
    st = settle(agent_proc)
    result, version = POINTS[point]
    assert st["last"]["result"] == result, st
    status = agent_proc.get("/v1/agent/status")
    active = {m["name"]: m["active"] for m in status["models"]}
    assert active["digits"] == version, status["models"]
    x = [[[[0.5]] * 8] * 8]
    req = urllib.request.Request(f"http://127.0.0.1:{agent_proc.port}/v1/models/digits:predict",
                                 json.dumps({"instances": x}).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert len(json.loads(r.read())["predictions"]) == 1
    assert assert_never_partial(agent_proc.store) == version
    if point == "chunk:2":
        msgs = [e["message"] for e in status["recent_events"]]
        assert any("2 chunks resumed from staging" in m for m in msgs), msgs


def test_sigkill_while_rolling_back_finishes_the_rollback(
        agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles) -> None:
    agent_proc.start(fault="kill@rolling_back")
    fleet.publish(bundles.v2, audience=ME)
    wait_for(lambda: (agent_proc.update_status().get("last") or {}).get("result")
             == "committed", 30, "v2 committed")
    rollback(fleet.repo, fleet.signers(), audience=ME, name="digits", to_version=None,
             broker=fleet.broker_url)
    agent_proc.wait_killed()
    assert assert_never_partial(agent_proc.store) in (1, 2)
    agent_proc.start()
    st = settle(agent_proc)
    assert (st["last"]["result"], st["last"]["code"]) == ("rolled_back", "crash"), st
    assert assert_never_partial(agent_proc.store) == 1
    status = agent_proc.get("/v1/agent/status")
    assert {m["name"]: m["active"] for m in status["models"]}["digits"] == 1
