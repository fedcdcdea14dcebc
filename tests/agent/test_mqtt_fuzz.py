"""Fuzz (hypothesis) over MQTT command and inference-request payloads against a real
in-process agent and a real Mosquitto: every command and every request is answered, and
nothing is logged with a traceback. Bounded: a fixed number of examples, well under 60 s."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mqtt_attacks import DEVICE, Spy

SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
DIGITS = b"9" * 5000  # a literal over Python's int-digits limit (json.dumps cannot make one)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "id": SCALAR, "args": JSON, "instances": JSON, "inputs": JSON, "b64": st.text(max_size=40),
    "version": SCALAR, "k": SCALAR, "reply_to": st.text(max_size=30) | st.sampled_from(
        [f"{DEVICE}/cmd/reload", f"{DEVICE}/status", "replies/x", "a/#"]),
    "signature_name": SCALAR})


def _encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


PAYLOAD = (st.binary(max_size=64) | JSON.map(_encode) | FIELDS.map(_encode)
           | st.sampled_from([b"", b"{", b"[" * 5000, b'{"id": ' + DIGITS + b"}",
                             b'{"id": "d", "instances": [' + DIGITS + b"]}",
                             b'{"id": "d", "args": {"n": ' + DIGITS + b"}}"]))
COMMAND = st.sampled_from(["ping", "status", "models", "config"]) \
    | st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)


@pytest.fixture
def device(start_agent: Any, digits: Any, mosquitto: Any) -> Any:
    agent = start_agent(digits.bundle, components=["telemetry"], **{
        "mqtt.url": mosquitto.url, "telemetry.interval_s": 5.0})
    spy = Spy(mosquitto.host, mosquitto.port, "fuzzer")
    spy.wait(f"{DEVICE}/status", lambda d: d["state"] == "online")
    yield agent, spy
    spy.close()


def _answered(spy: Spy, start: int, topics: tuple[str, ...], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with spy._lock:
            if any(t in topics for t, _p in spy.got[start:]):
                return True
        time.sleep(0.01)
    return False


def test_fuzzed_commands_and_requests_are_always_answered_without_tracebacks(
        device: Any, caplog: pytest.LogCaptureFixture) -> None:
    _agent, spy = device
    caplog.set_level(logging.WARNING)
    counter = iter(range(10**6))

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(["cmd", "infer"]), name=COMMAND, payload=PAYLOAD)
    def one(kind: str, name: str, payload: bytes) -> None:
        n = next(counter)
        with spy._lock:
            start = len(spy.got)
        if kind == "cmd":
            rt = f"fuzz/cmd/{n}"
            spy.send(f"{DEVICE}/cmd/{name}", payload, response_topic=rt)
            topics: tuple[str, ...] = (rt,)
        else:
            rt = f"replies/fuzz/{n}"
            spy.send(f"{DEVICE}/infer/digits", payload, response_topic=rt)
            topics = (rt, f"{DEVICE}/results/digits", "replies/x")
        assert _answered(spy, start, topics), (kind, name, payload[:200])

    t0 = time.monotonic()
    one()
    assert time.monotonic() - t0 < 60
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
