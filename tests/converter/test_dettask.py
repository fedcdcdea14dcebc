"""converter.dettask: detection head roles from names and shapes, ``--heads`` overrides."""

from __future__ import annotations

import pytest

from converter.dettask import detection_heads, parse_heads
from converter.errors import OptionError
from edge_agent.manifest import TensorSpec


def _specs(**shapes: tuple[int, ...]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, s, "float32") for n, s in shapes.items())


def test_postprocess_op_outputs_by_signature_name() -> None:
    specs = _specs(boxes=(1, 10, 4), classes=(1, 10), scores=(1, 10), count=(1,))
    assert detection_heads(specs, {}) == {"boxes": "boxes", "classes": "classes",
                                          "scores": "scores", "count": "count"}


def test_postprocess_op_outputs_by_tensor_name() -> None:
    names = ["TFLite_Detection_PostProcess", *(f"TFLite_Detection_PostProcess:{i}"
                                               for i in (1, 2, 3))]
    specs = tuple(TensorSpec(n, s, "float32") for n, s in
                  zip(names, [(1, 10, 4), (1, 10), (1, 10), (1,)], strict=True))
    assert list(detection_heads(specs, {}).values()) == ["boxes", "classes", "scores", "count"]


def test_mediapipe_ssd_outputs_by_name() -> None:
    specs = _specs(regressors=(1, 896, 16), classificators=(1, 896, 1))
    assert detection_heads(specs, {}) == {"regressors": "boxes", "classificators": "scores"}


def test_unnamed_outputs_by_shape_others_raw() -> None:
    specs = _specs(out0=(1, 100, 3), out1=(1, 100, 4), out2=(1, 7))
    assert detection_heads(specs, {}) == {"out0": "scores", "out1": "boxes", "out2": "raw"}


def test_overrides_win() -> None:
    specs = _specs(a=(1, 8, 4), b=(1, 8, 4))
    assert detection_heads(specs, {"a": "scores", "b": "boxes"}) == {"a": "scores",
                                                                     "b": "boxes"}


def test_no_box_shaped_output_names_the_outputs() -> None:
    with pytest.raises(OptionError, match=r"exactly one boxes head.*logits \[1, 10\]"):
        detection_heads(_specs(logits=(1, 10)), {})


def test_parse_heads() -> None:
    assert parse_heads("a=boxes, b:0=scores") == {"a": "boxes", "b:0": "scores"}
    assert parse_heads(None) == {} and parse_heads("") == {}
    for bad in ("a", "a=box", "=boxes", "a=boxes,a=raw"):
        with pytest.raises(OptionError, match="--heads"):
            parse_heads(bad)
