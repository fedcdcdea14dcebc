"""Which samples of a prediction are worth keeping, and what of them to keep. Pure: no
files, no threads, no clock.

* :func:`choose` — per sample of a batch, the reason to capture it (``low_confidence``,
  ``drift``) or none.
* :func:`drifting_bins` — the class bins a drifting model predicts more often than its
  reference does: inputs landing there are the ones that moved.
* :func:`to_pixels` / :func:`thumbnail` — a model-unit image tensor back to ``uint8``
  pixels (inverting the manifest's ``(pixel - mean) / std``), and shrunk.
* :func:`features` — what ``mode = "features"`` keeps: per-channel input means and the
  class probabilities, never pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.bundle import Preprocessing

DRIFT_SHARE_GAIN = 1.5  # a bin drifts when its share is this many times the reference's ...
DRIFT_SHARE_MIN = 0.02  # ... and at least this much above it


def choose(confidence: np.ndarray | None, top1: np.ndarray | None, *,
           confidence_below: float, drift_bins: frozenset[int]) -> list[tuple[int, str]]:
    """``[(sample index, reason)]`` of a batch, low confidence first in the reasons."""
    out: list[tuple[int, str]] = []
    if confidence is None or top1 is None:
        return out
    low = np.asarray(confidence) < confidence_below
    bins = (np.isin(np.asarray(top1), list(drift_bins)) if drift_bins
            else np.zeros(len(low), bool))
    for i in np.flatnonzero(low | bins):
        out.append((int(i), "low_confidence" if low[i] else "drift"))
    return out


def drifting_bins(current: Sequence[float], reference: Sequence[float]) -> frozenset[int]:
    """Bins whose share of ``current`` is well above their share of ``reference``."""
    cur, ref = np.asarray(current, float), np.asarray(reference, float)
    if cur.shape != ref.shape or cur.sum() <= 0 or ref.sum() <= 0:
        return frozenset()
    c, r = cur / cur.sum(), ref / ref.sum()
    hot = (c > r * DRIFT_SHARE_GAIN) & (c - r > DRIFT_SHARE_MIN)
    return frozenset(int(i) for i in np.flatnonzero(hot))


def is_image(x: np.ndarray) -> bool:
    """One sample ``(H, W, C)`` with 1 or 3 channels."""
    return x.ndim == 3 and x.shape[-1] in (1, 3)


def to_pixels(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Model units ``(H, W, C)`` → ``uint8`` pixels, RGB order."""
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    px = np.clip(np.rint(x.astype(np.float32) * std + mean), 0, 255).astype(np.uint8)
    if pre.channel_order == "bgr" and px.shape[-1] == 3:
        px = px[..., ::-1]
    return np.asarray(px, np.uint8)


def thumbnail(px: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``uint8 (H, W, C)`` by an integer stride so the longest side is <= max_side."""
    step = max(1, -(-max(px.shape[:2]) // max_side))
    return np.ascontiguousarray(px[::step, ::step])


def features(x: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
    """Per-channel means of the input and the class probabilities, one float32 vector."""
    means = x.reshape(-1, x.shape[-1]).mean(axis=0) if x.ndim >= 1 and x.size else x
    parts = [np.asarray(means, np.float32).ravel()]
    if probabilities is not None:
        parts.append(np.asarray(probabilities, np.float32).ravel())
    return np.concatenate(parts)
