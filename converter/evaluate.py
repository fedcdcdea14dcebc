"""What quantization cost: accuracy, agreement, output error, per-class metrics, latency.

Both models (float32 TFLite and quantized TFLite) run on the same LiteRT runtime, so
the comparison isolates quantization from the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.runtime.model import Inputs, LoadedModel, batch_of

Progress = Callable[[int], None]


def _rows(x: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(x, np.ndarray):
        return x[start:stop]
    return {k: v[start:stop] for k, v in x.items()}


def run_all(model: LoadedModel, x: Inputs, progress: Progress | None = None,
            chunk: int = 64) -> list[np.ndarray]:
    """Every dequantized output (model order) for every sample of ``x`` (one array, or
    arrays by input name)."""
    n = batch_of(x)
    parts: list[list[np.ndarray]] = [[] for _ in model.output_specs]
    for i in range(0, n, chunk):
        for j, o in enumerate(model.predict(_rows(x, i, i + chunk))):
            parts[j].append(o)
        if progress:
            progress(min(chunk, n - i))
    return [np.concatenate(p) for p in parts]


def per_class(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]
              ) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class (0 where undefined, like sklearn)."""
    rows = []
    for c, name in enumerate(labels):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        rows.append({"label": name, "precision": round(prec, 4), "recall": round(rec, 4),
                     "f1": round(f1, 4), "support": tp + fn})
    return rows


@dataclass(frozen=True)
class Comparison:
    float_accuracy: float | None
    quant_accuracy: float | None
    agreement: float | None
    max_abs_diff: float
    mean_abs_diff: float
    per_class: list[dict[str, Any]]
    samples: int
    float_distinct_top1: int = 0  # how many different classes the float model predicts
    quant_distinct_top1: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "float_top1": self.float_accuracy, "quant_top1": self.quant_accuracy,
            "top1_drop_pp": (None if self.float_accuracy is None or self.quant_accuracy is None
                             else round(100 * (self.float_accuracy - self.quant_accuracy), 3)),
            "top1_agreement": self.agreement,
            "max_abs_output_diff": self.max_abs_diff,
            "mean_abs_output_diff": self.mean_abs_diff,
            "float_distinct_top1": self.float_distinct_top1,
            "quant_distinct_top1": self.quant_distinct_top1,
            "per_class": self.per_class,
        }


def compare(f_out: np.ndarray, q_out: np.ndarray, y: np.ndarray | None,
            labels: tuple[str, ...]) -> Comparison:
    f_pred = f_out.reshape(len(f_out), -1).argmax(1)
    q_pred = q_out.reshape(len(q_out), -1).argmax(1)
    diff = np.abs(f_out.astype(np.float64) - q_out.astype(np.float64))
    fa = qa = None
    rows: list[dict[str, Any]] = []
    if y is not None:
        fa = round(float(np.mean(f_pred == y)), 4)
        qa = round(float(np.mean(q_pred == y)), 4)
        rows = per_class(y, q_pred, labels)
    return Comparison(fa, qa, round(float(np.mean(f_pred == q_pred)), 4),
                      round(float(diff.max()), 6), round(float(diff.mean()), 6), rows, len(f_out),
                      len(set(f_pred.tolist())), len(set(q_pred.tolist())))


def latency_ms(models: dict[str, LoadedModel], sample: Inputs, runs: int = 50,
               warmup: int = 5, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    """Per-invoke latency of each model on this machine: one sample, ``runs`` timed invokes.

    The models take turns invoke by invoke, so a burst of load from another process
    slows all of them alike and their ratio stays honest on a shared machine.
    ``sample``: a batch of one (one array, or arrays by input name).
    ``runs=0`` skips the measurement (all figures ``None``).
    """
    if runs <= 0:
        return {k: {"mean": None, "p50": None, "p90": None, "p95": None, "runs": 0}
                for k in models}
    raws = {}
    for k, m in models.items():
        raws[k] = m.coerce(sample)
        for _ in range(warmup):
            m.invoke_raw(raws[k])
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(runs):
        for k, m in models.items():
            t = time.perf_counter()
            m.invoke_raw(raws[k])
            times[k].append((time.perf_counter() - t) * 1e3)
        if progress:
            progress(1)
    out = {}
    for k, ts in times.items():
        a = np.asarray(ts)
        out[k] = {"mean": round(float(a.mean()), 4), "p50": round(float(np.percentile(a, 50)), 4),
                  "p90": round(float(np.percentile(a, 90)), 4),
                  "p95": round(float(np.percentile(a, 95)), 4), "runs": runs}
    return out
