"""``edge-convert bundle --mean M --std S`` (issue 12): a wrapped float model normalises
image requests as a converted one does.

The digits CNN is converted by the real CLI with float I/O (``--mode dynamic``) and
``--mean 24 --std 128``; its very ``model.tflite`` is then wrapped by ``edge-convert
bundle`` with the same values, and once without. A real ``edge-agent run`` serves all
three; PNG requests (raw :classify and b64 :predict) to the wrapped model must answer
exactly as the converted one, and differently from the one wrapped without them —
before, ``bundle`` had no ``--mean``/``--std`` and every wrapped model divided pixels by
255. Bad values are one-line errors (exit 2) that write nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client, DigitsEval
from attack_helpers import agent_process
from model_fixtures import convert_cli

from edge_agent.bundle import read_bundle

MEAN, STD = "24", "128"


@dataclass(frozen=True)
class Trio:
    converted: Path
    wrapped: Path
    plain: Path  # wrapped without --mean/--std


@pytest.fixture(scope="module")
def trio(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Trio:
    d = tmp_path_factory.mktemp("wrap-norm")
    r = convert_cli("convert", digits.keras, "--representative", digits.calib_npz,
                    "--profile", "generic-x86_64", "--mode", "dynamic", "--samples", 32,
                    "--latency-runs", 0, "--mean", MEAN, "--std", STD, "--name", "conv",
                    "-o", d / "conv")
    assert r.returncode == 0, r.stderr
    for name, extra in (("wrapped", ("--mean", MEAN, "--std", STD)), ("plain", ())):
        r = convert_cli("bundle", d / "conv" / "model.tflite", "--name", name, "--version", 1,
                        "--labels", _labels(d), "--latency-runs", 0, *extra, "-o", d / name)
        assert r.returncode == 0, r.stderr
    return Trio(d / "conv", d / "wrapped", d / "plain")


def _labels(d: Path) -> Path:
    p = d / "labels.txt"
    p.write_text("".join(f"{i}\n" for i in range(10)))
    return p


@pytest.fixture(scope="module")
def client(trio: Trio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    toml = "".join(f'[[models]]\nbundle = "{b}"\n' for b in (trio.wrapped, trio.plain))
    with agent_process(tmp_path_factory.mktemp("agent"), trio.converted, toml=toml) as proc:
        c = Client(proc.host, proc.port)
        yield c
        c.close()


def test_bundle_records_mean_and_std_in_the_manifest(trio: Trio) -> None:
    conv = read_bundle(trio.converted).manifest.preprocessing
    wrapped = read_bundle(trio.wrapped).manifest.preprocessing
    assert wrapped.mean == (24.0,) and wrapped.std == (128.0,)
    assert wrapped == conv  # resize, colour, mean and std: what the converter wrote
    assert read_bundle(trio.plain).manifest.preprocessing.std == (255.0,)
    assert read_bundle(trio.wrapped).model_bytes == read_bundle(trio.converted).model_bytes


def test_wrapped_model_answers_image_requests_as_the_converted_one(
        trio: Trio, client: Client, digits_eval: DigitsEval) -> None:
    for i in range(4):
        png = digits_eval.png(i)
        got = {m: client.post(f"/v1/models/{m}:classify?k=10", body=png,
                              content_type="image/png") for m in ("conv", "wrapped", "plain")}
        assert all(r.status == 200 for r in got.values()), {m: r.body for m, r in got.items()}
        res = {m: r.json()["results"] for m, r in got.items()}
        assert res["wrapped"] == res["conv"]  # the same scores, to the digit
        assert res["plain"] != res["conv"]  # pixels / 255: other inputs, other scores
        inst = {"instances": [{"b64": base64.b64encode(png).decode()}]}
        p = {m: client.post(f"/v1/models/{m}:predict", inst).json()["predictions"]
             for m in ("conv", "wrapped")}
        assert p["wrapped"] == p["conv"]


@pytest.mark.parametrize(("args", "needle"), [
    (("--std", "0"), "--std must not contain 0"),
    (("--mean", "1,2,3"),
     "--mean needs 1 value (the image input 'input_layer' has 1 channel), got 3"),
    (("--std", "nan"), "--std must be finite numbers"),
    (("--mean", "a"), "expected comma-separated numbers"),
])
def test_bad_normalisation_is_one_line_exit_2_and_writes_nothing(
        trio: Trio, tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    out = tmp_path / "bad"
    r = convert_cli("bundle", trio.converted / "model.tflite", "--name", "bad", "--version",
                    1, "--latency-runs", 0, *args, "-o", out)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert not out.exists() and r.stdout == ""

