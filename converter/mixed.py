"""Mixed precision: which ops full-int8 quantization hurts, and the fewest to keep float.

Calibration runs once, through TFLite's ``tf.lite.experimental.QuantizationDebugger``
(TF 2.21: ``tensorflow/lite/tools/optimize/debugging/python/debugger.py``). Every
candidate is then requantized from that calibrated model with
``QuantizationDebugOptions(denylisted_nodes=[...])`` (``mlir_quantize`` with a denylist:
no recalibration), so trying one costs a requantize plus one pass over the eval data.

Two parts: :func:`search` is a pure core (no TensorFlow, no files): greedy by
sensitivity rank until the budget is met, then it tries to drop each added op again.
:class:`Calibrated` is the TensorFlow shell that measures.

Where the profile's runtime has int16x8 kernels (every profile but the Edge TPU ones), the
search also tries int16 activations (int8 weights) once full int8 misses. TFLite's
int16x8 quantizer works on the whole graph and takes no per-op denylist, so that
candidate has every quantized op in int16x8 and none float. The choice is the smallest
candidate that meets the budget among those at most MAX_SLOWDOWN times slower than the
fastest that meets it; ties go to the lower latency, then to fewer float ops.

A candidate's ``float_nodes`` are output tensor names (what ``denylisted_nodes`` takes).
Limits: at most :data:`MAX_FLOAT_FRACTION` of the quantized ops are kept float, the
per-op "alone" measurement covers the :data:`MAX_PROBED_OPS` ops with the largest
layer error, and the search stops after :data:`MAX_CANDIDATES` candidates.

Raises :class:`BudgetError` (exit 3) from :func:`search_budget` when no candidate meets it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import UnsupportedOpsError

MAX_FLOAT_FRACTION = 0.5  # beyond half the ops float, mixed precision is not the tool
MAX_PROBED_OPS = 48  # ops measured alone (largest layer error first)
MAX_CANDIDATES = 64  # candidates re-measured on the eval data per search
MAX_SLOWDOWN = 2.0  # the chosen one is at most this many times slower than the fastest met
SLOWDOWN_FLOOR_MS = 5.0  # ... unless it is at most this much slower (sub-ms timings are noise)


class BudgetError(UnsupportedOpsError):
    """No candidate met the accuracy / error budget; carries the candidates tried."""

    def __init__(self, message: str, candidates: list[Candidate]):
        self.candidates = candidates
        super().__init__(message, [n for c in candidates[-1:] for n in c.float_nodes])


@dataclass(frozen=True)
class Budget:
    """``max_drop``: accuracy points below float top-1; ``max_error``: relative output
    error (mean |q - f| / mean |f|). Exactly one is set."""

    max_drop: float | None = None
    max_error: float | None = None

    @property
    def flag(self) -> str:
        return "--max-drop" if self.max_drop is not None else "--max-error"

    @property
    def limit(self) -> float:
        return self.max_drop if self.max_drop is not None else float(self.max_error or 0.0)

    def missed_by(self, score: Score) -> float:
        """How far ``score`` is over the budget (<= 0: met)."""
        v = score.drop_points if self.max_drop is not None else score.rel_error
        return (v if v is not None else math.inf) - self.limit  # unrounded: 4e-05 > 0


@dataclass(frozen=True)
class Score:
    accuracy: float | None  # top-1 on the eval labels (None without a class head)
    drop_points: float | None  # float top-1 minus this, in points
    rel_error: float  # mean |q - f| / mean |f| over the scored output


@dataclass(frozen=True)
class OpError:
    """One quantized op's error from the debugger, and the score with it alone float."""

    node: str  # its output tensor name
    op: str  # op type, e.g. FULLY_CONNECTED
    mean_squared_error: float
    rmse_per_scale: float  # rmse in output quantization steps
    alone: Score | None = None  # this op float, everything else int8

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    float_nodes: tuple[str, ...]
    size_bytes: int
    score: Score
    missed_by: float  # <= 0: met the budget
    latency_ms: float | None = None
    int16: bool = False  # int16x8: int16 activations on every quantized op not kept float
    cpu_ops: tuple[str, ...] = ()  # Edge TPU profiles: the ops that would run on the CPU

    @property
    def meets(self) -> bool:
        return self.missed_by <= 0

    @property
    def label(self) -> str:
        if self.int16:
            return "int16x8"
        return f"mixed ({len(self.float_nodes)} float)" if self.float_nodes else "int8"

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "activations": "int16" if self.int16 else "int8",
                "float_ops": list(self.float_nodes), "size_bytes": self.size_bytes,
                **asdict(self.score), "missed_by": round(self.missed_by, 6), "meets": self.meets,
                "latency_ms": self.latency_ms, "cpu_ops": list(self.cpu_ops)}


def preferred(c: Candidate) -> tuple[float, float, int]:
    """The order among candidates that meet the budget: smallest, then fastest, then the
    fewest float ops."""
    lat = c.latency_ms if c.latency_ms is not None else math.inf
    return (c.size_bytes, lat, len(c.float_nodes))


