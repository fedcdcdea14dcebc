"""Model variants (issue 15 part 2): a bundle with an int8 variant before a float16
``model.tflite`` of the same Keras model, assembled by ``edge-convert bundle --variant``;
failover on a real ``edge-agent run`` with real LiteRT under a concurrent REST stream, the
fault injected by the runtime fault seam (``EDGE_RUNTIME_FAULT``); and a bundle no variant
of which this device can run."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from model_fixtures import TwoHeads, convert_cli
from variant_helpers import gauge as _gauge
from variant_helpers import serving as _serving
from variant_helpers import variant_bundle as variant_bundle
from waiting import wait_for

from edge_agent.bundle import read_bundle, tar_bytes, write_bundle
from edge_agent.errors import ManifestError, NoRunnableVariantError
from edge_agent.hooks import Hooks
from edge_agent.manifest import EncodedArray, Requires
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime


def test_bundle_cli_assembles_variants_and_single_model_bundles_keep_their_bytes(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path) -> None:
    b = read_bundle(variant_bundle)
    (v,) = b.manifest.variants
    assert (v.name, v.quantization_mode, v.file) == ("fast", "int8", "variants/fast.tflite")
    assert v.inputs[0].dtype == "int8" and b.manifest.inputs[0].dtype == "float32"
    assert len(v.golden) > 0 and b.variant_bytes["fast"] == read_bundle(
        two_heads.bundle).model_bytes
    assert list(b.model_files()) == ["model.tflite", "variants/fast.tflite"]
    assert "variants" in json.loads(b.manifest.to_json())
    # round trip through the tar form
    write_bundle(b, tmp_path / "v.tar")
    assert tar_bytes(read_bundle(tmp_path / "v.tar")) == tar_bytes(b)
    assert read_bundle(tmp_path / "v.tar").variant_bytes == b.variant_bytes
    # a single-model bundle: no variants key, the bytes it always had
    single = read_bundle(two_heads.bundle)
    assert single.manifest.variants == () and "variants" not in single.manifest.to_json()
    assert list(single.files()) == ["model.tflite", "manifest.json", "report.json"]
    assert tar_bytes(single) == tar_bytes(read_bundle(write_bundle(single, tmp_path / "s")))


@pytest.mark.parametrize("break_it, field", [
    (lambda d: d["variants"].append(dict(d["variants"][0])), "name"),  # duplicate name
    (lambda d: d["variants"][0].update(requires={"delegate": "npu"}), "delegate"),
    (lambda d: d["variants"][0].update(file="model.tflite"), "file"),
    (lambda d: d["variants"][0]["inputs"][0].update(shape=[1, 9]), "inputs"),
])
def test_nonsense_variants_are_manifest_invalid(variant_bundle: Path, tmp_path: Path,
                                                break_it: Any, field: str) -> None:
    d = tmp_path / "b"
    write_bundle(read_bundle(variant_bundle), d)
    m = json.loads((d / "manifest.json").read_text())
    break_it(m)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=field):
        read_bundle(d)


def test_listed_variant_member_missing_is_refused(variant_bundle: Path, tmp_path: Path) -> None:
    d = tmp_path / "b"
    write_bundle(read_bundle(variant_bundle), d)
    (d / "variants" / "fast.tflite").unlink()
    with pytest.raises(ManifestError, match=r"no variants/fast\.tflite"):
        read_bundle(d)


def test_bundle_with_no_runnable_variant_is_refused_naming_each_reason(
        variant_bundle: Path) -> None:
    b = read_bundle(variant_bundle)
    v = replace(b.manifest.variants[0], requires=Requires(delegate="edgetpu"))
    g = b.manifest.golden[0]
    bad = replace(g, outputs={k: EncodedArray.encode(np.full(a.shape, 7.0, np.float32))
                              for k, a in g.outputs.items()})  # model.tflite: wrong answers
    broken = replace(b, manifest=replace(b.manifest, variants=(v,), golden=(bad,)))
    reg = ModelRegistry(select_runtime(), Hooks())
    with pytest.raises(NoRunnableVariantError, match=r"fast: needs the edgetpu delegate.*"
                       r"default: .*golden") as e:
        reg.load(broken)
    assert e.value.code == "no_runnable_variant"
    assert reg.names() == []  # nothing moved
    reg.load(b)  # the good bundle still loads, on its preferred variant
    (snap,) = reg.snapshot()
    assert snap["versions"][0]["variant"] == "fast"


def test_failover_to_the_cpu_variant_and_back_under_a_request_stream(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fault = tmp_path / "delegate-broken"
    monkeypatch.setenv("EDGE_RUNTIME_FAULT", f"raise@fast:{fault}")
    x = two_heads.x[:1].tolist()
    with agent_process(tmp_path, variant_bundle, timeout_s=120,
                       toml="variant_backoff_s = 0.5\nvariant_backoff_max_s = 2\n") as proc:
        c = Client(proc.host, proc.port)
        assert _serving(c)["variant"] == "fast" and _serving(c)["degraded"] is False
        assert _gauge(c, "edge_agent_model_degraded") == 0.0
        results: list[tuple[int, Any]] = []
        stop = threading.Event()

        def stream() -> None:
            sc = Client(proc.host, proc.port)
            while not stop.is_set():
                r = sc.post("/v1/models/two:predict", {"instances": x})
                results.append((r.status, r.json()))
            sc.close()

        threads = [threading.Thread(target=stream, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) > 20, timeout_s=30)
        fault.touch()  # the delegate fails from now on
        wait_for(lambda: _serving(c)["degraded"] is True, timeout_s=10)
        assert _serving(c)["variant"] == "default"
        assert _gauge(c, "edge_agent_model_degraded") == 1.0
        assert _gauge(c, "edge_agent_model_variant_index") == 1.0
        n = len(results)
        wait_for(lambda: len(results) > n + 30, timeout_s=30)  # served by the CPU variant
        assert _serving(c)["variant"] == "default"  # still failing: the retry did not switch
        fault.unlink()  # the device is back
        wait_for(lambda: _serving(c)["variant"] == "fast", timeout_s=30)
        n = len(results)
        wait_for(lambda: len(results) > n + 20, timeout_s=30)
        stop.set()
        for t in threads:
            t.join(10)
        assert _serving(c)["degraded"] is False
        assert _gauge(c, "edge_agent_model_degraded") == 0.0
        failed = [r for r in results if r[0] != 200]
        assert len(failed) <= 1, failed[:3]  # at most the request that detected it
        ok = [r[1]["predictions"][0] for r in results if r[0] == 200]
        assert all(set(p) == {"class", "score"} for p in ok)
        want = int(np.argmax(two_heads.want_class[0]))
        assert all(int(np.argmax(p["class"])) == want for p in ok)  # both variants agree
        log = "".join(proc.lines)
        assert "model.degraded" in log or "variant 'fast' failed" in log, log[-3000:]
        assert "passes its golden vectors again" in log, log[-3000:]
        c.close()


@pytest.mark.parametrize("spec, says", [("fast={b},colour=red", "unknown or repeated option"),
                                        ("fast={b},delegate=npu", "delegate"),
                                        ("default={b}", "default")])
def test_bundle_cli_refuses_a_bad_variant_and_writes_nothing(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path, spec: str, says: str) -> None:
    out = tmp_path / "out"
    r = convert_cli("bundle", variant_bundle / "model.tflite", "--name", "two", "--version", 1,
                    "--latency-runs", 0, "--variant", spec.format(b=two_heads.bundle),
                    "-o", out)
    assert r.returncode != 0 and says in r.stderr, r.stderr[-2000:]
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written
