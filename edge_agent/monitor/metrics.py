"""Classification metrics from labels and predictions, defined exactly as scikit-learn's.

The agent cannot depend on scikit-learn (size), so these are re-implemented in numpy and
tested for equality against ``sklearn.metrics`` on the same data:

* binary (two classes): precision/recall/F1 of class 1 (``average="binary"``), ROC AUC
  from the class-1 probability (``roc_auc_score``; the Mann-Whitney U statistic with ties
  counted half, which is what the trapezoidal ROC area equals);
* multi-class: macro averages over the labels present in ``y_true`` ∪ ``y_pred``
  (``average="macro"``), no ROC AUC;
* ``zero_division=0``: a class never predicted has precision 0, never present recall 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassificationMetrics:
    samples: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None  # binary only, and only when both classes occur in y_true
    average: str  # "binary" | "macro"


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve for labels in {0, 1}; None unless both classes occur."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           score: np.ndarray | None = None, *,
                           binary: bool = False) -> ClassificationMetrics:
    """Accuracy, precision, recall, F1 (and ROC AUC for ``binary``), see module docstring.

    Raises ValueError when the arrays differ in length or are empty.
    """
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1 or len(t) == 0:
        raise ValueError(f"need two equal-length 1-D label arrays, got {t.shape} and {p.shape}")
    acc = float(np.mean(t == p))
    if binary:
        tp = float(np.sum((p == 1) & (t == 1)))
        fp = float(np.sum((p == 1) & (t != 1)))
        fn = float(np.sum((p != 1) & (t == 1)))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        auc = roc_auc(t == 1, score) if score is not None else None
        return ClassificationMetrics(len(t), acc, prec, rec, f1, auc, "binary")
    labels = np.union1d(t, p)
    tp_c = np.array([np.sum((p == c) & (t == c)) for c in labels], dtype=np.float64)
    pred_n = np.array([np.sum(p == c) for c in labels], dtype=np.float64)
    true_n = np.array([np.sum(t == c) for c in labels], dtype=np.float64)
    prec_c = _safe_div(tp_c, pred_n)
    rec_c = _safe_div(tp_c, true_n)
    f1_c = _safe_div(2 * tp_c, pred_n + true_n)
    return ClassificationMetrics(len(t), acc, float(prec_c.mean()), float(rec_c.mean()),
                                 float(f1_c.mean()), None, "macro")
