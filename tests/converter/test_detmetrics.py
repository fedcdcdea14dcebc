"""converter.detmetrics: agreement of two detection models' outputs (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.detmetrics import agreement, detections, iou, match


def test_iou_of_boxes_in_corner_order() -> None:
    a = np.asarray([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    b = np.asarray([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5]])
    m = iou(a, b)
    assert m.shape == (2, 3)
    assert m[0] == pytest.approx([1.0, 0.25, 0.5])
    assert m[1] == pytest.approx([0.25, 0.0, 0.5])


def test_empty_boxes_agree_only_where_they_are_the_same() -> None:
    z = np.zeros((1, 4))
    assert iou(z, z)[0, 0] == 1.0 and iou(z, z + 0.5)[0, 0] == 0.0


def test_match_is_one_to_one_best_pairs_first() -> None:
    ref = np.asarray([[0, 0, 1, 1], [0, 0, 1, 0.9]], np.float64)
    other = np.asarray([[0, 0, 1, 0.9], [5, 5, 6, 6]], np.float64)
    assert match(ref, other) == [(1, 0, 1.0)]  # ref 0 loses the shared box: no second match


def test_identical_outputs_agree_fully() -> None:
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 0.5, (3, 8, 2))
    boxes = np.concatenate([lo, lo + 0.3], axis=2)
    scores = rng.uniform(0, 1, (3, 8, 4))
    d = detections(boxes, scores)
    a = agreement(d, d, k=3)
    assert (a.top_k_class_agreement, a.mean_iou) == (1.0, 1.0)
    assert a.score_max_abs_diff == 0 and a.top_score_mean_abs_diff == 0 and a.samples == 3


def test_a_swapped_class_and_a_moved_box_are_counted() -> None:
    boxes = np.asarray([[[0, 0, 1, 1], [2, 2, 3, 3]]], np.float64)
    moved = np.asarray([[[0, 0, 1, 1], [2, 2, 3, 2.5]]], np.float64)
    scores = np.asarray([[0.9, 0.8]])
    ref = detections(boxes, scores, np.asarray([[1, 2]]))
    other = detections(moved, scores - 0.1, np.asarray([[1, 0]]))
    a = agreement(ref, other, k=2)
    assert a.top_k_class_agreement == 0.5  # the second detection changed class
    assert a.mean_iou == pytest.approx((1.0 + 0.5) / 2)
    assert a.score_max_abs_diff == pytest.approx(0.1)
    assert a.top_score_mean_abs_diff == pytest.approx(0.1)


def test_unmatched_detections_count_as_disagreement() -> None:
    ref = detections(np.asarray([[[0, 0, 1, 1]]], np.float64), np.asarray([[0.9]]))
    far = detections(np.asarray([[[5, 5, 6, 6]]], np.float64), np.asarray([[0.9]]))
    a = agreement(ref, far, k=5)
    assert a.top_k_class_agreement == 0.0 and a.mean_iou == 0.0


def test_wide_boxes_use_their_first_four_values_and_swapped_corners_are_ordered() -> None:
    wide = np.asarray([[[1, 1, 0, 0, 9, 9, 9, 9]]], np.float64)  # box + keypoints
    d = detections(wide, np.asarray([[[0.2, 0.7]]]))
    assert d.boxes.tolist() == [[[0, 0, 1, 1]]]
    assert d.classes.tolist() == [[1]] and d.scores.tolist() == [[0.7]]


@pytest.mark.parametrize(("boxes", "scores"), [
    ((1, 4, 3), (1, 4)), ((1, 4), (1, 4)), ((1, 4, 4), (1, 5)), ((1, 4, 4), (1,)),
])
def test_shapes_that_do_not_fit_are_a_value_error(boxes: tuple[int, ...],
                                                 scores: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        detections(np.zeros(boxes), np.zeros(scores))


def test_models_of_different_shapes_or_k_below_one_are_a_value_error() -> None:
    a = detections(np.zeros((1, 4, 4)), np.zeros((1, 4)))
    b = detections(np.zeros((1, 5, 4)), np.zeros((1, 5)))
    with pytest.raises(ValueError):
        agreement(a, b)
    with pytest.raises(ValueError):
        agreement(a, a, k=0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 4), st.integers(1, 6),
       st.integers(0, 2**31 - 1))
def test_figures_are_bounded_and_a_model_agrees_with_itself(
        n: int, dets: int, classes: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = detections(rng.uniform(-1, 2, (n, dets, 4)), rng.uniform(0, 1, (n, dets, classes)))
    b = detections(rng.uniform(-1, 2, (n, dets, 4)), rng.uniform(0, 1, (n, dets, classes)))
    ab = agreement(a, b, k)
    assert ab.top_k_class_agreement is not None and 0.0 <= ab.top_k_class_agreement <= 1.0
    assert ab.mean_iou is not None and 0.0 <= ab.mean_iou <= 1.0
    assert 0.0 <= ab.score_mean_abs_diff <= ab.score_max_abs_diff <= 1.0
    aa = agreement(a, a, k)
    assert (aa.top_k_class_agreement, aa.mean_iou, aa.score_max_abs_diff) == (1.0, 1.0, 0.0)
