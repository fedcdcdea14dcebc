"""Strict manifest validation (issue 19 item 7): every rule broken once, each a ManifestError
naming the field path; a fuzz over mutated manifests that only ever raises ManifestError;
and a bundle on disk with a bad manifest, refused at start with an event naming the field.

``atol: NaN`` used to turn the golden check off; negative dimensions and NaN scales were
accepted; golden data that did not decode failed inside the runtime as an internal error.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.bundle import read_bundle, read_tar_bytes
from edge_agent.errors import ManifestError
from edge_agent.manifest import QUANTIZATION_MODES, parse_manifest

DROP = object()  # remove the key


@pytest.fixture(scope="module")
def base(digits: Any) -> dict[str, Any]:
    """The converter's digits manifest (int8 in, int8 out, 4 golden vectors, drift)."""
    d: dict[str, Any] = json.loads((digits.bundle / "manifest.json").read_text())
    return d


def b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()


def floated(d: dict[str, Any]) -> dict[str, Any]:
    """The manifest with a float32 output (as a dynamic-mode bundle has), golden outputs
    the dequantized int8 ones and the converter's float tolerance."""
    d = copy.deepcopy(d)
    out = d["outputs"][0]
    scale, zp = out["scale"], out["zero_point"]
    out.update(dtype="float32", scale=0.0, zero_point=0)
    for g in d["golden"]:
        q = np.frombuffer(base64.b64decode(g["output"]["b64"]), np.int8)
        f = ((q.astype(np.float32) - zp) * scale).reshape(g["output"]["shape"])
        g["output"].update(dtype="float32", b64=b64(f))
        g["atol"] = 1e-4
    return d


def mutate(d: dict[str, Any], path: str | tuple[Any, ...], value: Any) -> dict[str, Any]:
    """``d`` with ``path`` (``golden.0.atol``, or a tuple of keys) set to ``value`` (or
    removed: DROP)."""
    d = copy.deepcopy(d)
    *parents, last = path.split(".") if isinstance(path, str) else path
    node: Any = d
    for k in parents:
        node = node[int(k)] if isinstance(node, list) else node[k]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DROP:
        del node[key]
    else:
        node[key] = value
    return d


