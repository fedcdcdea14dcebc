"""Client latency with a shadow candidate running vs without (issue 15 part 1).

    .venv/bin/python bench/shadow.py [--rounds 6] [--round-s 2] [--bundle DIR] [--json OUT]

In-process, the worst case for the ratio (no HTTP around a request): a registry serving
the digits model with a no-op telemetry-like hook; its closed-loop capacity is measured
first, then an open-loop client sends requests at half of it (latency counted from each
request's scheduled time, so queueing shows). Rounds alternate shadow off / on (on: a
:class:`~edge_agent.shadow.runner.ShadowRun` of the same model in its child process,
comparing every copied request), so machine load falls on both alike; the figures are
the medians over rounds of p50/p99 and the ratio on/off. Also: the child's start time and
the per-request round trip over the pipe (the cost of isolating the candidate).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--round-s", type=float, default=2.0)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from edge_agent.bundle import read_bundle, tar_bytes
    from edge_agent.hooks import Hooks
    from edge_agent.registry import ModelRegistry
    from edge_agent.runtime.backends import select_runtime
    from edge_agent.runtime.quant import TensorCodec
    from edge_agent.shadow.gate import parse_gate
    from edge_agent.shadow.runner import ShadowChild, ShadowRun, ShadowSetup

    src = a.bundle or Path(sorted(glob.glob(str(
        ROOT / ".cache/test-artifacts/update-digits-*/digits-v1")))[-1])
    b = read_bundle(src)
    hooks = Hooks()
    hooks.on_prediction(lambda rec: None)
    rt = select_runtime()
    served = ModelRegistry(rt, hooks, num_threads=1).load(b)
    # one real float instance (model units), as a REST client sends it
    xs = TensorCodec(served.input_spec).dequantize(b.manifest.golden[0].input.decode()[:1])
    tmp = Path(tempfile.mkdtemp())
    staged = tmp / "candidate.tar"
    staged.write_bytes(tar_bytes(b))
    setup = ShadowSetup(rt.name, 1, memory_mb=1024, queue_size=32)

    t0 = time.perf_counter()  # capacity: closed loop, 1 s
    n = 0
    while time.perf_counter() - t0 < 1.0:
        served.predict(xs)
        n += 1
    cap = n / (time.perf_counter() - t0)
    rate = cap / 2

    def client(seconds: float) -> list[float]:
        lat, gap = [], 1.0 / rate
        start = time.perf_counter()
        k = 0
        while True:
            due = start + k * gap
            if due - start >= seconds:
                return lat
            while time.perf_counter() < due:  # spin: sleep() oversleeps a 40 µs gap
                pass
            served.predict(xs)
            lat.append((time.perf_counter() - due) * 1000)
            k += 1

    def shadow_round() -> tuple[list[float], dict[str, Any]]:
        run = ShadowRun(hooks=hooks, name=b.name, active_version=b.version,
                        candidate_version=b.version + 1,
                        codecs={s.name: TensorCodec(s) for s in served.input_specs},
                        class_position=served.class_position, setup=setup,
                        emit=lambda *k, **v: None)
        stop = threading.Event()
        th = threading.Thread(target=run.run, args=(staged, parse_gate("errors==0")),
                              kwargs=dict(min_requests=10**9, duration_s=None,
                                          timeout_s=3600.0, stop=stop))
        th.start()
        while run.phase == "starting":
            time.sleep(0.01)
        lat = client(a.round_s)
        summary = run.stats.summary()
        stop.set()
        th.join()
        return lat, summary

    rows: list[dict[str, Any]] = []
    for r in range(a.rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for mode in order:
            if mode == "off":
                lat, summ = client(a.round_s), {}
            else:
                lat, summ = shadow_round()
            rows.append({"mode": mode, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                         "n": len(lat), **({"compared": summ["requests"],
                                            "dropped": summ["dropped"]} if summ else {})})
    starts, trips = [], []
    for _ in range(3):
        t = time.perf_counter()
        child = ShadowChild(staged, setup, 60.0)
        starts.append(time.perf_counter() - t)
        for _ in range(200):
            t = time.perf_counter()
            child.invoke({served.input_spec.name: xs})
            trips.append((time.perf_counter() - t) * 1000)
        child.close()

    def med(mode: str, k: str) -> float:
        return statistics.median(r[k] for r in rows if r["mode"] == mode)
    out = {"capacity_rps": round(cap), "rate_rps": round(rate),
           "p50_ms": {"off": med("off", "p50"), "on": med("on", "p50")},
           "p99_ms": {"off": med("off", "p99"), "on": med("on", "p99")},
           "p50_ratio": med("on", "p50") / med("off", "p50"),
           "p99_ratio": med("on", "p99") / med("off", "p99"),
           "compared_per_round": statistics.median(r["compared"] for r in rows if "compared" in r),
           "dropped_per_round": statistics.median(r["dropped"] for r in rows if "dropped" in r),
           "child_start_s": statistics.median(starts),
           "child_round_trip_ms": {"p50": pct(trips, 0.5), "p99": pct(trips, 0.99)},
           "load": os.getloadavg(), "rounds": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
