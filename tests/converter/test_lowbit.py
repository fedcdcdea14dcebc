"""``edge-convert convert --mode int4-weights / int8-weights`` (issue 14 part 3): real TF, the
real ai-edge-quantizer in its own venv (``.venv-quant``), real LiteRT.

The normal path on the digits CNN (report, golden vectors, ``verify``, the manifest's runtime
requirement); the done-when on MobileNetV2 (int4 file <= 0.6 x the int8 file, runs and
verifies on ai-edge-litert 2.x); each bad input a one-line error with nothing written: a
profile whose runtime cannot run int4 weights, integer IO, no quantizer venv; and the
quantizer shell's limits: a hung quantizer is killed at its time limit, an output over the
size cap or not a .tflite is refused (a fake quantizer python: the fault seam is the
``python`` the shell runs, as ``EDGE_QUANT_PYTHON`` names it).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, run_cli

from converter.errors import ConverterEnvironmentError
from converter.lowbit import QUANT_PYTHON_ENV, quantize_weights
from edge_agent.bundle import read_bundle

INT4_RUNTIMES = {"ai-edge-litert": "1.0.1", "tensorflow": "2.21.0"}


def _convert(digits: Any, out: Path, mode: str, *extra: object,
             profile: str = "rpi4") -> Any:
    return run_cli("convert", digits.keras, "--representative", digits.calib_npz,
                   "--eval", digits.eval_npz, "--profile", profile, "--mode", mode,
                   "--latency-runs", 5, "--json", "-o", out, *extra)


@pytest.fixture(scope="module")
def digits_int4(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("lowbit") / "digits-int4"
    r = _convert(digits, out, "int4-weights")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_int4_weights_digits_bundle_is_small_accurate_and_verifies(
        digits_int4: tuple[Path, Any]) -> None:
    out, report = digits_int4
    b = read_bundle(out)
    assert b.manifest.quantization_mode == report["mode"] == "int4-weights"
    assert b.manifest.requires.runtimes == report["requires"]["runtimes"] == INT4_RUNTIMES
    # weights only: float32 IO, no calibration needed; 32-bit weights to 4 bits (+ scales)
    assert [s.dtype for s in (*b.manifest.inputs, *b.manifest.outputs)] == ["float32"] * 2
    assert report["size"]["quant_bytes"] < 0.2 * report["size"]["float_bytes"], report["size"]
    ev = report["evaluation"]
    assert ev["top1_drop_pp"] <= 1.0 and ev["top1_agreement"] >= 0.97, ev
    assert len(b.manifest.golden) >= 1
    assert any(p["label"] == "int4-weights" for p in report["tradeoff"])
    r = run_cli("verify", out, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout)["results"]
    assert any(x["runtime"].startswith("ai-edge-litert 2.") and x["ok"] for x in results)


def test_int8_weights_is_between_int4_and_float_and_needs_no_particular_runtime(
        digits: Any, digits_int4: tuple[Path, Any], tmp_path: Path) -> None:
    r = _convert(digits, tmp_path / "b", "int8-weights")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    int4 = digits_int4[1]["size"]["quant_bytes"]
    assert int4 < report["size"]["quant_bytes"] < 0.3 * report["size"]["float_bytes"]
    assert "requires" not in report
    assert "requires" not in json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert report["evaluation"]["top1_drop_pp"] <= 1.0


@pytest.mark.slow
def test_int4_weights_mobilenetv2_is_at_most_0_6_of_int8_and_verifies_on_litert_2(
        mobilenet: Any, tmp_path: Path) -> None:
    """The done-when: MobileNetV2 (weights=None, as bench/convert.py builds it)."""
    out = tmp_path / "mnv2-int4"
    r = run_cli("convert", mobilenet.model, "--representative", mobilenet.calib,
                "--eval", mobilenet.eval, "--profile", "rpi4", "--samples", 8,
                "--latency-runs", 3, "--mode", "int4-weights", "--json", "-o", out)
    assert r.returncode == 0, r.stderr
    int8 = read_bundle(mobilenet.bundle).manifest.model_size
    int4 = read_bundle(out).manifest.model_size
    assert int4 <= 0.6 * int8, (int4, int8)
    v = run_cli("verify", out, "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    litert = [x for x in json.loads(v.stdout)["results"] if x["runtime"].startswith("ai-edge")]
    assert litert and litert[0]["runtime"].startswith("ai-edge-litert 2.") and litert[0]["ok"]


# --- bad input: one line, nothing written -------------------------------------------------


@pytest.mark.serial
def test_int4_weights_on_a_profile_whose_runtime_cannot_run_it_is_refused(
        digits: Any, tmp_path: Path) -> None:
    out = tmp_path / "b"
    t0 = time.monotonic()
    r = _convert(digits, out, "int4-weights", profile="jetson-nano")  # tflite-runtime first
    line = assert_one_line_error(r, "jetson-nano", "tflite-runtime", "int4-weights",
                                 "ai-edge-litert >= 1.0.1", code=2)
    assert "--mode int8-weights" in line
    assert time.monotonic() - t0 < 30  # refused before TensorFlow loads the model
    assert_nothing_written(out)


def test_integer_io_with_weight_only_modes_is_refused(digits: Any, tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = _convert(digits, out, "int8-weights", "--io-dtype", "int8")
    assert_one_line_error(r, "float32 input and output", "--io-dtype int8", code=2)
    assert_nothing_written(out)


def test_no_quantizer_venv_is_one_line_error_saying_how_to_get_it(
        digits: Any, tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = run_cli("convert", digits.keras, "--representative", digits.calib_npz, "--profile",
                "rpi4", "--mode", "int4-weights", "-o", out,
                env={QUANT_PYTHON_ENV: str(tmp_path / "no-such-venv" / "python")})
    assert_one_line_error(r, "ai-edge-quantizer", "scripts/setup.sh quant", QUANT_PYTHON_ENV,
                          code=4)
    assert_nothing_written(out)


# --- the quantizer shell's limits ---------------------------------------------------------


def fake_python(tmp_path: Path, body: str) -> Path:
    """A 'python' for the quantizer: ``$2`` is the child script, ``$3``/``$4`` IN/OUT."""
    py = tmp_path / "fake-python"
    py.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\n{body}\n")
    py.chmod(0o755)
    return py


@pytest.fixture(scope="module")
def float_tflite(digits: Any) -> bytes:
    """The digits float model of the int4 bundle's report, as the converter feeds it."""
    from converter.quantize import convert
    from converter.tfload import load_source

    src = load_source(digits.keras, trust=False)
    with tempfile.TemporaryDirectory() as d:
        return convert(src.export(Path(d)), "float32", "float32", None)


