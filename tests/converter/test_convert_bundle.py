"""Bundles: golden vectors verify (and catch a tampered model), other modes, tar/dir, inspect."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import run_cli

from converter.cli import main
from converter.graph import inspect_graph
from converter.support import activations
from edge_agent.bundle import read_bundle, sha256_bytes, tar_bytes, write_bundle
from edge_agent.runtime.backends import available_runtimes, select_runtime


def test_golden_vectors_verify_on_every_runtime_here(digits) -> None:
    r = run_cli("verify", digits.bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    for rt in available_runtimes(include_tensorflow=True):
        assert f"{rt}  ok (4 vectors" in r.stdout


def _tamper_weights(model: bytes) -> bytes:
    """Negate the largest int8 weight tensor in place: same size, still a valid model."""
    graph = inspect_graph(model)
    interp = select_runtime().make_interpreter(model)
    consts = [t for i, t in graph.tensors.items()
              if i not in activations(graph) and t.dtype == "int8"]
    biggest = max(consts, key=lambda t: t.nbytes)
    w = interp.get_tensor(biggest.index)
    at = model.find(w.tobytes())
    assert at > 0 and model.find(w.tobytes(), at + 1) == -1  # found once, unambiguous
    flipped = np.clip(-w.astype(np.int16), -127, 127).astype(np.int8).tobytes()
    return model[:at] + flipped + model[at + len(flipped):]


def test_tampered_model_fails_its_golden_vectors(digits, tmp_path: Path) -> None:
    b = read_bundle(digits.bundle)
    bad = _tamper_weights(b.model_bytes)
    # Sha and size are made consistent, so only the golden check can notice.
    m = dataclasses.replace(b.manifest, model_sha256=sha256_bytes(bad), model_size=len(bad))
    out = write_bundle(dataclasses.replace(b, manifest=m, model_bytes=bad), tmp_path / "t.tar")
    assert read_bundle(out).model_bytes == bad  # the hash check passes
    r = run_cli("verify", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED: golden vector" in r.stdout and "Traceback" not in r.stderr
    r = run_cli("verify", out, "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and all(not x["ok"] for x in doc["results"])


def test_inconsistent_hash_is_refused_before_any_golden_check(digits, tmp_path: Path) -> None:
    d = tmp_path / "b"
    shutil.copytree(digits.bundle, d)
    model = bytearray((d / "model.tflite").read_bytes())
    model[-1] ^= 0xFF
    (d / "model.tflite").write_bytes(bytes(model))
    r = run_cli("verify", d)
    assert r.returncode == 2 and "sha256" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize(("mode", "io"), [("dynamic", "float32"), ("float16", "float32"),
                                          ("int16x8", "int16")])
def test_other_modes_produce_loadable_bundles_whose_golden_vectors_verify(
        digits, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, io: str) -> None:
    out = tmp_path / f"{mode}.tar"
    rc = main(["convert", str(digits.keras), "--representative", str(digits.calib_npz),
               "--eval", str(digits.eval_npz), "--profile", "rpi4", "--mode", mode,
               "--samples", "100", "--latency-runs", "0", "--json", "-o", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    b = read_bundle(out)
    assert b.manifest.quantization_mode == mode == report["mode"]
    assert b.manifest.inputs[0].dtype == io and b.manifest.outputs[0].dtype == io
    assert report["evaluation"]["top1_drop_pp"] <= 1.0
    assert report["size"]["ratio"] < (0.6 if mode == "float16" else 0.35)
    r = run_cli("verify", out, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and len(doc["results"]) >= 2  # ai-edge-litert and tf.lite both agree


def test_tar_and_directory_forms_round_trip(digits, tmp_path: Path) -> None:
    d = read_bundle(digits.bundle)
    tar = write_bundle(d, tmp_path / "x.tar")
    t = read_bundle(tar)
    back = read_bundle(write_bundle(t, tmp_path / "x-dir"))
    for other in (t, back):
        assert other.manifest == d.manifest
        assert other.model_bytes == d.model_bytes
        assert other.report == d.report
    assert sorted(p.name for p in (tmp_path / "x-dir").iterdir()) == [
        "manifest.json", "model.tflite", "report.json"]
    # The tar is deterministic: same bundle, same bytes (signable, cacheable).
    assert tar_bytes(back) == tar.read_bytes()
    assert (tmp_path / "x-dir" / "manifest.json").read_bytes() == (
        digits.bundle / "manifest.json").read_bytes()


def test_inspect_prints_the_manifest(digits, tmp_path: Path) -> None:
    tar = write_bundle(read_bundle(digits.bundle), tmp_path / "d.tar")
    m = read_bundle(tar).manifest
    r = run_cli("inspect", tar)
    assert r.returncode == 0 and r.stderr == ""
    for expected in ("digits", m.model_sha256, "int8", "golden vectors  4",
                     "0, 1, 2, 3, 4, 5, 6, 7, 8, 9", "generic-x86_64", "tensorflow 2."):
        assert expected in r.stdout, expected
    r = run_cli("inspect", tar, "--json")
    doc = json.loads(r.stdout)
    assert doc["manifest"] == json.loads((digits.bundle / "manifest.json").read_text())
    assert doc["report"]["size"]["ratio"] <= 0.30


def test_inspect_of_a_non_bundle_is_one_line_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    r = run_cli("inspect", junk)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "not a valid bundle tar" in r.stderr
