"""KServe v2 REST bad input, black-box against a real ``edge-agent run``: each case is one
request over a real socket that gets its 4xx with ``{"error": ...}`` naming what was
wrong, and after it nothing moved — TF Serving REST and v2 still answer the same numbers
as before, the active version is the same, the agent logged no traceback and its memory
stayed bounded.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import AgentProcess, agent_process

IN = "input_layer"
X = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8, 1)
MAX_BODY = 64 * 1024
INFER = "/v2/models/digits/infer"


def tensor(**kw: Any) -> dict[str, Any]:
    """One JSON input tensor for digits, with ``kw`` replacing its fields."""
    return {"name": IN, "shape": [1, 8, 8, 1], "datatype": "FP32",
            "data": X.reshape(-1).tolist(), **kw}


def binary(header: dict[str, Any], data: bytes, *, length: str | None = None
           ) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: the JSON header, then ``data``."""
    text = json.dumps(header).encode()
    return text + data, {"Inference-Header-Content-Length": length or str(len(text)),
                         "Content-Type": "application/octet-stream"}


def bin_input(size: int, **kw: Any) -> dict[str, Any]:
    return {"name": IN, "shape": [1, 8, 8, 1], "datatype": "FP32",
            "parameters": {"binary_data_size": size}, **kw}


RAW = X.tobytes()  # 256 bytes


def _deep(n: int) -> Any:
    v: Any = 0.5
    for _ in range(n):
        v = [v]
    return v


@dataclass(frozen=True)
class Case:
    body: bytes
    headers: dict[str, str]
    status: int
    message: str
    path: str = INFER


def js(doc: Any, status: int, message: str, path: str = INFER) -> Case:
    return Case(json.dumps(doc).encode(), {"Content-Type": "application/json"}, status,
                message, path)


def bn(header: dict[str, Any], data: bytes, status: int, message: str, *,
       length: str | None = None) -> Case:
    body, headers = binary(header, data, length=length)
    return Case(body, headers, status, message)


