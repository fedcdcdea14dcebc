"""On-device monitoring of a detection model (issue 12 part 4): its ``scores`` head is
watched through the per-sample top score (score distribution drift), its ``boxes`` not at
all, no class histograms, and label feedback is refused (no class head).

Real LiteRT predictions of the converted square detector, telemetry through a real
Mosquitto.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
from det_models import SquareBundle
from telemetry_helpers import Recorder, create, make_agent

from edge_agent.monitor.outputs import per_sample_values
from edge_agent.serving.http import HttpServer


def test_scores_per_sample_value_is_the_top_score() -> None:
    s = np.asarray([[[0.1], [0.9], [0.3]], [[0.2], [0.2], [0.4]]])
    assert per_sample_values(s, "scores").tolist() == [0.9, 0.4]
    assert per_sample_values(s, "raw").tolist() == pytest.approx([13 / 30, 0.8 / 3])


def test_detector_scores_head_watched_by_top_score_boxes_not_and_feedback_refused(
        tmp_path: Any, mosquitto: Any, square_detector: SquareBundle,
        recorder: Recorder) -> None:
    agent = make_agent(tmp_path, mosquitto.url, bundles=[square_detector.bundle])
    agent.http = HttpServer("127.0.0.1", 0)
    agent.http.start()
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")
    try:
        served = agent.registry.get("squares")
        x = square_detector.held
        preds = [served.predict(x[i:i + 4], request_id=f"d{i}") for i in range(0, 16, 4)]
        top = np.concatenate([p.by_name()["scores"].reshape(4, -1).max(axis=1) for p in preds])
        t = recorder.wait("/telemetry", lambda d: d["models"].get("squares", {}).get(
            "quality", {}).get("samples", 0) >= 16, timeout_s=15)
        q = t["models"]["squares"]["quality"]
        assert q["outputs"].keys() == {"scores"}  # never the boxes
        s = q["outputs"]["scores"]
        assert s["kind"] == "scores" and s["samples"] == 16
        assert s["mean"] == pytest.approx(float(top.mean()), abs=1e-5)
        assert s["max"] == pytest.approx(float(top.max()), abs=1e-5)
        assert s["min"] == pytest.approx(float(top.min()), abs=1e-5)
        assert not {"class_hist", "confidence_hist", "psi", "mean_confidence"} & q.keys()
        assert q["drift"] is False
        req = urllib.request.Request(
            f"{agent.http.url}/v1/models/squares:feedback",
            data=json.dumps({"request_id": "d0", "label": [0, 0, 0, 0]}).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400 and "has no class head" in json.loads(e.value.read())[
            "error"]
        assert "feedback" not in recorder.wait("/telemetry", lambda d: True)["models"][
            "squares"]
        assert served.predict(x[:1]).by_name().keys() == {"boxes", "scores"}  # still serving
    finally:
        svc.stop()
        agent.http.stop()
