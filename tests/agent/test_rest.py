"""The REST API in TensorFlow Serving's shape, over a real socket, on real LiteRT models."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client, DigitsEval, b64, make_config

from edge_agent.app import Agent
from edge_agent.hooks import PredictionRecord

N = 40  # held-out digits per request in the accuracy checks


@pytest.fixture(scope="module")
def served(digits: Any, digits_float: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Agent, Client, list[PredictionRecord]]]:
    """One agent for the module: digits v1 + v2 (v2 active) and digits-float v1."""
    cfg = make_config(tmp_path_factory.mktemp("store"), models=[
        {"bundle": str(digits.bundle), "activate": False}, {"bundle": str(digits.bundle_v2)},
        {"bundle": str(digits_float)}])
    agent = Agent(cfg, components=())
    agent.start()
    records: list[PredictionRecord] = []
    agent.hooks.on_prediction(records.append)
    assert agent.http is not None
    client = Client(*agent.http.address)
    yield agent, client, records
    client.close()
    agent.stop()


@pytest.fixture
def client(served: tuple[Agent, Client, list[PredictionRecord]]) -> Client:
    return served[1]


@pytest.fixture
def records(served: tuple[Agent, Client, list[PredictionRecord]]) -> list[PredictionRecord]:
    served[2].clear()
    return served[2]


def _accuracy(pred: list[list[float]], y: np.ndarray) -> float:
    return float(np.mean(np.argmax(np.asarray(pred), axis=1) == y))


def test_status_lists_every_loaded_version(client: Client) -> None:
    r = client.get("/v1/models/digits")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]}


def test_status_of_one_version(client: Client) -> None:
    r = client.get("/v1/models/digits/versions/1")
    assert r.status == 200
    assert [s["version"] for s in r.json()["model_version_status"]] == ["1"]


def test_metadata_has_tf_serving_signature_def(client: Client) -> None:
    r = client.get("/v1/models/digits/versions/1/metadata")
    assert r.status == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    (inp,) = sig["inputs"].values()
    assert inp["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inp["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    edge = doc["metadata"]["edge"]
    assert edge["labels"] == [str(i) for i in range(10)]
    assert edge["input_tensor"]["dtype"] == "int8" and edge["quantization_mode"] == "int8"


def test_metadata_defaults_to_active_version(client: Client) -> None:
    assert client.get("/v1/models/digits/metadata").json()["model_spec"]["version"] == "2"


def test_predict_row_format_gives_predictions(client: Client, digits_eval: DigitsEval) -> None:
    x, y = digits_eval.x[:N], digits_eval.y[:N]
    r = client.post("/v1/models/digits:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body
    pred = r.json()["predictions"]
    assert np.asarray(pred).shape == (N, 10)
    assert _accuracy(pred, y) >= 0.95


def test_predict_columnar_format_gives_outputs(client: Client, digits_eval: DigitsEval) -> None:
    x, y = digits_eval.x[:N], digits_eval.y[:N]
    r = client.post("/v1/models/digits:predict", {"inputs": x.tolist()})
    assert r.status == 200, r.body
    assert set(r.json()) == {"outputs"}
    assert _accuracy(r.json()["outputs"], y) >= 0.95


def test_predict_named_inputs_in_both_formats(client: Client, digits_eval: DigitsEval) -> None:
    x = digits_eval.x[:3].tolist()
    sig = client.get("/v1/models/digits/metadata").json()["metadata"]["signature_def"]
    (name,) = sig["signature_def"]["serving_default"]["inputs"]  # the signature's input key
    row = client.post("/v1/models/digits:predict", {"instances": [{name: v} for v in x]})
    col = client.post("/v1/models/digits:predict", {"inputs": {name: x}})
    assert row.status == col.status == 200
    assert row.json()["predictions"] == col.json()["outputs"]


def test_predict_b64_images_match_the_float_pixels(client: Client,
                                                   digits_eval: DigitsEval) -> None:
    idx = range(12)
    images = [b64(digits_eval.png(i)) for i in idx]
    by_image = client.post("/v1/models/digits:predict", {"instances": images})
    by_column = client.post("/v1/models/digits:predict", {"inputs": images})
    one = client.post("/v1/models/digits:predict", {"inputs": images[0]})
    by_numbers = client.post("/v1/models/digits:predict",
                             {"instances": digits_eval.x[:12].tolist()})
    assert by_image.status == by_column.status == one.status == 200
    top = np.argmax(by_image.json()["predictions"], axis=1)
    assert list(top) == list(np.argmax(by_numbers.json()["predictions"], axis=1))
    assert by_column.json()["outputs"] == by_image.json()["predictions"]
    assert one.json()["outputs"] == by_image.json()["predictions"][:1]


def test_predict_version_path_serves_that_version(client: Client, digits_eval: DigitsEval,
                                                  records: list[PredictionRecord]) -> None:
    body = {"instances": digits_eval.x[:2].tolist()}
    assert client.post("/v1/models/digits/versions/1:predict", body).status == 200
    assert client.post("/v1/models/digits/versions/2:predict", body).status == 200
    assert client.post("/v1/models/digits:predict", body).status == 200
    assert [(r.version, r.source, r.batch) for r in records] == [(1, "rest", 2), (2, "rest", 2),
                                                                 (2, "rest", 2)]


def test_second_model_float32_serves_too(client: Client, digits_eval: DigitsEval) -> None:
    x, y = digits_eval.x[:N], digits_eval.y[:N]
    r = client.post("/v1/models/digits-float:predict", {"instances": x.tolist()})
    assert r.status == 200
    assert _accuracy(r.json()["predictions"], y) >= 0.95
    meta = client.get("/v1/models/digits-float/metadata").json()["metadata"]["edge"]
    assert meta["input_tensor"]["dtype"] == "float32"


def test_octet_stream_takes_the_raw_input_tensor(client: Client, digits_eval: DigitsEval
                                                 ) -> None:
    x = digits_eval.x[:5]
    raw = (np.round(x / (1 / 255)) - 128).clip(-128, 127).astype(np.int8)  # digits' scale/zp
    r = client.post("/v1/models/digits:predict", body=raw.tobytes(),
                    content_type="application/octet-stream")
    ref = client.post("/v1/models/digits:predict", {"instances": x.tolist()})
    assert r.status == 200, r.body
    assert r.json()["predictions"] == ref.json()["predictions"]


@pytest.mark.parametrize("model", ["digits", "digits-float"])
def test_classify_raw_image_returns_top_k_labels(client: Client, digits_eval: DigitsEval,
                                                 model: str) -> None:
    hits = 0
    for i in range(20):
        r = client.post(f"/v1/models/{model}:classify?k=3", body=digits_eval.png(i),
                        content_type="image/png")
        assert r.status == 200, r.body
        doc = r.json()
        (row,) = doc["results"]
        assert len(row) == 3 and all(isinstance(lbl, str) for lbl, _ in row)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        assert doc["top_k"][0][0]["label"] == row[0][0]
        hits += row[0][0] == str(digits_eval.y[i])
    assert hits >= 19


def test_classify_tf_serving_examples_body(client: Client, digits_eval: DigitsEval) -> None:
    examples = [{"image": b64(digits_eval.png(i))} for i in range(4)]
    r = client.post("/v1/models/digits/versions/1:classify", {"examples": examples})
    assert r.status == 200
    doc = r.json()
    assert doc["model_spec"] == {"name": "digits", "version": "1"}
    assert [row[0][0] for row in doc["results"]] == [str(v) for v in digits_eval.y[:4]]
    assert all(len(row) == 5 for row in doc["results"])  # default k


def test_models_index_and_agent_status(client: Client) -> None:
    names = [m["name"] for m in client.get("/v1/models").json()["models"]]
    assert names == ["digits", "digits-float"]
    st = client.get("/v1/agent/status").json()
    assert st["device_id"] == "dev1" and st["profile"] == "generic-x86_64"
    assert st["runtime"]["name"] == "ai-edge-litert" and "rest" in st["capabilities"]
    assert {"agent_version", "models", "uptime_s", "queue_depth"} <= set(st)


def test_health_and_readiness(client: Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status == 200 and r.json() == {"ready": True, "models": ["digits", "digits-float"]}


def test_readyz_is_503_without_models(start_agent: Any) -> None:
    agent = start_agent()
    r = start_agent.client(agent).get("/readyz")
    assert r.status == 503 and "no model loaded" in r.json()["error"]


def test_metrics_count_requests_errors_and_latency_per_model(client: Client,
                                                             digits_eval: DigitsEval) -> None:
    def scrape() -> dict[str, float]:
        r = client.get("/metrics")
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
        out = {}
        for line in r.body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    key = 'edge_agent_requests_total{model="digits-float",source="rest",version="1"}'
    lat = 'edge_agent_request_latency_seconds_count{model="digits-float",source="rest"}'
    err = 'edge_agent_request_errors_total{model="digits-float",source="rest",version="1"}'
    before = scrape()
    client.post("/v1/models/digits-float:predict", {"instances": digits_eval.x[:1].tolist()})
    client.post("/v1/models/digits-float:predict", {"instances": [[[[float("nan")]] * 8] * 8]})
    after = scrape()
    assert after[key] - before.get(key, 0) == 2
    assert after[lat] - before.get(lat, 0) == 1
    assert after[err] - before.get(err, 0) == 1
    # answered requests leave nothing queued (an idle model's gauge may be absent: 0)
    assert after.get('edge_agent_queue_depth{model="digits-float"}', 0.0) == 0.0
    assert after['edge_agent_http_responses_total{code="400",route="predict"}'] >= 1


def test_request_id_is_echoed_and_reaches_the_hooks(client: Client, digits_eval: DigitsEval,
                                                    records: list[PredictionRecord]) -> None:
    body = {"instances": digits_eval.x[:1].tolist()}
    r = client.post("/v1/models/digits:predict", body, headers={"X-Request-Id": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    generated = client.post("/v1/models/digits:predict", body).headers["x-request-id"]
    assert len(generated) == 32
    assert [rec.request_id for rec in records] == ["req-42", generated]


def test_b64_inputs_and_json_nan_are_handled_per_tf_serving_json(client: Client) -> None:
    # TF Serving accepts NaN tokens in JSON; a NaN input is still refused by the model layer
    r = client.request("POST", "/v1/models/digits:predict",
                       body='{"instances": [[[[NaN]]]]}', headers={})
    assert r.status == 400


def _post(client: Client, path: str, body: Any, ctype: str = "application/json") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, body=data, content_type=ctype)


BAD = [  # (method, path, body, content type, status, message fragment)
    ("POST", "/v1/models/digits:predict", b"{not json", "application/json", 400,
     "JSON Parse error: Missing a name for object member. at offset: 1"),
    ("POST", "/v1/models/digits:predict", b"", "application/json", 400,
     "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/digits:predict", [1, 2], "application/json", 400,
     "JSON Value: [1,2] Is not object"),
    ("POST", "/v1/models/digits:predict", {"instances": [], "inputs": []}, "application/json",
     400, "expecting only one of 'inputs' or 'instances' keys to exist"),
    ("POST", "/v1/models/digits:predict", {"rows": []}, "application/json", 400,
     "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/digits:predict", {"instances": []}, "application/json", 400,
     "No values in 'instances' array"),
    ("POST", "/v1/models/digits:predict", {"instances": [[1, 2, 3]]}, "application/json", 400,
     "expected shape [batch, 8, 8, 1], got [1, 3]"),
    ("POST", "/v1/models/digits:predict", {"instances": [[[["a"]] * 8] * 8]},
     "application/json", 400, 'JSON Value: "a" Type: String is not of expected type: float'),
    ("POST", "/v1/models/digits:predict", {"instances": [[1], [2, 3]]}, "application/json", 400,
     "Failed to process element: 1 of 'instances' list. Error: Invalid argument: Expecting "
     "tensor size: 1 but got: 2"),
    ("POST", "/v1/models/digits:predict", {"instances": [[[[0.5]] * 8] * 8] * 65},
     "application/json", 400, "over the limit of 64"),
    ("POST", "/v1/models/digits:predict", {"instances": [{"b64": "***"}]}, "application/json",
     400, "Unable to base64 decode"),
    ("POST", "/v1/models/digits:predict",
     {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}, "application/json",
     400, "not a decodable image"),
    ("POST", "/v1/models/digits:predict", {"instances": [{"pixels": [1]}]}, "application/json",
     400, "JSON object: does not have named input: pixels"),
    ("POST", "/v1/models/digits:predict", {"signature_name": "other", "instances": [1]},
     "application/json", 400, 'Serving signature name: "other" not found in signature def'),
    ("POST", "/v1/models/digits:predict", b"\x00\x01\x02", "application/octet-stream", 400,
     "not a whole number"),
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, "application/json", 404,
     "model 'nope' not found"),
    ("POST", "/v1/models/digits/versions/9:predict", {"instances": [1]}, "application/json",
     404, "has no version 9"),
    ("POST", "/v1/models/digits/versions/abc:predict", {}, "application/json", 400,
     "version must be a positive integer"),
    ("GET", "/v1/models/nope", None, "", 404, "model 'nope' not found"),
    ("GET", "/v1/models/digits/versions/7", None, "", 404, "no version 7"),
    ("GET", "/v1/nothing/here", None, "", 404, "unknown route: GET /v1/nothing/here"),
    ("DELETE", "/v1/models/digits", None, "", 405, "method DELETE not allowed"),
    ("POST", "/v1/models/digits:regress", {"examples": [{"x": 1.0}]}, "application/json", 400,
     "Expected regression signature method_name to be tensorflow/serving/regress"),
    ("POST", "/v1/models/digits:classify", b"GIF89a-garbage", "image/gif", 400,
     "not a decodable image"),
    ("POST", "/v1/models/digits:classify", b"", "image/png", 400, "empty body"),
    ("POST", "/v1/models/digits:classify", b"--x\r\n", "multipart/form-data; boundary=x", 415,
     "multipart uploads are not supported"),
    ("POST", "/v1/models/digits:classify?k=zero", b"x", "image/png", 400,
     "k must be a positive integer"),
    ("POST", "/v1/models/digits:classify", {"examples": [{"a": 1}]}, "application/json", 400,
     "exactly one"),
]


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status", "fragment"), BAD,
                         ids=[f"{b[0]} {b[1]} {b[5][:24]}" for b in BAD])
def test_bad_input_is_a_4xx_naming_the_problem(client: Client, digits_eval: DigitsEval,
                                               method: str, path: str, body: Any, ctype: str,
                                               status: int, fragment: str) -> None:
    if body is None:
        r = client.request(method, path)
    else:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = client.request(method, path, body=data, headers={"Content-Type": ctype})
    assert r.status == status, r.body
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]
    if status == 405:
        assert "GET" in r.headers["allow"]
    ok = client.post("/v1/models/digits:predict", {"instances": digits_eval.x[:1].tolist()})
    assert ok.status == 200  # and the agent keeps serving, on the same connection


def test_image_over_the_pixel_limit_is_refused_before_decoding(start_agent: Any,
                                                               digits: Any) -> None:
    import io

    from PIL import Image

    agent = start_agent(digits.bundle, **{"agent.max_image_pixels": 10_000})
    buf = io.BytesIO()
    Image.new("L", (101, 100)).save(buf, format="PNG")
    r = start_agent.client(agent).post("/v1/models/digits:classify", body=buf.getvalue(),
                                       content_type="image/png")
    assert r.status == 400 and "101x100 is over the limit of 10000 pixels" in r.json()["error"]
