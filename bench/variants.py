"""Benchmark: what the invoke watchdog of bundles with variants costs per request (issue 15
part 2).

::

    python bench/variants.py BUNDLE_WITH_VARIANTS [--rounds 7] [--n 3000]

The watchdog runs every invoke of a variant on the interpreter's own thread, so that a
request can give up on a hung delegate (edge_agent/invoke_watchdog.py). This measures
``ServedModel.predict`` on the bundle's serving variant in-process — the worst case, since
no HTTP cost hides the hand-over — with the watchdog on (``variant_watchdog_factor`` 20)
and off (0), in alternating rounds; it prints the median p50 / p99 per mode and the
ratios, so machine load cancels (note ``uptime`` with the figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_agent.bundle import read_bundle  # noqa: E402
from edge_agent.registry import ModelRegistry  # noqa: E402
from edge_agent.runtime.backends import select_runtime  # noqa: E402
from edge_agent.variant_rules import FailoverRules  # noqa: E402
from edge_agent.variants import FailoverPolicy  # noqa: E402


def _round(registry: ModelRegistry, bundle_path: Path, n: int) -> tuple[float, float]:
    sm = registry.build_checked(read_bundle(bundle_path), verify=True)
    x = {s.name: np.zeros(s.shape, s.dtype) for s in sm.input_specs}
    for _ in range(200):
        sm.predict(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sm.predict(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("bundle", type=Path)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--n", type=int, default=3000)
    a = p.parse_args()
    rt = select_runtime()
    regs = {}
    for mode, factor in (("on", 20.0), ("off", 0.0)):
        r = ModelRegistry(rt, workers=1, num_threads=1)
        r.failover_policy = FailoverPolicy(rules=FailoverRules(watchdog_factor=factor))
        regs[mode] = r
    got: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for i in range(a.rounds):
        for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
            got[mode].append(_round(regs[mode], a.bundle, a.n))
    med = {m: (statistics.median(v[0] for v in got[m]), statistics.median(v[1] for v in got[m]))
           for m in got}
    print(f"load {os.getloadavg()[0]:.1f}; {rt}; {a.rounds} alternating rounds of {a.n}")
    for m in ("off", "on"):
        print(f"watchdog {m:3}: p50 {med[m][0]:.4f} ms  p99 {med[m][1]:.4f} ms")
    added_us = (med["on"][0] - med["off"][0]) * 1e3
    print(f"on/off: p50 ×{med['on'][0] / med['off'][0]:.2f} (+{added_us:.0f} µs), "
          f"p99 ×{med['on'][1] / med['off'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
