"""In-process ``ServedModel.predict`` throughput ÷ a bare interpreter loop (issue 17 part 2).

    .venv/bin/python bench/inprocess.py [--rounds 30] [--src DIR] [--hook] [--json OUT]

Both loops run on the *same* interpreter and the same input (the bundle's first golden
vector, already in the tensor's dtype) in alternating rounds: a block of bare
``set_tensor``/``invoke``/``get_tensor`` calls, then a block of ``predict`` calls, then the
next round with the order swapped, so both see the same machine load on the shared CPUs.
Each block's throughput is calls / wall time; the figure is the median over rounds of
bare time ÷ predict time (1.0 = no cost around invoke). ``--src DIR`` imports
``edge_agent`` from another checkout (e.g. a worktree of main) to compare before/after;
``--hook`` subscribes one no-op prediction hook, as a running agent's telemetry does (a
record is then built for every call). Models come from ``bench/serve.py``'s cache
(``.cache/bench``; run it once to build them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"digits": (ROOT / ".cache/bench/digits/digits-v1", 1, 2000),
          "mobilenet_v2_int8": (ROOT / ".cache/bench/mobilenet_v2/bundle-int8", 2, 40)}


def measure(bundle: Path, threads: int, per_round: int, rounds: int, hook: bool
            ) -> dict[str, Any]:
    from edge_agent.bundle import read_bundle
    from edge_agent.hooks import Hooks
    from edge_agent.registry import ModelRegistry
    from edge_agent.runtime.backends import select_runtime

    b = read_bundle(bundle)
    hooks = Hooks()
    if hook:
        hooks.on_prediction(lambda rec: None)
    served = ModelRegistry(select_runtime(), hooks, num_threads=threads).load(b)
    with served.borrow() as m:
        interp = m.interpreter  # used below from this thread only, never concurrently
    ind = interp.get_input_details()[0]["index"]
    outs = [d["index"] for d in interp.get_output_details()]
    x = b.manifest.golden[0].input.decode()

    def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(per_round):
            interp.set_tensor(ind, x)
            interp.invoke()
            for i in outs:
                interp.get_tensor(i)
        return time.perf_counter() - t0

    def pred() -> float:
        t0 = time.perf_counter()
        for _ in range(per_round):
            served.predict(x, source="bench")
        return time.perf_counter() - t0

    bare(), pred()  # warm-up
    ratios, tb, tp = [], [], []
    for r in range(rounds):
        if r % 2:
            p, q = pred(), bare()
        else:
            q, p = bare(), pred()
        tb.append(q)
        tp.append(p)
        ratios.append(q / p)
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "bare_us": 1e6 * statistics.median(tb) / per_round,
            "predict_us": 1e6 * statistics.median(tp) / per_round,
            "calls_per_round": per_round, "rounds": rounds, "threads": threads}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--src", type=Path, default=ROOT, help="checkout to import edge_agent from")
    p.add_argument("--hook", action="store_true", help="one no-op prediction subscriber")
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    sys.path.insert(0, str(a.src.resolve()))
    from importlib.metadata import version

    res: dict[str, Any] = {"src": str(a.src), "hook": a.hook, "python": platform.python_version(),
                           "numpy": version("numpy"), "loadavg_start": os.getloadavg()}
    for name in a.models:
        bundle, threads, n = MODELS[name]
        res[name] = measure(bundle, threads, n, a.rounds, a.hook)
    res["loadavg_end"] = os.getloadavg()
    print(f"src {a.src}, hook {a.hook}, Python {res['python']}, numpy {res['numpy']}, load "
          f"{res['loadavg_start'][0]:.2f} → {res['loadavg_end'][0]:.2f}")
    print("| model | bare µs/call | predict µs/call | ratio median (min–max) |")
    print("|---|---:|---:|---:|")
    for name in a.models:
        v = res[name]
        print(f"| {name} ({v['threads']} thr) | {v['bare_us']:.1f} | {v['predict_us']:.1f} | "
              f"{v['ratio_median']:.3f} ({v['ratio_min']:.3f}–{v['ratio_max']:.3f}) |")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
