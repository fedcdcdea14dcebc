"""Converter fixtures: real models and data built once per session (real TF, real LiteRT).

Expensive artefacts (MobileNetV2 conversion, the op-without-int8-kernel model, image
folders) are session-scoped; helpers live in ``convert_helpers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import run_cli


@dataclass(frozen=True)
class DigitsData:
    """Held-out digits as raw arrays and image folders (the test split of converter.digits)."""

    x_test: np.ndarray
    y_test: np.ndarray
    png: Path
    jpeg: Path
    npy: Path
    labels: Path


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> DigitsData:
    from converter.digits import LABELS, load_split, write_image_folder

    d = tmp_path_factory.mktemp("digits-data")
    split = load_split()
    png = write_image_folder(split.x_test, split.y_test, d / "png", fmt="png")
    jpeg = write_image_folder(split.x_test, split.y_test, d / "jpeg", fmt="jpeg")
    np.save(d / "calib.npy", split.x_train[:300])
    (d / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return DigitsData(split.x_test, split.y_test, png, jpeg, d / "calib.npy", d / "labels.txt")


@dataclass(frozen=True)
class Converted:
    model: Path
    calib: Path
    eval: Path
    bundle: Path
    report: dict[str, object]
    stderr: str


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """MobileNetV2(weights=None, 224×224×3) converted to int8 for rpi4 by the real CLI.

    Small on purpose (8 calibration, 8 eval samples, 3 latency runs): it proves a real
    ImageNet-sized graph converts and loads, not how accurate random weights are.
    """
    import json

    from converter.tfload import import_tf

    d = tmp_path_factory.mktemp("mobilenet")
    tf = import_tf()
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    model.save(d / "mnv2.keras")
    rng = np.random.default_rng(3)
    np.savez(d / "calib.npz", x=rng.uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32))
    np.savez(d / "eval.npz", x=rng.uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32),
             y=rng.integers(0, 1000, 8))
    out = d / "mnv2-bundle"
    r = run_cli("convert", d / "mnv2.keras", "--representative", d / "calib.npz",
                "--eval", d / "eval.npz", "--profile", "rpi4", "--samples", 8,
                "--latency-runs", 3, "--json", "-o", out)
    assert r.returncode == 0, r.stderr
    return Converted(d / "mnv2.keras", d / "calib.npz", d / "eval.npz", out,
                     json.loads(r.stdout), r.stderr)


@pytest.fixture(scope="session")
def sin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras model with ``keras.ops.sin``: TFLite has no int8 SIN kernel."""
    from converter.tfload import import_tf

    tf = import_tf()
    keras = tf.keras
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3)(inp)
    h = keras.ops.sin(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    path = tmp_path_factory.mktemp("sin") / "sin.keras"
    keras.Model(inp, out).save(path)
    return path




def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using ``mobilenet`` (a session fixture, so one conversion per process) goes
    to the same pytest-xdist worker (``--dist loadgroup``): it is converted once, not twice."""
    for item in items:
        if "mobilenet" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("mobilenet"))