def rank(ops: Sequence[OpError], base: Score) -> list[OpError]:
    """Most sensitive first: the largest gain in score when kept float alone (accuracy
    points recovered, else relative error removed), then the largest layer error."""

    def gain(o: OpError) -> float:
        if o.alone is None:
            return 0.0
        if base.drop_points is not None and o.alone.drop_points is not None:
            return base.drop_points - o.alone.drop_points
        return base.rel_error - o.alone.rel_error

    return sorted(ops, key=lambda o: (-round(gain(o), 6), -o.rmse_per_scale,
                                      -o.mean_squared_error))


def search(ranked: Sequence[str], measure: Callable[[tuple[str, ...]], Candidate],
           max_float: int, max_candidates: int = MAX_CANDIDATES,
           alternatives: Sequence[Callable[[], Candidate | None]] = ()) -> list[Candidate]:
    """Every candidate tried, in order, the choice last: of those that meet the budget,
    the :func:`preferred` one. Pure: ``measure`` builds and scores a candidate.

    Greedy: full int8; when it misses, each of ``alternatives`` (e.g. int16x8; None: not
    possible for this model); then add ops in ``ranked`` order (at most ``max_float``)
    until the budget is met; then try removing each added op again (oldest first),
    keeping a removal whenever the budget is still met.
    """
    tried: list[Candidate] = []

    def run(nodes: tuple[str, ...]) -> Candidate:
        c = measure(nodes)
        tried.append(c)
        return c

    kept: tuple[str, ...] = ()
    best = run(kept)
    for alt in alternatives if not best.meets else ():
        c = alt() if len(tried) < max_candidates else None
        if c is not None:
            tried.append(c)
    for node in ranked[:max_float]:
        if best.meets or len(tried) >= max_candidates:
            break
        kept = (*kept, node)
        best = run(kept)
    for node in kept[:-1] if best.meets and len(kept) > 1 else ():
        if len(tried) >= max_candidates:
            break
        fewer = tuple(n for n in best.float_nodes if n != node)
        c = run(fewer)
        if c.meets:
            best = c
    chosen = choose(tried)
    if chosen is not None:
        tried.append(tried.pop(chosen))  # the chosen one last
    return tried


def choose(tried: Sequence[Candidate], max_slowdown: float = MAX_SLOWDOWN) -> int | None:
    """The index of the candidate to keep, or None when none meets the budget: the
    :func:`preferred` one among those that meet it and run at most ``max_slowdown`` times
    (or :data:`SLOWDOWN_FLOOR_MS`) slower than the fastest that meets it (LiteRT's int16x8
    kernels can be 10x slower than int8: a few bytes saved must not cost that; a model of a
    few ms is timed too noisily on a busy workstation to judge). Ties: the later one."""
    met = [i for i, c in enumerate(tried) if c.meets]
    if not met:
        return None
    lats = [lat for i in met if (lat := tried[i].latency_ms) is not None]
    if lats:
        limit = max(min(lats) * max_slowdown, min(lats) + SLOWDOWN_FLOOR_MS)
        met = [i for i in met if (tried[i].latency_ms or 0.0) <= limit] or met
    return min(met, key=lambda i: (preferred(tried[i]), -i))


def score(f_out: np.ndarray, q_out: np.ndarray, y: np.ndarray | None) -> Score:
    """Top-1 against ``y`` (when given) and the relative output error against float."""
    f = f_out.astype(np.float64).reshape(len(f_out), -1)
    q = q_out.astype(np.float64).reshape(len(q_out), -1)
    rel = float(np.abs(q - f).mean() / max(float(np.abs(f).mean()), 1e-12))
    if y is None:
        return Score(None, None, round(rel, 6))
    fa, qa = float(np.mean(f.argmax(1) == y)), float(np.mean(q.argmax(1) == y))
    return Score(round(qa, 4), round((fa - qa) * 100, 2), round(rel, 6))


