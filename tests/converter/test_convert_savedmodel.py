"""Real SavedModels convert (issue 12 part 5), and what int8 says when it cannot be full.

* A SavedModel whose object graph holds optimizer slot variables (trained here with TF's
  Adam, and the real third-party ``basic-pitch`` 0.4.0 model shipped in its wheel) loads
  through its ``serving_default`` signature, although ``tf.saved_model.load`` fails on it.
* Full int8 that is impossible names the ops without int8 kernels (NEG, SQUARE), not the
  RESHAPE that stays float beside them; ``--allow-float-ops`` converts and reports them.
* Bad SavedModels are one line, exit 2, nothing written.

Here basic-pitch is tested at the level of the converter's modules (tfload → quantize →
the TFLite flatbuffer, its signature and every output against the SavedModel on the same
inputs); converted by the CLI into a bundle and served, in
tests/agent/test_third_party_models.py. Its wheel is fetched by tests/third_party.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from convert_helpers import (
    assert_nothing_written,
    assert_one_line_error,
    convert_args,
    run_cli,
)
from third_party import (
    BASIC_PITCH_AUDIO,
    basic_pitch_saved_model,
    basic_pitch_tones,
    saved_model_outputs,
)

from converter.errors import UnsupportedOpsError
from converter.floatops import explain
from converter.graph import inspect_graph
from converter.modes import INT8_FLOAT_FALLBACK
from converter.quantize import convert
from converter.tfload import import_tf, load_source
from edge_agent.bundle import read_bundle
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel, verify_golden


def _object_graph_slots(sm: Path) -> int:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((sm / "saved_model.pb").read_bytes())
    return sum(len(n.slot_variables) for n in proto.meta_graphs[0].object_graph_def.nodes)


def _object_graph_load_error(sm: Path) -> str:
    """What ``tf.saved_model.load`` (the Python object graph) says about ``sm``."""
    tf = import_tf()
    with pytest.raises(AttributeError) as e:
        tf.saved_model.load(str(sm))
    return str(e.value)


def _signature_outputs(model: bytes, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """A float-IO TFLite model's outputs by signature name, sample by sample (real LiteRT)."""
    interp = select_runtime().interpreter_cls(model_content=model)
    runner = interp.get_signature_runner("serving_default")
    (in_name, in_d), = runner.get_input_details().items()
    assert in_d["dtype"] == np.float32
    return [runner(**{in_name: x[i:i + 1]}) for i in range(len(x))]


def _max_diff(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> dict[str, float]:
    return {k: max(float(np.abs(x[k] - y[k]).max()) for x, y in zip(a, b, strict=True))
            for k in a[0]}


# --- a SavedModel trained here, with TF's Adam slot variables in its object graph ---------

def _save_trained_with_adam(out: Path) -> Path:
    """Two dense layers trained for a few steps with ``tf.compat.v1.train.AdamOptimizer``.

    The optimizer is an attribute of the saved module, so its ``m``/``v`` slots are in the
    object graph; nothing can revive it here (``_UserObject`` has no ``add_slot``), as with
    a tf-keras model saved with its optimizer.
    """
    tf = import_tf()
    rng = np.random.default_rng(7)

    class Net(tf.Module):
        def __init__(self) -> None:
            self.w1 = tf.Variable(rng.normal(0, 0.4, (8, 16)).astype(np.float32))
            self.w2 = tf.Variable(rng.normal(0, 0.4, (16, 3)).astype(np.float32))
            self.b2 = tf.Variable(np.zeros(3, np.float32))
            self.optimizer = tf.compat.v1.train.AdamOptimizer(1e-2)

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="features")])
        def serve(self, features: Any) -> dict[str, Any]:
            h = tf.nn.relu(tf.matmul(features, self.w1))
            return {"probs": tf.nn.softmax(tf.matmul(h, self.w2) + self.b2)}

    net = Net()
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    def loss() -> Any:
        p = tf.gather(net.serve(x)["probs"], y, batch_dims=1)
        return -tf.reduce_mean(tf.math.log(p + 1e-6))

    for _ in range(3):
        net.optimizer.minimize(loss, var_list=[net.w1, net.w2, net.b2])
    tf.saved_model.save(net, str(out), signatures={"serving_default": net.serve})
    np.savez(out.parent / "features.npz", x=x, y=y)
    return out


