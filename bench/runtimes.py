"""Per-runtime latency for the same bundles: one subprocess per runtime venv.

Every venv of the runtime matrix (``.venv``, ``.cache/venvs/*``) and, when it exists, the
emulated aarch64 venvs of ``scripts/aarch64_smoke.sh`` run the same measurement on the
same bundles (digits CNN and MobileNetV2, full int8), each in its own interpreter::

    .venv/bin/python bench/runtimes.py [--bundles .cache/matrix/bundles.json] [--runs 50]
        [--python LABEL=PATH ...] [--no-emulated] [--json out.json]

Latency is one ``invoke`` of batch 1 (``LoadedModel.invoke_raw``), after warm-up, with the
profile's thread count (``--threads``, default 2). Under qemu-user the figures say how the
emulator runs the runtime's kernels, not how fast a Pi 4 is; they are reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROOTFS = ROOT / ".cache" / "aarch64" / "bookworm-rootfs"
# label → (python, runtime to force; "" = the agent's default choice)
EMULATED = {
    "qemu: /opt/edge-agent": (ROOTFS / "opt" / "edge-agent" / "bin" / "python", ""),
    "qemu: /opt/fallback tflite-runtime": (ROOTFS / "opt" / "fallback" / "bin" / "python",
                                           "tflite-runtime"),
    "qemu: /opt/fallback ai-edge-litert": (ROOTFS / "opt" / "fallback" / "bin" / "python",
                                           "ai-edge-litert"),
}

CHILD = r"""
import json, platform, statistics, sys, time
import numpy as np
from edge_agent.bundle import read_bundle
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.capabilities import xnnpack_applied
from edge_agent.runtime.model import LoadedModel
path, runtime = sys.argv[1], sys.argv[5]
runs, warmup, threads = (int(v) for v in sys.argv[2:5])
rt = select_runtime([runtime] if runtime else None)
b = read_bundle(path)
t0 = time.perf_counter()
m = LoadedModel(rt, b.model_bytes, num_threads=threads)
load_ms = (time.perf_counter() - t0) * 1e3
x = b.manifest.golden[0].input.decode()
for _ in range(warmup):
    m.invoke_raw(x)
ts = []
for _ in range(runs):
    t = time.perf_counter(); m.invoke_raw(x); ts.append((time.perf_counter() - t) * 1e3)
ts.sort()
print(json.dumps({"runtime": str(rt), "numpy": np.__version__, "machine": platform.machine(),
                  "python": platform.python_version(), "bundle": b.name, "runs": runs,
                  "threads": threads, "load_ms": load_ms, "mean_ms": statistics.fmean(ts),
                  "p50_ms": ts[len(ts) // 2], "p90_ms": ts[min(len(ts) - 1, int(len(ts) * 0.9))],
                  "xnnpack": xnnpack_applied(m.interpreter)}))
"""


def pythons(extra: list[str], emulated: bool) -> dict[str, tuple[Path, str]]:
    found: dict[str, tuple[Path, str]] = {"main (.venv)": (ROOT / ".venv" / "bin" / "python", "")}
    for v in sorted((ROOT / ".cache" / "venvs").glob("*/bin/python")):
        found[v.parents[1].name] = (v, "")
    if emulated:
        found.update(EMULATED)
    for spec in extra:
        label, _, path = spec.partition("=")
        found[label] = (Path(path), "")
    return {k: v for k, v in found.items() if v[0].exists()}


def measure(py: Path, runtime: str, bundle: str, runs: int, warmup: int, threads: int,
            timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, "QEMU_CPU": os.environ.get("QEMU_CPU", "cortex-a72")}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as cwd:  # never let the source tree shadow the venv
        r = subprocess.run([str(py), "-c", CHILD, bundle, str(runs), str(warmup), str(threads),
                            runtime], capture_output=True, text=True, cwd=cwd, env=env,
                           timeout=timeout_s, check=False)
    if r.returncode < 0:
        return {"error": f"crashed ({signal.Signals(-r.returncode).name})"}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        return {"error": tail[:200]}
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def table(rows: list[dict[str, Any]], names: list[str]) -> str:
    head = "| runtime | machine | numpy | " + " | ".join(
        f"{n} p50 ms (p90)" for n in names) + " | int8 XNNPACK |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for r in rows:
        cells = []
        for n in names:
            m = r["bundles"].get(n, {})
            cells.append(m["error"] if "error" in m else
                         f"{m['p50_ms']:.2f} ({m['p90_ms']:.2f})" if m else "-")
        any_m = next((m for m in r["bundles"].values() if "runtime" in m), {})
        rt = any_m.get("runtime") or f"{r['label']} ({r['runtime'] or 'default'})"
        lines.append(f"| {rt} | {any_m.get('machine', 'aarch64' if 'qemu' in r['label'] else '?')}"
                     f"{' (qemu)' if 'qemu' in r['label'] else ''} | {any_m.get('numpy', '?')} | "
                     + " | ".join(cells) + f" | {any_m.get('xnnpack', '?')} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", type=Path, default=ROOT / ".cache" / "matrix" / "bundles.json")
    p.add_argument("--only", default="digits,mobilenet_v2", help="bundle names")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--emulated-runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--python", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--no-emulated", action="store_true")
    p.add_argument("--timeout-s", type=float, default=600)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if not a.bundles.exists():
        p.error(f"{a.bundles}: run scripts/runtime_matrix.sh (or scripts/make_bundles.py > it)")
    paths = json.loads(a.bundles.read_text())
    names = [n for n in a.only.split(",") if n]
    rows = []
    for label, (py, runtime) in pythons(a.python, not a.no_emulated).items():
        emu = "qemu" in label
        row: dict[str, Any] = {"label": label, "python": str(py), "runtime": runtime,
                               "bundles": {}}
        for n in names:
            row["bundles"][n] = measure(py, runtime, paths[n],
                                        a.emulated_runs if emu else a.runs,
                                        1 if emu else a.warmup, a.threads, a.timeout_s)
            print(f"{label:40} {n:14} {json.dumps(row['bundles'][n])[:160]}", file=sys.stderr)
        rows.append(row)
    print(table(rows, names))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
