"""Benchmark: what the invoke watchdog of bundles with variants costs per request (issue 15
part 2).

::

    python bench/variants.py BUNDLE_WITH_VARIANTS [--rounds 7] [--n 3000] [--rest]

The watchdog runs every invoke of a variant on the interpreter's own thread, so that a
request can give up on a hung delegate (edge_agent/invoke_watchdog.py). This measures
``ServedModel.predict`` on the bundle's serving variant in-process — the worst case, since
no HTTP cost hides the hand-over — with the watchdog on (``variant_watchdog_factor`` 20)
and off (0), in alternating rounds; it prints the median p50 / p99 per mode and the
ratios, so machine load cancels (note ``uptime`` with the figures). ``--rest``: the same
through two real ``edge-agent run`` processes (watchdog on / off), one keep-alive REST
client each, TF Serving's ``:predict``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def _agent(bundle: Path, factor: float, tmp: Path) -> Iterator[http.client.HTTPConnection]:
    cfg = tmp / f"agent-{factor:g}.toml"
    cfg.write_text('[agent]\nprofile = "generic-x86_64"\nthreads = 1\nprobe_runtime = false\n'
                   f"variant_watchdog_factor = {factor}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg), "--model",
         str(bundle), "--http", "127.0.0.1:0", "--store", str(tmp / f"store-{factor:g}")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            m = re.search(r"ready: .* on http://([\d.]+):(\d+)", line)
            if m:
                break
        else:
            raise SystemExit("agent did not start")
        yield http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=30)
    finally:
        proc.terminate()
        proc.wait(15)


def _rest_round(c: http.client.HTTPConnection, body: bytes, n: int) -> tuple[float, float]:
    times = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        c.request("POST", "/v1/models/two:predict", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        if i >= 200:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def _rest(a: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    b = read_bundle(a.bundle)
    spec = b.manifest.inputs[0]
    body = json.dumps({"instances": np.zeros((1, *spec.shape[1:])).tolist()}).encode()
    got: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as d, _agent(a.bundle, 20.0, Path(d)) as on, \
            _agent(a.bundle, 0.0, Path(d)) as off:
        conns = {"on": on, "off": off}
        for i in range(a.rounds):
            for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                got[mode].append(_rest_round(conns[mode], body, a.n))
    return got


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("bundle", type=Path)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--rest", action="store_true", help="through edge-agent run and REST")
    a = p.parse_args()
    rt = select_runtime()
    if a.rest:
        return _report(_rest(a), f"{rt}, REST", a)
    regs = {}
    for mode, factor in (("on", 20.0), ("off", 0.0)):
        r = ModelRegistry(rt, workers=1, num_threads=1)
        r.failover_policy = FailoverPolicy(rules=FailoverRules(watchdog_factor=factor))
        regs[mode] = r
    got: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for i in range(a.rounds):
        for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
            got[mode].append(_round(regs[mode], a.bundle, a.n))
    return _report(got, f"{rt}, in-process", a)


def _report(got: dict[str, list[tuple[float, float]]], what: str, a: argparse.Namespace) -> int:
    med = {m: (statistics.median(v[0] for v in got[m]), statistics.median(v[1] for v in got[m]))
           for m in got}
    print(f"load {os.getloadavg()[0]:.1f}; {what}; {a.rounds} alternating rounds of {a.n}")
    for m in ("off", "on"):
        print(f"watchdog {m:3}: p50 {med[m][0]:.4f} ms  p99 {med[m][1]:.4f} ms")
    added_us = (med["on"][0] - med["off"][0]) * 1e3
    print(f"on/off: p50 ×{med['on'][0] / med['off'][0]:.2f} (+{added_us:.0f} µs), "
          f"p99 ×{med['on'][1] / med['off'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
