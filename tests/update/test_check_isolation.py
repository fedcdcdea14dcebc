"""The candidate check (test-load + golden vectors) runs in a child with time and memory limits.

Issue 19, item 4: a model whose WHILE loop never terminates on its golden input hung the
single update worker forever, and a model crashing the runtime during test-load killed the
agent. Black-box: a real ``edge-agent run``, real Mosquitto, signed releases through the
fleet helpers, a real never-ending TFLite model built with TensorFlow (in its own
process, with its own time bound); crashes and memory hunger are injected inside the
check child with ``EDGE_UPDATE_FAULT`` (``segv@check``, ``alloc@check:<MiB>``).
Every test asserts the rejection code, that the candidate is blocked, that the old
model answered REST throughout, that the agent process never restarted and that nothing
else moved (:func:`update_helpers.assert_nothing_moved`).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from build_lock import build_lock
from update_agentproc import AgentProcess, settled, start
from update_helpers import (
    ME,
    Bundles,
    Fleet,
    PinnedDigits,
    assert_nothing_moved,
    derive,
    signed_release,
)
from waiting import wait_for

from edge_agent.errors import ConfigError
from edge_agent.runtime.isolate import ChildRun
from edge_agent.update.check import BLOCKING, CheckLimits, judge
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import ModelRejectedError

HERE = Path(__file__).resolve().parent
CHECK_S = 3.0  # update.check_timeout_s for the hanging model


@pytest.fixture(scope="session")
def hang_v3(bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits v3 whose model is a real WHILE loop that never ends on the golden inputs."""
    h = hashlib.sha256((HERE / "update_models.py").read_bytes()).hexdigest()[:12]
    model = HERE.parents[1] / ".cache" / "test-artifacts" / f"update-while-{h}.tflite"
    with build_lock(model):
        if not model.exists():
            subprocess.run([sys.executable, str(HERE / "update_models.py"), "while", str(model)],
                           check=True, cwd=HERE.parents[1], stdout=subprocess.DEVNULL,
                           timeout=300)
    return derive(bundles.v1, tmp_path_factory.mktemp("hang") / "v3-while", version=3,
                  model_bytes=model.read_bytes())


@pytest.fixture
def x(update_digits: PinnedDigits) -> np.ndarray:
    return np.load(update_digits.eval_npz)["x"][:1].astype(np.float32)


@pytest.fixture
def agents(tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any
           ) -> Iterator[list[AgentProcess]]:
    made: list[AgentProcess] = []
    yield made
    for a in made:
        a.stop()


def event_at(a: AgentProcess, kind: str) -> float:
    """When the latest ``kind`` event happened (waits for it: the status may show the
    outcome a moment before the event is emitted)."""
    def latest() -> list[Any]:
        return [e for e in a.get("/v1/agent/status")["recent_events"] if e["kind"] == kind]
    wait_for(lambda: bool(latest()), 10, f"a {kind} event among the recent ones")
    return float(latest()[-1]["at"])


def serve_while(a: AgentProcess, x: np.ndarray, phase: str) -> int:
    """REST predictions sent while the update is in ``phase``; each must answer in 2 s."""
    wait_for(lambda: a.update_status()["phase"] == phase, 30, f"phase {phase}")
    n = 0
    while a.update_status()["phase"] == phase:
        assert len(a.predict(x, timeout_s=2.0)["predictions"]) == 1
        n += 1
    return n


def assert_rejected_and_blocked(a: AgentProcess, st: dict[str, Any], code: str, reason: str,
                                version: int) -> None:
    assert (st["last"]["result"], st["last"]["code"]) == ("rejected", code), st["last"]
    assert reason in st["last"]["reason"], st["last"]["reason"]
    assert f"digits@{version}" in st["blocked"], st


# --- (a) a real model that never terminates --------------------------------------------------