NAN, INF = math.nan, math.inf
# (path to change, new value, the field the error must name, a fragment of its message)
CASES = [
    ("golden.2.atol", NAN, "manifest.golden[2].atol", "got NaN"),
    ("golden.0.atol", INF, "manifest.golden[0].atol", "got Infinity"),
    ("golden.0.atol", -1, "manifest.golden[0].atol", ">= 0 and <= 16"),
    ("golden.0.atol", 255.0, "manifest.golden[0].atol", "tensor steps of an int8 output"),
    ("golden.0.atol", "2", "manifest.golden[0].atol", "got '2'"),
    ("inputs.0.shape.1", -8, "manifest.inputs[0].shape[1]", "got -8"),
    ("outputs.0.shape.0", 0, "manifest.outputs[0].shape[0]", "an integer >= 1"),
    ("inputs.0.shape", [], "manifest.inputs[0].shape", "a list of 1..8 entries"),
    ("inputs.0.shape", [1] * 9, "manifest.inputs[0].shape", "a list of 1..8 entries"),
    ("inputs.0.shape", [1, 1 << 20, 1 << 20, 1], "manifest.inputs[0].shape", "elements"),
    ("inputs.0.scale", NAN, "manifest.inputs[0].scale", "int8 tensors are quantized"),
    # scale 0 is a raw integer tensor (issue 12), so its zero point must be 0
    ("outputs.0.scale", 0.0, "manifest.outputs[0].zero_point", "has no zero point"),
    ("inputs.0.scale", -0.5, "manifest.inputs[0].scale", "got -0.5"),
    ("inputs.0.zero_point", 200, "manifest.inputs[0].zero_point", ">= -128 and <= 127"),
    ("inputs.0.zero_point", 1.5, "manifest.inputs[0].zero_point", "got 1.5"),
    ("inputs.0.dtype", "bfloat16", "manifest.inputs[0].dtype", "got 'bfloat16'"),
    ("inputs.0.name", "x" * 2000, "manifest.inputs[0].name", "2000 characters"),
    ("golden.1.output.shape", [1, 11], "manifest.golden[1].output.shape", "expected [1, 10]"),
    ("golden.0.input.shape", [1, 8, 8], "manifest.golden[0].input.shape", "[n, 8, 8, 1]"),
    ("golden.0.input.shape", [65, 8, 8, 1], "manifest.golden[0].input.shape", "batch 1..64"),
    ("golden.0.input.dtype", "float32", "manifest.golden[0].input.dtype",
     "'int8' (the tensor's dtype)"),
    ("golden.0.output.b64", "@@@@not base64", "manifest.golden[0].output.b64", "not base64"),
    ("golden.0.output.b64", b64(np.zeros(9, np.int8)), "manifest.golden[0].output.b64",
     "expected 10 bytes"),
    ("golden.0.output.b64", 12, "manifest.golden[0].output.b64", "got 12"),
    ("golden.0.output", DROP, "manifest.golden[0].output", "missing"),
    ("golden.3", "junk", "manifest.golden[3]", "a JSON object"),
    ("labels", [str(i) for i in range(9)], "manifest.labels", "no labels or 10"),
    ("labels.3", "y" * 300, "manifest.labels[3]", "at most 256 characters"),
    ("labels.3", 3, "manifest.labels[3]", "got 3"),
    ("version", 0, "manifest.version", "got 0"),
    ("version", True, "manifest.version", "got true"),
    ("version", 10 ** 50, "manifest.version", "<= 9007199254740991, got a 51-digit number"),
    ("name", "../evil", "manifest.name", "a string matching"),
    ("model.sha256", "XYZ", "manifest.model.sha256", "got 'XYZ'"),
    ("model.size_bytes", -1, "manifest.model.size_bytes", "got -1"),
    ("model.file", "other.tflite", "manifest.model.file", "'model.tflite'"),
    ("model", DROP, "manifest.model", "missing"),
    ("schema_version", 3, "manifest.schema_version", "schema_version 3 not supported"),
    ("quantization_mode", "int4", "manifest.quantization_mode", "got 'int4'"),
    ("task", "detect", "manifest.task", "got 'detect'"),
    ("output_is_probability", "yes", "manifest.output_is_probability", "true or false"),
    ("target_profiles", [5], "manifest.target_profiles[0]", "got 5"),
    ("producer", "x", "manifest.producer", "a JSON object"),
    ("extra", [1], "manifest.extra", "a JSON object"),
    ("inputs", [], "manifest.inputs", "a list of 1"),
    ("outputs", DROP, "manifest.outputs", "missing"),
    ("golden", [None] * 65, "manifest.golden", "0..64 entries"),
    ("preprocessing.std", [0.0], "manifest.preprocessing.std", "expected no 0"),
    ("preprocessing.std", [1.0, 2.0], "manifest.preprocessing.std", "a list of 1, got a list"),
    ("preprocessing.mean.0", NAN, "manifest.preprocessing.mean[0]", "got NaN"),
    ("preprocessing.resize", [8, 9], "manifest.preprocessing.resize", "[8, 8], got [8, 9]"),
    ("preprocessing.color", "cmyk", "manifest.preprocessing.color", "got 'cmyk'"),
    ("drift_reference.class_hist", [0.1] * 9, "manifest.drift_reference.class_hist",
     "a list of 10"),
    ("drift_reference.class_hist.0", 2.0, "manifest.drift_reference.class_hist[0]",
     ">= 0 and <= 1"),
    ("drift_reference.class_hist", [0.5] * 10, "manifest.drift_reference.class_hist",
     "summing to at most 1"),
    ("drift_reference.confidence_edges", [0.0, 0.5, 0.4, 1.0],
     "manifest.drift_reference.confidence_edges", "strictly increasing"),
    ("drift_reference.input_std", [-1.0], "manifest.drift_reference.input_std[0]", ">= 0"),
    ("drift_reference.input_mean", [0.1, 0.2], "manifest.drift_reference.input_mean",
     "a list of 1"),
    ("drift_reference.samples", 0, "manifest.drift_reference.samples", "got 0"),
    ("drift_reference", [], "manifest.drift_reference", "a JSON object"),
]


