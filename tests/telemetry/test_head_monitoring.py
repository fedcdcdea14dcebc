"""On-device monitoring per head (issue 12 part 4): class and confidence histograms, their
PSI and label feedback only for a model's class head; output statistics for every
regression or raw head, against the bundle's per-head reference when it carries one.

Real LiteRT predictions on a real two-head model (class + regression) and on a model
without a class head (task ``raw``), telemetry and feedback through a real Mosquitto.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_fixtures import TwoHeads
from telemetry_helpers import Recorder, create, make_agent

from edge_agent.bundle import read_bundle, write_bundle
from edge_agent.manifest import DriftReference, OutputReference
from edge_agent.serving.http import HttpServer


def _quality(recorder: Recorder, model: str, samples: int) -> dict[str, Any]:
    t = recorder.wait("/telemetry", lambda d: d["models"].get(model, {}).get(
        "quality", {}).get("samples", 0) >= samples, timeout_s=15)
    q: dict[str, Any] = t["models"][model]["quality"]
    return q


def _post(url: str, doc: Any) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def two_heads_ref(two_heads: TwoHeads, tmp_path: Path) -> Path:
    """The two-head bundle whose drift reference says ``score`` averaged 10 ± 0.5 at
    calibration time (the model's real scores are near 0: a 20-sigma shift)."""
    b = read_bundle(two_heads.bundle)
    ref = b.manifest.drift_reference or DriftReference(
        samples=200, class_hist=(1 / 3,) * 3, confidence_edges=(0.0, 0.5, 1.0),
        confidence_hist=(0.5, 0.5), input_mean=(0.0,) * 8, input_std=(1.0,) * 8)
    m = replace(b.manifest, drift_reference=replace(
        ref, outputs={"score": OutputReference(mean=10.0, std=0.5)}))
    return write_bundle(replace(b, manifest=m), tmp_path / "two-ref")


def test_two_head_model_class_stats_for_the_class_head_output_stats_for_the_other(
        tmp_path: Path, mosquitto: Any, two_heads: TwoHeads, recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url, bundles=[two_heads.bundle])
    agent.http = HttpServer("127.0.0.1", 0)
    agent.http.start()
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")
    try:
        served = agent.registry.get("two")
        preds = [served.predict(two_heads.x[i:i + 4], request_id=f"t{i}") for i in
                 range(0, 16, 4)]
        scores = np.concatenate([p.by_name()["score"] for p in preds]).reshape(-1)
        top1 = np.concatenate([p.top1 for p in preds if p.top1 is not None])
        q = _quality(recorder, "two", 16)
        assert len(q["class_hist"]) == 3 and q["samples"] == 16  # the class head's 3 classes
        assert q["class_hist"] == pytest.approx(
            (np.bincount(top1, minlength=3) / 16).tolist(), abs=1e-6)
        assert q["outputs"].keys() == {"score"}  # never the class head
        s = q["outputs"]["score"]
        assert s["kind"] == "regression" and s["samples"] == 16
        assert s["mean"] == pytest.approx(float(scores.mean()), abs=1e-5)
        assert s["std"] == pytest.approx(float(scores.std()), abs=1e-5)
        assert s["min"] == pytest.approx(float(scores.min()), abs=1e-5)
        assert s["max"] == pytest.approx(float(scores.max()), abs=1e-5)
        ref = served.manifest.drift_reference  # the converter's, for the score head
        assert ref is not None and s["reference"] is True
        assert s["shift_sigma"] == pytest.approx(
            abs(float(scores.mean()) - ref.outputs["score"].mean) / ref.outputs["score"].std,
            rel=1e-4, abs=1e-6)
        # the class head takes label feedback
        code, body = _post(f"{agent.http.url}/v1/models/two:feedback",
                           [{"request_id": f"t{i}", "label": [0, 1, 2, 0]}
                            for i in range(0, 16, 4)])
        assert code == 200 and body == {"accepted": 16, "unknown": [], "rejected": []}
        fb = recorder.wait("/telemetry", lambda d: d["models"]["two"].get(
            "feedback", {}).get("samples") == 16)["models"]["two"]["feedback"]
        assert fb["accuracy"] == pytest.approx(float(np.mean(top1 == np.tile([0, 1, 2, 0],
                                                                             4))))
    finally:
        svc.stop()
        agent.http.stop()


def test_regression_head_shift_against_the_bundles_reference(
        tmp_path: Path, mosquitto: Any, two_heads: TwoHeads, two_heads_ref: Path,
        recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url, bundles=[two_heads_ref])
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")
    try:
        pred = agent.registry.get("two").predict(two_heads.x)
        live = float(pred.by_name()["score"].mean())
        s = _quality(recorder, "two", len(two_heads.x))["outputs"]["score"]
        assert s["reference"] is True
        assert s["shift_sigma"] == pytest.approx(abs(live - 10.0) / 0.5, rel=1e-4)
    finally:
        svc.stop()


def test_raw_model_gets_output_stats_no_class_histograms_and_feedback_is_refused(
        tmp_path: Path, mosquitto: Any, digits: Any, digits_raw: Path,
        recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url, bundles=[digits_raw])
    agent.http = HttpServer("127.0.0.1", 0)
    agent.http.start()
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")
    try:
        served = agent.registry.get("digits-raw")
        x = np.load(digits.eval_npz)["x"][:40]
        out = np.concatenate([served.predict(x[i:i + 10], request_id=f"r{i}").outputs[0]
                              for i in range(0, 40, 10)])
        q = _quality(recorder, "digits-raw", 40)
        assert not {"class_hist", "confidence_hist", "psi", "mean_confidence"} & q.keys()
        assert q["drift"] is False
        (name, s), = q["outputs"].items()
        assert name == served.output_names[0] and s["kind"] == "raw" and s["samples"] == 40
        assert s["mean"] == pytest.approx(float(out.reshape(40, -1).mean(axis=1).mean()),
                                          abs=1e-5)
        # label feedback needs a class head: a clear 400 over REST, an error event over MQTT
        code, body = _post(f"{agent.http.url}/v1/models/digits-raw:feedback",
                           {"request_id": "r0", "label": list(range(10))})
        assert code == 400 and "has no class head" in body["error"], body
        recorder.send("edge/dev-1/feedback", json.dumps(
            {"request_id": "r10", "label": 1, "model": "digits-raw"}))
        ev = recorder.wait("/events", lambda d: "has no class head" in d["message"])
        assert ev["level"] == "error", ev
        t = recorder.wait("/telemetry", lambda d: d["models"]["digits-raw"]["quality"][
            "samples"] >= 40)
        assert "feedback" not in t["models"]["digits-raw"]  # nothing was counted
        assert served.predict(x[:1]).outputs[0].shape[0] == 1  # still serving
    finally:
        svc.stop()
        agent.http.stop()
