"""Population Stability Index and the histograms it compares.

PSI = Σᵢ (aᵢ − eᵢ) · ln(aᵢ / eᵢ) over bins, with ``e`` the reference share per bin and ``a``
the live share. Both are floored at ``eps`` and renormalised so that empty bins do not
make it infinite. Rule of thumb (Siddiqi, *Credit Risk Scorecards*, 2006): < 0.1 no real
change, 0.1–0.25 a moderate shift, > 0.25 a significant one (our default threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-4


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray,
        eps: float = EPS) -> float:
    """PSI of ``actual`` against ``expected`` (both shares or counts per bin, same length).

    Raises ValueError when the lengths differ or a histogram is empty.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or len(e) == 0:
        raise ValueError(f"PSI needs two 1-D histograms of equal length, got {e.shape} and "
                         f"{a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI of an empty histogram")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def class_share(top1: np.ndarray, classes: int) -> np.ndarray:
    """Share of predictions per class index (indices outside 0..classes-1 are ignored)."""
    t = np.asarray(top1, dtype=np.int64)
    t = t[(t >= 0) & (t < classes)]
    counts = np.bincount(t, minlength=classes).astype(np.float64)
    share: np.ndarray = counts / max(1.0, counts.sum())
    return share


def confidence_share(confidence: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Share of top-1 probabilities per bin (``np.histogram`` semantics: last bin closed)."""
    c = np.clip(np.asarray(confidence, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(c, bins=np.asarray(edges, dtype=np.float64))
    return counts / max(1.0, float(counts.sum()))