def test_savedmodel_with_optimizer_slot_variables_converts_through_its_signature(
        tmp_path: Path) -> None:
    sm = _save_trained_with_adam(tmp_path / "adam_sm")
    assert _object_graph_slots(sm) == 6  # m and v for each of the three variables
    assert "add_slot" in _object_graph_load_error(sm)  # what the converter used to say

    out = tmp_path / "b.tar"
    r = run_cli(*convert_args(sm, tmp_path / "features.npz", out, "--json"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["mode"] == "int8" and "float_ops" in report
    assert report["float_ops"]["float_ops"] == 0
    b = read_bundle(out)
    assert b.manifest.inputs[0].shape == (1, 8) and b.manifest.outputs[0].shape == (1, 3)
    # The int8 model answers like the trained SavedModel itself, not like random weights.
    x = np.load(tmp_path / "features.npz")["x"][:16]
    want = np.concatenate([o["probs"] for o in saved_model_outputs(sm, x)])
    got = LoadedModel(select_runtime(), b.model_bytes).predict(x)[0]
    assert np.abs(got - want).max() < 0.05
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    assert verify_golden(b, select_runtime()).vectors == 4


# --- an op without an int8 kernel, with a RESHAPE in float beside it ----------------------

def _save_spectral_power(out: Path, *, int8_friendly: bool = False) -> Path:
    """A tiny complex-spectrum front end: real/imag convolutions, NEG on the imaginary part
    (conjugate), stacked, SQUARE for power, then a dense softmax head.

    TFLite has no int8 NEG or SQUARE; the RESHAPE after NEG then stays float as well
    (same-scale op next to a float op) — what the old error named as a culprit.
    ``int8_friendly=True`` is the same function without those ops (negated kernel, x*x),
    which converts to full int8: the named ops were the whole problem.
    """
    tf = import_tf()
    rng = np.random.default_rng(11)
    kr = tf.Variable(rng.normal(0, 0.3, (1, 8, 1, 4)).astype(np.float32))
    ki = tf.Variable(rng.normal(0, 0.3, (1, 8, 1, 4)).astype(np.float32))
    w = tf.Variable(rng.normal(0, 0.3, (72, 3)).astype(np.float32))

    class Spectral(tf.Module):
        def __init__(self) -> None:
            self.kr, self.ki, self.w = kr, ki, w

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 1], tf.float32, name="audio")])
        def serve(self, audio: Any) -> dict[str, Any]:
            h = tf.reshape(audio, (-1, 1, 16, 1))
            re = tf.nn.conv2d(h, self.kr, 1, "VALID")
            im = (tf.nn.conv2d(h, -self.ki, 1, "VALID") if int8_friendly
                  else tf.negative(tf.nn.conv2d(h, self.ki, 1, "VALID")))
            re = tf.transpose(tf.reshape(re, (-1, 9, 4)), (0, 2, 1))
            im = tf.transpose(tf.reshape(im, (-1, 9, 4)), (0, 2, 1))
            s = tf.stack([re, im], axis=-1)
            p = s * s if int8_friendly else tf.square(s)
            return {"scores": tf.nn.softmax(tf.matmul(tf.reshape(p, (-1, 72)), self.w))}

    m = Spectral()
    tf.saved_model.save(m, str(out), signatures={"serving_default": m.serve})
    return out


@dataclass(frozen=True)
class Spectral:
    sm: Path
    sm_int8: Path  # the same function without NEG and SQUARE
    data: Path


@pytest.fixture(scope="module")
def spectral(tmp_path_factory: pytest.TempPathFactory) -> Spectral:
    d = tmp_path_factory.mktemp("spectral")
    rng = np.random.default_rng(5)
    t = np.arange(16) / 16
    x = np.stack([np.sin(2 * np.pi * rng.uniform(1, 6) * t + rng.uniform(0, 6))
                  for _ in range(120)])[..., None].astype(np.float32)
    np.savez(d / "audio.npz", x=x)
    return Spectral(_save_spectral_power(d / "spectral_sm"),
                    _save_spectral_power(d / "spectral_int8_sm", int8_friendly=True),
                    d / "audio.npz")


def test_full_int8_names_the_ops_without_int8_kernels_not_the_reshape_beside_them(
        spectral: Spectral, tmp_path: Path) -> None:
    # Precondition (else the test proves nothing): int8 leaves a RESHAPE float here.
    src = load_source(spectral.sm)
    x = np.load(spectral.data)["x"]
    graph = inspect_graph(convert(src.export(tmp_path), INT8_FLOAT_FALLBACK, "int8",
                                  {src.input_name: x[:40]}))
    float_names = {o.name for o in graph.ops if o.is_float and "QUANTIZE" not in o.name}
    assert float_names == {"NEG", "RESHAPE", "SQUARE"}

    out = tmp_path / "b"
    r = run_cli(*convert_args(spectral.sm, spectral.data, out))
    line = assert_one_line_error(r, "full-int8", "NEG", "SQUARE", "no int8 kernel",
                                 "--allow-float-ops", "--mode dynamic", code=3)
    assert "RESHAPE" not in line
    assert_nothing_written(out)


