"""Run the mixed-precision analysis and budget search inside a conversion (IO shell of
:mod:`converter.mixed`): load each candidate on LiteRT, score it on the eval data, time
it, and on Edge TPU profiles name the ops each candidate leaves on the CPU. Used by
``edge-convert convert --max-drop/--max-error`` and ``edge-convert analyze``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.data import Dataset
from converter.evaluate import latency_ms, run_all
from converter.graph import inspect_graph
from converter.mixed import (
    Budget,
    Calibrated,
    Candidate,
    Measure,
    Placement,
    analyze,
    search_budget,
)
from converter.modes import INT8_FLOAT_FALLBACK
from converter.support import delegate_summary
from edge_agent.profiles import DeviceProfile
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


def int16_runs(profile: DeviceProfile) -> bool:
    """Whether the profile's runtime runs int16x8 models: the LiteRT / tflite-runtime CPU
    kernels do (XNNPACK and GPU delegates leave those ops to them); the Edge TPU runs
    8-bit tensors only."""
    return not profile.requires_full_integer


def placement_fn(profile: DeviceProfile) -> Placement | None:
    """Edge TPU profiles: model → the ops that run on the CPU (the compiler maps ops in
    order and stops at the first it cannot map: a float op, and every op after it)."""
    if profile.delegate != "edgetpu":
        return None

    def cpu_ops(content: bytes) -> tuple[str, ...]:
        return tuple(delegate_summary(inspect_graph(content), profile)["cpu_ops"])

    return cpu_ops


def candidates_report(tried: list[Candidate], n_ops: int) -> dict[str, Any]:
    """The report's ``mixed`` candidates: each with its ops kept float and in int16."""
    chosen = tried[-1]

    def row(c: Candidate) -> dict[str, Any]:
        return {**c.as_dict(), "int16_ops": n_ops - len(c.float_nodes) if c.int16 else 0}

    return {"chosen": row(chosen), "quantized_ops": n_ops,
            "float_fraction": round(len(chosen.float_nodes) / max(n_ops, 1), 4),
            "candidates": [row(c) for c in tried]}


@dataclass(frozen=True)
class Chosen:
    """The search's outcome inside a conversion."""

    content: bytes  # the chosen model
    mode: str  # its quantization mode (manifest): int8, int8-fallback or int16x8
    section: dict[str, Any]  # the report's "mixed" section
    tried: list[Candidate]  # chosen last


def mode_of(c: Candidate) -> str:
    return "int16x8" if c.int16 else INT8_FLOAT_FALLBACK if c.float_nodes else "int8"


def choose(exported: Path, rep: Dataset, ev: Dataset, f_out: np.ndarray,
           y: np.ndarray | None, run: Measure, budget: Budget, profile: DeviceProfile
           ) -> Chosen:
    """Calibrate, analyze, search. Raises BudgetError when none meets ``budget``."""
    cal = Calibrated(exported, rep.xs)
    analysis = analyze(cal, f_out, y, run)
    found = search_budget(cal, analysis, f_out, y, run, budget, int16=int16_runs(profile),
                          placement=placement_fn(profile))
    section = {"budget": {budget.flag.lstrip("-"): budget.limit},
               "int16x8": ("tried" if int16_runs(profile) else
                           f"not tried: {profile.name} ({profile.delegate}) runs 8-bit "
                           "tensors only"),
               **candidates_report(found.tried, len(analysis.ops)),
               "notes": found.notes, "analysis": analysis.as_dict()}
    return Chosen(found.content, mode_of(found.tried[-1]), section, found.tried)


def tradeoff_points(report: dict[str, Any], tried: list[Candidate]) -> list[dict[str, Any]]:
    """float from the report, then every candidate (the chosen one marked), or the one
    mode converted."""
    ev = report.get("evaluation", {})
    lat = report.get("latency_ms", {})
    size = report["size"]
    pts: list[dict[str, Any]] = [
        {"label": "float", "size_bytes": size["float_bytes"], "accuracy": ev.get("float_top1"),
         "rel_error": 0.0, "latency_ms": (lat.get("float") or {}).get("mean")}]
    chosen = tried[-1] if tried else None
    for c in tried:
        pts.append({"label": c.label, "size_bytes": c.size_bytes, "accuracy": c.score.accuracy,
                    "rel_error": c.score.rel_error, "latency_ms": c.latency_ms,
                    "chosen": c is chosen})
    if not tried:
        pts.append({"label": report["mode"], "size_bytes": size["quant_bytes"],
                    "accuracy": ev.get("quant_top1"), "rel_error": None,
                    "latency_ms": (lat.get("quant") or {}).get("mean"), "chosen": True})
    return pts
