"""Issue 17: quick requests are served on the HTTP event loop itself, slow ones on the pool,
and the loop never stalls on a slow handler, a held interpreter or a long pipeline.

Real agents, real sockets, real LiteRT. The only fault injection is holding the model's
interpreter (``ServedModel.borrow``) and one deliberately slow route.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
from agent_helpers import DigitsEval
from test_http_loop import _read_answers

from edge_agent.registry import usable_cpus
from edge_agent.serving.http import Request

PREDICT = "/v1/models/digits:predict"
POOL = "http-worker"


def _pool_threads() -> int:
    return sum(t.name.startswith(POOL) for t in threading.enumerate())


def _timed_get(host: str, port: int, path: str) -> tuple[int, float]:
    """A fresh connection's GET: (status, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: t\r\n\r\n".encode())
        ((status, _, _),) = _read_answers(s, 1)
    return status, time.monotonic() - t0


def test_quick_predicts_run_on_the_loop_thread(start_agent: Any, digits: Any,
                                               digits_eval: DigitsEval) -> None:
    """Digits predicts (~0.2 ms of handler work) are run by the loop thread itself, not
    handed to a pooled thread: after a short warm-up (the first calls may be slow), 100 of
    them on keep-alive all run on ``edge-agent-http``, with the model's answer."""
    agent = start_agent(digits.bundle)
    c = start_agent.client(agent)
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    for _ in range(10):
        c.post(PREDICT, body=body)
    ran_on: list[str] = []
    agent.hooks.on_prediction(lambda rec: ran_on.append(threading.current_thread().name))
    answers = [c.post(PREDICT, body=body) for _ in range(100)]
    assert {r.status for r in answers} == {200}
    assert all(r.json() == answers[0].json() for r in answers)
    assert len(ran_on) == 100
    assert set(ran_on) == {"edge-agent-http"}, f"handlers ran on {sorted(set(ran_on))}"


@pytest.mark.parametrize("workers,threads,where", [
    (1, usable_cpus(), {"edge-agent-http"}),  # the invoke takes every core: on the loop
    (2, 1, None),  # two interpreters can run at once: the pool
])
def test_a_body_past_the_quick_budget_runs_inline_only_when_the_invoke_takes_every_core(
        start_agent: Any, digits: Any, digits_eval: DigitsEval, workers: int, threads: int,
        where: set[str] | None) -> None:
    """A 64-instance JSON body (indented: > 64 KiB, the quick budget): inline when the
    model has one interpreter of as many threads as cores (nothing could run beside its
    invoke anyway), on the pool when two interpreters could run at once."""
    agent = start_agent(digits.bundle, **{"agent.workers": workers, "agent.threads": threads})
    assert agent.registry.invoke_takes_every_core() is (where is not None)
    c = start_agent.client(agent)
    body = json.dumps({"instances": digits_eval.x[:64].tolist()}, indent=4).encode()
    assert 64 * 1024 < len(body) < 1024 * 1024
    for _ in range(5):
        assert c.post(PREDICT, body=body).status == 200
    ran_on: list[str] = []
    agent.hooks.on_prediction(lambda rec: ran_on.append(threading.current_thread().name))
    answers = [c.post(PREDICT, body=body) for _ in range(20)]
    assert {r.status for r in answers} == {200}
    assert len(answers[0].json()["predictions"]) == 64
    if where is None:
        assert all(n.startswith(POOL) for n in ran_on), sorted(set(ran_on))
    else:
        assert set(ran_on) == where, sorted(set(ran_on))


@pytest.mark.serial
def test_a_slow_inline_route_moves_to_the_pool_and_never_stalls_the_loop(
        start_agent: Any, digits: Any) -> None:
    """A route that may run inline but takes 0.4 s: after its first (probe) request it runs
    on the pool, and while it runs, /healthz on another connection is answered at once."""
    agent = start_agent(digits.bundle)
    release = threading.Event()

    def slow(req: Request) -> tuple[int, Any]:
        release.wait(0.4)
        return 200, {"slow": True}

    agent.http.add_route("GET", "/test/slow", slow, name="slow", inline=True)
    host, port = agent.http.address
    assert _timed_get(host, port, "/test/slow")[0] == 200  # the probe: measured 0.4 s
    got: list[tuple[int, float]] = []
    t = threading.Thread(target=lambda: got.append(_timed_get(host, port, "/test/slow")))
    t.start()
    time.sleep(0.1)  # the slow request is in its handler now
    status, took = _timed_get(host, port, "/healthz")
    t.join(10)
    assert status == 200
    assert took < 0.25, f"/healthz waited {took:.2f} s behind a slow handler"
    assert got and got[0][0] == 200 and got[0][1] >= 0.35
    assert _pool_threads() >= 1
    assert start_agent.client(agent).get("/healthz").status == 200


@pytest.mark.serial
def test_a_held_interpreter_sends_the_request_to_the_pool_not_the_loop_to_sleep(
        start_agent: Any, digits: Any, digits_eval: DigitsEval) -> None:
    """With the only interpreter held elsewhere (as a gRPC or MQTT request holds it), a
    predict that would run inline goes to the pool to wait there; /healthz is answered
    meanwhile, and the predict gets the right answer once the interpreter is free."""
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    c = start_agent.client(agent)
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    want = [c.post(PREDICT, body=body) for _ in range(10)][-1].json()  # measured: inline
    served = agent.registry.get("digits")
    got: list[Any] = []
    with served.borrow():
        t = threading.Thread(target=lambda: got.append(
            start_agent.client(agent).post(PREDICT, body=body)))
        t.start()
        time.sleep(0.2)
        status, took = _timed_get(host, port, "/healthz")
        assert not got, "the predict was answered while its interpreter was held"
    t.join(10)
    assert status == 200 and took < 0.25, f"/healthz took {took:.2f} s"
    assert got and got[0].status == 200 and got[0].json() == want
    assert agent.admission.in_flight() == 0
    assert c.post(PREDICT, body=body).json() == want


def test_1000_pipelined_requests_in_one_write_are_answered_in_order(
        start_agent: Any, digits: Any) -> None:
    """One write of 1000 requests, answered inline one after the other (a loop, not a
    recursion per request): 1000 answers, in order, and the connection still serves."""
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    reqs = b"".join(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: p{i}\r\n\r\n".encode()
                    for i in range(1000))
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(reqs)
        answers = _read_answers(s, 1000)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: last\r\n\r\n")
        last = _read_answers(s, 1)
    assert [(st, rid) for st, rid, _ in answers] == [(200, f"p{i}") for i in range(1000)]
    assert [(st, rid) for st, rid, _ in last] == [(200, "last")]
    assert "Traceback" not in "".join(getattr(agent, "lines", []))
