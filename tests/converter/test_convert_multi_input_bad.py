"""Issue 12 bad input for multi-input and regression models, through the real CLI: one
line naming the input / array / head at fault, exit 2, no traceback, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, convert_args, run_cli
from multi_models import Built, tabular_regression, two_input


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return two_input(tmp_path_factory.mktemp("two-in-bad"), n=48)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return tabular_regression(tmp_path_factory.mktemp("reg-bad"), n=48, held=8)


def _arrays(b: Built) -> dict[str, np.ndarray]:
    with np.load(b.calib) as z:
        return {k: z[k] for k in z.files}


Case = Callable[[Built, Path], tuple[list[object], tuple[str, ...]]]


def _names(b: Built, tmp: Path) -> tuple[list[object], tuple[str, ...]]:
    a = _arrays(b)
    np.savez(tmp / "names.npz", image=a["image"], metadata=a["meta"], y=a["y"])
    return [tmp / "names.npz"], ("names.npz", "expected image, meta", "got image, metadata")


def _shape(b: Built, tmp: Path) -> tuple[list[object], tuple[str, ...]]:
    a = _arrays(b)
    np.savez(tmp / "shape.npz", image=a["image"], meta=np.zeros((len(a["meta"]), 4), np.float32))
    return [tmp / "shape.npz"], ("shape.npz", "input 'meta'", "[4]", "[3]")


def _dtype(b: Built, tmp: Path) -> tuple[list[object], tuple[str, ...]]:
    a = _arrays(b)
    np.savez(tmp / "dtype.npz", image=a["image"], meta=np.full((len(a["meta"]), 3), "a"))
    return [tmp / "dtype.npz"], ("dtype.npz", "input 'meta'", "expected numbers")


def _y_length(b: Built, tmp: Path) -> tuple[list[object], tuple[str, ...]]:
    a = _arrays(b)
    np.savez(tmp / "ylen.npz", image=a["image"], meta=a["meta"], y=a["y"][:-3])
    return [tmp / "ylen.npz"], ("ylen.npz", "'y' has 45")


def _labels(b: Built, tmp: Path) -> tuple[list[object], tuple[str, ...]]:
    (tmp / "labels.txt").write_text("a\nb\nc\nd\n")
    return [b.calib, "--labels", tmp / "labels.txt"], (
        "labels.txt", "4 labels", "class head 'class' has 3")


def _shard_disagrees(b: Built, tmp: Path) -> tuple[list[object], tuple[str, ...]]:
    a = _arrays(b)
    (tmp / "shards").mkdir()
    np.savez(tmp / "shards" / "a.npz", **a)
    np.savez(tmp / "shards" / "b.npz", image=a["image"], meta=a["meta"])
    return [tmp / "shards"], ("b.npz", "'y'", "every shard")


CASES: dict[str, Case] = {
    "npz names do not match the inputs": _names,
    "wrong per-input shape": _shape,
    "wrong per-input dtype": _dtype,
    "y of the wrong length": _y_length,
    "label file longer than the class head": _labels,
    "a shard without y among shards with y": _shard_disagrees,
}


@pytest.mark.parametrize("name", list(CASES))
def test_two_input_bad_data_is_one_line_exit_2_and_nothing_written(
        name: str, two: Built, tmp_path: Path) -> None:
    rep, words = CASES[name](two, tmp_path)
    out = tmp_path / "out"
    r = run_cli(*convert_args(two.keras, rep[0], out, *rep[1:]))
    assert_one_line_error(r, *words, code=2)
    assert_nothing_written(out)


def test_regression_targets_of_the_wrong_width_are_refused(reg: Built, tmp_path: Path) -> None:
    x = reg.held["features"]
    np.savez(tmp_path / "wide.npz", features=x, y=np.zeros((len(x), 2), np.float32))
    out = tmp_path / "out"
    r = run_cli(*convert_args(reg.keras, reg.calib, out, "--task", "regression",
                              "--eval", tmp_path / "wide.npz"))
    assert_one_line_error(r, "wide.npz", "2 value(s) per sample", "'value' has 1", code=2)
    assert_nothing_written(out)


def test_task_classification_on_a_one_value_head_is_refused(reg: Built, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli(*convert_args(reg.keras, reg.calib, out, "--task", "classification"))
    assert_one_line_error(r, "--task classification", "value [1, 1]", code=2)
    assert_nothing_written(out)
