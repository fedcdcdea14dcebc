"""A bundle's runtime requirements (manifest ``requires``, issue 14 part 3): an agent whose
runtime cannot run the model refuses the update before any load, and one that can commits it.

Pure: the manifest's ``requires`` round-trips, is absent when empty (older bundles keep their
bytes), and is strict; :func:`edge_agent.variants.unmet` / :func:`check_requires` name what
is needed. Black-box, on a real ``edge-agent run``, real Mosquitto, real LiteRT: digits v3
with int4 weights (``edge-convert convert --mode int4-weights``, ai-edge-quantizer in
``.venv-quant``) is ``update.rejected`` with ``runtime_unsupported`` by an agent that sees its
runtime as tflite-runtime 2.14.0 (the fault seam ``seen@``; tflite-runtime 2.14.0 really
fails to prepare int4 DEQUANTIZE), no check child runs, v1 keeps serving and nothing else
moves; the same release commits on this machine's ai-edge-litert 2.x and serves.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import test_bundle_bounds as bounds
from update_agentproc import AgentProcess
from update_helpers import Bundles, Fleet
from waiting import wait_for

from edge_agent.bundle import read_bundle
from edge_agent.errors import ManifestError, RuntimeRequirementError
from edge_agent.manifest import Requires, parse_manifest
from edge_agent.runtime.backends import Runtime
from edge_agent.variants import check_requires, unmet

INT4 = Requires(runtimes={"ai-edge-litert": "1.0.1", "tensorflow": "2.21.0"})
OLD = "seen@ai-edge-litert:tflite-runtime=2.14.0"  # edge_agent.runtime.fault_seam


def rt(name: str, version: str) -> Runtime:
    return Runtime(name, version, None)


# --- pure --------------------------------------------------------------------------------


def test_requires_round_trips_and_is_absent_when_empty(bundles: Bundles) -> None:
    m = read_bundle(bundles.v1).manifest
    assert "requires" not in m.to_dict() and m.requires == Requires()
    d = replace(m, requires=INT4).to_dict()
    assert d["requires"] == {"runtimes": {"ai-edge-litert": "1.0.1", "tensorflow": "2.21.0"}}
    assert parse_manifest(json.loads(json.dumps(d))).requires == INT4


@pytest.mark.parametrize(("requires", "words"), [
    ({"runtimes": {"onnxruntime": "1.0"}}, "expected runtime names from ai-edge-litert"),
    ({"runtimes": {"ai-edge-litert": "new"}}, "manifest.requires.runtimes.ai-edge-litert"),
    ({"runtimes": ["ai-edge-litert"]}, "manifest.requires.runtimes: expected a JSON object"),
    ({"delegate": "tpu"}, "manifest.requires.delegate"),
])
def test_a_malformed_requires_is_manifest_invalid(bundles: Bundles, requires: Any,
                                                  words: str) -> None:
    d = json.loads(read_bundle(bundles.v1).manifest.to_json())
    d["requires"] = requires
    with pytest.raises(ManifestError, match=words):
        parse_manifest(d)


@pytest.mark.parametrize(("runtime", "ok"), [
    (rt("ai-edge-litert", "2.3.0"), True), (rt("ai-edge-litert", "1.0.1"), True),
    (rt("ai-edge-litert", "1.0.0"), False), (rt("tflite-runtime", "2.14.0"), False),
    (rt("tensorflow", "2.21.0"), True), (rt("tensorflow", "2.16.1"), False),
])
def test_unmet_runtimes_names_what_could_run_the_model(runtime: Runtime, ok: bool) -> None:
    why = unmet(INT4, delegate=None, runtime=runtime)
    if ok:
        assert why is None
    else:
        assert why == ("needs ai-edge-litert >= 1.0.1 or tensorflow >= 2.21.0 "
                       f"(here {runtime})")


def test_check_requires_refuses_a_bundle_no_model_of_which_runs_here(bundles: Bundles) -> None:
    b = read_bundle(bundles.v1)
    check_requires(b, delegate=None, runtime=rt("tflite-runtime", "2.14.0"))  # no requires
    int4 = replace(b, manifest=replace(b.manifest, requires=INT4))
    check_requires(int4, delegate=None, runtime=rt("ai-edge-litert", "2.3.0"))
    with pytest.raises(RuntimeRequirementError, match=r"digits v1 \(int8\) needs ai-edge-litert "
                       r">= 1.0.1 or tensorflow >= 2.21.0 \(here tflite-runtime 2.14.0\)"):
        check_requires(int4, delegate=None, runtime=rt("tflite-runtime", "2.14.0"))
    assert RuntimeRequirementError.code == "runtime_unsupported"


# --- black-box: a real agent ----------------------------------------------------------------


@pytest.fixture(scope="module")
def int4_v3(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits v3 converted with int4 weights for generic-x86_64, as a .tar (real TF and
    ai-edge-quantizer)."""
    from converter.build import ConvertOptions, convert_to_bundle

    out = tmp_path_factory.mktemp("int4") / "digits-3.tar"
    report = convert_to_bundle(ConvertOptions(
        model=digits.keras, representative=digits.calib_npz, eval_data=digits.eval_npz,
        profile="generic-x86_64", name="digits", version=3, mode="int4-weights",
        latency_runs=0, output=out))
    assert report["mode"] == "int4-weights" and report["requires"] == INT4.as_dict()
    return out


