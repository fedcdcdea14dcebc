"""``edge-convert distill``: keras.distillation from a wide into a narrow digits CNN (real TF).

The done-when promise (issue 14): distilling the wide digits CNN into a narrow one beats
the narrow one trained alone. Where it wins is where distillation is used: labels are
scarce (here 100 labelled digits), the teacher exists, unlabelled inputs are plenty (the
1,347 training digits without their labels). Both students start from the same saved
weights, use the same seed, optimizer, learning rate and number of optimizer steps (the
one trained alone runs more epochs over its 100 samples), and are scored here, on the 449
held-out digits, from the written ``.keras`` files, not from the command's report.
Measured (this set-up, seeds 1, 2, 3; T 2, 15 epochs, lr 3e-3): distilled 98.00 / 93.32 /
95.77 % against 91.98 / 86.19 / 89.09 % alone, +6.0 / +7.1 / +6.7 points; the test asserts
half the smallest gain (``MARGIN_POINTS``). At *equal* labelled data (the full training
split for both) distillation did not win on digits: −1.8 to +0.2 points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, run_cli

THREADS = {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}
LABELLED = 100
EPOCHS = 15
LR = "3e-3"
SEED = 1
MARGIN_POINTS = 3.0


def _narrow(seed: int) -> Any:
    import keras as k

    k.utils.set_random_seed(seed)
    L = k.layers
    return k.Sequential([
        k.Input((8, 8, 1)),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dense(10, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The narrow CNN, untrained: 2.6 K parameters against the teacher's 71 K."""
    p = tmp_path_factory.mktemp("student") / "narrow.keras"
    _narrow(SEED).save(p)
    return p


def _top1(path: Path) -> float:
    import keras

    from converter.digits import load_split

    s = load_split()
    m = keras.models.load_model(path, compile=False)
    return float(np.mean(m.predict(s.x_test, verbose=0).argmax(1) == s.y_test))


@pytest.mark.slow
def test_distilling_the_wide_cnn_beats_the_narrow_one_trained_alone(
        digits, student: Path, tmp_path: Path) -> None:
    import keras

    from converter.digits import load_split
    from converter.distill import train_alone

    s = load_split()
    unlabelled = tmp_path / "inputs.npy"
    np.save(unlabelled, s.x_train)
    out = tmp_path / "distilled.keras"
    r = run_cli("distill", digits.keras, "--student", student, "--data", unlabelled,
                "--eval", digits.eval_npz, "--epochs", EPOCHS, "--learning-rate", LR,
                "--temperature", 2,
                "--seed", SEED, "--json", "-o", out, env=THREADS, timeout=900)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)

    steps = EPOCHS * math.ceil(len(s.x_train) / 32)
    alone = train_alone(keras.models.load_model(student, compile=False),
                        s.x_train[:LABELLED], s.y_train[:LABELLED],
                        epochs=round(steps / math.ceil(LABELLED / 32)),
                        learning_rate=float(LR), seed=SEED)
    alone.save(tmp_path / "alone.keras")
    distilled, baseline = _top1(out), _top1(tmp_path / "alone.keras")
    assert distilled - baseline >= MARGIN_POINTS / 100, (distilled, baseline)

    d = report["distillation"]
    assert d["labelled"] is False and d["alpha"] == 0.0  # no labels: alpha does not apply
    assert d["student_after"] == pytest.approx(distilled, abs=1e-4)
    assert d["teacher"] >= 0.97 and d["student_before"] < 0.3
    assert d["agreement_after"] > d["agreement_before"]
    size = report["size"]
    assert size["student_params"] < size["teacher_params"] / 10
    assert size["student"]["int8_top1"] >= distilled - 0.02  # the int8 student is reported
    assert size["student"]["int8_tflite_bytes"] < size["student"]["float_tflite_bytes"]


def test_labelled_data_applies_alpha_and_reports_the_int8_student(
        digits, student: Path, tmp_path: Path) -> None:
    from converter.digits import load_split

    s = load_split()
    data = tmp_path / "train.npz"
    np.savez(data, x=s.x_train[:300], y=s.y_train[:300])
    out = tmp_path / "s.keras"
    r = run_cli("distill", digits.keras, "--student", student, "--data", data, "--alpha",
                "0.3", "--epochs", 2, "-o", out, env=THREADS)
    assert r.returncode == 0, r.stderr
    assert "alpha 0.3 on labels" in r.stdout and "student int8" in r.stdout
    r = run_cli("distill", digits.keras, "--student", student, "--data", data, "--alpha",
                "0.3", "--epochs", 2, "--json", "-o", out, env=THREADS)
    d = json.loads(r.stdout)["distillation"]
    assert d["labelled"] is True and d["alpha"] == 0.3 and d["evaluated_on"] == "data"
    assert out.is_file()


@pytest.mark.parametrize(("shape", "classes", "words"), [
    ((8, 8, 1), 5, ("output shape", "[5]", "[10]")),
    ((16, 16, 1), 10, ("input shape", "[16, 16, 1]", "[8, 8, 1]")),
])
def test_a_student_whose_shapes_differ_from_the_teacher_is_one_line_and_writes_nothing(
        digits, tmp_path: Path, shape: tuple[int, ...], classes: int,
        words: tuple[str, ...]) -> None:
    import keras

    L = keras.layers
    bad = tmp_path / "bad.keras"
    keras.Sequential([keras.Input(shape), L.Flatten(),
                      L.Dense(classes, activation="softmax")]).save(bad)
    out = tmp_path / "s.keras"
    r = run_cli("distill", digits.keras, "--student", bad, "--data", digits.calib_npz,
                "-o", out)
    assert_one_line_error(r, *words, code=2)
    assert_nothing_written(out)


@pytest.mark.parametrize(("args", "words"), [
    (("--temperature", "0"), ("--temperature",)),
    (("--temperature", "1000"), ("--temperature",)),
    (("--alpha", "1.5"), ("--alpha", "0 and 1")),
    (("--epochs", "0"), ("--epochs",)),
])
def test_bad_options_are_one_line_and_write_nothing(
        digits, student: Path, tmp_path: Path, args: tuple[str, ...],
        words: tuple[str, ...]) -> None:
    out = tmp_path / "s.keras"
    r = run_cli("distill", digits.keras, "--student", student, "--data", digits.calib_npz,
                *args, "-o", out)
    assert_one_line_error(r, *words, code=2)
    assert_nothing_written(out)


def test_eval_data_without_labels_is_one_line(digits, student: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.keras"
    r = run_cli("distill", digits.keras, "--student", student, "--data", digits.calib_npz,
                "--eval", digits.calib_npz, "-o", out)
    assert_one_line_error(r, "--eval", "labels", code=2)
    assert_nothing_written(out)