@pytest.mark.serial
def test_a_model_whose_while_loop_never_ends_is_rejected_at_the_check_time_limit(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any, hang_v3: Path,
        x: np.ndarray, agents: list[AgentProcess]) -> None:
    a = start(agents, tmp_path, fleet, bundles, mosquitto, check_timeout_s=CHECK_S)
    pid, before = a.pid, a.snapshot()
    t0 = time.time()
    fleet.publish(hang_v3, audience=ME)
    answered = serve_while(a, x, "test_loading")  # the old model serves during the check
    st = settled(a, t0, CHECK_S + 30)
    assert_rejected_and_blocked(a, st, "check_timeout", f"within {CHECK_S:g} s "
                                "(update.check_timeout_s) while running the golden vectors",
                                3)
    took = event_at(a, "update.rejected") - event_at(a, "update.verified")
    print(f"\nhanging model rejected {took:.2f} s after verification (limit {CHECK_S:g} s); "
          f"{answered} REST answers meanwhile")
    assert CHECK_S <= took < CHECK_S + 2.0
    assert answered >= 5
    assert a.pid == pid and a.proc is not None and a.proc.poll() is None
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))

    # re-signed, re-announced: refused from the blocked list, the check does not run again
    t1 = time.time()
    fleet.publish(hang_v3, audience=ME)
    st = settled(a, t1)
    assert (st["last"]["result"], st["last"]["code"]) == ("rejected", "bundle"), st["last"]
    assert "blocked on this device" in st["last"]["reason"]
    assert time.time() - t1 < CHECK_S

    # and the next good update commits
    t2 = time.time()
    fleet.publish(bundles.v4, audience=ME)
    st = settled(a, t2)
    assert (st["last"]["result"], st["last"]["version"]) == ("committed", 4), st["last"]
    assert a.serving() == 4 and a.on_disk() == 4
    assert len(a.predict(x)["predictions"]) == 1
    proven = event_at(a, "update.test_loaded") - event_at(a, "update.verified")
    print(f"good digits v4: verified → test_loaded (child check + in-process load) "
          f"{proven * 1000:.0f} ms")


def test_a_sigkilled_agent_leaves_no_check_behind_and_the_restart_rejects_the_hang(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any, hang_v3: Path,
        agents: list[AgentProcess]) -> None:
    import psutil

    limit_s = 8.0  # its CPU backstop (10 s) cannot be what ends the orphan within 2 s
    a = start(agents, tmp_path, fleet, bundles, mosquitto, check_timeout_s=limit_s)
    before = a.snapshot()
    fleet.publish(hang_v3, audience=ME)
    wait_for(lambda: a.update_status()["phase"] == "test_loading", 30, "the check to start")
    (child,) = wait_for(lambda: [c for c in psutil.Process(a.pid).children()
                                 if "edge_agent.update.check_child" in c.cmdline()],
                        5, "the check process")
    # in the WHILE loop (past its imports: an orphan still printing would die of EPIPE)
    wait_for(lambda: sum(child.cpu_times()[:2]) > 1.0, 5, "the check to spin")
    assert a.proc is not None
    a.proc.kill()
    a.wait_killed()
    psutil.wait_procs([child], timeout=2)  # the parent-death signal, not the time limit
    assert not child.is_running(), "the check process outlived the agent"
    t0 = time.time()
    a.start()  # resumes in test_loading: the check runs again, under its limit
    st = settled(a, t0, limit_s + 30)
    assert_rejected_and_blocked(a, st, "check_timeout", f"within {limit_s:g} s", 3)
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))


# --- (b) a check that crashes ----------------------------------------------------------------


def test_a_check_that_segfaults_is_rejected_and_the_agent_never_restarts(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any, x: np.ndarray,
        agents: list[AgentProcess]) -> None:
    a = start(agents, tmp_path, fleet, bundles, mosquitto, fault="segv@check")
    pid, started = a.pid, a.get("/v1/agent/status")["started_at"]
    before = a.snapshot()
    t0 = time.time()
    fleet.publish(bundles.v2, audience=ME)
    st = settled(a, t0)
    assert_rejected_and_blocked(a, st, "check_crashed", "killed by SIGSEGV while creating "
                                "the interpreter", 2)
    assert a.pid == pid and a.proc is not None and a.proc.poll() is None
    assert a.get("/v1/agent/status")["started_at"] == started
    assert len(a.predict(x)["predictions"]) == 1 and a.serving() == 1
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))


