"""KServe v2 / Open Inference Protocol REST conformance: cases taken from the spec.

Every case names its source:

* ``inference_rest.md`` — kserve/open-inference-protocol
  ``specification/protocol/inference_rest.md`` (section named);
* ``extension_binary_data.md`` — triton-inference-server/server
  ``docs/protocol/extension_binary_data.md`` (the binary tensor data extension);
* ``tritonclient`` — what the official client sends or reads (``tritonclient/http/_utils.py``
  ``_get_inference_request``, ``_infer_input.py`` ``set_data_from_numpy``,
  ``_infer_result.py`` ``InferResult``).

Codec cases run the pure codec (:mod:`edge_agent.serving.v2_tensor`,
:mod:`edge_agent.serving.v2_encode`); the end-to-end cases
run a real agent over a real socket with the digits model. "difference" cases check what
we do otherwise (docs/kserve.md lists each) is a clear 400.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from agent_helpers import AgentFactory, Client

from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError
from edge_agent.serving.json_encode import NamedSpec
from edge_agent.serving.v2_encode import OutputTensor, encode_infer
from edge_agent.serving.v2_tensor import InferRequest, parse_infer, split_body

REST = "inference_rest.md"
BIN = "extension_binary_data.md"
TC = "tritonclient"


@dataclass(frozen=True)
class Ok:
    """A request the codec accepts; ``check`` asserts what it decoded to."""

    source: str
    doc: Any
    check: Callable[[InferRequest], None]
    binary: bytes = b""


@dataclass(frozen=True)
class Bad:
    """A request the codec refuses with a message containing ``error``."""

    source: str
    doc: Any
    error: str
    binary: bytes = b""


def inp(name: str, shape: list[int], datatype: str, data: Any = None, **params: Any
        ) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        d["data"] = data
    if params:
        d["parameters"] = params
    return d


def arr(i: int, want: Any, dtype: str) -> Callable[[InferRequest], None]:
    def check(r: InferRequest) -> None:
        a = r.inputs[i].array
        assert a.dtype == np.dtype(dtype), a.dtype
        np.testing.assert_array_equal(a, np.asarray(want, dtype=dtype))
    return check


def holds(pred: Callable[[InferRequest], bool]) -> Callable[[InferRequest], None]:
    def check(r: InferRequest) -> None:
        assert pred(r), r
    return check


def both(*checks: Callable[[InferRequest], None]) -> Callable[[InferRequest], None]:
    def check(r: InferRequest) -> None:
        for c in checks:
            c(r)
    return check


# Every datatype of "Tensor Data Types", in JSON and as binary data
TYPES = [("BOOL", [True, False], "bool"), ("UINT8", [0, 255], "uint8"),
         ("UINT16", [0, 65535], "uint16"), ("UINT32", [0, 2**32 - 1], "uint32"),
         ("UINT64", [0, 2**63 - 1], "uint64"), ("INT8", [-128, 127], "int8"),
         ("INT16", [-32768, 32767], "int16"), ("INT32", [-2**31, 2**31 - 1], "int32"),
         ("INT64", [-2**63, 2**63 - 1], "int64"), ("FP16", [0.5, -2.0], "float16"),
         ("FP32", [0.25, -1e30], "float32"), ("FP64", [0.1, 1e300], "float64")]

OK: dict[str, Ok] = {
    f"{REST} Tensor Data: natural (nested) representation":
        Ok(REST, {"inputs": [inp("x", [2, 2], "INT32", [[1, 2], [4, 5]])]},
           arr(0, [[1, 2], [4, 5]], "int32")),
    f"{REST} Tensor Data: flattened one-dimensional representation":
        Ok(REST, {"inputs": [inp("x", [2, 2], "INT32", [1, 2, 4, 5])]},
           arr(0, [[1, 2], [4, 5]], "int32")),
    f"{REST} Request Input: shape and data of the entire batch":
        Ok(REST, {"inputs": [inp("x", [3, 1], "FP32", [1.0, 2.0, 3.0])]},
           arr(0, [[1.0], [2.0], [3.0]], "float32")),
    f"{REST} Inference Request Examples: UINT32 input0 (request id 42)":
        Ok(REST, {"id": "42", "inputs": [inp("input0", [2, 2], "UINT32", [1, 2, 3, 4])],
                  "outputs": [{"name": "output0"}]},
           both(arr(0, [[1, 2], [3, 4]], "uint32"),
                holds(lambda r: r.id == "42"
                      and [o.name for o in r.outputs or []] == ["output0"]))),
    f"{REST} Parameters: string, number and boolean values":
        Ok(REST, {"parameters": {"a": "x", "b": 1.5, "c": False},
                  "inputs": [inp("x", [1], "FP32", [1.0], note="n", weight=2)]},
           arr(0, [1.0], "float32")),
    f"{REST} Tensor Data Types: BYTES as JSON strings":
        Ok(REST, {"inputs": [inp("s", [2], "BYTES", ["ab", "é"])]},
           holds(lambda r: r.inputs[0].array.tolist() == [b"ab", "é".encode()])),
    f"{REST} Inference Request JSON Object: outputs optional (all outputs)":
        Ok(REST, {"inputs": [inp("x", [1], "FP32", [0.0])]},
           holds(lambda r: r.outputs is None and not r.binary_output)),
    f"{REST} zero-size tensor":
        Ok(REST, {"inputs": [inp("x", [0, 4], "FP32", [])]},
           holds(lambda r: r.inputs[0].array.shape == (0, 4))),
    f"{BIN} Examples: UINT32 [2,2] and BOOL [3] in 19 bytes, output0 as binary":
        Ok(BIN, {"model_name": "mymodel",
                 "inputs": [inp("input0", [2, 2], "UINT32", binary_data_size=16),
                            inp("input1", [3], "BOOL", binary_data_size=3)],
                 "outputs": [{"name": "output0", "parameters": {"binary_data": True}}]},
           both(arr(0, [[1, 2], [3, 4]], "uint32"), arr(1, [True, False, True], "bool"),
                holds(lambda r: bool(r.outputs and r.outputs[0].binary))),
           binary=np.array([1, 2, 3, 4], "<u4").tobytes() + b"\x01\x00\x01"),
    f"{BIN} BYTES element: 4-byte length, then the bytes":
        Ok(BIN, {"inputs": [inp("s", [2], "BYTES", binary_data_size=13)]},
           holds(lambda r: r.inputs[0].array.tolist() == [b"hello", b""]),
           binary=struct.pack("<I", 5) + b"hello" + struct.pack("<I", 0)),
    f"{BIN} binary_data_output: every output binary unless overridden":
        Ok(BIN, {"parameters": {"binary_data_output": True},
                 "inputs": [inp("x", [1], "FP32", [0.0])],
                 "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}]},
           holds(lambda r: r.binary_output and [o.binary for o in r.outputs or []] == [
               None, False])),
    f"{BIN} JSON and binary inputs in one request":
        Ok(BIN, {"inputs": [inp("a", [2], "FP32", [1.0, 2.0]),
                            inp("b", [2], "INT16", binary_data_size=4)]},
           both(arr(0, [1.0, 2.0], "float32"), arr(1, [-1, 7], "int16")),
           binary=np.array([-1, 7], "<i2").tobytes()),
    f"{TC} _get_inference_request: binary_data_output when no outputs are named":
        Ok(TC, {"inputs": [inp("x", [1, 2], "FP32", binary_data_size=8)],
                "parameters": {"binary_data_output": True}},
           both(arr(0, [[0.5, 1.5]], "float32"), holds(lambda r: r.binary_output)),
           binary=np.array([0.5, 1.5], "<f4").tobytes()),
    f"{TC} _get_inference_request: sequence/priority/timeout parameters are accepted":
        Ok(TC, {"inputs": [inp("x", [1], "FP32", [1.0])],
                "parameters": {"sequence_id": 0, "priority": 1, "timeout": 1000}},
           arr(0, [1.0], "float32")),
}
for dt, values, np_dtype in TYPES:
    OK[f"{REST} Tensor Data Types: {dt} as JSON"] = Ok(
        REST, {"inputs": [inp("x", [2], dt, values)]}, arr(0, values, np_dtype))
    OK[f"{BIN} {dt} as binary data (little-endian)"] = Ok(
        BIN, {"inputs": [inp("x", [2], dt, binary_data_size=2 * np.dtype(np_dtype).itemsize)]},
        arr(0, values, np_dtype),
        binary=np.asarray(values, np.dtype(np_dtype).newbyteorder("<")).tobytes())

BAD: dict[str, Bad] = {
    f"{REST} Tensor Data Types: a datatype not in the table":
        Bad(REST, {"inputs": [inp("x", [1], "FLOAT32", [1.0])]},
            "unknown datatype 'FLOAT32'"),
    f"{REST} Inference Request Examples (difference): BOOL [3] with one value":
        Bad(REST, {"inputs": [inp("input1", [3], "BOOL", [True])]},
            "'data' has 1 elements, shape [3] needs 3"),
    f"{REST} Tensor Data (difference): no coercion of a string to a number":
        Bad(REST, {"inputs": [inp("x", [1], "FP32", ["1.0"])]},
            'FP32 data must be JSON numbers, got "1.0"'),
    f"{REST} Tensor Data (difference): no coercion of a float to an integer":
        Bad(REST, {"inputs": [inp("x", [1], "INT32", [1.5])]},
            "INT32 data must be JSON integers, got 1.5"),
    f"{REST} Tensor Data (difference): no coercion of a number to BOOL":
        Bad(REST, {"inputs": [inp("x", [1], "BOOL", [1])]}, "BOOL data must be true/false"),
    f"{REST} Tensor Data Types: a value out of the datatype's range":
        Bad(REST, {"inputs": [inp("x", [1], "UINT8", [256])]},
            "a value is out of UINT8's range [0, 255]"),
    f"{REST} Request Input (difference): a dimension past 2^31 - 1":
        Bad(REST, {"inputs": [inp("x", [2**32], "FP32", [1.0])]},
            "must hold integers from 0 to 2147483647"),
    f"{REST} Parameters: a value that is not a string, number or boolean":
        Bad(REST, {"inputs": [inp("x", [1], "FP32", [1.0], meta={"a": 1})]},
            "parameter 'meta' must be a string, number or boolean, got an object"),
    f"{BIN} binary_data: a boolean parameter":
        Bad(BIN, {"inputs": [inp("x", [1], "FP32", [1.0])],
                  "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
            "parameter 'binary_data' must be a boolean"),
    f"{BIN} BOOL binary data: bytes 0 or 1 only":
        Bad(BIN, {"inputs": [inp("x", [2], "BOOL", binary_data_size=2)]},
            "BOOL binary data must be bytes 0 or 1", binary=b"\x01\x02"),
    f"{BIN} BYTES: leftover bytes after the elements":
        Bad(BIN, {"inputs": [inp("s", [1], "BYTES", binary_data_size=7)]},
            "2 bytes left over after 1 BYTES elements", binary=struct.pack("<I", 1) + b"abc"),
    f"{BIN} BYTES: fewer bytes than the element lengths":
        Bad(BIN, {"inputs": [inp("s", [2], "BYTES", binary_data_size=6)]},
            "2 BYTES elements need at least 8 bytes", binary=b"\0" * 6),
    f"{BIN} binary data in input order: sizes must add up":
        Bad(BIN, {"inputs": [inp("a", [1], "FP32", binary_data_size=4)]},
            "adds up to 4 bytes, but 8 bytes of binary data", binary=b"\0" * 8),
}


@pytest.mark.parametrize("case", OK.values(), ids=list(OK))
def test_spec_request_is_decoded(case: Ok) -> None:
    case.check(parse_infer(case.doc, case.binary))


@pytest.mark.parametrize("case", BAD.values(), ids=list(BAD))
def test_spec_request_is_refused(case: Bad) -> None:
    with pytest.raises(InvalidRequestError) as e:
        parse_infer(case.doc, case.binary)
    assert case.error in str(e.value)


def test_binary_header_splits_json_from_data() -> None:
    """extension_binary_data.md: Inference-Header-Content-Length gives the JSON's length."""
    assert split_body(b'{"a":1}xyz', "7") == (b'{"a":1}', b"xyz")
    assert split_body(b'{"a":1}', None) == (b'{"a":1}', b"")
    with pytest.raises(InvalidRequestError, match="beyond the body of 7 bytes"):
        split_body(b'{"a":1}', "8")


