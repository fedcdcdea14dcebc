"""The fast JSON encoder of outputs says exactly what json.dumps would say."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bundle import TensorSpec
from edge_agent.runtime.quant import dequantize
from edge_agent.serving.codec import array_json

specs = st.builds(lambda dtype, scale, zp: TensorSpec("out", (1, 10), dtype, scale, zp),
                  st.sampled_from(["int8", "uint8"]),
                  st.floats(2.0**-20, 8.0, allow_nan=False, allow_infinity=False, width=32),
                  st.integers(-128, 127))


@settings(max_examples=200, deadline=None)
@given(spec=specs, rows=st.integers(1, 3), cols=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_quantized_outputs_encode_like_json_dumps(spec: TensorSpec, rows: int, cols: int,
                                                  seed: int) -> None:
    info = np.iinfo(np.dtype(spec.dtype))
    codes = np.random.default_rng(seed).integers(info.min, info.max + 1, (rows, cols))
    out = dequantize(codes.astype(spec.dtype), spec)
    assert array_json(out, spec) == json.dumps(out.tolist(), separators=(",", ":"))
    assert array_json(out[0], spec) == json.dumps(out[0].tolist(), separators=(",", ":"))


@settings(max_examples=100, deadline=None)
@given(spec=specs, values=st.lists(st.floats(width=32), min_size=64, max_size=200))
def test_values_not_from_the_spec_fall_back_to_json_dumps(spec: TensorSpec,
                                                          values: list[float]) -> None:
    arr = np.asarray(values, dtype=np.float32)
    assert array_json(arr, spec) == json.dumps(arr.tolist(), separators=(",", ":"))


def test_non_finite_values_use_tf_servings_tokens() -> None:
    spec = TensorSpec("out", (1, 64), "int8", 0.5, 0)
    arr = np.full(64, np.nan, dtype=np.float32)
    arr[1], arr[2] = np.inf, -np.inf
    text = array_json(arr, spec)
    assert text.startswith("[NaN,Infinity,-Infinity,NaN")
    assert json.loads(text)[1] == float("inf")
