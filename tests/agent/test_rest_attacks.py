"""Issue 19, network surfaces over REST: slowloris (item 8), hostile PNGs (item 9), huge
integer literals (item 11). Real sockets against real agents; each test asserts the outcome
and that nothing else moved (the model still serves, no request stuck in admission)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client, DigitsEval
from attack_helpers import Slowloris, agent_process, hostile_png
from waiting import wait_for

from edge_agent.profiles import load_profile

PREDICT = "/v1/models/digits:predict"


def _serve_for(host: str, port: int, body: Any, seconds: float, agent: Any
               ) -> tuple[int, float, set[int], int]:
    """A normal keep-alive client for ``seconds``: (answers, slowest s, statuses, max in
    flight seen between its requests)."""
    c = Client(host, port)
    n, worst, statuses, in_flight = 0, 0.0, set(), 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            t0 = time.monotonic()
            statuses.add(c.post(PREDICT, body).status)
            worst = max(worst, time.monotonic() - t0)
            in_flight = max(in_flight, agent.admission.in_flight())
            n += 1
    finally:
        c.close()
    return n, worst, statuses, in_flight


@pytest.mark.serial
def test_slowloris_heads_and_bodies_leave_a_normal_client_served(
        start_agent: Any, digits: Any, digits_eval: DigitsEval) -> None:
    """200 sockets dripping a head (one peer IP) + 17 dripping a body (two more IPs): the
    per-client cap refuses most head sockets, the head/body deadlines cut the rest, and the
    body drippers never take an admission slot (there are exactly 17)."""
    agent = start_agent(digits.bundle, **{"http.head_timeout_s": 1.5,
                                          "http.body_timeout_s": 1.5})
    host, port = agent.http.address
    body = {"instances": digits_eval.x[:1].tolist()}
    version = agent.registry.get("digits").version
    _serve_for(host, port, body, 0.5, agent)  # warm-up
    alone, _, statuses0, _ = _serve_for(host, port, body, 3.0, agent)
    with Slowloris(host, port, heads=200, bodies=17) as attack:
        wait_for(lambda: agent.http.open_connections() >= 17 + 16 and attack.cut >= 184,
                 timeout_s=10, what="the attack holding its connection slots")
        attacked, worst, statuses1, in_flight = _serve_for(host, port, body, 3.0, agent)
        cut_during = attack.cut
    ratio = attacked / alone
    print(f"slowloris: {attacked} answers under attack / {alone} alone = {ratio:.2f}; "
          f"slowest {worst * 1000:.0f} ms; {cut_during} attacker connections cut")
    assert statuses0 == statuses1 == {200}
    # Before the fix the normal client got no answer at all. Under attack it must keep being
    # served promptly; the throughput ratio itself is measured by bench/slowloris.py (a shared
    # 2-core CI machine makes it noisy), so the bound here only rules out starvation.
    assert worst < 2.0, f"a normal request took {worst:.2f} s under attack"
    assert ratio >= 0.2, f"{attacked} answers under attack vs {alone} alone"
    assert in_flight == 0  # the 17 body drippers never held an admission slot
    assert cut_during > 184 + 17  # refused head sockets, and deadlines cut the held ones
    wait_for(lambda: agent.http.open_connections() == 0, timeout_s=10,
             what="the attackers' connections gone")
    assert agent.registry.get("digits").version == version
    assert Client(host, port).post(PREDICT, body).status == 200


@pytest.mark.serial
@pytest.mark.parametrize("phase", ["head", "body"])
def test_a_dripping_request_is_cut_with_408_at_its_total_deadline(
        start_agent: Any, digits: Any, phase: str) -> None:
    agent = start_agent(digits.bundle, **{"http.head_timeout_s": 1.0,
                                          "http.body_timeout_s": 1.0,
                                          "http.idle_timeout_s": 5.0})
    host, port = agent.http.address
    head = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n"
    if phase == "body":
        head += b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(head)
        t0 = time.monotonic()
        s.settimeout(0.2)
        reply = b""
        while not reply and time.monotonic() - t0 < 4:
            try:
                s.sendall(b"X-A: 1\r\n" if phase == "head" else b"1")  # never finishes
                reply = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"not received within 1 s" in reply and b"Connection: close" in reply
    assert 0.9 < took < 2.0  # the per-receive idle timeout (5 s) never fired
    assert agent.admission.in_flight() == 0


def test_hostile_16bit_pngs_keep_peak_rss_under_the_profile_budget(
        digits: Any, tmp_path: Path) -> None:
    """17 concurrent 93 KB 12 MP 16-bit RGBA PNGs (+17 smaller ones that are allowed) to an
    ``edge-agent run`` on the rpi4 profile (512 MB): every answer is 413/503 or correct, none
    is 5xx, and the child's peak RSS stays under the budget minus the model."""
    budget_mb = load_profile("rpi4").memory_budget_mb
    model_mb = (digits.bundle / "model.tflite").stat().st_size / 2**20
    big, small = hostile_png(), hostile_png(1400, 1400)  # 96 MB vs 16 MB to decode
    # a factor high enough to let both through to the byte budget this test is about (the
    # factor alone refuses both: test_memory_bounds.py)
    # and all 34 connections admitted (the per-client connection limit, 16, would refuse some
    # mid-upload, which a client sees as a reset: not what this test is about)
    with agent_process(tmp_path, digits.bundle, profile="rpi4",
                       toml="max_image_factor = 1000000\n[http]\n"
                            "max_connections_per_client = 64\n") as agent:
        c = Client(agent.host, agent.port)
        want = c.post("/v1/models/digits:classify", body=small, content_type="image/png")
        assert want.status == 200
        idle_mb = agent.rss_mb()
        got: list[tuple[bytes, int, Any]] = []

        def send(png: bytes) -> None:
            r = Client(agent.host, agent.port).post("/v1/models/digits:classify", body=png,
                                                    content_type="image/png")
            got.append((png, r.status, r.json()))

        threads = [threading.Thread(target=send, args=(png,)) for png in [big, small] * 17]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        peak_mb = agent.peak_rss_mb()
        after = c.post("/v1/models/digits:classify", body=small, content_type="image/png")
    print(f"hostile PNGs: peak RSS {peak_mb:.0f} MiB (idle {idle_mb:.0f} MiB; budget "
          f"{budget_mb} MiB - model {model_mb:.2f} MiB)")
    assert len(got) == 34
    statuses = {s for _, s, _ in got}
    assert {s for png, s, _ in got if png is big} <= {413, 503} and 413 in statuses
    assert {s for png, s, _ in got if png is small} <= {200, 503} and 200 in statuses
    assert all(doc["results"] == want.json()["results"] for png, s, doc in got if s == 200)
    assert all("error" in doc for _, s, doc in got if s != 200)
    assert peak_mb <= budget_mb - model_mb
    assert after.status == 200 and after.json()["results"] == want.json()["results"]
    assert "Traceback" not in "".join(agent.lines)


