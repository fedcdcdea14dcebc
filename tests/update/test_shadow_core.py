"""The shadow's pure cores: the gate, the comparison figures, the pipe frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_agent.shadow import frames
from edge_agent.shadow.gate import parse_gate
from edge_agent.shadow.stats import Heads, Reservoir, ShadowStats, agreement, compare, from_wire


def test_a_relative_latency_bound_is_judged_against_the_active_versions_figure() -> None:
    g = parse_gate("agreement>=0.98,p99_ms<=1.2x,errors==0")
    ok = g.evaluate({"agreement": 0.99, "p99_ms": 1.1, "errors": 0}, {"p99_ms": 1.0})
    slow = g.evaluate({"agreement": 0.99, "p99_ms": 1.3, "errors": 0}, {"p99_ms": 1.0})
    assert ok.ok and not slow.ok and "p99_ms 1.3" in slow.reason and "= 1.2" in slow.reason


def test_a_metric_never_measured_fails_the_gate_rather_than_passing_it() -> None:
    assert not parse_gate("agreement>=0.5").evaluate({"agreement": float("nan")}, {}).ok


def test_top1_agreement_for_a_class_head_and_relative_error_otherwise() -> None:
    a = [np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)]
    c = [np.array([[0.6, 0.4], [0.7, 0.3]], np.float32)]
    n, agree, _ = agreement(a, c, 0)
    assert (n, agree) == (2, 1)
    n, agree, rel = agreement(a, [a[0] * 1.01], None)
    assert (n, agree) == (2, 2) and rel == pytest.approx(0.02, rel=1e-3)


def test_latency_reservoir_stays_bounded() -> None:
    r = Reservoir(size=64)
    for i in range(10_000):
        r.add(float(i))
    assert len(r.values) == 64 and r.seen == 10_000
    s = ShadowStats()
    s.add_error()
    assert s.summary()["errors"] == 1 and s.summary()["agreement"] is None


def test_request_frames_round_trip_and_a_malformed_frame_is_refused() -> None:
    arrays = [np.arange(12, dtype=np.int8).reshape(3, 4), np.ones((3, 10), np.float32),
              np.zeros((3,), np.uint8)]
    frame = frames.pack_request(0.00125, arrays)
    got = list(frames.FrameReader().feed(frame))
    assert [k for k, _ in got] == [b"Q"]
    latency, back = frames.unpack_request(got[0][1])
    assert latency == 0.00125 and len(back) == 3
    assert all(np.array_equal(b, a) and b.dtype == a.dtype
               for a, b in zip(arrays, back, strict=True))
    payload = got[0][1]
    with pytest.raises(frames.FrameError, match="past the frame's end"):
        frames.unpack_request(payload[:-1])
    with pytest.raises(frames.FrameError, match="bytes after the arrays"):
        frames.unpack_request(payload + b"\0")
    with pytest.raises(frames.FrameError, match="dtype b'O'"):  # no object arrays
        frames.unpack_request(payload[:9] + b"O" + payload[10:])


def test_a_frame_reader_refuses_an_oversized_frame_before_buffering_it() -> None:
    r = frames.FrameReader(max_frame_bytes=100)
    whole = frames.encode(b"S", b"x" * 10)
    assert list(r.feed(whole[:7])) == [] and r.pending == 7  # split anywhere: still one frame
    assert list(r.feed(whole[7:] + frames.encode(b"R"))) == [(b"S", b"x" * 10), (b"R", b"")]
    with pytest.raises(frames.FrameError, match="frame of 101 bytes, at most 100"):
        list(r.feed(frames.HEADER.pack(b"S", 101)))


def test_detection_agreement_is_top_class_and_top_score_not_boxes() -> None:
    boxes = np.random.default_rng(0).random((2, 5, 4)).astype(np.float32)
    scores = np.array([[0.9, 0.2, 0.1, 0.0, 0.0], [0.3, 0.8, 0.1, 0.0, 0.0]], np.float32)
    classes = np.array([[3, 1, 1, 0, 0], [2, 7, 1, 0, 0]], np.float32)
    active = [boxes, classes, scores]
    heads = Heads(scores=2, classes=1)
    other_boxes = [boxes[:, ::-1].copy(), classes, scores + 0.01]  # boxes moved: still agree
    n, agree, err = compare(active, other_boxes, heads)
    assert (n, agree) == (2, 2) and err == pytest.approx(0.02, abs=1e-6)
    swapped = [boxes, np.array([[3, 1, 1, 0, 0], [2, 4, 1, 0, 0]], np.float32), scores]
    assert compare(active, swapped, heads)[:2] == (2, 1)  # sample 1: top class 7 → 4
    lower = [boxes, classes, scores * np.array([[1.0], [0.5]], np.float32)]
    n, agree, err = compare(active, lower, heads)
    assert (n, agree) == (2, 1) and err == pytest.approx(0.4, abs=1e-6)  # 0.8 → 0.4
    anchors = np.zeros((1, 6, 3), np.float32)  # SSD style [B, A, C]: the class is the column
    anchors[0, 4, 2] = 5.0
    moved = anchors.copy()
    moved[0, 4, 2], moved[0, 1, 1] = 0.0, 5.0
    assert compare([anchors], [anchors], Heads(scores=0))[:2] == (1, 1)
    assert compare([anchors], [moved], Heads(scores=0))[:2] == (1, 0)


def test_a_summary_from_the_child_is_checked_like_any_input() -> None:
    s = ShadowStats()
    s.add(2, 2, 0.0, 0.001, 0.0005)
    fig = from_wire(json.loads(json.dumps(s.wire())))
    assert fig.summary["requests"] == 1 and fig.candidate["agreement"] == 1.0
    assert math.isnan(fig.candidate["error"]) is False and fig.active["p99_ms"] == 0.5
    with pytest.raises(ValueError, match="expected a number"):
        from_wire({**s.wire(), "candidate": {"agreement": "1.0"}})
    with pytest.raises(ValueError, match="known figures"):
        from_wire({**s.wire(), "summary": {"requests": 1, "rm": 2}})
    with pytest.raises(ValueError, match="expected an object"):
        from_wire([1])


@pytest.mark.parametrize("typed", ["agreement>=0.9999999", "errors<=1234567", "errors<=1e20",
                                   "error<=0.0000001", "p99_ms<=1.000001x"])
def test_the_signed_gate_is_the_typed_one_and_every_device_parses_it(typed: str) -> None:
    """The publisher signs the normalized text; it must parse at the device (its own
    parser, on the signed target) to the same bounds: %g had made 1234567 into
    '1.23457e+06', which the device refused, and 0.9999999 into 1."""
    from edge_agent.update.wire import parse_target_spec
    from fleet.shadow_args import shadow_terms

    terms = shadow_terms("100", typed)
    assert terms is not None
    spec = parse_target_spec({"edge": {"kind": "model", "name": "d", "version": 2,
                                       "mode": "shadow", "shadow": terms.to_dict()}}, 1, "d")
    assert spec.shadow is not None
    assert parse_gate(spec.shadow.gate) == parse_gate(typed)


def test_a_shadow_count_the_device_would_refuse_is_refused_at_publish() -> None:
    from edge_agent.errors import BadInputError
    from edge_agent.update.wire import MAX_SHADOW_REQUESTS, parse_target_spec
    from fleet.shadow_args import shadow_terms

    with pytest.raises(BadInputError, match=f"from 1 to {MAX_SHADOW_REQUESTS}"):
        shadow_terms(str(MAX_SHADOW_REQUESTS + 1), None)
    terms = shadow_terms(str(MAX_SHADOW_REQUESTS), None)  # the largest both sides accept
    assert terms is not None
    spec = parse_target_spec({"edge": {"kind": "model", "name": "d", "version": 2,
                                       "mode": "shadow", "shadow": terms.to_dict()}}, 1, "d")
    assert spec.shadow is not None and spec.shadow.min_requests == MAX_SHADOW_REQUESTS
