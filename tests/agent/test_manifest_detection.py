"""The manifest's detection heads (issue 12 part 4): what the converter writes for
``--task detection`` parses and round-trips; a heads table that is not a detection
model's (a missing or doubled role, a shape that cannot be the role, a detection role
under another task, an unknown role) is a ManifestError naming ``manifest.heads`` — for
an update, ``manifest_invalid``."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from det_models import SquareBundle

from edge_agent.errors import ManifestError
from edge_agent.manifest import parse_manifest
from edge_agent.update.errors import from_bundle


@pytest.fixture(scope="module")
def base(square_detector: SquareBundle) -> dict[str, Any]:
    d: dict[str, Any] = json.loads((square_detector.bundle / "manifest.json").read_text())
    return d


def test_the_converters_detection_manifest_parses_and_round_trips(base: dict[str, Any]) -> None:
    m = parse_manifest(base)
    assert m.task == "detection" and m.heads == {"boxes": "boxes", "scores": "scores"}
    assert m.head("boxes") == "boxes" and m.class_head is None
    assert parse_manifest(json.loads(m.to_json())) == m


def _with(base: dict[str, Any], *, heads: dict[str, str] | None = None, task: str | None = None,
          scores_shape: list[int] | None = None) -> dict[str, Any]:
    d = copy.deepcopy(base)
    if heads is not None:
        d["heads"] = heads
    if task is not None:
        d["task"] = task
    if scores_shape is not None:
        next(o for o in d["outputs"] if o["name"] == "scores")["shape"] = scores_shape
    return d


@pytest.mark.parametrize(("change", "words"), [
    ({"heads": {"boxes": "boxes", "scores": "raw"}}, "exactly one scores head"),
    ({"heads": {"boxes": "boxes", "scores": "boxes"}}, "exactly one boxes head"),
    ({"heads": {"boxes": "scores", "scores": "boxes"}},
     "output 'scores': boxes needs shape [batch, detections, 4k], got [1, 16, 1]"),
    ({"heads": {"boxes": "boxes", "scores": "class"}},
     "expected only boxes, scores, classes, count or raw heads"),
    ({"heads": {"boxes": "bbox", "scores": "scores"}}, "expected one of"),
    ({"heads": {"boxes": "boxes", "scores": "scores"}, "task": "multi_output"},
     "expected no detection heads (boxes, scores) for task 'multi_output'"),
    ({"scores_shape": [1, 15, 1]}, "'scores': scores has 15 detections"),
    ({"heads": {"boxes": "boxes", "scores": "count"}}, "exactly one scores head"),
])
def test_a_heads_table_that_is_not_a_detection_models_is_a_manifest_error(
        base: dict[str, Any], change: dict[str, Any], words: str) -> None:
    with pytest.raises(ManifestError) as e:
        parse_manifest(_with(base, **change), "m.json")
    assert words in str(e.value), str(e.value)
    assert str(e.value).startswith("m.json: manifest.heads")
    assert from_bundle(e.value).code == "manifest_invalid"
