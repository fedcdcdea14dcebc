"""Models shared by the agent and telemetry suites (fixtures in tests/conftest.py): a
two-head tabular model converted by the real CLI, a 1-D audio keyword spotter converted
by the real CLI, and the digits model as a model without a class head (task ``raw``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from build_lock import cached_build

from edge_agent.bundle import read_bundle, write_bundle

FEATURES = 8


@dataclass(frozen=True)
class TwoHeads:
    bundle: Path
    x: np.ndarray  # held-out samples, float model units
    want_class: np.ndarray  # the float Keras model's outputs for x
    want_score: np.ndarray
    report: dict[str, Any]


def convert_cli(*args: object) -> subprocess.CompletedProcess[str]:
    """``edge-convert ARGS`` with this checkout's code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "converter.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)


def build_two_heads(d: Path) -> None:
    """Tabular input ``features`` → ``class`` (softmax over 3) and ``score`` (1 value),
    trained, saved and converted into ``d`` (``two-v1``, ``held.npz``, ``report.json``)."""
    from converter.tfload import import_tf

    tf = import_tf()
    tf.keras.utils.set_random_seed(7)  # the same weights every build
    rng = np.random.default_rng(7)
    x = rng.normal(size=(256, FEATURES)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    inp = tf.keras.Input((FEATURES,), name="features")
    h = tf.keras.layers.Dense(16, activation="relu")(inp)
    cls = tf.keras.layers.Dense(3, activation="softmax", name="class")(h)
    score = tf.keras.layers.Dense(1, name="score")(h)
    model = tf.keras.Model(inp, {"class": cls, "score": score})
    model.compile("adam", {"class": "sparse_categorical_crossentropy", "score": "mse"})
    model.fit(x, {"class": y, "score": x[:, :1] * 2.0}, epochs=5, verbose=0)
    model.save(d / "two.keras")
    np.savez(d / "calib.npz", x=x[:200], y=y[:200])
    # held-out features inside the calibration data's range: an int8 output saturates at
    # the extremes calibration saw (what int8 costs, not what is tested here)
    held = np.clip(x[200:216], -1.5, 1.5)
    out = model.predict(held, verbose=0)
    r = convert_cli("convert", d / "two.keras", "--representative", d / "calib.npz",
                    "--profile", "generic-x86_64", "--latency-runs", 2, "--json",
                    "--name", "two", "-o", d / "two-v1")
    assert r.returncode == 0, r.stderr
    np.savez(d / "held.npz", x=held, want_class=np.asarray(out["class"]),
             want_score=np.asarray(out["score"]))
    (d / "report.json").write_text(r.stdout)


def two_heads_at(out: Path) -> TwoHeads:
    """The two-head artefacts in ``out``, built there first unless a complete build is
    already there (built in a sibling and renamed: never half a cache)."""
    cached_build(out, "report.json", build_two_heads)
    held = np.load(out / "held.npz")
    return TwoHeads(out / "two-v1", held["x"], held["want_class"], held["want_score"],
                    json.loads((out / "report.json").read_text()))


@dataclass(frozen=True)
class KeywordSpotter:
    bundle: Path  # ``kws`` v1, int8, labels low/mid/high
    keras: Path
    calib: Path  # .npz: ``audio`` and ``y``
    x: np.ndarray  # held-out clips [n, 1600], float model units
    y: np.ndarray  # their tone indices
    want: np.ndarray  # the float Keras model's softmax for x
    report: dict[str, Any]


def keyword_spotter_at(out: Path) -> KeywordSpotter:
    """:func:`multi_models.keyword_spotter` trained and converted by the CLI (int8, its
    labels file) into ``out``, built there first unless a complete build is already
    there (built in a sibling and renamed: never half a cache)."""
    from multi_models import keyword_spotter

    def build(tmp: Path) -> None:
        built = keyword_spotter(tmp)
        r = convert_cli("convert", built.keras, "--representative", built.calib, "--labels",
                        tmp / "labels.txt", "--profile", "generic-x86_64", "--latency-runs", 2,
                        "--json", "--name", "kws", "-o", tmp / "kws-v1")
        assert r.returncode == 0, r.stderr
        np.savez(tmp / "held.npz", x=built.held["audio"], y=built.held_y,
                 want=built.want["keyword"])
        (tmp / "report.json").write_text(r.stdout)

    cached_build(out, "report.json", build)
    held = np.load(out / "held.npz")
    return KeywordSpotter(out / "kws-v1", out / "kws.keras", out / "calib.npz", held["x"],
                          held["y"], held["want"], json.loads((out / "report.json").read_text()))


def raw_variant(bundle: Path, out: Path) -> Path:
    """``bundle``'s model as a model without a class head: task ``raw``, name
    ``<name>-raw``."""
    b = read_bundle(bundle)
    m = replace(b.manifest, name=f"{b.manifest.name}-raw", task="raw")
    return write_bundle(replace(b, manifest=m), out / m.name)
