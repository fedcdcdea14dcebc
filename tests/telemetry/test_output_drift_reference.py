"""The converter writes ``drift_reference.outputs`` (issue 12, per-head drift reference),
and the agent's output drift uses it.

Per-head rules: a class head's reference is the class and confidence histograms (as
before); every regression or raw head gets the mean and standard deviation of its
per-sample value on the representative data, by the agent's own
``per_sample_values`` — for ``edge-convert convert`` and for ``edge-convert bundle
--representative`` alike. Before, neither wrote it, so a regression head's
``shift_sigma`` was always null in telemetry.

Real CLI conversions, real LiteRT predictions, telemetry through a real Mosquitto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_fixtures import TwoHeads, convert_cli
from telemetry_helpers import Recorder, create, make_agent

from edge_agent.bundle import read_bundle
from edge_agent.monitor.outputs import per_sample_values
from edge_agent.registry import ServedModel
from edge_agent.runtime.backends import select_runtime


def _calib(two_heads: TwoHeads) -> np.ndarray:
    with np.load(two_heads.bundle.parent / "calib.npz") as z:
        return np.asarray(z["x"])


def _scores(bundle: Path, x: np.ndarray) -> np.ndarray:
    served = ServedModel(read_bundle(bundle), select_runtime(), num_threads=1)
    return per_sample_values(served.predict(x).by_name()["score"])


def test_convert_writes_a_reference_for_the_regression_head_only(two_heads: TwoHeads) -> None:
    m = read_bundle(two_heads.bundle).manifest
    ref = m.drift_reference
    assert ref is not None and m.heads == {"class": "class", "score": "regression"}
    assert set(ref.outputs) == {"score"}  # the class head keeps its histograms
    assert len(ref.class_hist) == 3 and sum(ref.class_hist) == pytest.approx(1.0, abs=1e-4)
    want = _scores(two_heads.bundle, _calib(two_heads))  # the quantized model, on calib
    assert ref.outputs["score"].mean == pytest.approx(float(want.mean()), abs=1e-5)
    assert ref.outputs["score"].std == pytest.approx(float(want.std()), abs=1e-5)
    assert ref.outputs["score"].std > 0.5  # a real spread, not a placeholder


def test_bundle_with_representative_writes_the_same_reference(
        two_heads: TwoHeads, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "wrapped"
    r = convert_cli("bundle", two_heads.bundle / "model.tflite", "--name", "two", "--version",
                    1, "--labels", labels, "--representative", two_heads.bundle.parent /
                    "calib.npz", "--latency-runs", 0, "-o", out)
    assert r.returncode == 0, r.stderr
    m = read_bundle(out).manifest
    ref, conv = m.drift_reference, read_bundle(two_heads.bundle).manifest.drift_reference
    assert ref is not None and conv is not None
    assert m.heads == {"class": "class", "score": "raw"}
    assert ref.outputs == conv.outputs  # same model, same data, same rule
    assert ref.class_hist == conv.class_hist


def test_bundle_without_a_class_head_references_every_output(
        two_heads: TwoHeads, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    r = convert_cli("bundle", two_heads.bundle / "model.tflite", "--name", "two", "--version",
                    1, "--representative", two_heads.bundle.parent / "calib.npz",
                    "--latency-runs", 0, "-o", out)
    assert r.returncode == 0, r.stderr
    m = read_bundle(out).manifest
    assert m.class_head is None and m.drift_reference is not None
    assert set(m.drift_reference.outputs) == {"class", "score"}
    # the class output read as a raw head: its per-sample value is the mean of 3 shares
    assert m.drift_reference.outputs["class"].mean == pytest.approx(1 / 3, abs=1e-2)


def _score_stats(recorder: Recorder, pred: Any) -> dict[str, Any]:
    t = recorder.wait("/telemetry", lambda d: pred(
        d["models"].get("two", {}).get("quality", {}).get("outputs", {}).get("score", {})),
        timeout_s=15)
    s: dict[str, Any] = t["models"]["two"]["quality"]["outputs"]["score"]
    return s


def _high_score_corner(served: Any) -> np.ndarray:
    """The input in {-2.5, 2.5}⁸ that a greedy search finds gives the highest score."""
    features = int(served.input_spec.shape[1])
    x = np.zeros((1, features), np.float32)
    for j in range(features):
        tries = []
        for c in (-2.5, 2.5):
            t = x.copy()
            t[0, j] = c
            tries.append((float(served.predict(t).by_name()["score"].ravel()[0]), c))
        x[0, j] = max(tries)[1]
    return x


def test_output_drift_flags_a_shifted_head_and_not_the_reference_traffic(
        tmp_path: Path, mosquitto: Any, two_heads: TwoHeads, recorder: Recorder) -> None:
    """The reference traffic (the calibration samples) is within the reference; traffic
    moved to the input corner where ``score`` is highest (found here, feature by feature,
    on the served model, inside the calibrated input range) is flagged at the default
    ``output_drift_sigma`` (an int8 head saturates at the largest value calibration saw,
    so its shift is bounded: about 2.8 sigma here). The window holds exactly one
    traffic's samples, so each verdict is on one traffic."""
    x = _calib(two_heads)
    agent = make_agent(tmp_path, mosquitto.url, bundles=[two_heads.bundle],
                       telemetry={"quality_window": len(x), "drift_min_samples": 100})
    svc = create(agent)
    assert svc is not None
    svc.start()
    recorder.wait("/status")
    try:
        served = agent.registry.get("two")
        for i in range(0, len(x), 50):
            served.predict(x[i:i + 50])
        ok = _score_stats(recorder, lambda s: s.get("samples") == len(x))
        assert ok["reference"] is True and ok["drift"] is False, ok
        assert ok["shift_sigma"] < 0.05, ok  # the very data the reference came from
        shifted = np.repeat(_high_score_corner(served), len(x), axis=0)
        shifted += np.random.default_rng(1).normal(scale=0.05, size=shifted.shape)
        for i in range(0, len(x), 50):
            served.predict(shifted[i:i + 50])
        bad = _score_stats(recorder, lambda s: s.get("drift") is True)
        assert bad["shift_sigma"] > 1.0 and bad["samples"] == len(x), bad
        # nothing else moved: the model still serves version 1 and its reference
        assert agent.registry.get("two").version == 1
        assert read_bundle(two_heads.bundle).manifest.drift_reference == \
            served.manifest.drift_reference
    finally:
        svc.stop()