@pytest.mark.parametrize(("path", "value", "field", "fragment"), CASES,
                         ids=[f"{c[0]}={str(c[1])[:12]}" for c in CASES])
def test_a_broken_rule_is_a_manifest_error_naming_the_field(
        base: dict[str, Any], path: str, value: Any, field: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as ei:
        parse_manifest(mutate(base, path, value), "b.tar")
    e = ei.value
    assert e.field == field, str(e)
    assert str(e).startswith(f"b.tar: {field}: expected ") or "not supported" in str(e) or \
        "not base64" in str(e), str(e)
    assert fragment in str(e), str(e)
    assert "\n" not in str(e)


FLOAT_CASES = [
    ("golden.0.atol", 0.5, "manifest.golden[0].atol", "0.01 x max(1, max |output|)"),
    ("outputs.0.scale", 0.1, "manifest.outputs[0].scale", "float32 tensors are not quantized"),
    ("outputs.0.zero_point", 3, "manifest.outputs[0].zero_point", "expected 0"),
    ("golden.1.output.b64", b64(np.full(10, np.nan, np.float32)),
     "manifest.golden[1].output.b64", "expected finite values, got NaN"),
]


@pytest.mark.parametrize(("path", "value", "field", "fragment"), FLOAT_CASES)
def test_float_outputs_have_finite_goldens_and_a_relative_tolerance(
        base: dict[str, Any], path: str, value: Any, field: str, fragment: str) -> None:
    good = floated(base)
    assert parse_manifest(good).outputs[0].dtype == "float32"
    with pytest.raises(ManifestError) as ei:
        parse_manifest(mutate(good, path, value), "b.tar")
    assert ei.value.field == field and fragment in str(ei.value), str(ei.value)


def test_what_the_converter_writes_validates_and_round_trips(base: dict[str, Any],
                                                            digits: Any) -> None:
    m = parse_manifest(base)
    assert json.loads(m.to_json()) == base
    assert parse_manifest(json.loads(read_bundle(digits.bundle_v2).manifest.to_json()))
    modes = __import__("converter.modes").modes
    assert set(QUANTIZATION_MODES) == set(modes.MODES)  # float32: wrapped float models


def _bundle_dir(digits: Any, tmp_path: Path, manifest: bytes) -> Path:
    d = tmp_path / "bad"
    shutil.copytree(digits.bundle, d)
    (d / "manifest.json").write_bytes(manifest)
    return d


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"version": 1' + b"9" * 5000 + b"}", "more than 4300 digits"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"name": "\xff"}', "not UTF-8"),
    (b'{"name": ', "malformed JSON"),
    (b"[]", "expected a JSON object"),
])
def test_a_manifest_that_is_not_a_json_object_is_a_manifest_error(
        digits: Any, tmp_path: Path, raw: bytes, fragment: str) -> None:
    d = _bundle_dir(digits, tmp_path, raw)
    for read in (lambda: read_bundle(d), lambda: read_tar_bytes(tar_bytes_of(d), "b.tar")):
        with pytest.raises(ManifestError) as ei:
            read()
        assert ei.value.field == "manifest" and fragment in str(ei.value), str(ei.value)


def tar_bytes_of(d: Path) -> bytes:
    """The directory's three files as a tar, the manifest as is (not re-serialized)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name in ("model.tflite", "manifest.json", "report.json"):
            tf.add(d / name, name)
    return buf.getvalue()


def test_a_bundle_on_disk_with_a_bad_manifest_is_refused_at_start_naming_the_field(
        digits: Any, tmp_path: Path, base: dict[str, Any], start_agent: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """``edge-agent run --model`` / ``[[models]]``: a model.load_failed event, not a crash,
    not a traceback; the agent serves its other models."""
    bad = _bundle_dir(digits, tmp_path, json.dumps(mutate(base, "golden.0.atol", NAN))
                      .encode())
    agent = start_agent(bad, digits.bundle_v2)
    failed = [e for e in agent.events if e.kind == "model.load_failed"]
    assert len(failed) == 1 and "manifest.golden[0].atol: expected a finite number" in \
        failed[0].message, [e.message for e in agent.events]
    assert agent.registry.active_version("digits") == 2  # the good bundle serves
    assert "Traceback" not in caplog.text


# ---------------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10 ** 20), 10 ** 20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)


def _paths(v: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in ``v`` as a tuple (inserted values may have any string as a key)."""
    out: list[tuple[Any, ...]] = []
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else []
    for k, x in items:
        p = (*prefix, k)
        out.append(p)
        if k != "b64":
            out.extend(_paths(x, p))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mutated_manifest_parses_or_raises_only_manifest_error(
        base: dict[str, Any], data: st.DataObject) -> None:
    d = base
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(d)
        path = data.draw(st.sampled_from(paths))
        value = data.draw(st.one_of(json_values, st.just(DROP)))
        d = mutate(d, path, value)
    try:
        m = parse_manifest(d, "f.tar")
    except ManifestError as e:
        assert str(e).startswith(f"f.tar: {e.field}: ") and "\n" not in str(e)
        return
    for g in m.golden:  # what did parse is usable as the runtime uses it
        assert g.input.decode().shape == g.input.shape and math.isfinite(g.atol)