# --- (c) a check that wants too much memory --------------------------------------------------


@pytest.mark.serial
def test_a_memory_hungry_check_is_stopped_by_the_memory_limit_not_the_agent(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any, x: np.ndarray,
        agents: list[AgentProcess]) -> None:
    # 3 GiB inside the check child; the generic-x86_64 budget (the default limit) is 2048 MiB
    a = start(agents, tmp_path, fleet, bundles, mosquitto, fault="alloc@check:3072")
    mem0 = a.memory_kib()
    before = a.snapshot()
    t0 = time.time()
    fleet.publish(bundles.v2, audience=ME)
    st = settled(a, t0)
    assert_rejected_and_blocked(a, st, "check_memory", "out of memory under its limit of "
                                "2048 MiB (the generic-x86_64 profile's memory_budget_mb)", 2)
    mem1 = a.memory_kib()
    print(f"\nagent VmHWM {mem0['VmHWM'] / 1024:.1f} → {mem1['VmHWM'] / 1024:.1f} MiB, "
          f"VmRSS {mem0['VmRSS'] / 1024:.1f} → {mem1['VmRSS'] / 1024:.1f} MiB")
    assert mem1["VmHWM"] - mem0["VmHWM"] < 64 * 1024, (mem0, mem1)  # the peak, not just now
    assert len(a.predict(x)["predictions"]) == 1 and a.serving() == 1
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))


# --- the pure core and the configuration -----------------------------------------------------

LIMITS = CheckLimits(5.0, 256, "update.check_memory_mb")


@pytest.mark.parametrize(("run", "code"), [
    (ChildRun("timeout", None, "golden", 5.0), "check_timeout"),
    (ChildRun("crashed", None, "create", 0.1, -11, "SIGSEGV"), "check_crashed"),
    (ChildRun("finished", {"outcome": "memory", "detail": "MemoryError"}, "create", 0.1, 3),
     "check_memory"),
    (ChildRun("finished", {"outcome": "load-failed", "detail": "bad"}, "done", 0.1, 3),
     "load_failed"),
    (ChildRun("finished", {"outcome": "golden-mismatch", "detail": "v0"}, "done", 0.1, 3),
     "golden_mismatch"),
    (ChildRun("no-verdict", None, "import", 0.1, 1, detail="ImportError"), "check_failed"),
    (ChildRun("spawn-failed", None, None, 0.0, detail="EAGAIN"), "check_failed"),
    (ChildRun("finished", {"outcome": "ok"}, "done", 0.1, 0), "check_failed"),  # malformed
])
def test_judge_names_how_the_check_ended(run: ChildRun, code: str) -> None:
    with pytest.raises(ModelRejectedError) as e:
        judge(run, LIMITS)
    assert e.value.code == code
    assert (code in BLOCKING) == (run.status in ("timeout", "crashed") or code == "check_memory")


def test_judge_accepts_an_ok_verdict() -> None:
    run = ChildRun("finished", {"outcome": "ok", "vectors": 4, "max_abs_diff": 1.0,
                                "peak_rss_mb": 50.5}, "done", 0.2, 0)
    res = judge(run, LIMITS)
    assert (res.vectors, res.max_abs_diff, res.peak_rss_mb) == (4, 1.0, 50.5)


@pytest.mark.parametrize(("key", "value"), [("check_timeout_s", float("nan")),
                                            ("check_timeout_s", 0.0),
                                            ("check_timeout_s", float("inf")),
                                            ("check_memory_mb", 10)])
def test_check_limits_that_would_not_limit_are_config_errors(key: str, value: Any,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        UpdateConfig.from_section({"root_file": str(tmp_path / "root.json"), key: value},
                                  "agent.toml")
    assert f"update.{key}" in str(e.value)