def test_5000_digit_integers_are_400_without_a_traceback(
        start_agent: Any, digits: Any, caplog: pytest.LogCaptureFixture) -> None:
    agent = start_agent(digits.bundle)
    c = start_agent.client(agent)
    huge = "9" * 5000
    with caplog.at_level(logging.DEBUG):
        cases = [
            c.post(PREDICT, body=f'{{"instances": [[{huge}]]}}'.encode()),
            c.post(PREDICT, body=f'{{"inputs": -{huge}}}'.encode()),
            c.get(f"/v1/models/digits/versions/{huge}"),
            c.get(f"/v1/models/digits/versions/{'0' * 5000}1/metadata"),
            c.post(f"/v1/models/digits/versions/{huge}:predict", {"instances": [[1]]}),
            c.post(f"/v1/models/digits:classify?k={huge}", body=b"x",
                   content_type="image/png"),
            c.post(PREDICT, body=b"{}", headers={"Content-Length": huge}),
        ]
    assert [r.status for r in cases] == [400] * len(cases)
    assert all(set(r.json()) == {"error"} for r in cases)
    assert "more than 4300 digits" in cases[0].json()["error"]
    assert "version must be a positive integer" in cases[2].json()["error"]
    assert len(cases[2].json()["error"]) < 200  # the message does not echo 5000 digits
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert c.get("/v1/models/digits").status == 200
