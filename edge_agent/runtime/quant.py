"""Quantize / dequantize between float model units and a tensor's integer units."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError, ShapeMismatchError

_INFO: dict[str, np.iinfo[Any]] = {
    "int8": np.iinfo(np.int8), "uint8": np.iinfo(np.uint8), "int16": np.iinfo(np.int16)}


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values → the tensor's dtype (round-half-to-even, saturating)."""
    dtype = np.dtype(spec.dtype)
    if not spec.quantized:
        return np.asarray(x, dtype=dtype)
    info = _INFO[spec.dtype]
    q = np.round(np.asarray(x, dtype=np.float32) / spec.scale) + spec.zero_point
    return np.asarray(np.clip(q, info.min, info.max), dtype=dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The tensor's values → float32 model units."""
    if not spec.quantized:
        return np.asarray(q, dtype=np.float32)
    return (q.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)


def coerce_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Accept float model-unit input or raw tensor-dtype input; return tensor dtype.

    Integer arrays already in the tensor's dtype pass through; float arrays are quantized.
    Raises InvalidRequestError on a shape mismatch (batch dimension excluded).
    """
    arr = np.asarray(x)
    want = tuple(spec.shape[1:])
    if arr.ndim == len(spec.shape) - 1:
        arr = arr[None, ...]
    if tuple(arr.shape[1:]) != want:
        raise ShapeMismatchError(
            f"input {spec.name!r}: expected shape [batch, {', '.join(map(str, want))}], "
            f"got {list(arr.shape)}", shape=tuple(int(d) for d in arr.shape))
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InvalidRequestError(f"input {spec.name!r}: contains NaN or infinity")
        return quantize(arr, spec)
    if arr.dtype.kind in "iub":
        if arr.dtype == np.dtype(spec.dtype):
            return arr  # already the tensor's own type: every value is in range, no copy
        if spec.quantized:
            info = _INFO[spec.dtype]
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                # integers outside the raw range are model-unit values, not tensor values
                return quantize(arr.astype(np.float32), spec)
            return arr.astype(np.dtype(spec.dtype))
        return arr.astype(np.dtype(spec.dtype))
    raise InvalidRequestError(
        f"input {spec.name!r}: expected numbers, got array of dtype {arr.dtype}")
