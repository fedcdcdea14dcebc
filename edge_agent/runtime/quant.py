"""Quantize / dequantize between float model units and a tensor's integer units.

:class:`TensorCodec` holds one tensor's parameters, computed once (dtype, shape, scale,
zero point, integer range), so the per-call work is only the arithmetic; the module
functions are the same operations for a spec at hand (one code path: they build a codec).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError, ShapeMismatchError

_INFO: dict[str, np.iinfo[Any]] = {
    "int8": np.iinfo(np.int8), "uint8": np.iinfo(np.uint8), "int16": np.iinfo(np.int16)}


class TensorCodec:
    """One tensor's quantization parameters, precomputed (immutable after construction)."""

    __slots__ = ("dtype", "hi", "lo", "ndim", "quantized", "scale", "spec", "tail",
                 "zero_point")

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.tail = tuple(spec.shape[1:])
        self.ndim = len(spec.shape)
        self.quantized = spec.quantized
        self.scale = np.float32(spec.scale)
        self.zero_point = spec.zero_point
        info = _INFO.get(spec.dtype)
        self.lo, self.hi = (info.min, info.max) if info is not None else (0, 0)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float values → the tensor's dtype (round-half-to-even, saturating)."""
        if not self.quantized:
            return np.asarray(x, dtype=self.dtype)
        q = np.asarray(x, dtype=np.float32) / self.scale
        np.round(q, out=q)
        q += self.zero_point
        np.clip(q, self.lo, self.hi, out=q)
        return q.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """The tensor's values → float32 model units (a new array)."""
        if not self.quantized:
            return np.asarray(q, dtype=np.float32)
        out = q.astype(np.float32)
        out -= self.zero_point
        out *= self.scale
        return out

    def coerce(self, x: np.ndarray) -> np.ndarray:
        """Accept float model-unit input or raw tensor-dtype input; return tensor dtype.

        Integer arrays already in the tensor's dtype pass through (no copy); float arrays
        are quantized. Raises InvalidRequestError on a shape mismatch (batch dimension
        excluded) or a NaN/infinity.
        """
        arr = x if type(x) is np.ndarray else np.asarray(x)
        if arr.dtype == self.dtype and arr.shape[1:] == self.tail and arr.ndim == self.ndim:
            if arr.dtype.kind != "f":
                return arr  # the common case: already the tensor's own type and shape
        elif arr.ndim == self.ndim - 1:
            arr = arr[None, ...]
        if arr.shape[1:] != self.tail:
            raise ShapeMismatchError(
                f"input {self.spec.name!r}: expected shape [batch, "
                f"{', '.join(map(str, self.tail))}], got {list(arr.shape)}",
                shape=tuple(int(d) for d in arr.shape))
        kind = arr.dtype.kind
        if kind == "f":
            if not np.isfinite(arr).all():
                raise InvalidRequestError(f"input {self.spec.name!r}: contains NaN or infinity")
            return self.quantize(arr)
        if kind in "iub":
            if arr.dtype == self.dtype:
                return arr  # every value of the tensor's own type is in range, no copy
            if self.quantized and arr.size and (arr.min() < self.lo or arr.max() > self.hi):
                # integers outside the raw range are model-unit values, not tensor values
                return self.quantize(arr.astype(np.float32))
            return arr.astype(self.dtype)
        raise InvalidRequestError(
            f"input {self.spec.name!r}: expected numbers, got array of dtype {arr.dtype}")


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values → the tensor's dtype (round-half-to-even, saturating)."""
    return TensorCodec(spec).quantize(x)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The tensor's values → float32 model units."""
    return TensorCodec(spec).dequantize(q)


def coerce_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float model-unit or raw tensor-dtype input → the tensor's dtype (see
    :meth:`TensorCodec.coerce`). Raises InvalidRequestError."""
    return TensorCodec(spec).coerce(x)
