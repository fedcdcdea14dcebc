"""``--task detection`` / ``--heads`` bad input, through the real CLI: one line naming the
problem, exit 2, no traceback, nothing at the output path (issue 12 part 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, run_cli
from det_models import SquareBundle

from edge_agent.bundle import read_bundle


@pytest.fixture(scope="module")
def digits_tflite(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("det-bad") / "digits.tflite"
    p.write_bytes(read_bundle(digits.bundle).model_bytes)
    return p


def _convert(model: Path, rep: Path, out: Path, *extra: object) -> Any:
    return run_cli("convert", model, "--representative", rep, "--profile", "generic-x86_64",
                   "--latency-runs", 0, "--samples", 16, "-o", out, *extra)


def test_convert_task_detection_on_a_model_without_box_output_is_refused(
        digits: Any, tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = _convert(digits.keras, digits.calib_npz, out, "--task", "detection")
    assert_one_line_error(r, "--task detection", "exactly one boxes head", "[1, 10]",
                          "--heads", code=2)
    assert_nothing_written(out)


def test_bundle_task_detection_on_a_model_without_box_output_is_refused(
        digits_tflite: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = run_cli("bundle", digits_tflite, "--name", "d", "--version", 1, "--task", "detection",
                "-o", out)
    assert_one_line_error(r, "--task detection", "exactly one boxes head", code=2)
    assert_nothing_written(out)


@pytest.mark.parametrize(("heads", "words"), [
    ("boxes=scores,scores=boxes", ("boxes needs shape [batch, detections, 4k]", "[1, 16, 1]")),
    ("scores=raw", ("exactly one scores head", "none")),
    ("nope=boxes", ("--heads", "no output named 'nope'", "boxes [1, 16, 4]")),
    ("boxes=bbox", ("--heads", "NAME=ROLE", "'boxes=bbox'")),
    ("boxes", ("--heads", "NAME=ROLE",)),
    ("boxes=boxes,boxes=raw", ("--heads", "given twice")),
])
def test_convert_heads_that_do_not_fit_are_refused(
        square_detector: SquareBundle, tmp_path: Path, heads: str, words: tuple[str, ...]
        ) -> None:
    out = tmp_path / "b"
    calib = square_detector.bundle.parent / "calib.npz"
    r = _convert(square_detector.keras, calib, out, "--task", "detection", "--heads", heads)
    assert_one_line_error(r, *words, code=2)
    assert_nothing_written(out)


def test_heads_without_task_detection_is_refused(digits_tflite: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = run_cli("bundle", digits_tflite, "--name", "d", "--version", 1, "--heads", "x=boxes",
                "-o", out)
    assert_one_line_error(r, "--heads applies to --task detection only", code=2)
    assert_nothing_written(out)


def test_bundle_labels_with_task_detection_is_refused(
        digits_tflite: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    r = run_cli("bundle", digits_tflite, "--name", "d", "--version", 1, "--task", "detection",
                "--labels", labels, "-o", out)
    assert_one_line_error(r, "--task detection has no class head", "--labels", code=2)
    assert_nothing_written(out)
