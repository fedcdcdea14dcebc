"""Bounded memory (issue 17 part 3), black-box against ``edge-agent run`` child processes:
a decompression-bomb PNG is refused from its header (model input × ``max_image_factor``)
without its pixels ever being decoded, and a burst of large JSON bodies at c=16 is decoded
``workers`` at a time and its heap given back afterwards (malloc_trim). Each test asserts
the outcome, the memory, and that nothing else moved (the same answers after)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client, DigitsEval
from attack_helpers import agent_process, hostile_png

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="/proc")

PREDICT, CLASSIFY = "/v1/models/digits:predict", "/v1/models/digits:classify"


def _concurrently(n: int, fn: Any) -> list[Any]:
    out: list[Any] = []
    threads = [threading.Thread(target=lambda: out.append(fn())) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.serial
def test_a_decompression_bomb_png_is_refused_from_its_header_and_rss_barely_moves(
        digits: Any, digits_eval: DigitsEval, tmp_path: Path) -> None:
    """8 concurrent 93 KB PNGs that decode to 96 MB each (12 MP, 16-bit RGBA; under
    ``max_image_pixels``, so only the factor refuses them): all 413 naming the factor, the
    peak RSS rises < 50 MB (it rose by 181 MB for 3400² RGB PNGs before), and a fitting
    PNG is answered the same before and after."""
    bomb, fits = hostile_png(), digits_eval.png(0)
    with agent_process(tmp_path, digits.bundle) as agent:
        c = Client(agent.host, agent.port)
        want = c.post(CLASSIFY, body=fits, content_type="image/png")
        assert want.status == 200
        Path(f"/proc/{agent.proc.pid}/clear_refs").write_text("5")  # reset the peak
        before_mb = agent.rss_mb()
        got = _concurrently(8, lambda: Client(agent.host, agent.port).post(
            CLASSIFY, body=bomb, content_type="image/png"))
        rise_mb = agent.peak_rss_mb() - before_mb
        after = c.post(CLASSIFY, body=fits, content_type="image/png")
    assert [r.status for r in got] == [413] * 8
    assert all("3464x3464" in r.json()["error"] and "64 times the model input" in
               r.json()["error"] and "max_image_factor" in r.json()["error"] for r in got)
    assert rise_mb < 50, f"peak RSS rose {rise_mb:.1f} MB"
    assert after.status == 200 and after.json()["results"] == want.json()["results"]
    assert "Traceback" not in "".join(agent.lines)


@pytest.mark.serial
def test_a_burst_of_3mb_json_bodies_at_c16_is_bounded_and_memory_comes_back(
        digits: Any, digits_eval: DigitsEval, tmp_path: Path) -> None:
    """16 clients × 3 bodies of 3 MB JSON (3300 digits instances each, ``max_batch`` raised
    so they are served): every answer is right, the peak RSS rises by less than 200 MB
    (16 parsed bodies at once take 600), and 3 s after the burst RSS is within 40 MB of
    before. (Before: all 16 parsed bodies alive while waiting for the one interpreter,
    peak +611 MB, +81 MB kept; now about +100 and +30.)"""
    import numpy as np

    x = np.resize(digits_eval.x, (3300, *digits_eval.x.shape[1:])) * np.float32(0.999)
    n = len(x)
    body = json.dumps({"instances": x.tolist()}).encode()
    assert 3_000_000 < len(body) < 4_000_000
    with agent_process(tmp_path, digits.bundle,
                       toml="workers = 1\n[http]\nmax_batch = 4096\n") as agent:
        c = Client(agent.host, agent.port)
        want = c.post(PREDICT, body=body, content_type="application/json")
        assert want.status == 200 and len(want.json()["predictions"]) == n
        c.close()  # 16 connections from this peer is the per-client limit
        time.sleep(1.0)
        before_mb = agent.rss_mb()
        Path(f"/proc/{agent.proc.pid}/clear_refs").write_text("5")

        def three() -> list[tuple[int, Any]]:
            cl = Client(agent.host, agent.port)
            out = []
            for _ in range(3):
                r = cl.post(PREDICT, body=body, content_type="application/json")
                out.append((r.status, r.json()))
            cl.close()
            return out

        got = [s for per in _concurrently(16, three) for s in per]
        rise_mb = agent.peak_rss_mb() - before_mb
        time.sleep(3.0)
        kept_mb = agent.rss_mb() - before_mb
        after = Client(agent.host, agent.port).post(PREDICT, {"instances": x[:1].tolist()})
    print(f"3 MB JSON × c=16: peak +{rise_mb:.0f} MB, kept +{kept_mb:.0f} MB")
    assert len(got) == 48 and {s for s, _ in got} == {200}, {s for s, _ in got}
    assert all(doc == want.json() for _, doc in got)
    assert rise_mb < 200, f"peak RSS rose {rise_mb:.1f} MB"
    assert kept_mb < 40, f"RSS 3 s after the burst is {kept_mb:.1f} MB above before"
    assert after.status == 200
    assert after.json()["predictions"][0] == want.json()["predictions"][0]
