"""KServe v2 REST with the official client: ``tritonclient.http.InferenceServerClient``
against a real ``edge-agent run`` process (real sockets, real LiteRT), serving the digits
model (v1 and v2) and the two-head model (input ``features``; outputs ``class``, ``score``).

Each answer is checked against what TF Serving REST (``:predict``) answers for the same
input on the same agent: one path inside, so the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.http as tritonhttp  # dev dependency: tritonclient[http]
from agent_helpers import Client, DigitsEval, b64
from attack_helpers import AgentProcess, agent_process
from model_fixtures import TwoHeads
from tritonclient.utils import InferenceServerException

DIGITS_IN, DIGITS_OUT = "input_layer", "output_0"


@dataclass
class Served:
    proc: AgentProcess
    rest: Client
    v2: Any  # tritonclient.http.InferenceServerClient


@pytest.fixture(scope="module")
def served(digits: Any, two_heads: TwoHeads, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    with agent_process(tmp_path_factory.mktemp("agent"), digits.bundle, digits.bundle_v2,
                       two_heads.bundle) as proc:
        rest = Client(proc.host, proc.port)
        v2 = tritonhttp.InferenceServerClient(f"{proc.host}:{proc.port}")
        yield Served(proc, rest, v2)
        v2.close()
        rest.close()


def _tfs(s: Served, model: str, x: np.ndarray, version: int | None = None) -> Any:
    """TF Serving REST's columnar answer for ``x`` (the reference)."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    r = s.rest.post(path, {"inputs": x.tolist()})
    assert r.status == 200, r.body
    return r.json()["outputs"]


def _digits_x(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)


def _input(name: str, x: np.ndarray, datatype: str, *, binary: bool) -> Any:
    i = tritonhttp.InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(x, binary_data=binary)
    return i