def _out(name: str, a: np.ndarray, datatype: str, binary: bool) -> OutputTensor:
    ns = NamedSpec(name, TensorSpec(name, (1, *a.shape[1:]), str(a.dtype)))
    return OutputTensor(ns, datatype, a, binary)


def test_response_example_binary_output0() -> None:
    """extension_binary_data.md, Examples: output0 [3, 2] FP32 as 24 bytes after the JSON,
    ``binary_data_size`` in its parameters and the JSON's length in the header."""
    a = np.array([[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]], np.float32)
    body, n = encode_infer([_out("output0", a, "FP32", True)], model_name="mymodel",
                           model_version="1", request_id=None)
    assert n is not None and len(body) == n + 24
    doc = json.loads(body[:n])
    assert doc["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [3, 2],
                               "parameters": {"binary_data_size": 24}}]
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<f4").reshape(3, 2), a)


def test_response_example_json_output0_with_id() -> None:
    """inference_rest.md, Inference Request Examples: the response to id 42 echoes it, and
    ``data`` is the row-major FP32 values (written as the shortest float32 text)."""
    a = np.array([[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]], np.float32)
    body, n = encode_infer([_out("output0", a, "FP32", False)], model_name="mymodel",
                           model_version="1", request_id="42")
    assert n is None
    assert json.loads(body) == {"model_name": "mymodel", "model_version": "1", "id": "42",
                                "outputs": [{"name": "output0", "datatype": "FP32",
                                             "shape": [3, 2],
                                             "data": [1.0, 1.1, 2.0, 2.1, 3.0, 3.1]}]}


