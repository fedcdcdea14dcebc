"""Issue 17 part 1: the HTTP front end is one event loop, not a thread per connection.

Real ``edge-agent run`` processes and real sockets. Each test asserts the outcome and that
nothing else moved (the model keeps serving the same answers, the thread count returns).
"""

from __future__ import annotations

import json
import re
import socket
import threading
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


def _switches(tid: int) -> int:
    """Voluntary + involuntary context switches of thread ``tid`` of this process."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", status))


@pytest.mark.serial  # a wake-up count: CPU contention would blur it
def test_an_idle_loop_wakes_once_per_open_connections_deadline_not_per_request_served(
        start_agent: Any, digits: Any, digits_eval: DigitsEval) -> None:
    """20 requests on 20 connections the clients close, and one keep-alive connection
    left open: over a window past every head (1 s) and idle (2 s) deadline they set, the
    loop thread wakes to close the open connection (its deadline still holds) and for
    nothing else (once here). Before, each request's leftover checks woke it: 25 times."""
    agent = start_agent(digits.bundle, **{"http.head_timeout_s": 1.0,
                                          "http.idle_timeout_s": 2.0})
    host, port = agent.http.address
    [loop] = [t for t in threading.enumerate() if t.name == "edge-agent-http"]
    assert loop.native_id is not None
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    post = (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: k{{}}\r\n\r\n").encode() + body
    for i in range(20):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(post.replace(b"k{}", f"k{i}".encode()))
            assert [st for st, _, _ in _read_answers(s, 1)] == [200]
    kept = socket.create_connection((host, port), timeout=10)
    try:
        kept.sendall(post.replace(b"k{}", b"kept"))
        assert [st for st, _, _ in _read_answers(kept, 1)] == [200]
        time.sleep(0.2)  # the loop has read every client's close
        assert agent.http.open_connections() == 1
        w0 = _switches(loop.native_id)
        time.sleep(3.0)  # past the kept connection's idle deadline (2 s) and every other
        wakes = _switches(loop.native_id) - w0
        kept.settimeout(0)
        assert kept.recv(1) == b"", "the idle keep-alive connection was not closed"
    finally:
        kept.close()
    assert agent.http.open_connections() == 0
    print(f"idle loop after 21 requests: {wakes} wake-ups in 3 s")
    assert wakes <= 3, f"the idle loop woke {wakes} times for one connection's deadline"
    assert start_agent.client(agent).post(PREDICT, body=body).status == 200


def test_a_request_head_over_the_head_limit_is_431_before_it_ends(
        digits: Any, digits_eval: DigitsEval, tmp_path: Path) -> None:
    """Heads of header lines each under the line limit, fewer than the field limit, that
    never end: each is answered 431 as soon as it is over MAX_HEAD_BYTES. There was no
    limit on the whole head: 16 clients sending 95 lines of 64 000 bytes grew a real
    agent by 99 MB until the head deadline, and a 6 MB head was then served 200."""
    from edge_agent.serving.wire import MAX_HEAD_BYTES

    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    toml = "[http]\nhead_timeout_s = 120\nidle_timeout_s = 120\n"
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    line = b"X-Pad: " + b"a" * 64000 + b"\r\n"
    n = MAX_HEAD_BYTES // len(line)
    # just over the limit, and no byte more: all of it is read before the answer (no RST)
    tail = b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 1 - len(start) - n * len(line) - 7)
    assert len(start) + n * len(line) + len(tail) == MAX_HEAD_BYTES + 1
    with agent_process(tmp_path, digits.bundle, toml=toml) as agent:
        c = Client(agent.host, agent.port)
        want = c.post(PREDICT, body=body)
        held = [socket.create_connection((agent.host, agent.port), timeout=10)
                for _ in range(4)]
        try:
            for s in held:
                s.sendall(start + line * n + tail)
            answers = [_read_answers(s, 1) for s in held]
            assert all(s.recv(1) == b"" for s in held), "a refused head left its socket open"
        finally:
            for s in held:
                s.close()
        assert [a[0][0] for a in answers] == [431] * 4, answers[0]
        assert f"over {MAX_HEAD_BYTES} bytes" in answers[0][0][2].decode()
        assert c.post(PREDICT, body=body).json() == want.json()


def test_a_transfer_coding_other_than_chunked_is_501_not_read_by_content_length(
        start_agent: Any, digits: Any, digits_eval: DigitsEval) -> None:
    """RFC 9112 §6.1/§6.3: Transfer-Encoding overrides Content-Length; a server that does
    not decode the coding must not frame the body by Content-Length (a proxy in front may
    frame it otherwise: request smuggling). It was served 200 by Content-Length."""
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    body = json.dumps({"instances": digits_eval.x[:1].tolist()}).encode()
    want = start_agent.client(agent).post(PREDICT, body=body).json()
    for coding in ("gzip", "identity", "gzip, chunked"):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n"
                      f"Content-Length: {len(body)}\r\nX-Request-Id: t1\r\n\r\n".encode()
                      + body)
            answers = _read_answers(s, 1)
            assert s.recv(1) == b"", "the connection stayed open after a refused coding"
        status, _, doc = answers[0]
        assert status == (411 if "chunked" in coding else 501), (coding, status, doc)
        assert "Content-Length" in json.loads(doc)["error"]
    assert start_agent.client(agent).post(PREDICT, body=body).json() == want


def test_head_is_served_like_get_without_the_body(start_agent: Any, digits: Any) -> None:
    """RFC 9110 §9.3.2: HEAD on a GET route is its GET's status and headers (the body's
    Content-Length) with no body; it was 405. A request pipelined after it is read
    where the HEAD answer ends."""
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    get = start_agent.client(agent).get("/v1/models/digits")
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"HEAD /v1/models/digits HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: h2\r\n\r\n")
        buf = b""
        while b"h2" not in buf or not buf.endswith(b"}"):
            data = s.recv(65536)
            assert data, buf
            buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert f"Content-Length: {len(get.body)}".encode() in head
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b'{"status":"ok"}'), rest
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"HEAD /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 405 "), "HEAD must not run a POST route"


def test_an_empty_line_before_a_request_line_is_ignored(start_agent: Any, digits: Any) -> None:
    """RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request
    line (old clients send CRLF after a POST body); it was a 400 that closed the
    connection and lost the pipelined request."""
    agent = start_agent(digits.bundle)
    host, port = agent.http.address
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: a1\r\n\r\n\r\n"
                  b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: a2\r\n\r\n")
        answers = _read_answers(s, 2)
    assert [(st, rid) for st, rid, _ in answers] == [(200, "a1"), (200, "a2")]
