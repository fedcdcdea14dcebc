"""What the outputs of a ``detection`` model are: the head roles and the shapes they need.

Pure: specs in, a problem (or nothing) out. The manifest's strict parser
(:mod:`edge_agent.manifest`) and the converter (:mod:`converter.dettask`) both check a
detection heads table here, so a bundle the converter writes is one the agent reads, and
a hand-written manifest with nonsense roles is refused the same way.

Two output styles are described by the same roles:

* TFLite's detection post-processing op (``TFLite_Detection_PostProcess``): ``boxes``
  ``[B, N, 4]`` (ymin, xmin, ymax, xmax), ``classes`` ``[B, N]``, ``scores`` ``[B, N]``,
  ``count`` ``[B]``;
* SSD-style raw outputs: ``boxes`` ``[B, A, 4k]`` (box regressors per anchor, ``k > 1``
  when keypoints follow the box, e.g. MediaPipe's ``[1, 896, 16]``) and ``scores``
  ``[B, A, C]`` (class scores or logits per anchor).

Rules: exactly one ``boxes`` and one ``scores`` head, at most one ``classes`` and one
``count``; ``scores`` and ``classes`` have as many detections (dimension 1) as ``boxes``;
other outputs are ``raw``. No ``class`` head: a detection model has no single class
vector, so ``:classify`` and label feedback do not apply to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the manifest imports this module
    from edge_agent.manifest import TensorSpec

BOXES, SCORES, CLASSES, COUNT = "boxes", "scores", "classes", "count"
ROLES = (BOXES, SCORES, CLASSES, COUNT)  # manifest HEADS of a detection model (besides raw)
REQUIRED = (BOXES, SCORES)


def shape_problem(role: str, spec: TensorSpec, detections: int | None) -> str | None:
    """Why ``spec`` cannot be the ``role`` head (None: it can). ``detections`` is the
    boxes head's dimension 1, when known."""
    s = spec.shape
    if role == BOXES:
        if len(s) != 3 or s[2] % 4:
            return f"boxes needs shape [batch, detections, 4k], got {list(s)}"
        return None
    if role == COUNT:
        return None if len(s) == 1 or (len(s) == 2 and s[1] == 1) else (
            f"count needs shape [batch] or [batch, 1], got {list(s)}")
    want = "[batch, detections]" + (" or [batch, detections, classes]" if role == SCORES
                                    else "")
    ranks = (2, 3) if role == SCORES else (2,)
    if len(s) not in ranks:
        return f"{role} needs shape {want}, got {list(s)}"
    if detections is not None and s[1] != detections:
        return (f"{role} has {s[1]} detections (dimension 1 of {list(s)}) but boxes has "
                f"{detections}")
    return None


def heads_problem(outputs: Sequence[TensorSpec], heads: Mapping[str, str]) -> str | None:
    """Why ``heads`` (every output's kind, by name) is not a detection model's heads table
    (None: it is)."""
    by_role: dict[str, list[TensorSpec]] = {}
    for o in outputs:
        by_role.setdefault(heads.get(o.name, "raw"), []).append(o)
    other = sorted(k for k in by_role if k not in (*ROLES, "raw"))
    if other:
        return f"expected only {', '.join(ROLES)} or raw heads for task 'detection', got " \
               f"{', '.join(other)}"
    for role in ROLES:
        got = by_role.get(role, [])
        if (role in REQUIRED and len(got) != 1) or len(got) > 1:
            named = ", ".join(o.name for o in got) or "none"
            return (f"expected {'exactly' if role in REQUIRED else 'at most'} one {role} head "
                    f"for task 'detection', got {named}")
    boxes = by_role[BOXES][0]
    detections = boxes.shape[1] if len(boxes.shape) >= 2 else None
    for role in ROLES:
        for o in by_role.get(role, []):
            why = shape_problem(role, o, detections)
            if why:
                return f"output {o.name!r}: {why}"
    return None