def test_server_live_ready_and_metadata(served: Served) -> None:
    assert served.v2.is_server_live() and served.v2.is_server_ready()
    meta = served.v2.get_server_metadata()
    assert meta["name"] == "edge-agent" and re.fullmatch(r"\d+\.\d+\.\d+.*", meta["version"])
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_has_versions_v2_datatypes_and_a_variable_batch(served: Served) -> None:
    m = served.v2.get_model_metadata("digits")
    assert m == {"name": "digits", "versions": ["1", "2"], "platform": "tflite",
                 "inputs": [{"name": DIGITS_IN, "datatype": "FP32", "shape": [-1, 8, 8, 1]}],
                 "outputs": [{"name": DIGITS_OUT, "datatype": "FP32", "shape": [-1, 10]}]}
    assert served.v2.get_model_metadata("digits", "1")["name"] == "digits"
    two = served.v2.get_model_metadata("two")
    assert two["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}]
    assert sorted((o["name"], o["shape"]) for o in two["outputs"]) == [
        ("class", [-1, 3]), ("score", [-1, 1])]


def test_model_ready_by_name_and_version(served: Served) -> None:
    assert served.v2.is_model_ready("digits") and served.v2.is_model_ready("digits", "1")
    assert served.v2.is_model_ready("two")
    assert not served.v2.is_model_ready("digits", "7")
    assert not served.v2.is_model_ready("nope")


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_infer_digits_matches_tf_serving_rest(served: Served, binary_in: bool,
                                              binary_out: bool) -> None:
    x = _digits_x()
    r = served.v2.infer("digits", [_input(DIGITS_IN, x, "FP32", binary=binary_in)],
                        outputs=[tritonhttp.InferRequestedOutput(DIGITS_OUT,
                                                                 binary_data=binary_out)])
    got = r.as_numpy(DIGITS_OUT)
    assert got.dtype == np.float32 and got.shape == (3, 10)
    np.testing.assert_array_equal(got, np.asarray(_tfs(served, "digits", x), np.float32))
    resp = r.get_response()
    assert resp["model_name"] == "digits" and resp["model_version"] == "2"
    out = resp["outputs"][0]
    assert ("binary_data_size" in out.get("parameters", {})) is binary_out
    assert ("data" in out) is not binary_out


def test_infer_without_outputs_gets_every_output_binary(served: Served) -> None:
    """tritonclient sends ``binary_data_output: true`` when no output is named."""
    x = _digits_x(1)
    r = served.v2.infer("digits", [_input(DIGITS_IN, x, "FP32", binary=True)])
    assert r.get_response()["outputs"][0]["parameters"] == {"binary_data_size": 40}
    np.testing.assert_array_equal(r.as_numpy(DIGITS_OUT),
                                  np.asarray(_tfs(served, "digits", x), np.float32))


def test_infer_a_named_version_and_request_id(served: Served) -> None:
    x = _digits_x(2, seed=1)
    r = served.v2.infer("digits", [_input(DIGITS_IN, x, "FP32", binary=True)],
                        model_version="1", request_id="req-17")
    resp = r.get_response()
    assert (resp["model_version"], resp["id"]) == ("1", "req-17")
    np.testing.assert_array_equal(r.as_numpy(DIGITS_OUT),
                                  np.asarray(_tfs(served, "digits", x, version=1), np.float32))


def test_two_heads_every_output_and_a_selection(served: Served, two_heads: TwoHeads) -> None:
    x = two_heads.x[:4].astype(np.float32)
    want = _tfs(served, "two", x)
    r = served.v2.infer("two", [_input("features", x, "FP32", binary=True)])
    np.testing.assert_array_equal(r.as_numpy("class"), np.asarray(want["class"], np.float32))
    np.testing.assert_array_equal(r.as_numpy("score"), np.asarray(want["score"], np.float32))
    np.testing.assert_allclose(r.as_numpy("class"), two_heads.want_class[:4], atol=0.05)
    # one output, as JSON; the other is not sent
    r = served.v2.infer("two", [_input("features", x, "FP32", binary=False)],
                        outputs=[tritonhttp.InferRequestedOutput("score", binary_data=False)])
    assert [o["name"] for o in r.get_response()["outputs"]] == ["score"]
    assert r.as_numpy("class") is None
    np.testing.assert_array_equal(r.as_numpy("score"), np.asarray(want["score"], np.float32))
    # mixed: score binary, class JSON, in the order asked
    r = served.v2.infer("two", [_input("features", x, "FP32", binary=True)],
                        outputs=[tritonhttp.InferRequestedOutput("score", binary_data=True),
                                 tritonhttp.InferRequestedOutput("class", binary_data=False)])
    outs = r.get_response()["outputs"]
    assert [o["name"] for o in outs] == ["score", "class"] and "data" in outs[1]
    np.testing.assert_array_equal(r.as_numpy("class"), np.asarray(want["class"], np.float32))
    np.testing.assert_array_equal(r.as_numpy("score"), np.asarray(want["score"], np.float32))


def test_encoded_images_as_bytes(served: Served, digits_eval: DigitsEval) -> None:
    pngs = [digits_eval.png(i) for i in range(2)]
    i = tritonhttp.InferInput(DIGITS_IN, [2], "BYTES")
    i.set_data_from_numpy(np.array(pngs, dtype=object), binary_data=True)
    r = served.v2.infer("digits", [i])
    ref = served.rest.post("/v1/models/digits:predict", {"instances": [b64(p) for p in pngs]})
    np.testing.assert_array_equal(r.as_numpy(DIGITS_OUT),
                                  np.asarray(ref.json()["predictions"], np.float32))


def test_errors_reach_the_client_with_status_and_message(served: Served) -> None:
    x = _digits_x(1)
    with pytest.raises(InferenceServerException) as e:
        served.v2.infer("nope", [_input(DIGITS_IN, x, "FP32", binary=True)])
    assert e.value.status() == "404" and "model 'nope' not found" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        served.v2.infer("digits", [_input(DIGITS_IN, x.astype(np.float64), "FP64", binary=True)])
    assert e.value.status() == "400"
    assert "datatype FP64 does not match the model's FP32" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        served.v2.get_model_metadata("digits", "9")
    assert e.value.status() == "404"


def test_v2_requests_feed_the_same_metrics_as_tf_serving_rest(served: Served) -> None:
    def count() -> float:
        text = served.rest.get("/metrics").body.decode()
        m = re.search(r'edge_agent_requests_total\{model="digits",source="kserve_rest",'
                      r'version="2"\} ([0-9.e+]+)', text)
        return float(m.group(1)) if m else 0.0

    before = count()
    served.v2.infer("digits", [_input(DIGITS_IN, _digits_x(1), "FP32", binary=True)])
    assert count() == before + 1
    text = served.rest.get("/metrics").body.decode()
    assert re.search(r'edge_agent_http_responses_total\{[^}]*route="v2_infer"', text), text[:2000]


def test_bearer_token_guards_v2_but_not_liveness(digits: Any, tmp_path: Any) -> None:
    with agent_process(tmp_path, digits.bundle, toml='[http]\ntoken = "s3cret"\n') as proc:
        url = f"{proc.host}:{proc.port}"
        anon = tritonhttp.InferenceServerClient(url)
        assert anon.is_server_live()
        assert not anon.is_server_ready()  # 401
        with pytest.raises(InferenceServerException) as e:
            anon.infer("digits", [_input(DIGITS_IN, _digits_x(1), "FP32", binary=True)])
        assert e.value.status() == "401"
        auth = {"Authorization": "Bearer s3cret"}
        assert anon.is_server_ready(headers=auth)
        r = anon.infer("digits", [_input(DIGITS_IN, _digits_x(1), "FP32", binary=True)],
                       headers=auth)
        assert r.as_numpy(DIGITS_OUT).shape == (1, 10)
        anon.close()
