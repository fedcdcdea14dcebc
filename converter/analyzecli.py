"""``edge-convert analyze``: per-op quantization sensitivity, ranked, as a table or JSON.

Runs the conversion's own path (:func:`converter.build.build_bundle` with an always-met
``--max-error``, so the search stops at full int8) and prints its analysis: per op, the
debugger's layer error and the accuracy / output error with that op alone kept float.
Nothing is written but ``tradeoff.png`` (and ``report.json``) under ``-o DIR`` when given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def add_analyze_parser(sub: Any) -> None:
    a = sub.add_parser("analyze", help="rank ops by the error full-int8 quantization adds")
    a.add_argument("model", type=Path, help=".keras, .h5 or SavedModel directory")
    a.add_argument("--representative", type=Path, required=True, metavar="DATA")
    a.add_argument("--eval", dest="eval_data", type=Path, required=True, metavar="DATA")
    a.add_argument("--profile", required=True, metavar="NAME")
    a.add_argument("--samples", type=int, default=200, metavar="N")
    a.add_argument("--top", type=int, default=20, metavar="N", help="rows printed (default 20)")
    a.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="write report.json and tradeoff.png here")
    a.add_argument("--json", action="store_true")


def cmd_analyze(a: argparse.Namespace) -> int:
    from converter import tradeoff
    from converter.build import ConvertOptions, build_bundle
    from converter.errors import OutputError
    from edge_agent.fsutil import atomic_write_text

    if a.output is not None and a.output.exists() and not a.output.is_dir():
        raise OutputError(f"{a.output}: exists and is not a directory")
    with tempfile.TemporaryDirectory(prefix="edge-analyze-") as tmp:
        opts = ConvertOptions(model=a.model, representative=a.representative,
                              profile=a.profile, eval_data=a.eval_data, samples=a.samples,
                              output=Path(tmp) / "b", max_error=1e300, latency_runs=10)
        _, report = build_bundle(opts)
    out = {"name": report["name"], "profile": report["profile"],
           **report["mixed"]["analysis"]}
    if a.output is not None:
        a.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.output / "report.json", json.dumps(out, indent=1))
        note = tradeoff.write(report["tradeoff"], a.output / tradeoff.FILE,
                              f"{report['name']} on {report['profile']}")
        if note:
            out["tradeoff_note"] = note
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    base = out["int8"]
    print(f"full int8: accuracy {base['accuracy']}, drop {base['drop_points']} points, "
          f"relative error {base['rel_error']}")
    print(f"{'#':>3} {'op':<18} {'output tensor':<40} {'rmse/scale':>10} {'mse':>10} "
          f"{'drop if float':>13} {'rel err if float':>16}")
    for i, o in enumerate(out["ops"][:a.top], 1):
        al = o["alone"] or {}
        print(f"{i:>3} {o['op']:<18} {o['node'][:40]:<40} {o['rmse_per_scale']:>10.4g} "
              f"{o['mean_squared_error']:>10.4g} {al.get('drop_points', '-')!s:>13} "
              f"{al.get('rel_error', '-')!s:>16}")
    return 0