# ----------------------------------------------------------------------------- end to end

@pytest.fixture
def client(start_agent: AgentFactory, digits: Any) -> Client:
    return start_agent.client(start_agent(digits.bundle))


def test_e2e_health_and_server_metadata_objects(client: Client) -> None:
    """inference_rest.md: Server Live / Server Ready / Server Metadata Response JSON Objects
    (the spec's ready object says ``live``, a typo: KServe's servers answer ``ready``)."""
    assert (client.get("/v2/health/live").json(), client.get("/v2/health/ready").json()) == (
        {"live": True}, {"ready": True})
    meta = client.get("/v2").json()
    assert set(meta) == {"name", "version", "extensions"} and isinstance(meta["version"], str)


def test_e2e_model_metadata_and_ready_objects(client: Client) -> None:
    """inference_rest.md: Model Metadata Response JSON Object (variable-size dimensions are
    -1) and Model Ready Response JSON Object."""
    m = client.get("/v2/models/digits").json()
    assert set(m) == {"name", "versions", "platform", "inputs", "outputs"}
    assert m["inputs"][0]["shape"][0] == -1 and m["versions"] == ["1"]
    assert client.get("/v2/models/digits/versions/1").json() == m
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/digits/versions/1/ready").status == 200


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/ready",
                                  "/v2/models/digits/versions/3"])
