"""Model quality: drift (PSI) against the bundle's reference, and label-feedback metrics
that equal scikit-learn's on the same data."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from telemetry_helpers import Recorder, create, make_agent
from waiting import wait_for

from edge_agent.bundle import DriftReference
from edge_agent.errors import InvalidRequestError
from edge_agent.hooks import PredictionRecord
from edge_agent.monitor.feedback import PredictionMemory, parse_feedback
from edge_agent.monitor.metrics import classification_metrics
from edge_agent.monitor.psi import psi
from edge_agent.monitor.quality import DriftDetector, QualityWindow

# ---- pure parts -------------------------------------------------------------------------

def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift() -> None:
    ref = [0.25, 0.25, 0.25, 0.25]
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    small, big = psi(ref, [0.3, 0.2, 0.25, 0.25]), psi(ref, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.1 < 0.25 < big
    assert np.isfinite(psi(ref, [1.0, 0.0, 0.0, 0.0]))  # empty bins do not blow up


def _ref() -> DriftReference:
    return DriftReference(samples=1000, class_hist=(0.5, 0.5),
                          confidence_edges=(0.5, 0.75, 1.0), confidence_hist=(0.5, 0.5),
                          input_mean=(0.0,), input_std=(1.0,))


def test_window_matching_the_reference_is_not_drift() -> None:
    w = QualityWindow(_ref(), 2, window=400)
    rng = np.random.default_rng(0)
    w.add(rng.integers(0, 2, 400), rng.uniform(0.5, 1.0, 400))
    w.add_inputs(rng.normal(0, 1, (400, 1)))
    rep = w.report()
    assert rep.samples == 400 and rep.psi_max is not None and rep.psi_max < 0.05
    assert rep.input_shift_sigma is not None and rep.input_shift_sigma < 0.3
    w.add_inputs(rng.normal(2, 1, (256, 1)))  # the sampled inputs moved by 2 sigma
    assert w.report().input_shift_sigma > 1.5
    assert DriftDetector(0.25, 100).update(rep) is None


def test_detector_raises_once_and_clears_with_hysteresis() -> None:
    w = QualityWindow(_ref(), 2, window=200)
    det = DriftDetector(0.25, 100)
    w.add(np.zeros(200, int), np.full(200, 0.99))  # everything class 0, very confident
    ch = det.update(w.report())
    assert ch is not None and ch.drifting and ch.psi > 0.25
    assert det.update(w.report()) is None  # no repeat while it stays drifted
    rng = np.random.default_rng(1)
    w.add(rng.integers(0, 2, 200), rng.uniform(0.5, 1.0, 200))
    ch = det.update(w.report())
    assert ch is not None and not ch.drifting


def test_too_few_samples_give_no_verdict() -> None:
    w = QualityWindow(_ref(), 2, window=200)
    w.add(np.zeros(50, int), np.full(50, 0.99))
    assert DriftDetector(0.25, 100).update(w.report()) is None


@pytest.mark.parametrize("seed", range(20))
def test_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 300)), int(rng.integers(2, 12))
    t = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.7, t, rng.integers(0, k, n))
    s = np.round(rng.random(n), 2)  # ties on purpose
    binary = k == 2
    m = classification_metrics(t, p, s, binary=binary)
    avg = "binary" if binary else "macro"
    assert m.accuracy == pytest.approx(skm.accuracy_score(t, p))
    assert m.precision == pytest.approx(skm.precision_score(t, p, average=avg, zero_division=0))
    assert m.recall == pytest.approx(skm.recall_score(t, p, average=avg, zero_division=0))
    assert m.f1 == pytest.approx(skm.f1_score(t, p, average=avg, zero_division=0))
    if binary and len(set(t)) == 2:
        assert m.roc_auc == pytest.approx(skm.roc_auc_score(t, s))


@pytest.mark.parametrize("doc", [
    None, 3, "x", [], {"request_id": 5, "label": 1}, {"request_id": "a"},
    {"request_id": "a", "label": True}, {"request_id": "a", "label": -1},
    {"request_id": "a", "label": [1, {"x": 1}]}, {"request_id": "", "label": 1},
])
def test_malformed_feedback_is_refused_with_a_reason(doc) -> None:
    with pytest.raises(InvalidRequestError, match="feedback"):
        parse_feedback(doc)


def test_prediction_memory_is_bounded_and_expires() -> None:
    from edge_agent.monitor.feedback import Remembered
    mem = PredictionMemory(max_entries=3, ttl_s=10)
    for i in range(5):
        mem.remember(f"r{i}", Remembered("m", 1, np.array([0]), None, 2, at=100.0 + i))
    assert len(mem) == 3 and mem.evicted == 2
    assert mem.pop("r0", now=105) is None and mem.pop("r4", now=105) is not None
    assert mem.pop("r3", now=200) is None  # too old


# ---- through the agent and a real broker -------------------------------------------------

def test_shifted_inputs_raise_a_drift_event(tmp_path: Path, mosquitto, digits,
                                            recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url, bundles=[digits.bundle],
                       telemetry={"quality_window": 300, "drift_min_samples": 150})
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")  # connected and subscribed
    try:
        x = np.load(digits.eval_npz)["x"]
        served = agent.registry.get("digits")
        for i in range(0, 300, 30):
            served.predict(x[i:i + 30])
        t = recorder.wait("/telemetry", lambda d: d["models"].get("digits", {})
                          .get("quality", {}).get("samples", 0) >= 300)
        q = t["models"]["digits"]["quality"]
        assert q["drift"] is False and q["psi"]["class"] < 0.1, q  # in-distribution
        assert not [e for e in recorder.on("/events") if e["kind"] == "drift.detected"]
        shifted = np.clip(x[:300] + 0.6 * x.max(), x.min(), x.max())  # washed-out sensor
        for i in range(0, 300, 30):
            served.predict(shifted[i:i + 30])
        ev = recorder.wait("/events", lambda d: d["kind"] == "drift.detected")
        assert ev["level"] == "warning" and ev["data"]["model"] == "digits"
        assert ev["data"]["psi"] > 0.25 and ev["data"]["input_shift_sigma"] > 0.5
        recorder.wait("/telemetry", lambda d: d["models"]["digits"]["quality"]["drift"])
    finally:
        svc.stop()


def _telemetry_feedback(recorder: Recorder, model: str, n: int) -> dict:
    t = recorder.wait("/telemetry", lambda d: d["models"].get(model, {})
                      .get("feedback", {}).get("samples") == n, timeout_s=15)
    return t["models"][model]["feedback"]


def test_label_feedback_over_mqtt_and_rest_equals_sklearn(tmp_path: Path, mosquitto, digits,
                                                          recorder: Recorder) -> None:
    from edge_agent.serving.http import HttpServer

    agent = make_agent(tmp_path, mosquitto.url, bundles=[digits.bundle])
    agent.http = HttpServer("127.0.0.1", 0)
    agent.http.start()
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")  # connected and subscribed
    try:
        ev = np.load(digits.eval_npz)
        x, y = ev["x"][:120], ev["y"][:120]
        served = agent.registry.get("digits")
        preds = []
        for i in range(0, 120, 4):  # batches of 4, one request id each
            preds.append(served.predict(x[i:i + 4], request_id=f"req-{i}").top1)
        y_pred = np.concatenate(preds)
        labels = agent.registry.get("digits").manifest.labels
        # half over MQTT (labels by index), half over REST (labels by name when known)
        mqtt_docs = [{"request_id": f"req-{i}", "label": [int(v) for v in y[i:i + 4]]}
                     for i in range(0, 60, 4)]
        recorder.send("edge/dev-1/feedback", json.dumps(mqtt_docs))
        rest_docs = [{"request_id": f"req-{i}", "label": [
            labels[int(v)] if labels else int(v) for v in y[i:i + 4]]} for i in range(60, 120, 4)]
        rest_docs.append({"request_id": "never-seen", "label": 1})
        req = urllib.request.Request(f"{agent.http.url}/v1/models/digits:feedback",
                                     data=json.dumps(rest_docs).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        assert body == {"accepted": 60, "unknown": ["never-seen"], "rejected": []}
        fb = _telemetry_feedback(recorder, "digits", 120)
        assert fb["accuracy"] == pytest.approx(skm.accuracy_score(y, y_pred))
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                         ("f1", skm.f1_score)):
            assert fb[name] == pytest.approx(fn(y, y_pred, average="macro", zero_division=0))
        assert fb["roc_auc"] is None and fb["average"] == "macro"
        # malformed REST feedback is a 400, unknown model a 404; nothing counted
        for path, data, code in ((":feedback", b"{not json", 400),
                                 (":feedback", b'{"request_id": 1}', 400)):
            bad = urllib.request.Request(f"{agent.http.url}/v1/models/digits{path}", data=data,
                                         method="POST")
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(bad, timeout=10)
            assert ei.value.code == code
        bad = urllib.request.Request(f"{agent.http.url}/v1/models/nope:feedback",
                                     data=b"[]", method="POST")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(bad, timeout=10)
        assert ei.value.code == 404
    finally:
        svc.stop()
        agent.http.stop()


def test_binary_feedback_reports_roc_auc_equal_to_sklearn(tmp_path: Path, mosquitto,
                                                          recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url)
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")  # connected and subscribed
    try:
        rng = np.random.default_rng(7)
        n = 200
        y = rng.integers(0, 2, n)
        p1 = np.clip(np.round(0.35 * y + rng.uniform(0, 0.65, n), 2), 0, 1)  # ties included
        probs = np.stack([1 - p1, p1], axis=1)
        for i in range(n):  # what ServedModel.predict reports for a binary classifier
            agent.hooks.emit_prediction(PredictionRecord(
                model="spam", version=1, source="test", ok=True, latency_s=0.001, batch=1,
                request_id=f"b{i}", top1=probs[i:i + 1].argmax(1),
                confidence=probs[i:i + 1].max(1), probabilities=probs[i:i + 1]))
        recorder.send("edge/dev-1/feedback", json.dumps(
            {"feedback": [{"request_id": f"b{i}", "label": int(y[i])} for i in range(n)]}))
        fb = _telemetry_feedback(recorder, "spam", n)
        y_pred = probs.argmax(1)
        assert fb["average"] == "binary"
        assert fb["accuracy"] == pytest.approx(skm.accuracy_score(y, y_pred))
        assert fb["precision"] == pytest.approx(skm.precision_score(y, y_pred))
        assert fb["recall"] == pytest.approx(skm.recall_score(y, y_pred))
        assert fb["f1"] == pytest.approx(skm.f1_score(y, y_pred))
        assert fb["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    finally:
        svc.stop()


def test_feedback_counts_each_request_once(tmp_path: Path, mosquitto, recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url)
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")  # connected and subscribed
    try:
        agent.hooks.emit_prediction(PredictionRecord(
            model="m", version=1, source="test", ok=True, latency_s=0.001, batch=1,
            request_id="once", top1=np.array([1]), confidence=np.array([0.9]),
            probabilities=np.array([[0.05, 0.9, 0.05]])))
        for _ in range(3):
            recorder.send("edge/dev-1/feedback", b'{"request_id": "once", "label": 1}')
        fb = _telemetry_feedback(recorder, "m", 1)
        wait_for(lambda: len(recorder.on("/telemetry")) > 3)
        assert recorder.on("/telemetry")[-1]["models"]["m"]["feedback"]["samples"] == 1
        assert fb["accuracy"] == 1.0
    finally:
        svc.stop()
