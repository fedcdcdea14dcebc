"""Issue 17 part 1: the HTTP front end is one event loop, not a thread per connection.

Real ``edge-agent run`` processes and real sockets. Each test asserts the outcome and that
nothing else moved (the model keeps serving the same answers, the thread count returns).
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client, DigitsEval
from attack_helpers import agent_process

PREDICT = "/v1/models/digits:predict"


def _threads(pid: int) -> int:
    m = re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert m is not None
    return int(m.group(1))


@pytest.mark.serial
def test_200_half_sent_requests_cost_sockets_not_threads(
        digits: Any, digits_eval: DigitsEval, tmp_path: Path) -> None:
    """100 clients stop mid-head and 100 mid-body (long deadlines: they stay open): a normal
    client is still answered at once, and the agent's thread count does not grow with them
    (a thread per connection would add 200)."""
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    toml = ("[http]\nmax_connections = 300\nmax_connections_per_client = 300\n"
            "head_timeout_s = 120\nbody_timeout_s = 120\nidle_timeout_s = 120\n")
    with agent_process(tmp_path, digits.bundle, toml=toml) as agent:
        c = Client(agent.host, agent.port)
        want = c.post(PREDICT, body=body)
        assert want.status == 200
        for _ in range(20):
            c.post(PREDICT, body=body)
        before = _threads(agent.proc.pid)
        held: list[socket.socket] = []
        try:
            for i in range(200):
                s = socket.create_connection((agent.host, agent.port), timeout=5)
                head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n"
                if i % 2:
                    head += ("Content-Type: application/json\r\nContent-Length: 100000\r\n"
                             "\r\n{\"instances\": [[")
                s.sendall(head.encode())
                held.append(s)
            time.sleep(0.5)  # let the loop read every half-sent request
            worst, answers = 0.0, []
            for _ in range(50):
                t0 = time.monotonic()
                answers.append(c.post(PREDICT, body=body))
                worst = max(worst, time.monotonic() - t0)
            during = _threads(agent.proc.pid)
            for s in held:  # none of them was answered or cut: they are really held
                s.setblocking(False)
                try:
                    assert s.recv(1) == b"", "a held request was answered"
                except BlockingIOError:
                    pass
        finally:
            for s in held:
                s.close()
        print(f"200 half-sent requests: threads {before} -> {during}; slowest normal "
              f"request {worst * 1000:.1f} ms")
        assert {r.status for r in answers} == {200}
        assert all(r.json() == want.json() for r in answers)
        assert worst < 0.5, f"a normal request took {worst:.2f} s with 200 held sockets"
        assert during <= before + 2, f"threads grew from {before} to {during}"
        after = Client(agent.host, agent.port).post(PREDICT, body=body)
        assert after.status == 200 and after.json() == want.json()
        assert _threads(agent.proc.pid) <= before + 2


def _read_answers(s: socket.socket, n: int) -> list[tuple[int, str, bytes]]:
    """``n`` responses from ``s``: (status, X-Request-Id, body), in arrival order."""
    buf, out = b"", []
    deadline = time.monotonic() + 10
    while len(out) < n and time.monotonic() < deadline:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1")
            length = int(re.search(r"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            if len(buf) >= end + 4 + length:
                rid = re.search(r"X-Request-Id: (\S+)", head).group(1)  # type: ignore[union-attr]
                out.append((int(head.split()[1]), rid, buf[end + 4:end + 4 + length]))
                buf = buf[end + 4 + length:]
                continue
        data = s.recv(65536)
        if not data:
            break
        buf += data
    return out


def test_pipelined_requests_are_answered_in_order(
        start_agent: Any, digits: Any, digits_eval: DigitsEval) -> None:
    """Five requests in one write (a predict, a 404, a predict, healthz, a predict): five
    answers in the order asked, each with its own request id and the right body."""
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    want = start_agent.client(agent).post(PREDICT, body=body).json()
    post = (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: r{{}}\r\n\r\n").encode() + body
    reqs = [post.replace(b"r{}", b"r0"),
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Request-Id: r1\r\n\r\n",
            post.replace(b"r{}", b"r2"),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: r3\r\n\r\n",
            post.replace(b"r{}", b"r4")]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"".join(reqs))
        answers = _read_answers(s, 5)
    assert [(st, rid) for st, rid, _ in answers] == [
        (200, "r0"), (404, "r1"), (200, "r2"), (200, "r3"), (200, "r4")]
    assert all(json.loads(b) == want for st, rid, b in answers if rid in ("r0", "r2", "r4"))
    assert agent.admission.in_flight() == 0
    assert start_agent.client(agent).post(PREDICT, body=body).json() == want


def test_expect_100_continue_is_answered_before_the_body(
        start_agent: Any, digits: Any, digits_eval: DigitsEval) -> None:
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                  "X-Request-Id: e1\r\n\r\n".encode())
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        answers = _read_answers(s, 1)
    assert [(st, rid) for st, rid, _ in answers] == [(200, "e1")]
    assert json.loads(answers[0][2]) == start_agent.client(agent).post(PREDICT, body=body).json()
