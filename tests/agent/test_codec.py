"""The output encoder: its lookup-table fast path says exactly what the general path says,
and every number reads back as the same float32 (TF Serving's number format)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bundle import TensorSpec
from edge_agent.runtime.quant import dequantize
from edge_agent.serving.json_encode import NamedSpec, format_floats, tensor_json

specs = st.builds(lambda dtype, scale, zp: TensorSpec("out", (1, 10), dtype, scale, zp),
                  st.sampled_from(["int8", "uint8"]),
                  st.floats(2.0**-20, 8.0, allow_nan=False, allow_infinity=False, width=32),
                  st.integers(-128, 127))
FLOAT = NamedSpec("out", TensorSpec("out", (1, 10), "float32"))  # no lookup table


@settings(max_examples=200, deadline=None)
@given(spec=specs, rows=st.integers(1, 3), cols=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_quantized_outputs_encode_like_the_general_path(spec: TensorSpec, rows: int, cols: int,
                                                        seed: int) -> None:
    info = np.iinfo(np.dtype(spec.dtype))
    codes = np.random.default_rng(seed).integers(info.min, info.max + 1, (rows, cols))
    out = dequantize(codes.astype(spec.dtype), spec)
    ns = NamedSpec("out", spec)
    assert tensor_json(out, ns) == tensor_json(out, FLOAT)
    assert tensor_json(out[0], ns) == tensor_json(out[0], FLOAT)


@settings(max_examples=100, deadline=None)
@given(spec=specs, values=st.lists(st.floats(width=32), min_size=1, max_size=200))
def test_values_not_from_the_spec_fall_back_to_the_general_path(spec: TensorSpec,
                                                                values: list[float]) -> None:
    arr = np.asarray(values, dtype=np.float32)
    assert tensor_json(arr, NamedSpec("out", spec)) == tensor_json(arr, FLOAT)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                       min_size=1, max_size=50))
def test_every_number_reads_back_as_the_same_float32(values: list[float]) -> None:
    arr = np.asarray(values, dtype=np.float32)
    texts = format_floats(arr)
    back = np.asarray(json.loads("[" + ",".join(texts) + "]"), dtype=np.float32)
    assert np.array_equal(back, arr)
    assert all(("." in t or "e" in t) for t in texts)  # never a bare integer: a float
    # at most 9 significant digits (TF Serving's %.9g), not Python's 17 for the double
    assert all(len(t.lstrip("-").split("e")[0].replace(".", "").strip("0")) <= 9
               for t in texts)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(width=32), min_size=1, max_size=80))
def test_few_and_many_values_are_written_alike(values: list[float]) -> None:
    """format_floats loops in Python under 64 values and in numpy above: same text."""
    from edge_agent.serving.json_encode import _floats_few, _floats_many

    arr = np.asarray(values, dtype=np.float32)
    assert _floats_few(arr.tolist()) == _floats_many(arr)


def test_non_finite_values_use_tf_servings_tokens() -> None:
    spec = TensorSpec("out", (1, 64), "int8", 0.5, 0)
    arr = np.full(64, np.nan, dtype=np.float32)
    arr[1], arr[2] = np.inf, -np.inf
    text = tensor_json(arr, NamedSpec("out", spec))
    assert text.startswith("[NaN,Infinity,-Infinity,NaN")
    assert json.loads(text)[1] == float("inf")


def test_two_outputs_whose_short_names_collide_keep_both_keys() -> None:
    """Issue 12: ``StatefulPartitionedCall:0`` and ``:1`` collapsed onto one JSON key."""
    from edge_agent.serving.json_encode import Format, Layout, encode_predict, signature_keys

    specs = signature_keys([TensorSpec("StatefulPartitionedCall:0", (1, 2), "float32"),
                            TensorSpec("StatefulPartitionedCall:1", (1, 1), "float32")])
    assert [ns.name for ns in specs] == ["StatefulPartitionedCall:0",
                                         "StatefulPartitionedCall:1"]
    out = {specs[0].name: np.array([[0.25, 0.75]], np.float32),
           specs[1].name: np.array([[3.5]], np.float32)}
    body = json.loads(encode_predict(out, specs, Layout(Format.COLUMNAR)))
    assert body == {"outputs": {"StatefulPartitionedCall:0": [[0.25, 0.75]],
                                "StatefulPartitionedCall:1": [[3.5]]}}
    short = signature_keys([TensorSpec("serving_default_x:0", (1, 2), "float32"),
                            TensorSpec("serving_default_y:0", (1, 2), "float32")])
    assert [ns.name for ns in short] == ["x", "y"]