def test_the_shell_returns_a_real_int4_model_smaller_than_int8(float_tflite: bytes) -> None:
    q4 = quantize_weights(float_tflite, "int4-weights", timeout_s=120)
    q8 = quantize_weights(float_tflite, "int8-weights", timeout_s=120)
    assert q4[4:8] == q8[4:8] == b"TFL3"
    assert len(q4) < len(q8) < len(float_tflite) / 3


def test_a_hung_quantizer_is_killed_at_its_time_limit(float_tflite: bytes,
                                                      tmp_path: Path) -> None:
    py = fake_python(tmp_path, "exec sleep 120")
    t0 = time.monotonic()
    with pytest.raises(ConverterEnvironmentError, match="did not finish --mode int4-weights "
                       "within 2 s; its process was killed"):
        quantize_weights(float_tflite, "int4-weights", timeout_s=2, python=py)
    assert time.monotonic() - t0 < 10
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_quantizer_output_over_the_size_cap_is_refused(float_tflite: bytes,
                                                         tmp_path: Path) -> None:
    over = len(float_tflite) + (1 << 20) + 1
    py = fake_python(tmp_path, f"head -c {over} /dev/zero > \"$4\"\necho '{{\"ok\": true}}'")
    with pytest.raises(ConverterEnvironmentError, match=f"wrote {over} bytes"):
        quantize_weights(float_tflite, "int4-weights", timeout_s=30, python=py)


def test_a_quantizer_output_that_is_not_a_tflite_is_refused(float_tflite: bytes,
                                                            tmp_path: Path) -> None:
    py = fake_python(tmp_path, "printf 'garbage-not-a-model' > \"$4\"\necho '{\"ok\": true}'")
    with pytest.raises(ConverterEnvironmentError, match=r"not a \.tflite flatbuffer"):
        quantize_weights(float_tflite, "int4-weights", timeout_s=30, python=py)


def test_a_failing_quantizer_is_one_line_naming_its_error(float_tflite: bytes,
                                                          tmp_path: Path) -> None:
    py = fake_python(tmp_path, "echo 'Traceback...' >&2\necho 'ValueError: no ops' >&2\nexit 3")
    with pytest.raises(ConverterEnvironmentError, match=r"failed on --mode int8-weights "
                       r"\(exit 3\): no verdict from the quantizer \(ValueError: no ops\)"):
        quantize_weights(float_tflite, "int8-weights", timeout_s=30, python=py)


def test_an_empty_model_or_an_unknown_mode_is_refused_before_any_child() -> None:
    from converter.errors import OptionError

    with pytest.raises(OptionError, match=r"the quantizer takes 1\.\."):
        quantize_weights(b"", "int4-weights", python=Path("/nonexistent"))
    with pytest.raises(OptionError, match="must be one of int4-weights, int8-weights"):
        quantize_weights(b"TFL3", "int2-weights", python=Path("/nonexistent"))
