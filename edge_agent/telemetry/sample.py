"""The slice of a :class:`~edge_agent.hooks.PredictionRecord` that telemetry keeps.

The prediction hook runs on the serving path, so it copies nothing and computes nothing:
it builds one plain tuple of references (≈0.2 µs) and queues it. It must not keep the
record itself, which holds the input tensor (150 kB for a 224×224 image) and the full
probability matrix. Columns are read by index; :func:`columns` transposes a batch.
"""

from __future__ import annotations

from typing import Any

from edge_agent.hooks import PredictionRecord

Sample = tuple[Any, ...]
MODEL, VERSION, OK, LATENCY, BATCH, SOURCE, REQUEST_ID, TOP1, CONF, SCORE, CLASSES, AT, \
    OUTPUTS, OUTPUT_NAMES = range(14)


def sample_of(rec: PredictionRecord) -> Sample:
    p = rec.probabilities
    classes = p.shape[1] if p is not None and p.ndim == 2 else 0
    score = p[:, 1] if classes == 2 and p is not None else None  # a view, not a copy
    return (rec.model, rec.version, rec.ok, rec.latency_s, rec.batch, rec.source,
            rec.request_id, rec.top1, rec.confidence, score, classes, rec.at, rec.outputs,
            rec.output_names)


def column(samples: list[Sample], index: int) -> list[Any]:
    """One column of a batch of samples (cheaper than transposing them all)."""
    return [s[index] for s in samples]


def split_by_model(samples: list[Sample]) -> dict[tuple[str, int], list[Sample]]:
    """Samples grouped by (model, version); one dict entry and no copy in the usual case."""
    first = samples[0]
    m, v = first[MODEL], first[VERSION]
    if all(s[MODEL] == m and s[VERSION] == v for s in samples):
        return {(m, v): samples}
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s[MODEL], s[VERSION]), []).append(s)
    return groups
