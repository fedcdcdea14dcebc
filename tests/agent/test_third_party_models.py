"""Models nobody here trained, end to end (issue 12 parts 3 and 6): wrapped or converted by
the real ``edge-convert``, verified, served by a real ``edge-agent run``, asked over real
REST sockets, every named output checked against the model run directly.

* MediaPipe's ``face_detection_short_range.tflite`` (no signature_def; outputs
  ``regressors``, ``classificators``) → ``edge-convert bundle``.
* basic-pitch's ``nmp.tflite`` (signature ``serving_default``: ``input_2`` →
  ``contour``/``note``/``onset``) → ``edge-convert bundle`` with representative audio.
* basic-pitch's SavedModel → ``edge-convert convert --mode dynamic`` → bundle.

And a bare ``.tflite`` given to ``edge-agent run`` (``--model`` or ``[[models]]``) is
refused at start in one line that says to run ``edge-convert bundle``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from third_party import (
    basic_pitch_saved_model,
    basic_pitch_tflite,
    basic_pitch_tones,
    face_detection_tflite,
    run_direct,
    saved_model_outputs,
)

from edge_agent.bundle import read_bundle

ROOT = Path(__file__).resolve().parents[2]
BASIC_PITCH_OUTPUTS = {"contour", "note", "onset"}


def _cli(module: str, *args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def _convert(*args: object) -> subprocess.CompletedProcess[str]:
    return _cli("converter.cli", *args)


@dataclass(frozen=True)
class Models:
    face_tflite: bytes
    face: Path  # bundles
    pitch_tflite: bytes
    pitch: Path
    pitch_sm: Path
    pitch_x: np.ndarray  # held-out audio windows
    pitch_sm_want: list[dict[str, np.ndarray]]  # the SavedModel's own outputs on pitch_x
    reports: dict[str, dict[str, Any]]


def _ok(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    d = tmp_path_factory.mktemp("third-party")
    face_bytes, pitch_bytes = face_detection_tflite(), basic_pitch_tflite()
    (d / "face_detection_short_range.tflite").write_bytes(face_bytes)
    (d / "nmp.tflite").write_bytes(pitch_bytes)
    np.savez(d / "audio.npz", input_2=basic_pitch_tones(6, 3))  # by the model's input name
    np.savez(d / "calib.npz", x=basic_pitch_tones(8, 1))
    reports = {
        "face": _ok(_convert("bundle", d / "face_detection_short_range.tflite", "--name", "face",
                             "--version", 1, "--latency-runs", 5, "--json", "-o", d / "face")),
        "pitch": _ok(_convert("bundle", d / "nmp.tflite", "--name", "pitch", "--version", 1,
                              "--representative", d / "audio.npz", "--latency-runs", 3,
                              "--json", "-o", d / "pitch")),
    }
    sm = basic_pitch_saved_model()
    reports["pitch-sm"] = _ok(_convert(
        "convert", sm, "--representative", d / "calib.npz", "--profile", "generic-x86_64",
        "--mode", "dynamic", "--samples", 8, "--latency-runs", 2, "--name", "pitch-sm",
        "--json", "-o", d / "pitch-sm"))
    x = basic_pitch_tones(2, 2)
    return Models(face_bytes, d / "face", pitch_bytes, d / "pitch", d / "pitch-sm", x,
                  saved_model_outputs(sm, x), reports)


@pytest.fixture(scope="module")
def client(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One real agent serving all three bundles."""
    extra = "".join(f'[[models]]\nbundle = "{b}"\nactivate = true\n'
                    for b in (models.pitch, models.pitch_sm))
    with agent_process(tmp_path_factory.mktemp("agent"), models.face, toml=extra,
                       timeout_s=180) as proc:
        c = Client(proc.host, proc.port)
        yield c
        c.close()


