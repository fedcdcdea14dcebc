"""Issue 12 parts 1 and 4: models with several inputs, and a regression model, end to end
— real Keras models, real TF conversion by the CLI, ``edge-convert verify``, a real
``edge-agent run`` process, real REST over sockets.

Before: the converter refused a model with two inputs (``_one_input``); data was an
``x`` array only; a 1-value tabular model was ``raw`` and its report had no metric
against its targets. Now the ``.npz`` holds one array per input name (or a folder of
shards), every input is in the manifest, the golden vectors and the drift reference by
name, and a regression head is scored with MAE/RMSE/correlation against ``y``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from multi_models import Built, tabular_regression, two_input

from edge_agent.bundle import read_bundle


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "converter.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)


@dataclass(frozen=True)
class Converted:
    built: Built
    bundle: Path
    report: dict[str, Any]


def _convert(built: Built, out: Path, *extra: object) -> Converted:
    r = _cli("convert", built.keras, "--representative", built.calib, "--profile",
             "generic-x86_64", "--latency-runs", 2, "--json", "-o", out, *extra)
    assert r.returncode == 0, r.stderr
    return Converted(built, out, json.loads(r.stdout))


@pytest.fixture(scope="module")
def two_in(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """Evaluated on a folder of two .npz shards (held-out data)."""
    d = tmp_path_factory.mktemp("two-in")
    built = two_input(d)
    shards = d / "eval"
    shards.mkdir()
    with np.load(built.calib) as z:
        arrays = {k: z[k] for k in z.files}
    for i, sl in enumerate((slice(0, 100), slice(100, None))):
        np.savez(shards / f"part-{i}.npz", **{k: v[sl] for k, v in arrays.items()})
    return _convert(built, d / "two-v1", "--name", "twoin", "--eval", shards)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    d = tmp_path_factory.mktemp("reg")
    built = tabular_regression(d)
    return _convert(built, d / "reg-v1", "--name", "reg", "--task", "regression",
                    "--eval", d / "eval.npz")


@pytest.fixture(scope="module")
def served(two_in: Converted, reg: Converted, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Client]:
    tmp = tmp_path_factory.mktemp("agent")
    toml = f'[[models]]\nbundle = "{reg.bundle}"\n'
    with agent_process(tmp, two_in.bundle, toml=toml) as proc:
        c = Client(proc.host, proc.port)
        yield c
        c.close()


def _close(got: Any, want: np.ndarray, rel: float) -> None:
    span = max(1.0, float(np.ptp(want)))
    np.testing.assert_allclose(np.asarray(got, np.float32).reshape(want.shape), want,
                               atol=rel * span)


def test_two_input_manifest_has_every_input_by_name_in_specs_golden_and_drift(
        two_in: Converted) -> None:
    m = read_bundle(two_in.bundle).manifest
    assert sorted(s.name for s in m.inputs) == ["image", "meta"]
    assert sorted(s.name for s in m.outputs) == ["class", "score"]
    assert m.schema_version == 2 and m.task == "multi_output"
    assert m.heads == {"class": "class", "score": "regression"}
    assert m.golden and all(sorted(g.inputs) == ["image", "meta"] for g in m.golden)
    ref = m.drift_reference
    assert ref is not None and sorted(ref.inputs) == ["image", "meta"]
    assert len(ref.inputs["image"].mean) == 1 and len(ref.inputs["meta"].mean) == 3
    with np.load(two_in.built.calib) as z:  # statistics of the representative data
        np.testing.assert_allclose(ref.inputs["meta"].mean, z["meta"].mean(axis=0), atol=1e-4)
    assert two_in.report["evaluation"]["samples"] == 192  # both shards
    assert two_in.report["evaluation"]["data"].endswith("eval")


def test_two_input_verify_checks_golden_vectors_on_every_runtime(two_in: Converted) -> None:
    r = _cli("verify", two_in.bundle)
    assert r.returncode == 0, r.stderr + r.stdout


def test_two_input_rest_row_objects_keyed_by_input_name_return_both_outputs(
        two_in: Converted, served: Client) -> None:
    held = two_in.built.held
    rows = [{"image": held["image"][i].tolist(), "meta": held["meta"][i].tolist()}
            for i in range(len(held["meta"]))]
    r = served.post("/v1/models/twoin:predict", {"instances": rows})
    assert r.status == 200, r.body
    preds = r.json()["predictions"]
    assert len(preds) == len(rows) and all(p.keys() == {"class", "score"} for p in preds)
    _close([p["class"] for p in preds], two_in.built.want["class"], 0.05)
    _close([p["score"] for p in preds], two_in.built.want["score"], 0.05)


def test_two_input_rest_columnar_returns_both_outputs(two_in: Converted,
                                                      served: Client) -> None:
    held = two_in.built.held
    r = served.post("/v1/models/twoin:predict",
                    {"inputs": {k: v.tolist() for k, v in held.items()}})
    assert r.status == 200, r.body
    outs = r.json()["outputs"]
    assert outs.keys() == {"class", "score"}
    _close(outs["class"], two_in.built.want["class"], 0.05)
    _close(outs["score"], two_in.built.want["score"], 0.05)


def test_two_input_missing_input_is_a_400_and_the_model_keeps_serving(
        two_in: Converted, served: Client) -> None:
    held = two_in.built.held
    r = served.post("/v1/models/twoin:predict", {"inputs": {"image": held["image"][:1].tolist()}})
    assert r.status == 400 and "meta" in r.json()["error"], r.body
    ok = served.post("/v1/models/twoin:predict",
                     {"inputs": {k: v[:1].tolist() for k, v in held.items()}})
    assert ok.status == 200 and ok.json()["outputs"].keys() == {"class", "score"}


def test_regression_bundle_has_task_regression_and_one_regression_head(reg: Converted) -> None:
    m = read_bundle(reg.bundle).manifest
    assert m.task == "regression" and m.heads == {"value": "regression"}
    assert m.class_head is None and m.labels == () and m.schema_version == 2


def test_regression_report_scores_the_head_against_y_never_top1(reg: Converted) -> None:
    ev = reg.report["evaluation"]
    head = ev["heads"]["value"]
    assert head["kind"] == "regression" and "top1_agreement" not in head
    assert ev["top1_agreement"] is None and ev["float_top1"] is None and ev["per_class"] == []
    assert reg.report["classes"] == 0 and reg.report["task"] == "regression"
    y = reg.built.held_y.astype(np.float64)
    f = reg.built.want["value"].ravel().astype(np.float64)
    mae_f = float(np.abs(f - y).mean())
    got = head["target"]
    assert got["float"]["mae"] == pytest.approx(mae_f, abs=1e-3)  # measured on eval.npz
    assert got["float"]["rmse"] >= got["float"]["mae"]
    assert got["quant"]["mae"] < 0.5 and got["quant"]["correlation"] > 0.98
    assert {"mae", "rmse", "correlation"} <= head.keys()  # quantized vs float


def test_regression_served_over_rest_close_to_keras(reg: Converted, served: Client) -> None:
    x = reg.built.held["features"]
    r = served.post("/v1/models/reg:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body
    _close(r.json()["predictions"], reg.built.want["value"], 0.03)
    c = served.post("/v1/models/reg:classify", {"examples": [{"features": x[0].tolist()}]})
    assert c.status == 400 and "class head" in c.json()["error"], c.body


def test_regression_is_inferred_from_float_targets_without_task(
        reg: Converted, tmp_path: Path) -> None:
    out = _convert(reg.built, tmp_path / "inferred", "--samples", 64, "--mode", "dynamic")
    m = read_bundle(out.bundle).manifest
    assert m.task == "regression" and m.heads == {"value": "regression"}
    assert out.report["evaluation"]["heads"]["value"]["target"]["float"]["mae"] < 0.5


def test_probation_times_a_served_multi_input_request_on_both_versions(
        two_in: Converted) -> None:
    """Interleaved probation timing: the sample kept from a real request of a two-input
    model holds every input, and ``time_pair`` runs it on both versions (it used to keep
    the first input only, and invoking that on a two-input model failed, which silently
    stopped the latency rule)."""
    from edge_agent.bundle import read_bundle as read
    from edge_agent.hooks import Hooks
    from edge_agent.registry import ModelRegistry, ServedModel
    from edge_agent.runtime.backends import select_runtime
    from edge_agent.update.probation import ProbationMonitor, time_pair

    hooks = Hooks()
    reg = ModelRegistry(select_runtime(), hooks, num_threads=1)
    bundle = read(two_in.bundle)
    old = reg.load(bundle)
    new = ServedModel(bundle, select_runtime(), num_threads=1)  # a second served copy
    mon = ProbationMonitor(hooks, sample_every_s=0.0)
    mon.start(bundle.manifest.name, bundle.manifest.version)
    held = two_in.built.held
    old.predict({k: v[:3] for k, v in held.items()})
    sample = mon.take_sample()
    assert sample is not None and sorted(sample) == ["image", "meta"]
    assert all(len(a) == 1 for a in sample.values())
    for new_first in (False, True):
        t_old, t_new = time_pair(old, new, sample, new_first)
        assert t_old > 0 and t_new > 0
    mon.close()