CASES = {
    "unknown-datatype": js({"inputs": [tensor(datatype="FP128")]}, 400,
                           "input 'input_layer': unknown datatype 'FP128' (expected one of "
                           "BOOL, UINT8"),
    "bf16-not-supported": js({"inputs": [tensor(datatype="BF16")]}, 400,
                             "BF16 (bfloat16) tensors are not supported"),
    "data-length-not-shape-product": js(
        {"inputs": [tensor(data=X.reshape(-1).tolist()[:63])]}, 400,
        "input 'input_layer': 'data' has 63 elements, shape [1, 8, 8, 1] needs 64"),
    "ragged-nested-data": js({"inputs": [tensor(shape=[2, 2], data=[[1, 2], [3]])]}, 400,
                             "'data' nests lists of different lengths"),
    "data-nested-900-deep": js({"inputs": [tensor(shape=[1], data=_deep(900))]}, 400,
                               "'data' nests lists more than 16 deep"),
    "data-nested-deep-past-the-first-element": js(
        {"inputs": [tensor(shape=[2], data=[[1.0], _deep(900)])]}, 400,
        "'data' nests lists of different lengths or more than 16 deep"),
    "shape-not-the-models": js({"inputs": [tensor(shape=[1, 8, 4, 2])]}, 400,
                               "input 'input_layer': shape [1, 8, 4, 2] does not match the "
                               "model's [-1, 8, 8, 1]"),
    "rank-not-the-models": js({"inputs": [tensor(shape=[64])]}, 400,
                              "shape [64] does not match the model's [-1, 8, 8, 1]"),
    "datatype-not-the-models": js(
        {"inputs": [tensor(datatype="INT8", data=[0] * 64)]}, 400,
        "input 'input_layer': datatype INT8 does not match the model's FP32"),
    "bool-in-fp32-data": js({"inputs": [tensor(data=[True] + [0.0] * 63)]}, 400,
                            "FP32 data must be JSON numbers, got true"),
    "string-in-fp32-data": js({"inputs": [tensor(data=["0.5"] + [0.0] * 63)]}, 400,
                              'FP32 data must be JSON numbers, got "0.5"'),
    "value-out-of-fp32-range": js({"inputs": [tensor(data=[1e39] + [0.0] * 63)]}, 400,
                                  "a value is out of FP32's range"),
    "missing-input": js({"inputs": [tensor(name="image")]}, 400,
                        "missing input 'input_layer': model 'digits' takes input_layer"),
    "extra-input": js({"inputs": [tensor(), tensor(name="extra")]}, 400,
                      "unknown input 'extra': model 'digits' takes input_layer"),
    "duplicate-input": js({"inputs": [tensor(), tensor()]}, 400,
                          "input 'input_layer' is given more than once"),
    "no-inputs": js({"inputs": []}, 400,
                    "'inputs' must be a non-empty list of input tensors, got an empty list"),
    "neither-data-nor-binary": js({"inputs": [{"name": IN, "shape": [1, 8, 8, 1],
                                               "datatype": "FP32"}]}, 400,
                                  "has neither 'data' nor a binary_data_size parameter"),
    "negative-shape": js({"inputs": [tensor(shape=[1, 8, -8, 1])]}, 400,
                         "shape [1, 8, -8, 1] must hold integers from 0 to 2147483647"),
    "huge-shape": js({"inputs": [tensor(shape=[2**31 - 1] * 8)]}, 400,
                     "'data' has 64 elements, shape [2147483647, 2147483647"),
    "batch-over-max-batch": js({"inputs": [tensor(shape=[65, 8, 8, 1],
                                                  data=[0.0] * (65 * 64))]}, 400,
                               "input 'input_layer': batch of 65, expected 1 to 64"),
    "unknown-output": js({"inputs": [tensor()], "outputs": [{"name": "logits"}]}, 400,
                         "unknown output 'logits': model 'digits' gives output_0"),
    "classification-extension": js(
        {"inputs": [tensor()], "outputs": [{"name": "output_0",
                                            "parameters": {"classification": 3}}]}, 400,
        "the classification extension is not supported"),
    "shared-memory-extension": js(
        {"inputs": [tensor(parameters={"shared_memory_region": "r"})]}, 400,
        "the shared memory extension is not supported"),
    "malformed-json": Case(b'{"inputs": [', {"Content-Type": "application/json"}, 400,
                           "malformed JSON in inference request JSON"),
    "not-an-object": js([1, 2], 400, "inference request must be a JSON object, got a list"),
    "id-not-a-string": js({"id": 7, "inputs": [tensor()]}, 400, "'id' must be a string"),
    "binary-header-length-beyond-body": bn(
        {"inputs": [bin_input(256)]}, RAW, 400, "Inference-Header-Content-Length 99999 is "
        "beyond the body of", length="99999"),
    "binary-header-length-not-a-number": bn(
        {"inputs": [bin_input(256)]}, RAW, 400,
        "Inference-Header-Content-Length must be a non-negative integer, got '-5'",
        length="-5"),
    "binary-header-length-huge": bn(
        {"inputs": [bin_input(256)]}, RAW, 400,
        "Inference-Header-Content-Length must be a non-negative integer", length="9" * 40),
    "binary-sizes-short-of-the-data": bn(
        {"inputs": [bin_input(256)]}, RAW + b"\0" * 44, 400,
        "binary_data_size of the inputs adds up to 256 bytes, but 300 bytes of binary data"),
    "binary-size-beyond-the-data": bn(
        {"inputs": [bin_input(512)]}, RAW, 400,
        "binary_data_size 512 is beyond the binary data (bytes 0..512 of 256"),
    "binary-size-not-the-shapes": bn(
        {"inputs": [bin_input(128)]}, RAW[:128], 400,
        "binary_data_size is 128 bytes, shape [1, 8, 8, 1] of FP32 needs 256"),
    "binary-size-negative": bn(
        {"inputs": [bin_input(-256)]}, RAW, 400,
        "binary_data_size must be a non-negative integer, got -256"),
    "binary-size-huge": bn(
        {"inputs": [bin_input(2**62)]}, RAW, 400,
        "binary_data_size 4611686018427387904 is beyond the binary data"),
    "binary-and-data": bn(
        {"inputs": [bin_input(256, data=[0.0] * 64)]}, RAW, 400,
        "has both 'data' and binary_data_size"),
    "bytes-element-length-beyond-data": bn(
        {"inputs": [{"name": IN, "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 8}}]},
        struct.pack("<I", 1000) + b"\x89PNG", 400,
        "BYTES element 0 says 1000 bytes, only 4 remain"),
    "bytes-not-an-image": bn(
        {"inputs": [{"name": IN, "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 9}}]},
        struct.pack("<I", 5) + b"hello", 400, "image: not a decodable image"),
    "version-label": js({"inputs": [tensor()]}, 400,
                        "version must be a positive integer of at most 18 digits, got 'stable'",
                        path="/v2/models/digits/versions/stable/infer"),
    "unknown-model": js({"inputs": [tensor()]}, 404, "model 'nope' not found (serving: digits)",
                        path="/v2/models/nope/infer"),
    "unknown-version": js({"inputs": [tensor()]}, 404,
                          "model 'digits' has no version 7 (loaded: 1)",
                          path="/v2/models/digits/versions/7/infer"),
    "compressed-body": Case(gzip.compress(json.dumps({"inputs": [tensor()]}).encode()),
                            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                            415, "Content-Encoding 'gzip' is not supported"),
    "body-over-the-limit": js({"inputs": [tensor(data=[0.0] * (MAX_BODY // 3))]}, 413,
                              f"over the limit of {MAX_BODY} bytes"),
}


@dataclass
class Agent:
    proc: AgentProcess
    client: Client
    tfs: Any
    v2: bytes
    status: Any
    rss_mb: float


def _snapshot(c: Client) -> tuple[Any, bytes, Any]:
    tfs = c.post("/v1/models/digits:predict", {"instances": X.tolist()})
    v2 = c.post(INFER, {"inputs": [tensor()], "outputs": [{"name": "output_0"}]})
    assert tfs.status == 200 and v2.status == 200, (tfs.body, v2.body)
    return tfs.json(), v2.body, c.get("/v1/models/digits").json()


@pytest.fixture(scope="module")
def agent(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    toml = f"[http]\nmax_body_bytes = {MAX_BODY}\n"
    with agent_process(tmp_path_factory.mktemp("agent"), digits.bundle, toml=toml) as proc:
        c = Client(proc.host, proc.port)
        tfs, v2, status = _snapshot(c)
        yield Agent(proc, c, tfs, v2, status, proc.peak_rss_mb())
        c.close()


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_v2_request_is_a_clear_error_and_nothing_moves(agent: Agent, case: Case) -> None:
    r = agent.client.request("POST", case.path, body=case.body, headers=case.headers)
    assert r.status == case.status, r.body
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert case.message in error, error
    # nothing moved: the same answers on both protocols, the same version, no traceback
    assert _snapshot(agent.client) == (agent.tfs, agent.v2, agent.status)
    assert not [ln for ln in agent.proc.lines if "Traceback" in ln]
    assert agent.proc.peak_rss_mb() < agent.rss_mb + 64
