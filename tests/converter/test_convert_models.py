"""Model sources and targets: MobileNetV2, SavedModel, .h5, ops without int8 kernels, Coral."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, convert_args, run_cli

from converter.cli import main
from converter.graph import inspect_graph
from converter.support import delegate_summary, memory_check
from converter.tfload import import_tf
from edge_agent.bundle import read_bundle
from edge_agent.profiles import load_profile
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel, verify_golden


def test_mobilenet_v2_converts_to_int8_and_loads(mobilenet) -> None:
    b = read_bundle(mobilenet.bundle)
    assert mobilenet.stderr == ""  # quiet even for a 150-op graph
    m = b.manifest
    assert m.inputs[0].shape == (1, 224, 224, 3) and m.inputs[0].dtype == "int8"
    assert m.outputs[0].shape == (1, 1000)
    r = mobilenet.report
    assert r["size"]["ratio"] <= 0.30 and r["memory"]["fits"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= {o["op"] for o in r["ops"]}
    assert r["delegate"]["delegated_ops"] == r["delegate"]["total_ops"]  # all on XNNPACK
    assert any("calibrated on only 8 samples" in w for w in r["warnings"])
    model = LoadedModel(select_runtime(), b.model_bytes, num_threads=2)
    out = model.predict(np.zeros((2, 224, 224, 3), np.float32))[0]
    # Softmax output in int8 steps of 1/256: untrained weights give ~1/1000 everywhere.
    assert out.shape == (2, 1000) and np.all((out >= 0) & (out <= 1))
    assert verify_golden(b, select_runtime()).vectors == 4


def test_memory_budget_check_warns_when_the_model_does_not_fit(mobilenet) -> None:
    b = read_bundle(mobilenet.bundle)
    graph = inspect_graph(b.model_bytes)
    zero = dataclasses.replace(load_profile("rpi-zero2w"), memory_budget_mb=4)
    mem = memory_check(graph, len(b.model_bytes), zero)
    assert not mem["fits"]
    # 3.9 MB model + int8 activations (the 112×112×96 expansion alone is 1.2 MB) + repack.
    assert mem["activations_peak_mb"] > 1.0
    assert mem["estimate_mb"] > mem["model_mb"] + mem["activations_peak_mb"]
    assert memory_check(graph, len(b.model_bytes), load_profile("rpi-zero2w"))["fits"]


def test_savedmodel_directory_converts(digits, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    tf = import_tf()
    sm = tmp_path / "digits_savedmodel"
    tf.keras.models.load_model(digits.keras, compile=False).export(sm, verbose=False)
    capsys.readouterr()
    rc = main([str(a) for a in convert_args(sm, digits.calib_npz, tmp_path / "b", "--eval",
                                            digits.eval_npz, "--json")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["source"] == str(sm) and report["evaluation"]["top1_drop_pp"] <= 1.0
    assert read_bundle(tmp_path / "b").manifest.name == "digits_savedmodel"


def test_h5_file_converts(digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = import_tf()
    h5 = tmp_path / "digits.h5"
    tf.keras.models.load_model(digits.keras, compile=False).save(h5)
    capsys.readouterr()
    rc = main([str(a) for a in convert_args(h5, digits.calib_npz, tmp_path / "b", "--eval",
                                            digits.eval_npz, "--json")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["evaluation"]["quant_top1"] >= 0.95


def test_op_without_int8_kernel_is_a_clear_error(sin_model: Path, digits, tmp_path: Path):
    out = tmp_path / "b"
    r = run_cli(*convert_args(sin_model, digits.calib_npz, out))
    line = assert_one_line_error(r, "SIN", "no int8 kernel", "--mode dynamic", "--mode int16x8",
                                 code=3)
    assert "full-int8" in line
    assert_nothing_written(out)


def test_op_without_int8_kernel_converts_with_mode_dynamic(sin_model: Path, digits,
                                                           tmp_path: Path) -> None:
    r = run_cli(*convert_args(sin_model, digits.calib_npz, tmp_path / "b.tar", "--mode",
                              "dynamic", "--json"))
    assert r.returncode == 0 and r.stderr == ""
    ops = {o["op"]: o["dtypes"] for o in json.loads(r.stdout)["ops"]}
    assert ops["SIN"] == ["float32"] and "int8" in ops["FULLY_CONNECTED"]
    # Float activations: the Edge TPU check would map none of this graph.
    graph = inspect_graph(read_bundle(tmp_path / "b.tar").model_bytes)
    s = delegate_summary(graph, load_profile("coral-usb"))
    assert s["delegated_ops"] == 0 and "float tensors" in s["first_unmapped"]["reason"]


def test_keras_lambda_needs_explicit_trust(digits, tmp_path: Path) -> None:
    tf = import_tf()
    keras = tf.keras
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "lam.keras")
    r = run_cli(*convert_args(tmp_path / "lam.keras", digits.calib_npz, tmp_path / "b"))
    assert_one_line_error(r, "lam.keras", "lambda", "--trust-model", code=2)
    assert_nothing_written(tmp_path / "b")
    r = run_cli(*convert_args(tmp_path / "lam.keras", digits.calib_npz, tmp_path / "b",
                              "--trust-model", "--json"))
    assert r.returncode == 0, r.stderr


def test_coral_profile_gives_uint8_io_fully_mapped_to_the_edgetpu(digits, tmp_path: Path,
                                                                  capsys) -> None:
    out = tmp_path / "coral.tar"
    rc = main([str(a) for a in convert_args(digits.keras, digits.calib_npz, out, "--eval",
                                            digits.eval_npz, "--json", profile="coral-usb")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    b = read_bundle(out)
    assert b.manifest.inputs[0].dtype == "uint8" and b.manifest.outputs[0].dtype == "uint8"
    assert report["delegate"] == {"delegate": "edgetpu", "total_ops": len(
        inspect_graph(b.model_bytes).ops), "delegated_ops": report["delegate"]["total_ops"],
        "first_unmapped": None, "cpu_ops": []}
    assert report["evaluation"]["top1_drop_pp"] <= 1.0 and report["warnings"] == []
    # uint8 golden vectors reproduce on the runtime here (raw uint8 in, raw uint8 out).
    assert b.manifest.golden[0].input.dtype == "uint8"
    assert verify_golden(b, select_runtime()).max_abs_diff <= 1


def test_edgetpu_check_names_the_first_unmapped_op_and_what_falls_back(digits) -> None:
    """The Edge TPU compiler stops at the first op it cannot map; the rest runs on the CPU."""
    b = read_bundle(digits.bundle)
    graph = inspect_graph(b.model_bytes)
    coral = load_profile("coral-usb")
    no_softmax = dataclasses.replace(
        coral, supported_ops=tuple(o for o in coral.supported_ops if o != "SOFTMAX"))
    s = delegate_summary(graph, no_softmax)
    names = [o.name for o in graph.ops]
    pos = names.index("SOFTMAX")
    assert s["first_unmapped"]["op"] == "SOFTMAX" and "not an Edge TPU op" in (
        s["first_unmapped"]["reason"])
    assert s["delegated_ops"] == pos and s["cpu_ops"] == names[pos:]
    assert delegate_summary(graph, coral)["first_unmapped"] is None


def test_plain_tf_module_savedmodel_converts(digits, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A SavedModel written by tf.saved_model.save from a tf.Module (no Keras at all)."""
    tf = import_tf()
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(0, 0.2, (64, 10)).astype(np.float32))

    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
        def serve(self, pixels):
            return {"scores": tf.nn.softmax(tf.matmul(tf.reshape(pixels, (-1, 64)), w))}

    net = Net()
    sm = tmp_path / "module_sm"
    tf.saved_model.save(net, str(sm), signatures={"serving_default": net.serve})
    capsys.readouterr()
    rc = main([str(a) for a in convert_args(sm, digits.calib_npz, tmp_path / "b.tar", "--json")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["io_dtype"] == "int8"
    assert {o["op"] for o in report["ops"]} == {"FULLY_CONNECTED", "RESHAPE", "SOFTMAX"}
    assert verify_golden(read_bundle(tmp_path / "b.tar"), select_runtime()).vectors == 4
