"""Property: arbitrary bodies and paths never give a 5xx, a non-JSON error or a logged
traceback, and RSS stays bounded."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

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


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[_Tracebacks]:
    """Every ERROR or exception logged by anything while this module's fuzzing runs."""
    h = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(h)
    yield h
    root.removeHandler(h)


huge_ints = st.builds(lambda n, sign: sign + "9" * n,  # JSON text past the int-digits limit
                      st.integers(4000, 6000), st.sampled_from(["", "-"]))
huge_int_bodies = st.builds(
    lambda num, tpl: tpl.replace("N", num).encode(), huge_ints,
    st.sampled_from(['{"instances": [[N]]}', '{"inputs": N}', "N", '[N, 1]',
                     '{"instances": [{"b64": N}]}', '{"examples": [{"image": N}]}']))

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
    huge_int_bodies,
)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), ctype=st.sampled_from(CTYPES), body=bodies)
def test_arbitrary_bodies_never_give_5xx(fuzz_client: tuple[Agent, Client],
                                         tracebacks: _Tracebacks, path: str,
                                         ctype: str, body: bytes) -> None:
    _, c = fuzz_client
    r = c.request("POST", path, body=body, headers={"Content-Type": ctype} if ctype else {})
    assert r.status < 500, (r.status, r.body)
    if r.status != 200:
        assert set(json.loads(r.body)) == {"error"}
    assert tracebacks.records == []


segment = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["digits", "versions", "metadata", "v1", "models", "..", "%00", "1",
                     "0", "-1", "\u0662", "9" * 5000]),
    st.integers(-(10**30), 10**30).map(str), huge_ints)
suffix = st.sampled_from(["", ":predict", ":classify", ":regress", ":x", "/metadata"])
paths = st.builds(
    lambda segs, suf, q: "/" + "/".join(quote(s, safe=":") for s in segs) + suf + q,
    st.one_of(
        st.lists(segment, max_size=6),
        st.tuples(st.just("v1"), st.just("models"), segment).map(list),
        st.tuples(st.just("v1"), st.just("models"), st.just("digits"), st.just("versions"),
                  segment).map(list)),
    suffix, st.one_of(st.just(""), segment.map(lambda v: "?k=" + quote(v))))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"]), path=paths,
       body=st.one_of(st.just(b""), bodies))
def test_arbitrary_paths_never_give_5xx_or_a_traceback(fuzz_client: tuple[Agent, Client],
                                                       tracebacks: _Tracebacks, method: str,
                                                       path: str, body: bytes) -> None:
    _, c = fuzz_client
    r = c.request(method, path, body=body or None,
                  headers={"Content-Type": "application/json"} if body else {})
    assert r.status < 500, (method, path[:200], r.status, r.body[:300])
    if r.status >= 400 and method != "HEAD":
        assert set(json.loads(r.body)) == {"error"}
    assert tracebacks.records == []


@pytest.mark.serial
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
