"""What a bundle is checked and watched against, from its own model's outputs: golden
vectors (:func:`golden_vectors`) and the drift reference (:func:`drift_reference`).

One home for both producers of bundles — ``edge-convert convert`` (:mod:`converter.build`)
and ``edge-convert bundle`` (:mod:`converter.wrap`) — so a converted and a wrapped model
carry the same statistics by the same rules. The drift reference follows the per-head
rules the agent watches by (:mod:`edge_agent.telemetry.monitoring`): the class head's
class and confidence histograms, and for every head the agent watches (regression, raw,
a detector's scores: :data:`edge_agent.monitor.outputs.WATCHED`) the mean and standard
deviation of its per-sample value, computed by the agent's own
:func:`edge_agent.monitor.outputs.per_sample_values`.

Pure numpy over a :class:`~edge_agent.runtime.model.LoadedModel`; no files, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from converter.data import Dataset
from edge_agent.manifest import (
    DriftReference,
    EncodedArray,
    GoldenVector,
    InputStats,
    OutputReference,
)
from edge_agent.monitor.outputs import WATCHED, per_sample_values
from edge_agent.runtime.model import LoadedModel

CONFIDENCE_EDGES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 11))
GOLDEN_COUNT = 4


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return p


def is_probability(out: np.ndarray) -> bool:
    """Whether every sample's values are >= 0 and sum to 1 (a softmax output)."""
    flat = out.reshape(len(out), -1)
    return bool(np.all(flat >= -1e-3) and np.allclose(flat.sum(1), 1.0, atol=2e-2))


def golden_vectors(model: LoadedModel, data: Dataset, atol_quant: float
                   ) -> tuple[GoldenVector, ...]:
    """A few real samples: their raw input tensors (every input, by name) and the raw
    outputs they must give, every output by name, each with its own tolerance
    (``atol_quant`` steps for integer outputs, 1e-4 relative for float ones)."""
    out = []
    for i in np.linspace(0, data.n - 1, min(GOLDEN_COUNT, data.n)).astype(int):
        raw_in = model.coerce(data.rows(i, i + 1))
        assert not isinstance(raw_in, np.ndarray)
        outs = model.invoke_raw(raw_in)
        ys, atols = {}, {}
        for spec, raw_out in zip(model.output_specs, outs, strict=True):
            ys[spec.name] = EncodedArray.encode(raw_out)
            atols[spec.name] = (atol_quant if spec.quantized or spec.dtype in ("int8", "int16")
                                else 1e-4 * max(1.0, float(np.abs(raw_out).max())))
        out.append(GoldenVector({k: EncodedArray.encode(v) for k, v in raw_in.items()}, ys,
                                atols))
    return tuple(out)


def input_stats(x: np.ndarray) -> InputStats:
    """Per channel (last axis) mean and std of one input's samples."""
    axes = tuple(range(x.ndim - 1)) if x.ndim > 1 else (0,)
    xf = x.astype(np.float64)
    return InputStats(tuple(round(float(v), 6) for v in np.atleast_1d(xf.mean(axis=axes))),
                      tuple(round(float(v), 6) for v in np.atleast_1d(xf.std(axis=axes))))


def output_reference(out: np.ndarray, kind: str) -> OutputReference:
    """One watched head's calibration-time per-sample value (``kind``'s rule): mean and
    std."""
    v = per_sample_values(out, kind)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return OutputReference(mean=0.0, std=0.0)
    return OutputReference(mean=round(float(v.mean()), 6), std=round(float(v.std()), 6))


def drift_reference(outs: Mapping[str, np.ndarray], heads: Mapping[str, str],
                    xs: Mapping[str, np.ndarray], *, scored: str | None, classes: int,
                    is_prob: bool) -> DriftReference:
    """Calibration-time statistics of the bundle's own model (what the device will see).

    ``outs`` are the model's outputs on the representative data, by name; ``heads`` what
    each output is; ``xs`` the representative inputs in the bundle's input order
    (``input_mean``/``input_std`` are the first input's, what schema 1 holds); ``scored``
    the output whose class and confidence histograms are kept (the class head, or the
    one output of a one-output model, scored as before heads), None for none: then the
    histograms are one empty bin's worth. Every head the agent watches
    (:data:`edge_agent.monitor.outputs.WATCHED`: regression, raw, a detector's scores) gets
    its :func:`output_reference` (``outputs``), what the agent's output statistics report
    their ``shift_sigma`` against.
    """
    if scored is None:
        probs = np.ones((len(next(iter(outs.values()))), 1), np.float64)
        classes = 1
    else:
        probs = outs[scored].reshape(len(outs[scored]), -1)
        probs = probs if is_prob else softmax(probs)
    cls_hist = np.bincount(probs.argmax(1), minlength=classes) / len(probs)
    conf_hist, _ = np.histogram(probs.max(1), bins=np.asarray(CONFIDENCE_EDGES))
    stats = {k: input_stats(v) for k, v in xs.items()}
    first = next(iter(stats.values()))
    return DriftReference(
        samples=len(probs),
        class_hist=tuple(round(float(v), 6) for v in cls_hist),
        confidence_edges=CONFIDENCE_EDGES,
        confidence_hist=tuple(round(float(v), 6) for v in conf_hist / max(1, conf_hist.sum())),
        input_mean=first.mean,
        input_std=first.std,
        inputs=stats,
        outputs={n: output_reference(outs[n], k) for n, k in heads.items() if k in WATCHED},
    )
