"""The shadow's pure cores: the gate, the comparison figures, the pipe frames."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.shadow import frames
from edge_agent.shadow.gate import parse_gate
from edge_agent.shadow.stats import Reservoir, ShadowStats, agreement


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


def test_frames_round_trip_and_a_malformed_frame_is_refused() -> None:
    x = {"in": np.arange(12, dtype=np.float32).reshape(3, 4), "ms": np.array(1.5)}
    back = frames.unpack_arrays(frames.pack_arrays(x))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in x.items())
    data = frames.pack_arrays(x)
    with pytest.raises(frames.FrameError, match="past the frame's end"):
        frames.unpack_arrays(data[:-4])
    with pytest.raises(frames.FrameError):
        frames.unpack_arrays(b'[["a", "|O", [1]]]\n' + b"\0" * 8)  # no object arrays