def test_golden_vectors_that_validate_but_do_not_fit_the_model_are_a_golden_mismatch(
        digits: Any) -> None:
    """A consistent manifest that is not this model's (input [1, 8, 8, 2] declared and in
    the golden data; the model takes [1, 8, 8, 1]): the interpreter's ValueError surfaced
    as an internal error; now it is the model's fault, named."""
    import dataclasses

    from edge_agent.bundle import EncodedArray
    from edge_agent.errors import GoldenMismatchError
    from edge_agent.runtime.backends import select_runtime
    from edge_agent.runtime.model import verify_golden

    b = read_bundle(digits.bundle)
    g = b.manifest.golden[0]
    x = np.concatenate([g.input.decode()] * 2, axis=-1)
    inp = dataclasses.replace(b.manifest.inputs[0], shape=(1, 8, 8, 2))
    m = dataclasses.replace(b.manifest, inputs=(inp,), drift_reference=None,
                            golden=(dataclasses.replace(
                                g, inputs={inp.name: EncodedArray.encode(x)}),))
    assert parse_manifest(json.loads(m.to_json())) == m  # it validates
    with pytest.raises(GoldenMismatchError, match=r"input int8 \[1, 8, 8, 2\] does not fit"):
        verify_golden(dataclasses.replace(b, manifest=m), select_runtime())


# ---------------------------------------------------------------- schema 2 (issue 12)


@pytest.fixture(scope="module")
def base2(two_heads: Any) -> dict[str, Any]:
    """The converter's two-head manifest (schema 2: input ``features``; heads ``class``
    and ``score``; golden vectors keyed by tensor name)."""
    d: dict[str, Any] = json.loads((two_heads.bundle / "manifest.json").read_text())
    assert d["schema_version"] == 2 and d["heads"] == {"class": "class", "score": "regression"}
    return d


