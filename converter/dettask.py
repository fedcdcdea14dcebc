"""``--task detection`` for ``edge-convert convert`` and ``bundle``: which output is which
detection head, and the report's detection agreement.

Roles (:mod:`edge_agent.detection`: ``boxes``, ``scores``, ``classes``, ``count``) are
picked from the outputs' names, then their shapes, and ``--heads NAME=ROLE,...``
overrides any of them; the result is checked by the same rules the agent's manifest
parser applies, so a wrong pick is a one-line OptionError naming the outputs, before any
calibration or writing.

Raises OptionError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from converter.detmetrics import DEFAULT_K, agreement, detections
from converter.errors import OptionError
from edge_agent.detection import BOXES, CLASSES, COUNT, ROLES, SCORES, heads_problem, shape_problem
from edge_agent.manifest import TensorSpec

KINDS = (*ROLES, "raw")  # what --heads may say with --task detection
# names as detectors spell them: SSD/MediaPipe (regressors, classificators), the TF object
# detection API's signature (detection_boxes, ...), TFLite's post-processing op's tensors
_NAMES = ((BOXES, re.compile(r"box|regressor|location|loc$", re.I)),
          (SCORES, re.compile(r"score|classificator|logit|conf", re.I)),
          (CLASSES, re.compile(r"class", re.I)),
          (COUNT, re.compile(r"count|num_detections|num$", re.I)))
_POSTPROCESS = re.compile(r"TFLite_Detection_PostProcess(?::(\d))?$")  # :0 boxes … :3 count
_POSTPROCESS_ORDER = (BOXES, CLASSES, SCORES, COUNT)


def parse_heads(text: str | None) -> dict[str, str]:
    """``NAME=ROLE,NAME=ROLE`` → ``{NAME: ROLE}``. Raises OptionError naming the item."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        name, eq, role = item.strip().rpartition("=")
        if not eq or not name or role not in KINDS:
            raise OptionError(f"--heads: expected NAME=ROLE with ROLE one of {', '.join(KINDS)}, "
                              f"got {item.strip()!r}")
        if name in out:
            raise OptionError(f"--heads: output {name!r} given twice")
        out[name] = role
    return out


def _by_name(name: str) -> str | None:
    m = _POSTPROCESS.search(name)
    if m:
        return _POSTPROCESS_ORDER[int(m.group(1) or 0)] if int(m.group(1) or 0) < 4 else None
    for role, pattern in _NAMES:
        if pattern.search(name):
            return role
    return None


def detection_heads(outputs: Sequence[TensorSpec], overrides: Mapping[str, str]
                    ) -> dict[str, str]:
    """Every output's kind for ``--task detection``: ``overrides`` first, then by name
    (a role only where the shape fits it), then by shape (the one ``[B, N, 4k]`` output
    is the boxes, an output of as many detections the scores). Raises OptionError when
    ``overrides`` names an unknown output, or the outputs cannot be a detection model."""
    names = [o.name for o in outputs]
    described = ", ".join(f"{o.name} {list(o.shape)}" for o in outputs)
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise OptionError(f"--heads: no output named {', '.join(map(repr, unknown))} (outputs: "
                          f"{described})")
    heads = dict(overrides)
    taken = set(heads.values())

    def assign(o: TensorSpec, role: str, detections: int | None) -> None:
        if o.name not in heads and role not in taken and not shape_problem(role, o, detections):
            heads[o.name] = role
            taken.add(role)

    def n_boxes() -> int | None:
        b = next((o for o in outputs if heads.get(o.name) == BOXES), None)
        return b.shape[1] if b is not None and len(b.shape) >= 2 else None

    for o in outputs:  # boxes first: the others are checked against its detections
        if _by_name(o.name) == BOXES:
            assign(o, BOXES, None)
    for o in outputs:
        if BOXES not in taken:
            assign(o, BOXES, None)
    for o in outputs:
        role = _by_name(o.name)
        if role is not None and role != BOXES:
            assign(o, role, n_boxes())
    for o in outputs:
        if SCORES not in taken and n_boxes() is not None:
            assign(o, SCORES, n_boxes())
    heads = {n: heads.get(n, "raw") for n in names}
    why = heads_problem(outputs, heads)
    if why:
        raise OptionError(f"--task detection: {why} (outputs: {described}; say which is which "
                          f"with --heads NAME=ROLE,...)")
    return heads


def evaluate(heads: Mapping[str, str], ref: Sequence[np.ndarray], other: Sequence[np.ndarray],
             k: int = DEFAULT_K) -> dict[str, Any]:
    """The report's ``evaluation.detection``: :func:`converter.detmetrics.agreement` of
    ``other`` (the quantized model's outputs, in ``heads``' order) against ``ref``."""
    def pick(outs: Sequence[np.ndarray], role: str) -> np.ndarray | None:
        return next((o for (_, h), o in zip(heads.items(), outs, strict=True) if h == role),
                    None)

    def dets(outs: Sequence[np.ndarray]) -> Any:
        boxes, scores = pick(outs, BOXES), pick(outs, SCORES)
        assert boxes is not None and scores is not None  # detection_heads' rule
        return detections(boxes, scores, pick(outs, CLASSES))

    return {"heads": {r: n for n, r in heads.items() if r in ROLES},
            **agreement(dets(ref), dets(other), k).as_dict()}


def detection_rows(det: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The report table's (metric, float, quantized) rows for ``evaluation.detection``."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    iou = det["mean_iou"]
    return [(f"top-{det['k']} class agreement", "", pct(det["top_k_class_agreement"])),
            (f"mean IoU, top-{det['k']} boxes", "", "–" if iou is None else f"{iou:.3f}"),
            ("max / mean |Δ score|", "",
             f"{det['score_max_abs_diff']:.4f} / {det['score_mean_abs_diff']:.4f}")]