def test_allow_float_ops_keeps_only_those_ops_float_and_reports_their_cost(
        spectral: Spectral, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    r = run_cli(*convert_args(spectral.sm, spectral.data, out, "--mode", "int8",
                              "--allow-float-ops", "--latency-runs", 20, "--json"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    report = json.loads(r.stdout)
    fl = report["float_ops"]
    assert report["mode"] == "int8-fallback" and report["io_dtype"] == "int8"
    assert [o["op"] for o in fl["no_int8_kernel"]] == ["NEG", "SQUARE"]
    assert [o["op"] for o in fl["float_glue"]] == ["RESHAPE"]
    assert fl["float_ops"] == 3 and fl["boundary_ops"] >= 4
    ops = {o["op"]: o["dtypes"] for o in report["ops"]}
    for op in ("CONV_2D", "FULLY_CONNECTED", "PACK", "SOFTMAX"):
        assert "float32" not in ops[op], (op, ops[op])  # everything else stayed int8
    assert report["latency_ms"]["quant"]["p50"] > 0 and report["latency_ms"]["float"]["p50"] > 0
    warning = next(w for w in report["warnings"] if "run in float" in w)
    assert "NEG, SQUARE (no int8 kernel)" in warning and "RESHAPE" in warning
    assert "p50" in warning and "QUANTIZE/DEQUANTIZE" in warning
    b = read_bundle(out)
    assert b.manifest.quantization_mode == "int8-fallback"
    assert b.manifest.inputs[0].dtype == "int8" and b.manifest.outputs[0].dtype == "int8"
    assert verify_golden(b, select_runtime()).vectors == 4
    # Same answers as the SavedModel, within int8 steps.
    x = np.load(spectral.data)["x"][:20]
    want = np.concatenate([o["scores"] for o in saved_model_outputs(spectral.sm, x)])
    got = LoadedModel(select_runtime(), b.model_bytes).predict(x)[0]
    assert np.abs(got - want).max() < 0.05


def test_the_same_function_without_neg_and_square_is_full_int8(spectral: Spectral,
                                                              tmp_path: Path) -> None:
    """Negated kernel instead of NEG, x*x instead of SQUARE: nothing float, RESHAPE included."""
    r = run_cli(*convert_args(spectral.sm_int8, spectral.data, tmp_path / "b", "--json"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["mode"] == "int8" and report["float_ops"]["float_ops"] == 0
    x = np.load(spectral.data)["x"][:20]
    same = saved_model_outputs(spectral.sm, x), saved_model_outputs(spectral.sm_int8, x)
    assert max(_max_diff(*same).values()) < 1e-5  # really the same function


@pytest.mark.parametrize("profile,extra,words", [
    ("coral-usb", (), ("coral-usb", "full-integer", "--allow-float-ops")),
    ("generic-x86_64", ("--mode", "dynamic"), ("--allow-float-ops", "--mode int8 only")),
])
def test_allow_float_ops_is_refused_where_it_cannot_apply(
        spectral: Spectral, tmp_path: Path, profile: str, extra: tuple[str, ...],
        words: tuple[str, ...]) -> None:
    out = tmp_path / "b"
    r = run_cli(*convert_args(spectral.sm, spectral.data, out, "--allow-float-ops", *extra,
                              profile=profile))
    assert_one_line_error(r, *words, code=2)
    assert_nothing_written(out)


# --- bad SavedModels ----------------------------------------------------------------------

def _sm_without_serving_default(d: Path) -> Path:
    tf = import_tf()

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
        def predict(self, x: Any) -> Any:
            return {"y": x * 2.0}

    m = M()
    tf.saved_model.save(m, str(d / "sm"), signatures={"predict": m.predict,
                                                      "embed": m.predict})
    return d / "sm"


def _sm_with_two_inputs(d: Path) -> Path:
    tf = import_tf()

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="image"),
                                      tf.TensorSpec([None, 2], tf.float32, name="meta")])
        def serve(self, image: Any, meta: Any) -> Any:
            return {"y": tf.concat([image, meta], axis=1)}

    m = M()
    tf.saved_model.save(m, str(d / "sm"), signatures={"serving_default": m.serve})
    return d / "sm"


def _sm_without_serve_tag(d: Path) -> Path:
    tf = import_tf()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        sig = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": x * 2.0})
        builder = tf.compat.v1.saved_model.Builder(str(d / "sm"))
        builder.add_meta_graph_and_variables(sess, ["train"], signature_def_map={
            "serving_default": sig})
        builder.save()
    return d / "sm"


def _sm_not_a_savedmodel(d: Path) -> Path:
    (d / "sm" / "variables").mkdir(parents=True)
    (d / "sm" / "model.onnx").write_bytes(b"\x08\x07")
    return d / "sm"


BAD = {
    "no serving_default signature (names the ones it has)": (
        _sm_without_serving_default, ("sm", "no 'serving_default' signature",
                                      "has: embed, predict")),
    "data that does not name a two-input signature's inputs (names both sides)": (
        _sm_with_two_inputs, (".npz arrays do not match", "expected image, meta", "got x")),
    "no graph tagged serve (names the tags it has)": (
        _sm_without_serve_tag, ("sm", "no graph tagged 'serve'", "has: train")),
    "a directory that is not a SavedModel": (
        _sm_not_a_savedmodel, ("sm", "not a SavedModel")),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_savedmodel_is_one_line_exit_2_and_nothing_written(name: str, tmp_path: Path,
                                                               spectral: Spectral) -> None:
    make, words = BAD[name]
    sm = make(tmp_path)
    out = tmp_path / "out" / "b"
    r = run_cli(*convert_args(sm, spectral.data, out))
    assert_one_line_error(r, *words, code=2)
    assert r.stdout == ""
    assert_nothing_written(out)
    assert not (tmp_path / "out").exists()


# --- basic-pitch 0.4.0: a real, trained third-party SavedModel from its wheel --------------

@dataclass(frozen=True)
class BasicPitch:
    sm: Path
    x: np.ndarray  # held-out windows
    want: list[dict[str, np.ndarray]]  # the SavedModel's outputs on x
    models: dict[str, bytes]  # mode → TFLite flatbuffer
    int8_error: UnsupportedOpsError


@pytest.fixture(scope="module")
def basic_pitch(tmp_path_factory: pytest.TempPathFactory) -> BasicPitch:
    sm = basic_pitch_saved_model()
    src = load_source(sm)
    assert src.kind == "saved_model" and src.input_shape == (BASIC_PITCH_AUDIO, 1)
    exported = src.export(tmp_path_factory.mktemp("basic-pitch"))
    tones, x = basic_pitch_tones(8, 1), basic_pitch_tones(3, 2)
    rep = {src.input_name: tones}
    models = {"float32": convert(exported, "float32", "float32", None),
              "dynamic": convert(exported, "dynamic", "float32", None),
              INT8_FLOAT_FALLBACK: convert(exported, INT8_FLOAT_FALLBACK, "float32", rep)}
    with pytest.raises(UnsupportedOpsError) as e:
        convert(exported, "int8", "int8", rep)
    return BasicPitch(sm, x, saved_model_outputs(sm, x), models, e.value)


def test_basic_pitch_fails_the_object_graph_loader_and_loads_through_its_signature(
        basic_pitch: BasicPitch) -> None:
    assert _object_graph_slots(basic_pitch.sm) > 0  # tf-keras Adam state left in the model
    assert "add_slot" in _object_graph_load_error(basic_pitch.sm)
    interp = select_runtime().interpreter_cls(model_content=basic_pitch.models["float32"])
    assert interp.get_signature_list() == {"serving_default": {
        "inputs": ["input_2"], "outputs": ["contour", "note", "onset"]}}
    got = _signature_outputs(basic_pitch.models["float32"], basic_pitch.x)
    assert {k: v.shape for k, v in got[0].items()} == {
        "contour": (1, 172, 264), "note": (1, 172, 88), "onset": (1, 172, 88)}
    assert max(_max_diff(got, basic_pitch.want).values()) < 5e-3


def test_basic_pitch_dynamic_and_int8_with_float_ops_keep_every_output(
        basic_pitch: BasicPitch) -> None:
    for mode in ("dynamic", INT8_FLOAT_FALLBACK):
        model = basic_pitch.models[mode]
        assert len(model) < 0.6 * len(basic_pitch.models["float32"]), mode
        got = _signature_outputs(model, basic_pitch.x)
        assert set(got[0]) == {"contour", "note", "onset"}
        for k, want in basic_pitch.want[0].items():
            assert got[0][k].shape == want.shape
        # Posteriorgrams in [0, 1]; quantization moves single bins, not the whole map.
        for a, b in zip(got, basic_pitch.want, strict=True):
            for k in a:
                assert float(np.abs(a[k] - b[k]).mean()) < 0.05, (mode, k)


def test_basic_pitch_full_int8_names_neg_and_square_not_the_reshapes(
        basic_pitch: BasicPitch) -> None:
    e = basic_pitch.int8_error
    assert e.ops == ["NEG", "SQUARE"]
    assert "NEG (×9), SQUARE have no int8 kernel" in str(e) and "RESHAPE" not in str(e)
    fl = explain(inspect_graph(basic_pitch.models[INT8_FLOAT_FALLBACK]))
    assert [(o.op, o.count) for o in fl.lacking] == [("NEG", 9), ("SQUARE", 1)]
    assert [o.op for o in fl.glue] == ["RESHAPE"]  # float only beside the NEGs
    assert fl.float_ops == 20 and fl.total_ops > 150
