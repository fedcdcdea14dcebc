"""The digits CNN: full int8, small, as accurate as float; the CLI is quiet and parseable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from convert_helpers import assert_quiet, convert_args, run_cli

from converter.graph import inspect_graph
from converter.tfload import import_tf
from edge_agent.bundle import read_bundle
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel


def test_digits_converts_to_full_int8_small_and_within_one_point(digits) -> None:
    b = read_bundle(digits.bundle)
    # Full integer: int8 IO, and no op computes in float anywhere in the graph.
    assert b.manifest.quantization_mode == "int8"
    assert b.manifest.inputs[0].dtype == "int8" and b.manifest.outputs[0].dtype == "int8"
    graph = inspect_graph(b.model_bytes)
    assert {t.dtype for t in graph.tensors.values()} <= {"int8", "int32"}
    assert "QUANTIZE" not in {o.name for o in graph.ops}  # no float boundary at all
    # Size ratio from the report, re-checked against the bytes actually in the bundle.
    size = b.report["size"]
    assert size["quant_bytes"] == len(b.model_bytes)
    assert len(b.model_bytes) / size["float_bytes"] <= 0.30
    # Accuracy measured independently: Keras float model vs the bundle on LiteRT.
    ev = np.load(digits.eval_npz)
    tf = import_tf()
    keras_model = tf.keras.models.load_model(digits.keras, compile=False)
    float_acc = float(np.mean(np.argmax(keras_model.predict(ev["x"], verbose=0), 1) == ev["y"]))
    qm = LoadedModel(select_runtime(), b.model_bytes)
    quant_acc = float(np.mean(np.argmax(qm.predict(ev["x"])[0], 1) == ev["y"]))
    assert len(ev["y"]) >= 400  # held-out split, not the training data
    assert float_acc >= 0.95
    assert 100 * (float_acc - quant_acc) <= 1.0, (float_acc, quant_acc)
    # The report says the same thing the independent measurement does.
    assert abs(b.report["evaluation"]["quant_top1"] - quant_acc) < 1e-3


def test_fixed_batch_graph_has_no_dynamic_shape_ops(digits) -> None:
    b = read_bundle(digits.bundle)
    ops = {o.name for o in inspect_graph(b.model_bytes).ops}
    assert not ops & {"SHAPE", "PACK", "STRIDED_SLICE"}, ops
    assert b.manifest.inputs[0].shape == (1, 8, 8, 1)


def test_cli_convert_json_parses_and_terminal_stays_quiet(digits, tmp_path: Path) -> None:
    out = tmp_path / "digits-json"
    r = run_cli(*convert_args(digits.keras, digits.calib_npz, out, "--eval", digits.eval_npz,
                              "--json"))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no TF/LiteRT chatter, no Python warnings
    report = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert report["mode"] == "int8" and report["profile"] == "generic-x86_64"
    assert report["evaluation"]["labelled"] and len(report["evaluation"]["per_class"]) == 10
    assert set(report["latency_ms"]) == {"float", "quant", "speedup"}
    assert report["memory"]["fits"] and report["warnings"] == []
    assert json.loads((out / "report.json").read_text()) == report


def test_cli_convert_table_output_is_quiet(digits, tmp_path: Path) -> None:
    out = tmp_path / "digits-table"
    r = run_cli(*convert_args(digits.keras, digits.calib_npz, out, "--eval", digits.eval_npz,
                              "--samples", 50))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert_quiet(r.stdout)
    assert "top-1 accuracy" in r.stdout and "per class" in r.stdout
    assert f"bundle written to {out}" in r.stdout
    # 50 < 100 calibration samples: the report warns about it, on stdout with the table.
    assert "warning: calibrated on only 50 samples" in r.stdout


def test_representative_sampling_is_deterministic(digits, tmp_path: Path) -> None:
    """Same inputs, same flags → byte-identical model (the fixture was built the same way)."""
    out = tmp_path / "again"
    r = run_cli("convert", digits.keras, "--representative", digits.calib_npz, "--eval",
                digits.eval_npz, "--profile", "generic-x86_64", "--name", "digits",
                "--latency-runs", 0, "-o", out)
    assert r.returncode == 0, r.stderr
    assert (out / "model.tflite").read_bytes() == (digits.bundle / "model.tflite").read_bytes()