def _verify(bundle: Path) -> str:
    r = _convert("verify", bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok (4 vectors" in r.stdout, r.stdout
    return r.stdout


def test_face_detector_without_signature_is_wrapped_verified_and_serves_both_outputs(
        models: Models, client: Client) -> None:
    m = read_bundle(models.face).manifest
    assert [s.name for s in m.inputs] == ["input"]
    assert [s.name for s in m.outputs] == ["regressors", "classificators"]
    assert m.quantization_mode == "float16" and models.reports["face"]["signature"] is None
    _verify(models.face)
    x = np.random.default_rng(4).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    r = client.post("/v1/models/face:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body[:500]
    (pred,) = r.json()["predictions"]
    assert pred.keys() == {"regressors", "classificators"}
    want = run_direct(models.face_tflite, {"input": x})
    for k in ("regressors", "classificators"):
        np.testing.assert_array_equal(np.asarray(pred[k], np.float32)[None], want[k])


def test_basic_pitch_tflite_is_wrapped_and_serves_all_three_outputs_by_signature_name(
        models: Models, client: Client) -> None:
    b = read_bundle(models.pitch)
    m = b.manifest
    assert [s.name for s in m.inputs] == ["input_2"]
    assert {s.name for s in m.outputs} == BASIC_PITCH_OUTPUTS
    assert models.reports["pitch"]["signature"] == "serving_default"
    assert m.drift_reference is not None and m.drift_reference.samples == 6
    assert models.reports["pitch"]["golden"]["inputs"] == "representative"
    _verify(models.pitch)
    x = models.pitch_x
    r = client.post("/v1/models/pitch:predict", {"inputs": {"input_2": x.tolist()}})
    assert r.status == 200, r.body[:500]
    outs = r.json()["outputs"]
    assert outs.keys() == BASIC_PITCH_OUTPUTS
    for i in range(len(x)):
        want = run_direct(models.pitch_tflite, {"input_2": x[i:i + 1]})
        for k in BASIC_PITCH_OUTPUTS:
            np.testing.assert_array_equal(np.asarray(outs[k][i], np.float32), want[k][0])


def test_basic_pitch_saved_model_converted_dynamic_serves_outputs_close_to_the_saved_model(
        models: Models, client: Client) -> None:
    b = read_bundle(models.pitch_sm)
    assert b.manifest.quantization_mode == "dynamic"
    assert {s.name for s in b.manifest.outputs} == BASIC_PITCH_OUTPUTS
    _verify(models.pitch_sm)
    x = models.pitch_x
    r = client.post("/v1/models/pitch-sm:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body[:500]
    preds = r.json()["predictions"]
    assert len(preds) == len(x) and all(p.keys() == BASIC_PITCH_OUTPUTS for p in preds)
    for p, want in zip(preds, models.pitch_sm_want, strict=True):
        for k in BASIC_PITCH_OUTPUTS:
            got = np.asarray(p[k], np.float32)
            assert got.shape == want[k].shape[1:], k
            diff = np.abs(got - want[k][0])
            # posteriorgrams in [0, 1]; int8 weights move single bins, not the map
            assert float(diff.mean()) < 0.05 and float(diff.max()) < 0.5, (k, diff.max())


@pytest.mark.parametrize("how", ["--model", "[[models]]"])
def test_bare_tflite_is_refused_at_start_naming_edge_convert_bundle(
        models: Models, tmp_path: Path, how: str) -> None:
    model = tmp_path / "face.tflite"
    model.write_bytes(models.face_tflite)
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nprobe_runtime = false\n' + (
        f'[[models]]\nbundle = "{model}"\n' if how == "[[models]]" else ""))
    store = tmp_path / "store"
    args = ["run", "--config", cfg, "--http", "127.0.0.1:0", "--store", store]
    r = _cli("edge_agent.cli", *args, *(("--model", model) if how == "--model" else ()),
             timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    line = lines[0]
    assert line.startswith("edge-agent: error: ") and "ready" not in r.stderr
    assert f"{model} is a bare .tflite model, not a bundle" in line
    assert f"edge-convert bundle {model} --name NAME --version 1" in line
    assert (how == "--model") == ("--model " in line)  # names where it came from
    assert not store.exists() or not any(store.rglob("manifest.json"))  # nothing installed
