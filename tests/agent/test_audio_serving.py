"""Issue 12, done-when line: a 1-D audio classifier end to end — a Conv1D keyword spotter
trained here on synthetic tones (input ``audio`` [batch, 1600], output ``keyword``, three
classes), converted to int8 by the real CLI, checked by ``edge-convert verify``, served by
a real ``edge-agent run`` and asked over REST (``:predict`` row and columnar,
``:classify``) and over a real Mosquitto (``edge/<device>/infer/kws``), each answer
checked against the float Keras model.

What used to assume images on the way: the drift reference kept one "channel" statistic
per time step of a 2-D input (1600 means), so a 1600-sample clip was watched as 1600
features, and image requests went to whatever the first input was.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import AgentProcess, agent_process
from model_fixtures import KeywordSpotter, convert_cli
from multi_models import KEYWORDS

from edge_agent.bundle import read_bundle


@pytest.fixture(scope="module")
def served(kws: KeywordSpotter, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[AgentProcess, Client]]:
    with agent_process(tmp_path_factory.mktemp("kws-agent"), kws.bundle) as proc:
        c = Client(proc.host, proc.port)
        yield proc, c
        c.close()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (40, 40), 128).save(buf, format="PNG")
    return buf.getvalue()


def _close(got: Any, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, np.float32).reshape(want.shape), want, atol=0.05)


def test_audio_bundle_is_an_int8_classifier_of_its_own_names_and_labels(
        kws: KeywordSpotter) -> None:
    m = read_bundle(kws.bundle).manifest
    assert [(s.name, s.shape, s.dtype) for s in m.inputs] == [("audio", (1, 1600), "int8")]
    assert [s.name for s in m.outputs] == ["keyword"]
    assert m.task == "classification" and m.labels == KEYWORDS
    assert m.quantization_mode == "int8" and len(m.golden) == 4
    assert kws.report["evaluation"]["heads"]["keyword"]["top1_agreement"] == 1.0


def test_audio_inspect_says_the_model_takes_no_images(kws: KeywordSpotter) -> None:
    r = convert_cli("inspect", kws.bundle)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "preprocessing" in ln)
    assert "no image input" in line and "color" not in line, line


def test_audio_verify_checks_golden_vectors_on_every_runtime(kws: KeywordSpotter) -> None:
    r = convert_cli("verify", kws.bundle, "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(r.stdout)
    assert doc["ok"] and len(doc["results"]) >= 1
    assert all(res["vectors"] == 4 for res in doc["results"])


def test_audio_rest_predict_rows_and_columns_match_the_float_model(
        kws: KeywordSpotter, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    rows = c.post("/v1/models/kws:predict", {"instances": kws.x.tolist()})
    assert rows.status == 200, rows.body
    _close(rows.json()["predictions"], kws.want)
    cols = c.post("/v1/models/kws:predict", {"inputs": {"audio": kws.x.tolist()}})
    assert cols.status == 200, cols.body
    _close(cols.json()["outputs"], kws.want)
    assert (np.asarray(cols.json()["outputs"]).argmax(1) == kws.y).all()


def test_audio_rest_classify_names_each_clips_keyword(
        kws: KeywordSpotter, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    examples = [{"audio": clip.tolist()} for clip in kws.x[:6]]
    r = c.post("/v1/models/kws:classify?k=3", {"examples": examples})
    assert r.status == 200, r.body
    results = r.json()["results"]
    assert [row[0][0] for row in results] == [KEYWORDS[i] for i in kws.want[:6].argmax(1)]
    for row, want in zip(results, kws.want[:6], strict=True):
        assert sorted(lbl for lbl, _ in row) == sorted(KEYWORDS)
        got = {lbl: s for lbl, s in row}
        assert [got[k] for k in KEYWORDS] == pytest.approx(want.tolist(), abs=0.05)


def test_audio_classify_example_missing_or_short_feature_is_a_400_naming_it(
        kws: KeywordSpotter, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    short = c.post("/v1/models/kws:classify", {"examples": [
        {"audio": kws.x[0].tolist()}, {"audio": kws.x[1, :10].tolist()}]})
    assert short.status == 400, short.body
    assert "examples[1].audio: expected 1600 value(s)" in short.json()["error"], short.body
    other = c.post("/v1/models/kws:classify", {"examples": [{"clip": kws.x[0].tolist()}]})
    assert other.status == 400 and "'audio'" in other.json()["error"], other.body
    ok = c.post("/v1/models/kws:classify", {"examples": [{"audio": kws.x[0].tolist()}]})
    assert ok.status == 200 and ok.json()["results"][0][0][0] == KEYWORDS[int(kws.y[0])]


def test_audio_image_request_is_a_400_naming_the_input_and_the_model_keeps_serving(
        kws: KeywordSpotter, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    r = c.post("/v1/models/kws:classify", body=_png(), content_type="image/png")
    assert r.status == 400 and "does not take images" in r.json()["error"], r.body
    assert "audio" in r.json()["error"]
    ok = c.post("/v1/models/kws:predict", {"instances": kws.x[:1].tolist()})
    assert ok.status == 200
    _close(ok.json()["predictions"], kws.want[:1])


def test_audio_mqtt_request_is_answered_with_the_float_models_scores_an_image_refused(
        kws: KeywordSpotter, mosquitto: Any, tmp_path: Path) -> None:
    from test_mqtt_attacks import Spy

    toml = f'[mqtt]\nurl = "{mosquitto.url}"\n'
    with agent_process(tmp_path, kws.bundle, toml=toml):
        spy = Spy(mosquitto.host, mosquitto.port, "kws-client")
        try:
            spy.wait("edge/attacked/status", lambda d: d.get("state") == "online")
            spy.send("edge/attacked/infer/kws", json.dumps(
                {"id": "clips", "inputs": {"audio": kws.x[:8].tolist()},
                 "reply_to": "replies/kws"}))
            got = spy.wait("replies/kws", lambda d: d.get("id") == "clips")
            spy.send("edge/attacked/infer/kws", json.dumps(
                {"id": "img", "b64": base64.b64encode(_png()).decode(),
                 "reply_to": "replies/kws"}))
            img = spy.wait("replies/kws", lambda d: d.get("id") == "img")
            spy.send("edge/attacked/infer/kws", json.dumps(
                {"id": "after", "instances": kws.x[:1].tolist(), "reply_to": "replies/kws"}))
            after = spy.wait("replies/kws", lambda d: d.get("id") == "after")
        finally:
            spy.close()
    assert got["model"] == "kws" and got["version"] == 1, got
    _close(got["outputs"], kws.want[:8])
    # an image to the audio model: an error reply naming its input; it keeps serving
    assert img["code"] == 400 and "does not take images" in img["error"], img
    assert "audio [1, 1600]" in img["error"], img
    _close(after["predictions"], kws.want[:1])