agent_proc = bounds.agent_proc  # a real agent serving digits v1 (not started)


def test_an_agent_whose_runtime_cannot_run_int4_weights_refuses_them_before_any_load(
        int4_v3: Path, agent_proc: AgentProcess, fleet: Fleet) -> None:
    agent_proc.start(runtime_fault=OLD)
    last, _ = bounds.release_rejected(agent_proc, fleet, int4_v3.read_bytes(),
                                      "runtime_unsupported")
    assert last["reason"] == ("digits v3 (int4-weights) needs ai-edge-litert >= 1.0.1 or "
                              "tensorflow >= 2.21.0 (here tflite-runtime 2.14.0)"), last
    events = agent_proc.get("/v1/agent/status")["recent_events"]
    kinds = [e["kind"] for e in events]
    assert "update.downloaded" in kinds and "update.test_loaded" not in kinds, kinds


def test_the_same_int4_release_commits_on_this_machines_litert_and_serves(
        int4_v3: Path, agent_proc: AgentProcess, fleet: Fleet) -> None:
    agent_proc.start()
    fleet.publish(int4_v3)
    st = wait_for(lambda: (s := agent_proc.update_status())["phase"] == "idle"
                  and s.get("last") and s, 90, "the int4 release to be decided")
    assert st["last"]["result"] == "committed", st["last"]
    assert agent_proc.serving() == 3
    y = agent_proc.predict(bounds.X)["predictions"]
    assert len(y) == 1 and abs(sum(y[0]) - 1.0) < 1e-3  # float softmax from int4 weights


def test_a_variant_keeps_the_runtimes_its_bundle_needs_and_can_carry_the_bundle(
        int4_v3: Path, bundles: Bundles) -> None:
    """``edge-convert bundle --variant`` copies BUNDLE's ``requires.runtimes``; a bundle whose
    variant runs here passes the pre-load check even when ``model.tflite`` would not."""
    from converter.variants import add_variants, parse_variant_spec

    base = read_bundle(bundles.v1)
    name, path, req = parse_variant_spec(f"small={int4_v3}")
    b = add_variants(base, [(name, path, req)])
    assert b.manifest.variants[0].requires == INT4 and b.manifest.requires == Requires()
    check_requires(b, delegate=None, runtime=rt("tflite-runtime", "2.14.0"))  # default runs
    flipped = replace(b, manifest=replace(b.manifest, requires=Requires(
        runtimes={"tensorflow": "9.0"})))
    check_requires(flipped, delegate=None, runtime=rt("ai-edge-litert", "2.3.0"))  # variant
    with pytest.raises(RuntimeRequirementError, match=r"no model this device can run \(small: "
                       r"needs ai-edge-litert >= 1.0.1 .*; default: needs tensorflow >= 9.0"):
        check_requires(flipped, delegate=None, runtime=rt("tflite-runtime", "2.14.0"))
