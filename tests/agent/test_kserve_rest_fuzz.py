"""Property: arbitrary KServe v2 ``/infer`` requests — near-valid JSON tensors, binary
tensor data with any ``Inference-Header-Content-Length`` and ``binary_data_size`` values,
raw garbage — never give a 5xx, a non-JSON error or a logged traceback, on the same fuzzed
agent as TF Serving REST's property tests (:mod:`test_fuzz`)."""

from __future__ import annotations

import json
from typing import Any

from agent_helpers import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import _Tracebacks, fuzz_client, tracebacks  # noqa: F401  (shared fixtures)

from edge_agent.app import Agent

DATATYPES = ["FP32", "FP16", "FP64", "INT8", "UINT8", "INT32", "INT64", "BOOL", "BYTES",
             "BF16", "fp32", "", "X" * 50]
NAMES = ["input_layer", "x", "", "input_layer "]
PATHS = ["/v2/models/digits/infer", "/v2/models/digits/versions/1/infer",
         "/v2/models/digits/versions/0/infer", "/v2/models/nope/infer"]

leaves = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(-10**30, 10**30), st.booleans(), st.text(max_size=3),
                   st.none())
data = st.recursive(st.lists(leaves, max_size=70), lambda inner: st.lists(inner, max_size=4),
                    max_leaves=80)
shape = st.lists(st.one_of(st.integers(-2, 9), st.just(2**40), st.just(64)), max_size=5)
params = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "shared_memory_region", "x"]),
    st.one_of(st.integers(-2**63, 2**63), st.booleans(), st.text(max_size=4),
              st.lists(st.integers(), max_size=2)), max_size=2)
tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(NAMES), "datatype": st.sampled_from(DATATYPES), "shape": shape},
    optional={"data": data, "parameters": params})
outputs = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["output_0", "y"])}, optional={"parameters": params}),
    max_size=2)
request = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3)},
    optional={"outputs": outputs, "id": st.one_of(st.text(max_size=5), st.integers()),
              "parameters": params})


@st.composite
def bodies(draw: Any) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["json", "binary", "garbage"]))
    if kind == "garbage":
        body = draw(st.binary(max_size=600))
        token = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
        length = draw(st.one_of(st.none(), token, st.integers(-5, 700).map(str)))
        return body, ({} if length is None else {"Inference-Header-Content-Length": length})
    head = json.dumps(draw(request)).encode()
    if kind == "json":
        return head, {"Content-Type": "application/json"}
    tail = draw(st.binary(max_size=600))
    length = draw(st.one_of(st.just(len(head)), st.integers(-3, len(head) + len(tail) + 3)))
    return head + tail, {"Inference-Header-Content-Length": str(length),
                         "Content-Type": "application/octet-stream"}


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), req=bodies())
def test_arbitrary_v2_infer_requests_never_give_5xx(fuzz_client: tuple[Agent, Client],  # noqa: F811
                                                    tracebacks: _Tracebacks,  # noqa: F811
                                                    path: str,
                                                    req: tuple[bytes, dict[str, str]]) -> None:
    _, c = fuzz_client
    body, headers = req
    r = c.request("POST", path, body=body, headers=headers)
    assert r.status < 500, (r.status, r.body)
    if r.status != 200:
        assert set(json.loads(r.body)) == {"error"}
    assert tracebacks.records == []
