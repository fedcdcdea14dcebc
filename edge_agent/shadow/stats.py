"""Shadow figures: agreement, output error, latency percentiles, errors. Pure (no IO, no clock).

Computed in the candidate's child (:mod:`edge_agent.shadow.child`), never in the agent's
process; the agent receives only :meth:`ShadowStats.wire` summaries, read back with
:func:`from_wire` (checked like any input: the child runs the candidate).

Agreement per sample (:func:`compare`, by the active version's heads):

* a class head agrees when both versions pick the same top-1 class;
* a detection model (``scores`` head, optional ``classes`` head, :mod:`edge_agent.detection`)
  agrees when both versions' top-scoring detection has the same class and scores within
  :data:`DET_SCORE_TOL` (absolute, or relative to scores above 1, e.g. logits); its
  ``error`` is the mean absolute difference of the top scores. Boxes are not compared;
* any other head when its relative output error ``|cand - active|₂ / max(|active|₂, eps)``
  is at most :data:`RAW_AGREE_REL`.

Latency percentiles come from a bounded reservoir (:data:`RESERVOIR`, algorithm R with a
seeded generator), so memory stays flat however long the shadow runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RAW_AGREE_REL = 0.05  # relative L2 error under which a non-class output "agrees"
DET_SCORE_TOL = 0.05  # top-score difference under which two detections "agree"
RESERVOIR = 512  # latency samples kept per side


@dataclass(frozen=True)
class Heads:
    """Which outputs (positions, model order) :func:`compare` judges by."""

    class_position: int | None = None
    scores: int | None = None  # a detection model's scores head
    classes: int | None = None  # … and its classes head, when it has one


def compare(active: list[np.ndarray], cand: list[np.ndarray],
            heads: Heads) -> tuple[int, int, float]:
    """(samples, samples agreeing, summed error) for one request's outputs."""
    if heads.scores is not None:
        return detection_agreement(active, cand, heads.scores, heads.classes)
    return agreement(active, cand, heads.class_position)


def top_detection(outs: list[np.ndarray], scores: int, classes: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(class, score) of each sample's top-scoring detection: ``scores`` ``[B, N]`` (with
    ``classes`` ``[B, N]``, else one class) or ``[B, A, C]`` (the class is the column)."""
    s = np.asarray(outs[scores], dtype=np.float64)
    n = int(s.shape[0]) if s.ndim else 1
    flat = s.reshape(n, -1)
    idx = flat.argmax(axis=1)
    top = flat[np.arange(n), idx]
    if s.ndim == 3:
        cls = idx % s.shape[2]
    elif classes is not None:
        cls = np.asarray(outs[classes]).reshape(n, -1)[np.arange(n), idx].astype(np.int64)
    else:
        cls = np.zeros(n, dtype=np.int64)
    return cls, top


def detection_agreement(active: list[np.ndarray], cand: list[np.ndarray], scores: int,
                        classes: int | None) -> tuple[int, int, float]:
    """(samples, agreeing, summed |top score difference|) of a detection head."""
    if len(active) != len(cand) or active[scores].shape != cand[scores].shape:
        n = int(active[scores].shape[0]) if active[scores].ndim else 1
        return n, 0, float(n)  # another output shape never agrees
    ca, sa = top_detection(active, scores, classes)
    cc, sc = top_detection(cand, scores, classes)
    diff = np.abs(sc - sa)
    ok = (ca == cc) & (diff <= DET_SCORE_TOL * np.maximum(1.0, np.abs(sa)))
    return len(sa), int(ok.sum()), float(diff.sum())


def agreement(active: list[np.ndarray], cand: list[np.ndarray],
              class_position: int | None) -> tuple[int, int, float]:
    """(samples, samples agreeing, summed relative error) for one request's outputs."""
    a0 = active[0]
    n = int(a0.shape[0]) if a0.ndim else 1
    if class_position is not None:
        a = active[class_position].reshape(n, -1).argmax(axis=1)
        c = cand[class_position].reshape(n, -1).argmax(axis=1)
        agree = int((a == c).sum())
    else:
        agree = -1
    rel = np.zeros(n, dtype=np.float64)
    for x, y in zip(active, cand, strict=True):
        xa = np.asarray(x, dtype=np.float64).reshape(n, -1)
        ya = np.asarray(y, dtype=np.float64).reshape(n, -1)
        if xa.shape != ya.shape:
            return n, 0, float(n)  # another output shape never agrees
        num = np.linalg.norm(ya - xa, axis=1)
        rel = np.maximum(rel, num / np.maximum(np.linalg.norm(xa, axis=1), 1e-9))
    if agree < 0:
        agree = int((rel <= RAW_AGREE_REL).sum())
    return n, agree, float(rel.sum())


