"""The runtime matrix: bundles from today's TensorFlow on every runtime we support.

Runs unchanged in the main venv (ai-edge-litert 2.x, numpy 2), in ai-edge-litert 1.4.0 and
in tflite-runtime 2.14.0 + numpy<2 (``scripts/runtime_matrix.sh`` builds those venvs).
What an old runtime cannot do is written down here as an expectation, so a runtime that
suddenly loads (or refuses) a model fails the test instead of passing silently.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from matrix_expect import first_refused, refusal

import edge_agent
from edge_agent.bundle import Bundle
from edge_agent.errors import ModelLoadError
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import Runtime, parse_version
from edge_agent.runtime.capabilities import capabilities, runtime_notes
from edge_agent.runtime.model import LoadedModel, verify_golden

pytestmark = pytest.mark.matrix

def test_the_venv_runs_the_runtime_it_was_built_for(runtime: Runtime) -> None:
    expect = os.environ.get("EDGE_MATRIX_EXPECT")
    if expect:
        assert str(runtime) == expect
    else:  # the main venv
        assert runtime.name == "ai-edge-litert"
    if os.environ.get("EDGE_MATRIX_INSTALLED") == "1":
        # The wheel installed with --no-deps, not the source tree, is under test.
        assert "site-packages" in Path(edge_agent.__file__).parts, edge_agent.__file__
    if runtime.name == "tflite-runtime":
        assert int(np.__version__.split(".")[0]) < 2, "tflite-runtime 2.14 needs numpy<2"


@pytest.mark.parametrize("name", ["digits", "mobilenet_v2"])
def test_golden_vectors_match_on_this_runtime(name: str, bundles: dict[str, Bundle],
                                              runtime: Runtime) -> None:
    b = bundles[name]
    assert b.manifest.tensorflow_version, "bundle must say which TensorFlow converted it"
    res = verify_golden(b, runtime)
    assert res.ok and res.vectors == len(b.manifest.golden) >= 1
    assert res.max_abs_diff <= min(g.atol for g in b.manifest.golden)


def test_batches_larger_than_the_model_batch_give_the_same_answers(
        bundles: dict[str, Bundle], runtime: Runtime) -> None:
    b = bundles["digits"]
    m = LoadedModel(runtime, b.model_bytes)
    xs = np.concatenate([g.input.decode() for g in b.manifest.golden])
    want = np.concatenate([g.output.decode() for g in b.manifest.golden])
    got = m.invoke_raw(xs)[0]
    assert got.shape == want.shape
    assert np.max(np.abs(got.astype(int) - want.astype(int))) <= b.manifest.golden[0].atol


def test_predict_dequantizes_to_probabilities(bundles: dict[str, Bundle],
                                              runtime: Runtime) -> None:
    b = bundles["digits"]
    m = LoadedModel(runtime, b.model_bytes)
    x = b.manifest.golden[0].input.decode()
    probs = m.predict(x)[0]
    assert probs.dtype == np.float32 and probs.shape == (1, 10)
    assert abs(float(probs.sum()) - 1.0) < 0.05


@pytest.mark.parametrize("name", ["log_int8", "sqrt_int8"])
def test_a_model_with_an_op_this_runtime_lacks_is_refused_at_load(
        name: str, bundles: dict[str, Bundle], runtime: Runtime) -> None:
    b = bundles[name]
    op = refusal(name, runtime)
    if op is None:
        assert verify_golden(b, runtime).ok
        return
    with pytest.raises(ModelLoadError) as e:
        LoadedModel(runtime, b.model_bytes)
    msg = str(e.value)
    assert str(runtime) in msg, msg  # names the runtime and its version
    assert re.search(rf"'{op}' version '2'", msg), msg  # names the op and its version
    assert "\n" not in msg and len(msg) < 500


def test_the_registry_keeps_serving_its_other_models_when_one_is_refused(
        bundles: dict[str, Bundle], runtime: Runtime) -> None:
    refused = first_refused(runtime)
    if refused is None:
        pytest.skip(f"{runtime} loads every bundle of the matrix")
    reg = ModelRegistry(runtime)
    digits = bundles["digits"]
    reg.load(digits)
    with pytest.raises(ModelLoadError, match=str(refusal(refused, runtime))):
        reg.load(bundles[refused])
    assert reg.names() == ["digits"]
    g = digits.manifest.golden[0]
    pred = reg.get("digits").predict(g.input.decode())
    want = int(np.argmax(g.output.decode()))
    assert pred.top1 is not None and int(pred.top1[0]) == want


def test_capabilities_say_what_this_runtime_lacks(runtime: Runtime) -> None:
    caps = capabilities(runtime)
    if runtime.name == "tflite-runtime":
        assert caps.int8_xnnpack is False  # observed, not just looked up
        assert {"int8-xnnpack", "numpy2", "ops"} <= set(caps.lacks)
        assert any("no int8 XNNPACK" in n for n in runtime_notes(runtime))
    elif runtime.name == "ai-edge-litert":
        assert caps.int8_xnnpack is True
        assert "int8-xnnpack" not in caps.lacks
        old = parse_version(runtime.version) < (2, 0)
        assert ("ops" in caps.lacks) == old
    assert all(n.startswith(str(runtime)) for n in caps.notes)
    assert caps.as_dict()["version"] == runtime.version


def test_the_agent_refuses_a_model_its_runtime_lacks_and_keeps_serving_the_others(
        bundle_paths: dict[str, Path], bundles: dict[str, Bundle], runtime: Runtime,
        tmp_path: Path) -> None:
    """The real agent (store, registry, REST on loopback) on this venv's runtime."""
    import json
    import urllib.request

    from edge_agent.app import Agent
    from edge_agent.config import load_config

    refused = first_refused(runtime)
    if refused is None:
        pytest.skip(f"{runtime} loads every bundle of the matrix")
    cfg = load_config(None, {
        "http.enabled": True, "http.host": "127.0.0.1", "http.port": 0,
        "agent.store_dir": str(tmp_path / "store"), "agent.profile": "generic-x86_64",
        "agent.device_id": "matrix", "agent.runtime": runtime.name,
        "models": [{"bundle": str(bundle_paths["digits"])},
                   {"bundle": str(bundle_paths[refused])}]}, env={})
    agent = Agent(cfg, components=[])
    agent.start()
    try:
        assert str(agent.runtime) == str(runtime)
        assert agent.registry.names() == ["digits"]
        failed = [e for e in agent.events if e.kind == "model.load_failed"]
        assert len(failed) == 1 and refused in failed[0].message
        assert f"'{refusal(refused, runtime)}' version '2'" in failed[0].message
        assert agent.http is not None
        g = bundles["digits"].manifest.golden[0]
        spec = bundles["digits"].manifest.inputs[0]
        x = (g.input.decode().astype(np.float32) - spec.zero_point) * spec.scale
        req = urllib.request.Request(f"{agent.http.url}/v1/models/digits:predict",
                                     data=json.dumps({"instances": x.tolist()}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            got = np.asarray(json.loads(r.read())["predictions"])
        assert int(got.argmax()) == int(np.argmax(g.output.decode()))
        status = agent.status()
        assert refused in status["load_failures"]
        assert status["runtime"]["capabilities"]["notes"] == runtime_notes(runtime)
    finally:
        agent.stop()


def test_the_qemu_crash_is_a_known_limit_of_new_litert_on_aarch64_only() -> None:
    from edge_agent.runtime.capabilities import known_limits

    def keys(version: str, machine: str) -> set[str]:
        return {lim.key for lim in known_limits("ai-edge-litert", version, machine)}

    assert "qemu" in keys("2.3.0", "aarch64") and "qemu" in keys("2.2.0", "aarch64")
    assert "qemu" not in keys("2.1.6", "aarch64") and "qemu" not in keys("2.3.0", "x86_64")
    assert "ops" in keys("1.4.0", "x86_64") and "ops" not in keys("2.0.3", "x86_64")
