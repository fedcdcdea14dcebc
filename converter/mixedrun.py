"""Run the mixed-precision analysis and budget search inside a conversion (IO shell of
:mod:`converter.mixed`): load each candidate on LiteRT, score it on the eval data, time
it. Used by ``edge-convert convert --max-drop/--max-error`` and ``edge-convert analyze``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converter.data import Dataset
from converter.evaluate import latency_ms, run_all
from converter.mixed import Analysis, Budget, Calibrated, Candidate, Measure, analyze, search_budget
from edge_agent.runtime.model import LoadedModel


def measure_fn(runtime: Any, threads: int, data: Dataset, scored: int,
               latency_runs: int) -> Measure:
    """Candidate bytes → (its scored output on ``data``, mean per-invoke ms or None)."""

    def run(content: bytes) -> tuple[np.ndarray, float | None]:
        m = LoadedModel(runtime, content, num_threads=threads)
        out = run_all(m, data.xs)[scored]
        lat = None
        if latency_runs:
            lat = latency_ms({"q": m}, data.rows(0, 1), runs=latency_runs)["q"]["mean"]
        return out, lat

    return run


def candidates_report(tried: list[Candidate], n_ops: int) -> dict[str, Any]:
    chosen = tried[-1]
    return {"chosen": chosen.as_dict(), "quantized_ops": n_ops,
            "float_fraction": round(len(chosen.float_nodes) / max(n_ops, 1), 4),
            "candidates": [c.as_dict() for c in tried]}


def choose(exported: Path, rep: Dataset, ev: Dataset, f_out: np.ndarray,
           y: np.ndarray | None, run: Measure, budget: Budget
           ) -> tuple[bytes, Analysis, list[Candidate]]:
    """Calibrate, analyze, search: the chosen model's bytes, the analysis, the candidates
    (chosen last). Raises BudgetError when none meets ``budget``."""
    cal = Calibrated(exported, rep.xs)
    analysis = analyze(cal, f_out, y, run)
    content, tried = search_budget(cal, analysis, f_out, y, run, budget)
    return content, analysis, tried


def tradeoff_points(report: dict[str, Any], tried: list[Candidate]) -> list[dict[str, Any]]:
    """float and int8 from the report, then every candidate (the chosen one marked)."""
    ev = report.get("evaluation", {})
    lat = report.get("latency_ms", {})
    size = report["size"]
    pts: list[dict[str, Any]] = [
        {"label": "float", "size_bytes": size["float_bytes"], "accuracy": ev.get("float_top1"),
         "rel_error": 0.0, "latency_ms": (lat.get("float") or {}).get("mean")}]
    chosen = tried[-1] if tried else None
    for c in tried:
        label = "int8" if not c.float_nodes else f"mixed ({len(c.float_nodes)} float)"
        pts.append({"label": label, "size_bytes": c.size_bytes, "accuracy": c.score.accuracy,
                    "rel_error": c.score.rel_error, "latency_ms": c.latency_ms,
                    "chosen": c is chosen})
    if not tried:
        pts.append({"label": report["mode"], "size_bytes": size["quant_bytes"],
                    "accuracy": ev.get("quant_top1"), "rel_error": None,
                    "latency_ms": (lat.get("quant") or {}).get("mean"), "chosen": True})
    return pts
