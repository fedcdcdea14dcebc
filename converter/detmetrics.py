"""Agreement of two detection models' outputs (the float reference and the quantized one).

Pure numpy: arrays in, numbers out; no TensorFlow, no files. :func:`agreement` is what the
converter's report says about a ``detection`` bundle instead of any classification metric
(a box tensor has no top-1).

Per sample, each model's detections are ranked by score (a ``scores`` head of several
classes per detection scores it by its best class, which is then its class unless a
``classes`` head says otherwise); the reference's top ``k`` are matched one to one,
greedily by IoU, to the other model's top ``k``. Reported:

* ``top_k_class_agreement``: share of the reference's top-k detections whose match has
  the same class (a detection without a match counts as a disagreement);
* ``mean_iou``: mean IoU of the reference's top-k detections with their match (0 when
  unmatched);
* ``score_max_abs_diff`` / ``score_mean_abs_diff``: over every score, and
  ``top_score_mean_abs_diff``: of the two models' best score per sample.

Boxes are read as ``[ymin, xmin, ymax, xmax]`` (TFLite's detection post-processing order;
the first four values of a ``4k``-wide box, the rest being keypoints); a box whose
corners come swapped is ordered first. For undecoded SSD regressors this IoU is of the
raw values read that way: a measure of agreement, not geometry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_K = 5


@dataclass(frozen=True)
class Detections:
    """One model's detections over a batch: ``boxes`` [n, N, 4], ``scores`` [n, N] and
    ``classes`` [n, N] (integers)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class Agreement:
    k: int
    samples: int
    top_k_class_agreement: float | None  # None: no detections at all
    mean_iou: float | None
    score_max_abs_diff: float
    score_mean_abs_diff: float
    top_score_mean_abs_diff: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None = None
               ) -> Detections:
    """Normalize a model's outputs: boxes ``[n, N, 4k]`` → their first four values in
    corner order; scores ``[n, N]`` or ``[n, N, C]`` → best score per detection (and its
    class when ``classes`` is not given). Raises ValueError on shapes that disagree."""
    b = np.asarray(boxes, np.float64)
    s = np.asarray(scores, np.float64)
    if b.ndim != 3 or b.shape[2] < 4 or b.shape[2] % 4:
        raise ValueError(f"boxes must be [n, N, 4k], got {list(b.shape)}")
    if s.ndim == 3:
        best = s.argmax(axis=2)
        s = s.max(axis=2)
    elif s.ndim == 2:
        best = np.zeros(s.shape, np.int64)
    else:
        raise ValueError(f"scores must be [n, N] or [n, N, C], got {list(s.shape)}")
    if s.shape != b.shape[:2]:
        raise ValueError(f"scores {list(s.shape)} do not match boxes {list(b.shape)}")
    c = best if classes is None else np.rint(np.asarray(classes, np.float64)).astype(np.int64)
    if c.shape != s.shape:
        raise ValueError(f"classes {list(c.shape)} do not match scores {list(s.shape)}")
    b4 = b[..., :4]
    corners = np.stack([np.minimum(b4[..., 0], b4[..., 2]), np.minimum(b4[..., 1], b4[..., 3]),
                        np.maximum(b4[..., 0], b4[..., 2]), np.maximum(b4[..., 1], b4[..., 3])],
                       axis=-1)
    return Detections(corners, s, c)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [m, 4] with every box in ``b`` [p, 4] (corner order):
    [m, p]. Two empty boxes at the same place have IoU 1 (they agree), else 0."""
    y1 = np.maximum(a[:, None, 0], b[None, :, 0])
    x1 = np.maximum(a[:, None, 1], b[None, :, 1])
    y2 = np.minimum(a[:, None, 2], b[None, :, 2])
    x2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    same = np.all(np.isclose(a[:, None, :], b[None, :, :]), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1.0),
                                   same.astype(np.float64))
    return out


def match(ref: np.ndarray, other: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU, best pairs first: ``(i, j, iou)`` for the
    reference boxes that overlap some unmatched box of ``other`` (IoU > 0)."""
    if len(ref) == 0 or len(other) == 0:
        return []
    m = iou(ref, other)
    pairs = []
    used_i: set[int] = set()
    used_j: set[int] = set()
    for flat in np.argsort(-m, axis=None, kind="stable"):
        i, j = divmod(int(flat), m.shape[1])
        if m[i, j] <= 0:
            break
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append((i, j, float(m[i, j])))
    return pairs


def _top(d: Detections, n: int, k: int) -> np.ndarray:
    return np.argsort(-d.scores[n], kind="stable")[:k]


def agreement(ref: Detections, other: Detections, k: int = DEFAULT_K) -> Agreement:
    """How well ``other`` reproduces ``ref``'s top-``k`` detections (module docstring).
    Raises ValueError when the two do not have the same shapes."""
    if ref.scores.shape != other.scores.shape:
        raise ValueError(f"the models' scores differ in shape: {list(ref.scores.shape)} vs "
                         f"{list(other.scores.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(ref.scores)
    same, ious, total = 0, 0.0, 0
    for s in range(n):
        ti, tj = _top(ref, s, k), _top(other, s, k)
        total += len(ti)
        for i, j, v in match(ref.boxes[s, ti], other.boxes[s, tj]):
            ious += v
            same += int(ref.classes[s, ti[i]] == other.classes[s, tj[j]])
    diff = np.abs(ref.scores - other.scores)
    top = (np.abs(ref.scores.max(axis=1) - other.scores.max(axis=1)) if ref.scores.shape[1]
           else np.zeros(n))
    return Agreement(
        k=k, samples=n,
        top_k_class_agreement=round(same / total, 6) if total else None,
        mean_iou=round(ious / total, 6) if total else None,
        score_max_abs_diff=round(float(diff.max()), 6) if diff.size else 0.0,
        score_mean_abs_diff=round(float(diff.mean()), 6) if diff.size else 0.0,
        top_score_mean_abs_diff=round(float(top.mean()), 6) if n else 0.0,
    )
