"""Per-model request statistics: latency percentiles as ``np.percentile`` computes them,
without the ``numpy.ma`` import that ``np.percentile`` costs on its first call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.telemetry.stats import percentiles

QS = (0.0, 1.0, 50.0, 90.0, 99.0, 100.0)


@given(st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_are_numpys_linear_percentiles(xs: list[float]) -> None:
    got = percentiles(np.asarray(xs), QS)
    want = np.percentile(np.asarray(xs), QS)
    assert np.allclose(got, want, rtol=1e-12, atol=1e-9), (got, want.tolist())


def test_percentiles_of_one_value_are_that_value() -> None:
    assert percentiles(np.array([2.5]), QS) == [2.5] * len(QS)


def test_a_telemetry_snapshot_does_not_import_numpy_ma() -> None:
    # a fresh interpreter: this test process may have imported numpy.ma already
    code = textwrap.dedent("""
        import sys
        from edge_agent.hooks import PredictionRecord
        from edge_agent.telemetry.stats import ModelStats
        s = ModelStats()
        for i in range(1, 21):
            s.record(PredictionRecord("m", 1, "rest", True, 0.001 * i, 1))
        lat = s.snapshot()["m"]["latency_ms"]
        assert lat == {"p50": 10.5, "p90": 18.1, "p99": 19.81}, lat
        print("numpy.ma" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