def test_e2e_error_object_for_unknown_model_or_version(client: Client, path: str) -> None:
    """inference_rest.md: Model Metadata Response JSON Error Object — an HTTP error status and
    ``{"error": $string}`` (404 for what does not exist)."""
    r = client.get(path)
    assert r.status == 404 and set(r.json()) == {"error"} and r.json()["error"]


def test_e2e_binary_response_framing(client: Client) -> None:
    """extension_binary_data.md: a binary output comes after the JSON, whose length is in
    Inference-Header-Content-Length; Content-Length is the whole body."""
    x = np.zeros((1, 8, 8, 1), np.float32).tobytes()
    head = json.dumps({"inputs": [inp("input_layer", [1, 8, 8, 1], "FP32",
                                      binary_data_size=len(x))],
                       "outputs": [{"name": "output_0",
                                    "parameters": {"binary_data": True}}]}).encode()
    r = client.post("/v2/models/digits/infer", body=head + x,
                    content_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status == 200, r.body
    n = int(r.headers["inference-header-content-length"])
    assert int(r.headers["content-length"]) == len(r.body) == n + 40
    assert r.headers["content-type"] == "application/octet-stream"
    doc = json.loads(r.body[:n])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 40}
    probs = np.frombuffer(r.body[n:], "<f4")
    assert probs.shape == (10,) and abs(float(probs.sum()) - 1.0) < 0.05


def test_e2e_json_response_is_application_json(client: Client) -> None:
    """inference_rest.md, Inference Request Examples: a JSON request gets a JSON response."""
    r = client.post("/v2/models/digits/infer",
                    {"id": "42", "inputs": [inp("input_layer", [1, 8, 8, 1], "FP32",
                                                [0.0] * 64)]})
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    doc = r.json()
    assert doc["id"] == "42" and doc["outputs"][0]["shape"] == [1, 10]
    assert len(doc["outputs"][0]["data"]) == 10


def test_e2e_server_not_ready_without_a_model(start_agent: AgentFactory) -> None:
    """inference_rest.md, Server Ready: not ready until a model can serve (503 here), while
    Server Live answers."""
    c = start_agent.client(start_agent())
    r = c.get("/v2/health/ready")
    assert r.status == 503 and r.json()["ready"] is False
    assert c.get("/v2/health/live").json() == {"live": True}


def test_e2e_full_queue_is_503_with_retry_after(start_agent: AgentFactory, digits: Any
                                                ) -> None:
    """One path inside: v2 takes the model's admission slot as TF Serving REST does; with
    every slot held, /infer is 503 with Retry-After and the model never runs."""
    agent = start_agent(digits.bundle, **{"agent.workers": 1, "http.queue_size": 0})
    c = start_agent.client(agent)
    doc = {"inputs": [inp("input_layer", [1, 8, 8, 1], "FP32", [0.0] * 64)]}
    with agent.admission.slot("digits"):  # the one slot: a request in flight
        r = c.post("/v2/models/digits/infer", doc)
        assert r.status == 503 and "retry-after" in r.headers, r.body
        assert set(r.json()) == {"error"}
    assert c.post("/v2/models/digits/infer", doc).status == 200