def two_inputs(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with a second float input ``mask`` [1, 2], golden data and drift statistics
    for it."""
    d = copy.deepcopy(d)
    d["inputs"].append({"name": "mask", "shape": [1, 2], "dtype": "float32", "scale": 0.0,
                        "zero_point": 0})
    for g in d["golden"]:
        n = g["inputs"]["features"]["shape"][0]
        g["inputs"]["mask"] = {"dtype": "float32", "shape": [n, 2],
                               "b64": b64(np.zeros((n, 2), np.float32))}
    per_input = (d.get("drift_reference") or {}).get("inputs")
    if per_input is not None:  # the converter writes every input's statistics
        per_input["mask"] = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    return d


G0 = ("golden", 0)
SCHEMA2_CASES = [
    # several inputs: every golden vector feeds every input, all with one batch
    (("golden", 0, "inputs", "mask"), DROP, "manifest.golden[0].inputs",
     "expected every input by name (features, mask), got features"),
    (("golden", 0, "inputs", "mask", "shape"), [2, 2], "manifest.golden[0].inputs.mask.shape",
     "as the input"),
    # duplicate tensor names (requests and golden vectors name them)
    (("inputs", 1, "name"), "features", "manifest.inputs[1].name",
     "a name no other tensor has, got 'features' again"),
    (("outputs", 1, "name"), "class", "manifest.outputs[1].name",
     "a name no other tensor has, got 'class' again"),
    # the heads table
    (("heads", "score"), "mask", "manifest.heads.score", "got 'mask'"),
    (("heads", "score"), "class", "manifest.heads", "at most one class head, got class, score"),
    (("heads", "extra"), "raw", "manifest.heads", "one entry per output (class, score)"),
    (("heads", "score"), DROP, "manifest.heads", "one entry per output (class, score)"),
    (("heads",), DROP, "manifest.heads", "missing"),
    (("task",), "regression", "manifest.heads",
     "regression heads and no class head for task 'regression'"),
    (("labels",), ["a", "b"], "manifest.labels",
     "no labels or 3 (one per value of the class head 'class'"),
    # golden vectors by tensor name
    ((*G0, "outputs", "score"), DROP, "manifest.golden[0].outputs",
     "every output by name (class, score), got class (missing score)"),
    ((*G0, "outputs", "nope"), {"dtype": "int8", "shape": [1, 1], "b64": "AA=="},
     "manifest.golden[0].outputs", "got class, nope, score (unknown nope)"),
    ((*G0, "inputs", "nope"), {"dtype": "int8", "shape": [1, 1], "b64": "AA=="},
     "manifest.golden[0].inputs", "got features, mask, nope"),
    ((*G0, "atol", "score"), DROP, "manifest.golden[0].atol",
     "one tolerance per golden output (class, score), got class"),
    ((*G0, "outputs", "score", "shape"), [1, 3], "manifest.golden[0].outputs.score.shape",
     "expected [1, 1]"),
    # per-head drift statistics (monitoring of regression/raw heads)
    (("drift_reference", "outputs"), {"class": {"mean": 0.0, "std": 1.0}},
     "manifest.drift_reference.outputs", "got 'class' (the class head)"),
    (("drift_reference", "outputs"), {"nope": {"mean": 0.0, "std": 1.0}},
     "manifest.drift_reference.outputs", "got 'nope' (not an output)"),
    (("drift_reference", "outputs", "score"), {"mean": NAN, "std": 1.0},
     "manifest.drift_reference.outputs.score.mean", "got NaN"),
    (("drift_reference", "outputs", "score"), {"mean": 0.0, "std": -1.0},
     "manifest.drift_reference.outputs.score.std", "got -1.0"),
]


@pytest.mark.parametrize(("path", "value", "field", "fragment"), SCHEMA2_CASES,
                         ids=[f"{'.'.join(map(str, c[0]))}={str(c[1])[:12]}"
                              for c in SCHEMA2_CASES])
def test_a_broken_schema2_rule_is_a_manifest_error_naming_the_field(
        base2: dict[str, Any], path: tuple[Any, ...], value: Any, field: str,
        fragment: str) -> None:
    good = two_inputs(base2)
    if path[0] == "drift_reference":
        good["drift_reference"]["outputs"] = {"score": {"mean": 0.0, "std": 1.0}}
    assert parse_manifest(good).inputs[1].name == "mask"  # the base is fine
    with pytest.raises(ManifestError) as ei:
        parse_manifest(mutate(good, path, value), "b.tar")
    e = ei.value
    assert e.field == field, str(e)
    assert str(e).startswith(f"b.tar: {field}: expected "), str(e)
    assert fragment in str(e), str(e)
    assert "\n" not in str(e)


def test_schema2_with_several_inputs_and_head_statistics_round_trips(
        base2: dict[str, Any]) -> None:
    d = two_inputs(base2)
    d["drift_reference"]["outputs"] = {"score": {"mean": 0.5, "std": 2.0}}
    m = parse_manifest(d)
    assert [s.name for s in m.inputs] == ["features", "mask"]
    assert m.drift_reference is not None and m.drift_reference.outputs["score"].std == 2.0
    assert json.loads(m.to_json()) == d
    assert json.loads(parse_manifest(base2).to_json()) == base2  # no `outputs` key added


def test_schema1_carries_no_head_statistics(base: dict[str, Any]) -> None:
    d = copy.deepcopy(base)
    d["drift_reference"]["outputs"] = {}
    with pytest.raises(ManifestError) as ei:
        parse_manifest(d, "b.tar")
    assert ei.value.field == "manifest.drift_reference.outputs", str(ei.value)
