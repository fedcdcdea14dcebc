"""Slowloris against a real ``edge-agent run`` (issue 19, item 8): a normal client's REST
throughput under 200 sockets dripping a request head and 17 dripping a body, ÷ its
throughput alone over the same duration (goal ≥ 0.95), alone and attacked
measurements alternating over ``--rounds`` rounds; the load average is recorded.

    PYTHONPATH=$PWD .venv/bin/python bench/slowloris.py BUNDLE [--seconds 5] [--rounds 3]

BUNDLE is a digits bundle (``tests/conftest.py`` builds one under ``.cache/``). The agent
runs with its default ``[http]`` limits (head 10 s, body 60 s, 16 connections per client);
the attackers come from 127.0.0.2-4, the normal client from 127.0.0.1, all on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent"))

from agent_helpers import Client
from attack_helpers import Slowloris, agent_process


def normal_client(host: str, port: int, seconds: float) -> tuple[int, int, float]:
    """(answers, non-200 answers, slowest seconds) of one keep-alive client."""
    c = Client(host, port)
    body = {"instances": [[[[0.5]] * 8] * 8]}
    n = bad = 0
    worst = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        if c.post("/v1/models/digits:predict", body).status != 200:
            bad += 1
        worst = max(worst, time.monotonic() - t0)
        n += 1
    c.close()
    return n, bad, worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating alone/attacked rounds")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    rounds: list[dict[str, Any]] = []
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp, agent_process(Path(tmp), a.bundle) as agent:
        normal_client(agent.host, agent.port, 1.0)  # warm-up
        for _ in range(a.rounds):
            alone, bad0, worst0 = normal_client(agent.host, agent.port, a.seconds)
            with Slowloris(agent.host, agent.port, heads=200, bodies=17) as attack:
                time.sleep(2.0)  # let the attack take every slot it can
                attacked, bad1, worst1 = normal_client(agent.host, agent.port, a.seconds)
                cut = attack.cut
            rounds.append({"alone": alone, "attacked": attacked,
                           "ratio": round(attacked / max(alone, 1), 3), "errors": bad0 + bad1,
                           "slowest_ms_alone": round(worst0 * 1000, 1),
                           "slowest_ms_attacked": round(worst1 * 1000, 1),
                           "attacker_connections_cut": cut})
    ratios = sorted(r["ratio"] for r in rounds)
    out: dict[str, Any] = {
        "seconds_per_measurement": a.seconds, "rounds": rounds,
        "ratio_median": ratios[len(ratios) // 2], "ratio_min": ratios[0],
        "errors": sum(r["errors"] for r in rounds),
        "loadavg_before": load, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count()}
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["ratio_median"] >= 0.95 and out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
