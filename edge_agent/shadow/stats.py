"""Shadow figures: agreement, output error, latency percentiles, errors. Pure (no IO, no clock).

Agreement per sample: a class head agrees when both versions pick the same top-1 class;
any other head when its relative output error ``|cand - active|₂ / max(|active|₂, eps)``
is at most :data:`RAW_AGREE_REL`. Latency percentiles come from a bounded reservoir
(:data:`RESERVOIR`, algorithm R with a seeded generator), so memory stays flat however
long the shadow runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

RAW_AGREE_REL = 0.05  # relative L2 error under which a non-class output "agrees"
RESERVOIR = 512  # latency samples kept per side


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
    cand_ms: Reservoir = field(default_factory=Reservoir)
    active_ms: Reservoir = field(default_factory=Reservoir)

    def add(self, n: int, agree: int, rel_sum: float, cand_s: float, active_s: float) -> None:
        self.requests += 1
        self.samples += n
        self.agreeing += agree
        self.rel_error_sum += rel_sum
        self.cand_ms.add(cand_s * 1000)
        self.active_ms.add(active_s * 1000)

    def add_error(self) -> None:
        self.requests += 1
        self.errors += 1

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
