"""Surviving a crashing native runtime: probe in a child, cache the verdict, fall back.

The crash is real: the probe child takes a SIGSEGV in native code (a NULL read through
ctypes, injected with ``EDGE_AGENT_PROBE_FAULT`` where the interpreter would be created).
Under emulation the same path meets ai-edge-litert 2.3.0's own SIGSEGV
(``tests/boards/test_aarch64_smoke.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from matrix_expect import first_refused, refusal

from edge_agent.errors import RuntimeUnavailableError
from edge_agent.runtime.backends import Runtime
from edge_agent.runtime.probe import (
    FAULT_ENV,
    STATE_FILE,
    VerdictCache,
    cache_key,
    probe_runtime,
    select_probed_runtime,
)

pytestmark = pytest.mark.matrix
HAS_TF = importlib.util.find_spec("tensorflow") is not None


def test_a_trusted_runtime_is_probed_once_then_read_from_the_cache(
        bundle_paths: dict[str, Path], runtime: Runtime, state_dir: Path) -> None:
    first = probe_runtime(runtime.name, bundle_paths["digits"], state_dir=state_dir)
    assert first.ok and not first.cached, first
    assert first.version == runtime.version and first.stage == "done"
    assert "4 golden vectors match" in first.detail
    assert first.int8_xnnpack is (runtime.name == "ai-edge-litert")
    again = probe_runtime(runtime.name, bundle_paths["digits"], state_dir=state_dir)
    assert again.cached and again.ok and again.probed_at == first.probed_at


def test_a_segfaulting_runtime_does_not_take_the_agent_down(
        bundle_paths: dict[str, Path], runtime: Runtime, state_dir: Path) -> None:
    with pytest.raises(RuntimeUnavailableError) as e:
        select_probed_runtime([runtime.name], bundle_paths["digits"], state_dir=state_dir,
                              env={FAULT_ENV: "segv"})
    # We are still here, and the error names the runtime, its version and the signal.
    assert f"{runtime.name} {runtime.version}: crashed with SIGSEGV while creating the " \
           "interpreter" in str(e.value)
    doc = json.loads((state_dir / STATE_FILE).read_text())
    v = doc["verdicts"][cache_key(runtime.name, runtime.version)]
    assert v["outcome"] == "crashed" and v["signal"] == "SIGSEGV" and v["stage"] == "create"


def test_a_crash_verdict_sticks_until_a_reprobe(bundle_paths: dict[str, Path],
                                                runtime: Runtime, state_dir: Path) -> None:
    crashed = probe_runtime(runtime.name, None, state_dir=state_dir, env={FAULT_ENV: "segv"})
    assert crashed.outcome == "crashed"
    # No fault now, a different model: the cached crash still keeps the runtime out.
    again = probe_runtime(runtime.name, bundle_paths["digits"], state_dir=state_dir)
    assert again.cached and again.outcome == "crashed"
    fresh = probe_runtime(runtime.name, bundle_paths["digits"], state_dir=state_dir,
                          reprobe=True)
    assert fresh.ok and not fresh.cached


def test_a_hanging_probe_times_out(runtime: Runtime, state_dir: Path) -> None:
    v = probe_runtime(runtime.name, None, state_dir=state_dir, timeout_s=6,
                      env={FAULT_ENV: "hang"})
    assert v.outcome == "timeout" and v.stage == "create" and not v.ok


def test_a_probe_that_dies_without_a_verdict_is_not_trusted(runtime: Runtime,
                                                            state_dir: Path) -> None:
    v = probe_runtime(runtime.name, None, state_dir=state_dir, env={FAULT_ENV: "exit"})
    assert v.outcome == "error" and "exit status 7" in v.detail


def test_a_model_refusal_is_cached_for_that_model_only(
        bundle_paths: dict[str, Path], runtime: Runtime, state_dir: Path) -> None:
    refused = first_refused(runtime)
    if refused is None:
        pytest.skip(f"{runtime} loads every bundle of the matrix")
    v = probe_runtime(runtime.name, bundle_paths[refused], state_dir=state_dir)
    assert v.outcome == "load-failed" and str(refusal(refused, runtime)) in v.detail
    assert probe_runtime(runtime.name, bundle_paths[refused], state_dir=state_dir).cached
    other = probe_runtime(runtime.name, bundle_paths["digits"], state_dir=state_dir)
    assert other.ok and not other.cached


def test_an_unreadable_cache_is_ignored_and_rewritten(runtime: Runtime,
                                                     state_dir: Path) -> None:
    (state_dir / STATE_FILE).write_text("{not json")
    v = probe_runtime(runtime.name, None, state_dir=state_dir)
    assert v.ok and not v.cached
    assert VerdictCache(state_dir).get(v.key) is not None


@pytest.mark.skipif(not HAS_TF, reason="needs a second runtime (tf.lite) in this venv")
def test_the_agent_falls_back_to_the_next_runtime_when_the_first_crashes(
        bundle_paths: dict[str, Path], state_dir: Path) -> None:
    sel = select_probed_runtime(["ai-edge-litert", "tensorflow"], bundle_paths["digits"],
                                state_dir=state_dir, env={FAULT_ENV: "segv:ai-edge-litert"},
                                timeout_s=120)
    assert sel.runtime.name == "tensorflow" and sel.fell_back
    crashed, ok = sel.verdicts
    assert (crashed.runtime, crashed.outcome, crashed.signal) == (
        "ai-edge-litert", "crashed", "SIGSEGV")
    assert ok.ok and ok.runtime == "tensorflow"
    level, kind, message, _ = crashed.event()
    assert (level, kind) == ("error", "runtime.probe_crashed") and "SIGSEGV" in message
    status = sel.as_dict()
    assert status["runtime"] == "tensorflow" and status["probes"][0]["outcome"] == "crashed"


def test_the_probe_command_prints_its_verdicts(bundle_paths: dict[str, Path],
                                               runtime: Runtime, state_dir: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "edge_agent.runtime.probe", "--bundle",
                        str(bundle_paths["digits"]), "--state-dir", str(state_dir),
                        "--runtime", runtime.name], capture_output=True, text=True,
                       env={**os.environ, FAULT_ENV: ""}, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["selected"] == str(runtime) and doc["probes"][0]["outcome"] == "ok"