@dataclass
class Reservoir:
    size: int = RESERVOIR
    seen: int = 0
    values: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(15))

    def add(self, v: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(v)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.values[j] = v

    def pct(self, q: float) -> float:
        if not self.values:
            return float("nan")
        s = sorted(self.values)
        return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class ShadowStats:
    """Everything the shadow measured so far (one candidate)."""

    requests: int = 0  # compared (candidate answered or failed)
    samples: int = 0
    agreeing: int = 0
    rel_error_sum: float = 0.0
    errors: int = 0  # the candidate failed the request
    dropped: int = 0  # queue full: copy dropped (drop-newest)
    shed: int = 0  # admission saturated: not copied at all
    last_error: str = ""  # the candidate's last failure, for the report
    cand_ms: Reservoir = field(default_factory=Reservoir)
    active_ms: Reservoir = field(default_factory=Reservoir)

    def add(self, n: int, agree: int, rel_sum: float, cand_s: float, active_s: float) -> None:
        self.requests += 1
        self.samples += n
        self.agreeing += agree
        self.rel_error_sum += rel_sum
        self.cand_ms.add(cand_s * 1000)
        self.active_ms.add(active_s * 1000)

    def add_error(self, message: str = "") -> None:
        self.requests += 1
        self.errors += 1
        self.last_error = message[:400]

    def candidate(self) -> dict[str, float]:
        """The gate's metrics for the candidate."""
        s = max(self.samples, 1)
        return {"agreement": self.agreeing / s if self.samples else float("nan"),
                "error": self.rel_error_sum / s if self.samples else float("nan"),
                "p50_ms": self.cand_ms.pct(0.5), "p99_ms": self.cand_ms.pct(0.99),
                "errors": float(self.errors)}

    def active(self) -> dict[str, float]:
        """The same metrics for the active version over the same requests."""
        return {"agreement": 1.0, "error": 0.0, "p50_ms": self.active_ms.pct(0.5),
                "p99_ms": self.active_ms.pct(0.99), "errors": 0.0}

    def summary(self) -> dict[str, float | int | None]:
        c, a = self.candidate(), self.active()

        def r(v: float) -> float | None:
            return None if v != v else round(v, 4)
        return {"requests": self.requests, "samples": self.samples,
                "agreement": r(c["agreement"]), "error": r(c["error"]),
                "p50_ms": r(c["p50_ms"]), "p99_ms": r(c["p99_ms"]),
                "active_p50_ms": r(a["p50_ms"]), "active_p99_ms": r(a["p99_ms"]),
                "errors": self.errors, "dropped": self.dropped, "shed": self.shed}

    def wire(self) -> dict[str, Any]:
        """What the child sends the agent (an ``S`` frame's JSON): the summary and the
        gate's figures for both sides (``None`` for a figure not measured yet)."""
        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: None if v != v else v for k, v in d.items()}
        return {"summary": self.summary(), "candidate": clean(self.candidate()),
                "active": clean(self.active()), "last_error": self.last_error}


@dataclass(frozen=True)
class Figures:
    """A child's summary as the agent reads it back (:func:`from_wire`)."""

    summary: dict[str, float | int | None]
    candidate: dict[str, float]
    active: dict[str, float]
    last_error: str = ""


_SUMMARY_KEYS = frozenset(ShadowStats().summary())


def from_wire(doc: Any) -> Figures:
    """Check an ``S`` frame's JSON (the child runs the candidate: it is input like any
    other) and read it back. Raises ValueError naming what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError(f"summary is a {type(doc).__name__}, expected an object")

    def nums(key: str, allowed: frozenset[str] | None) -> dict[str, Any]:
        d = doc.get(key)
        if not isinstance(d, dict) or (allowed is not None and set(d) - allowed):
            raise ValueError(f"summary {key!r} is not an object of known figures")
        for k, v in d.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"summary {key}.{k} is {v!r}, expected a number")
        return d

    def floats(d: dict[str, Any]) -> dict[str, float]:
        return {k: float("nan") if v is None else float(v) for k, v in d.items()}
    from edge_agent.shadow.gate import METRICS
    summary = nums("summary", _SUMMARY_KEYS)
    cand = floats(nums("candidate", frozenset(METRICS)))
    act = floats(nums("active", frozenset(METRICS)))
    err = doc.get("last_error", "")
    return Figures(summary, cand, act, err[:400] if isinstance(err, str) else "")
