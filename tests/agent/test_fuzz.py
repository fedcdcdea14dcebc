"""Property: arbitrary bodies at :predict and :classify never give a 5xx or crash, and RSS
stays bounded."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from agent_helpers import Client, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.app import Agent

PATHS = ["/v1/models/digits:predict", "/v1/models/digits:classify",
         "/v1/models/digits/versions/1:predict", "/v1/models/digits:classify?k=3"]
CTYPES = ["application/json", "image/png", "application/octet-stream", "text/plain", ""]


@pytest.fixture(scope="module")
def fuzz_client(digits: Any, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Agent, Client]]:
    cfg = make_config(tmp_path_factory.mktemp("store"),
                      models=[{"bundle": str(digits.bundle)}],
                      **{"http.max_body_bytes": 64 * 1024})
    agent = Agent(cfg, components=())
    agent.start()
    assert agent.http is not None
    c = Client(*agent.http.address)
    yield agent, c
    c.close()
    agent.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["instances", "inputs", "b64", "examples", "signature_name", "input",
                         "image", "x"]), inner, max_size=4),
    max_leaves=40)

shaped = st.builds(  # near-valid tensors: right nesting, wrong sizes or values
    lambda n, h, w, v: {"instances": [[[[v] * w] * h] * n]},
    st.integers(0, 3), st.integers(0, 9), st.integers(0, 9),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
              st.text(max_size=3)))

b64_bodies = st.builds(lambda raw, key: {key: [{"b64": base64.b64encode(raw).decode()}]},
                       st.binary(max_size=300), st.sampled_from(["instances", "inputs"]))

image_headers = st.binary(max_size=200).map(  # real magic numbers with garbage behind them
    lambda tail: b"\x89PNG\r\n\x1a\n" + tail) | st.binary(max_size=200).map(
    lambda tail: b"\xff\xd8\xff\xe0" + tail) | st.binary(max_size=200).map(
    lambda tail: b"GIF89a" + tail) | st.binary(max_size=200).map(lambda tail: b"BM" + tail)

bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    b64_bodies.map(lambda v: json.dumps(v).encode()),
    image_headers,
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), ctype=st.sampled_from(CTYPES), body=bodies)
def test_arbitrary_bodies_never_give_5xx(fuzz_client: tuple[Agent, Client], path: str,
                                         ctype: str, body: bytes) -> None:
    _, c = fuzz_client
    r = c.request("POST", path, body=body, headers={"Content-Type": ctype} if ctype else {})
    assert r.status < 500, (r.status, r.body)
    if r.status != 200:
        assert set(json.loads(r.body)) == {"error"}


def test_agent_survives_the_fuzzing_with_bounded_rss(fuzz_client: tuple[Agent, Client],
                                                     digits_eval: Any) -> None:
    agent, c = fuzz_client
    proc = psutil.Process()
    garbage = [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, b"[" * 20000 + b"]" * 20000,
               json.dumps({"instances": [[[[1e308] * 8] * 8] * 1] * 60}).encode()]
    for body in garbage * 5:  # warm-up: allocator high-water mark
        c.request("POST", "/v1/models/digits:predict", body=body)
    rss0 = proc.memory_info().rss
    for _ in range(60):
        for body in garbage:
            assert c.request("POST", "/v1/models/digits:predict", body=body).status < 500
            assert c.request("POST", "/v1/models/digits:classify", body=body).status < 500
    grown_mb = (proc.memory_info().rss - rss0) / 2**20
    assert grown_mb < 20, f"RSS grew by {grown_mb:.1f} MB over 360 bad requests"
    ok = c.post("/v1/models/digits:predict", {"instances": digits_eval.x[:1].tolist()})
    assert ok.status == 200 and agent.started_at is not None