class Calibrated:
    """The model calibrated once; requantized with any set of ops kept float.

    ``exported``: the fixed-batch SavedModel (``SourceModel.export``); ``rep``:
    model-unit samples by signature input name, in the model's input order.
    """

    def __init__(self, exported: Path, rep: Mapping[str, np.ndarray]):
        from converter.tfload import import_tf, quiet

        tf = import_tf()
        data = dict(rep)
        self._exported, self._rep = exported, data
        n = len(next(iter(data.values())))

        def rep_by_name() -> Iterator[dict[str, np.ndarray]]:
            for i in range(n):
                yield {k: v[i:i + 1] for k, v in data.items()}

        def rep_list() -> Iterator[list[np.ndarray]]:
            for i in range(n):
                yield [v[i:i + 1] for v in data.values()]

        conv = tf.lite.TFLiteConverter.from_saved_model(str(exported))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep_by_name
        self._opts_cls = tf.lite.experimental.QuantizationDebugOptions
        with quiet():
            self._dbg = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=rep_list)

    def layer_errors(self) -> list[OpError]:
        """Per quantized op: the debugger's error of its output against the float op run
        on the same (dequantized) inputs."""
        from converter.tfload import quiet

        with quiet():
            self._dbg.run()
        buf = io.StringIO()
        self._dbg.layer_statistics_dump(buf)
        buf.seek(0)
        out = []
        for row in csv.DictReader(buf):
            mse = float(row["mean_squared_error"])
            scale = float(row["scale"]) or 1.0
            out.append(OpError(node=row["tensor_name"], op=row["op_name"],
                               mean_squared_error=round(mse, 8),
                               rmse_per_scale=round(math.sqrt(max(mse, 0.0)) / scale, 4)))
        return out

    def quantize(self, float_nodes: Sequence[str]) -> bytes:
        """int8 everywhere but ``float_nodes`` (float IO)."""
        from converter.tfload import quiet

        with quiet():
            self._dbg.options = self._opts_cls(denylisted_nodes=list(float_nodes) or None)
            content: bytes = self._dbg.get_nondebug_quantized_model()
        return content

    def quantize_int16(self) -> bytes:
        """int16x8 on the whole graph (float IO): TFLite's int16 quantizer recalibrates and
        takes no denylist. Raises UnsupportedOpsError when an op has no int16x8 kernel."""
        from converter.quantize import convert

        return convert(self._exported, "int16x8", "float32", self._rep)


Measure = Callable[[bytes], tuple[np.ndarray, float | None]]  # model → (scored output, latency)


@dataclass(frozen=True)
class Analysis:
    base: Score  # full int8 (float IO)
    ops: list[OpError]  # ranked, most sensitive first

    def as_dict(self) -> dict[str, Any]:
        return {"int8": asdict(self.base), "ops": [o.as_dict() for o in self.ops]}


def analyze(cal: Calibrated, f_out: np.ndarray, y: np.ndarray | None, run: Measure) -> Analysis:
    """Layer errors, then the score with each of the worst :data:`MAX_PROBED_OPS` ops kept
    float alone; ranked by :func:`rank`."""
    errs = sorted(cal.layer_errors(), key=lambda o: -o.mean_squared_error)
    base = score(f_out, run(cal.quantize(()))[0], y)
    probed = [OpError(o.node, o.op, o.mean_squared_error, o.rmse_per_scale,
                      score(f_out, run(cal.quantize((o.node,)))[0], y))
              if i < MAX_PROBED_OPS else o for i, o in enumerate(errs)]
    return Analysis(base, rank(probed, base))


Placement = Callable[[bytes], tuple[str, ...]]  # model → the ops that run on the CPU


@dataclass
class Searched:
    """What :func:`search_budget` found: the chosen bytes, every candidate (chosen last)
    and a note per alternative that could not be built."""

    content: bytes
    tried: list[Candidate]
    notes: list[str]


def search_budget(cal: Calibrated, analysis: Analysis, f_out: np.ndarray,
                  y: np.ndarray | None, run: Measure, budget: Budget, *,
                  int16: bool = False, placement: Placement | None = None) -> Searched:
    """Search (int16x8 too when ``int16``: the profile's runtime has the kernels);
    ``placement`` names each candidate's CPU ops. BudgetError when none meets."""
    models: dict[tuple[tuple[str, ...], bool], bytes] = {}
    notes: list[str] = []

    def scored(nodes: tuple[str, ...], content: bytes, is16: bool) -> Candidate:
        models[nodes, is16] = content
        q_out, lat = run(content)
        s = score(f_out, q_out, y)
        return Candidate(nodes, len(content), s, budget.missed_by(s), lat, is16,
                         placement(content) if placement else ())

    def int16x8() -> Candidate | None:
        try:
            return scored((), cal.quantize_int16(), True)
        except UnsupportedOpsError as e:
            notes.append(f"int16x8 not tried: {e}")
            return None

    max_float = int(len(analysis.ops) * MAX_FLOAT_FRACTION)
    tried = search([o.node for o in analysis.ops],
                   lambda nodes: scored(nodes, cal.quantize(nodes), False), max_float,
                   max_candidates=MAX_CANDIDATES, alternatives=(int16x8,) if int16 else ())
    chosen = tried[-1]
    if not chosen.meets:
        best = min(tried, key=lambda c: c.missed_by)
        raise BudgetError(
            f"no candidate meets {budget.flag} {budget.limit:g}: best keeps "
            f"{len(best.float_nodes)} op(s) float ({', '.join(best.float_nodes) or 'none'})"
            f"{' with int16 activations' if best.int16 else ''} "
            f"and misses by {best.missed_by:g} after {len(tried)} candidate(s), keeping at "
            f"most {max_float} of {len(analysis.ops)} ops float", tried)
    return Searched(models[chosen.float_nodes, chosen.int16], tried, notes)
