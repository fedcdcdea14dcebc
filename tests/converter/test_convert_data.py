"""DATA formats: image folders (PNG, JPEG), .npz (float or uint8 pixels), .npy; labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converter.cli import main
from converter.digits import write_image_folder
from edge_agent.bundle import read_bundle


def convert(capsys: pytest.CaptureFixture[str], model: Path, rep: Path, out: Path,
            *extra: object) -> dict:
    """``edge-convert convert … --json`` in this process (TF already imported: faster)."""
    capsys.readouterr()
    rc = main(["convert", str(model), "--representative", str(rep), "--profile",
               "generic-x86_64", "--latency-runs", "0", "--json", "-o", str(out),
               *map(str, extra)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def test_png_folder_eval_takes_labels_from_folder_names(digits, digits_data, tmp_path, capsys):
    r = convert(capsys, digits.keras, digits.calib_npz, tmp_path / "b", "--eval", digits_data.png)
    ev = r["evaluation"]
    assert ev["data"] == str(digits_data.png) and ev["samples"] == len(digits_data.y_test)
    assert ev["quant_top1"] >= 0.95 and ev["top1_drop_pp"] <= 1.0
    assert [c["label"] for c in ev["per_class"]] == [str(i) for i in range(10)]
    m = read_bundle(tmp_path / "b").manifest
    assert m.labels == tuple(str(i) for i in range(10))
    assert m.preprocessing.color == "grayscale" and m.preprocessing.resize == (8, 8)


def test_jpeg_folder_works_as_representative_and_eval(digits, digits_data, tmp_path, capsys):
    r = convert(capsys, digits.keras, digits_data.jpeg, tmp_path / "b", "--eval",
                digits_data.jpeg, "--samples", 120)
    assert r["calibration"] == {"data": str(digits_data.jpeg), "samples": 120, "requested": 120}
    assert r["evaluation"]["quant_top1"] >= 0.9  # lossy 8×8 JPEG, still clearly working


def test_npy_representative_holds_x_only(digits, digits_data, tmp_path, capsys):
    r = convert(capsys, digits.keras, digits_data.npy, tmp_path / "b", "--eval", digits.eval_npz)
    assert r["calibration"]["samples"] == 200  # drawn from the 300 in the file
    assert r["evaluation"]["quant_top1"] >= 0.95


def test_npz_uint8_pixels_are_normalized_like_images(digits, digits_data, tmp_path, capsys):
    px = np.clip(np.round(digits_data.x_test * 255), 0, 255).astype(np.uint8)
    npz = tmp_path / "pixels.npz"
    np.savez(npz, x=px, y=digits_data.y_test)
    r = convert(capsys, digits.keras, digits.calib_npz, tmp_path / "b", "--eval", npz)
    assert r["evaluation"]["quant_top1"] >= 0.95  # /255 applied: same accuracy as floats


def test_npz_one_hot_labels_are_accepted(digits, digits_data, tmp_path, capsys):
    npz = tmp_path / "onehot.npz"
    np.savez(npz, x=digits_data.x_test, y=np.eye(10)[digits_data.y_test])
    r = convert(capsys, digits.keras, digits.calib_npz, tmp_path / "b", "--eval", npz)
    assert r["evaluation"]["quant_top1"] >= 0.95


def test_folder_with_some_classes_is_mapped_by_name_through_labels(digits, digits_data,
                                                                   tmp_path, capsys):
    """Folders '3' and '7' are classes 3 and 7 of the model, not 0 and 1."""
    keep = np.isin(digits_data.y_test, [3, 7])
    folder = write_image_folder(digits_data.x_test[keep], digits_data.y_test[keep],
                                tmp_path / "two-classes")
    r = convert(capsys, digits.keras, digits.calib_npz, tmp_path / "b", "--eval", folder,
                "--labels", digits_data.labels)
    assert r["evaluation"]["quant_top1"] >= 0.95
    support = {c["label"]: c["support"] for c in r["evaluation"]["per_class"]}
    assert support["3"] + support["7"] == int(keep.sum()) and support["0"] == 0


def test_without_eval_the_warning_says_what_was_measured_on_the_calibration_data(
        digits, tmp_path, capsys):
    labelled = convert(capsys, digits.keras, digits.eval_npz, tmp_path / "a")
    assert labelled["evaluation"]["labelled"] and labelled["evaluation"]["quant_top1"] >= 0.9
    notes = [w for w in labelled["warnings"] if "--eval" in w]
    assert notes == ["no --eval data: accuracy and agreement are measured on the labelled "
                     "calibration samples, which the model was calibrated on; pass --eval "
                     "held-out data for a fair figure"]
    bare = convert(capsys, digits.keras, digits.calib_npz, tmp_path / "b")
    assert bare["evaluation"]["quant_top1"] is None
    assert [w for w in bare["warnings"] if "--eval" in w] == [
        "no --eval data and unlabelled calibration samples: accuracy not measured; agreement "
        "is on the calibration samples"]
