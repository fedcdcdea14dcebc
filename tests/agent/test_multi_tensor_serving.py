"""Issue 12 part 1: a model with several named outputs, end to end — real Keras model,
real TF conversion by the CLI, a real ``edge-agent run`` process, real REST over sockets.

Before: both TFLite outputs were named ``StatefulPartitionedCall:0``/``:1``; the converter
renamed the input to ``input``; the bundle and ``:predict`` showed one output. Now every
tensor carries the model's own name (``features``; ``class``, ``score``) from the Keras
model through the TFLite ``signature_def`` into the manifest, the golden vectors and the
REST answer, and each is correct against the float Keras model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import AgentProcess, agent_process
from model_fixtures import TwoHeads, convert_cli

from edge_agent.bundle import read_bundle


@pytest.fixture(scope="module")
def served(two_heads: TwoHeads, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[AgentProcess, Client]]:
    with agent_process(tmp_path_factory.mktemp("agent"), two_heads.bundle) as proc:
        c = Client(proc.host, proc.port)
        yield proc, c
        c.close()


def _close(got: Any, want: np.ndarray, atol: float) -> None:
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=atol)


def test_manifest_names_every_tensor_and_head_with_the_models_own_names(
        two_heads: TwoHeads) -> None:
    m = read_bundle(two_heads.bundle).manifest
    assert [s.name for s in m.inputs] == ["features"]
    assert sorted(s.name for s in m.outputs) == ["class", "score"]
    assert m.schema_version == 2 and m.task == "multi_output"
    assert m.heads == {"class": "class", "score": "regression"}
    assert m.golden and all(sorted(g.outputs) == ["class", "score"] for g in m.golden)
    raw = json.loads((two_heads.bundle / "manifest.json").read_text())
    assert raw["golden"][0]["inputs"].keys() == {"features"}


def test_report_scores_each_head_with_its_own_metric(two_heads: TwoHeads) -> None:
    heads = two_heads.report["evaluation"]["heads"]
    assert heads["class"]["kind"] == "class" and heads["class"]["top1_agreement"] >= 0.8
    assert heads["score"]["kind"] == "regression"
    assert {"mae", "rmse", "correlation"} <= heads["score"].keys()
    assert heads["score"]["correlation"] > 0.95
    assert "top1_agreement" not in heads["score"]
    assert two_heads.report["classes"] == 3  # top-1 scored on the class head, not `score`


def test_verify_checks_every_golden_output(two_heads: TwoHeads) -> None:
    r = convert_cli("verify", two_heads.bundle)
    assert r.returncode == 0, r.stderr + r.stdout


def test_rest_predict_row_returns_both_outputs_by_name(
        two_heads: TwoHeads, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    r = c.post("/v1/models/two:predict", {"instances": two_heads.x.tolist()})
    assert r.status == 200, r.body
    preds = r.json()["predictions"]
    assert len(preds) == len(two_heads.x)
    assert all(p.keys() == {"class", "score"} for p in preds)
    _close([p["class"] for p in preds], two_heads.want_class, 0.05)
    span = float(np.ptp(two_heads.want_score))
    _close([p["score"] for p in preds], two_heads.want_score, 0.05 * max(1.0, span))


def test_rest_predict_columnar_returns_both_outputs_by_name(
        two_heads: TwoHeads, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    r = c.post("/v1/models/two:predict", {"inputs": {"features": two_heads.x.tolist()}})
    assert r.status == 200, r.body
    outs = r.json()["outputs"]
    assert outs.keys() == {"class", "score"}
    _close(outs["class"], two_heads.want_class, 0.05)
    span = float(np.ptp(two_heads.want_score))
    _close(outs["score"], two_heads.want_score, 0.05 * max(1.0, span))


def test_metadata_lists_the_models_own_names(served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    sig = c.get("/v1/models/two/metadata").json()["metadata"]["signature_def"][
        "signature_def"]["serving_default"]
    assert sig["inputs"].keys() == {"features"} and sig["outputs"].keys() == {"class", "score"}


def test_unknown_input_name_is_a_400_and_the_model_keeps_serving(
        two_heads: TwoHeads, served: tuple[AgentProcess, Client]) -> None:
    _, c = served
    r = c.post("/v1/models/two:predict", {"inputs": {"input": two_heads.x[:1].tolist()}})
    assert r.status == 400 and "features" in r.json()["error"], r.body
    ok = c.post("/v1/models/two:predict", {"instances": two_heads.x[:1].tolist()})
    assert ok.status == 200 and ok.json()["predictions"][0].keys() == {"class", "score"}


def test_mqtt_request_with_inputs_by_name_gets_every_named_output(
        two_heads: TwoHeads, mosquitto: Any, tmp_path: Path) -> None:
    """A real ``edge-agent run`` on a real Mosquitto: ``edge/<device>/infer/two`` with the
    input by name (columnar) and by rows, each answered with both outputs by name."""
    from test_mqtt_attacks import Spy

    toml = f'[mqtt]\nurl = "{mosquitto.url}"\n'
    with agent_process(tmp_path, two_heads.bundle, toml=toml):
        spy = Spy(mosquitto.host, mosquitto.port, "two-heads-client")
        try:
            spy.wait("edge/attacked/status", lambda d: d.get("state") == "online")
            spy.send("edge/attacked/infer/two", json.dumps(
                {"id": "cols", "inputs": {"features": two_heads.x.tolist()},
                 "reply_to": "replies/two"}))
            spy.send("edge/attacked/infer/two", json.dumps(
                {"id": "rows", "instances": [{"features": r} for r in two_heads.x.tolist()],
                 "reply_to": "replies/two"}))
            cols = spy.wait("replies/two", lambda d: d.get("id") == "cols")
            rows = spy.wait("replies/two", lambda d: d.get("id") == "rows")
        finally:
            spy.close()
    span = float(np.ptp(two_heads.want_score))
    assert cols["model"] == "two" and cols["version"] == 1, cols
    assert cols["outputs"].keys() == {"class", "score"}, cols
    _close(cols["outputs"]["class"], two_heads.want_class, 0.05)
    _close(cols["outputs"]["score"], two_heads.want_score, 0.05 * max(1.0, span))
    preds = rows["predictions"]
    assert len(preds) == len(two_heads.x) and all(p.keys() == {"class", "score"}
                                                  for p in preds), rows
    _close([p["class"] for p in preds], two_heads.want_class, 0.05)
    _close([p["score"] for p in preds], two_heads.want_score, 0.05 * max(1.0, span))
