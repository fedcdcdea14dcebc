"""Tensors on the wire ↔ numpy (pure: no gRPC, no model).

Two encodings, each with its own datatype table kept here:

* TF Serving's ``tensorflow.TensorProto``: ``tensor_content`` (raw little-endian bytes, the
  fast path: one ``np.frombuffer``, no per-element work) or the typed ``*_val`` fields
  (``float_val`` …; one value fills the whole shape, as in TensorFlow), ``string_val`` for
  encoded images.
* KServe v2 (Open Inference Protocol) tensors: a datatype name (``FP32``, ``UINT8`` …), a
  shape, and either typed ``contents`` or one ``raw_input_contents`` entry.

Every check a client can fail raises InvalidRequestError naming the tensor and what was
wrong: a dtype we do not take, a shape that is not a list of sizes, a byte length that is
not dtype × shape, a count of typed values that does not match the shape, or more elements
than ``max_elements``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.grpc.protos import tensor_pb2, types_pb2
from edge_agent.serving.v2_tensor import DATATYPES

MAX_RANK = 8


@dataclass(frozen=True)
class TfDtype:
    """One TensorFlow ``DataType`` we take or give: its numpy dtype and typed field."""

    enum: int
    numpy: np.dtype[Any]
    field: str  # the TensorProto field holding typed values


def _tf(name: str, numpy: str, fld: str) -> TfDtype:
    return TfDtype(types_pb2.DataType.Value(name), np.dtype(numpy), fld)


TF_DTYPES: dict[int, TfDtype] = {d.enum: d for d in (
    _tf("DT_FLOAT", "<f4", "float_val"), _tf("DT_DOUBLE", "<f8", "double_val"),
    _tf("DT_HALF", "<f2", "half_val"),
    _tf("DT_INT8", "i1", "int_val"), _tf("DT_UINT8", "u1", "int_val"),
    _tf("DT_INT16", "<i2", "int_val"), _tf("DT_UINT16", "<u2", "int_val"),
    _tf("DT_INT32", "<i4", "int_val"), _tf("DT_INT64", "<i8", "int64_val"),
    _tf("DT_UINT32", "<u4", "uint32_val"), _tf("DT_UINT64", "<u8", "uint64_val"),
    _tf("DT_BOOL", "?", "bool_val"),
)}
_TF_BY_NUMPY = {d.numpy.newbyteorder("="): d for d in TF_DTYPES.values()}
DT_STRING = types_pb2.DataType.Value("DT_STRING")


def tf_dtype_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DataType {enum}"


def _shape(dims: Sequence[int], where: str, max_elements: int) -> tuple[tuple[int, ...], int]:
    if len(dims) > MAX_RANK:
        raise InvalidRequestError(f"{where}: rank {len(dims)} is over the limit of {MAX_RANK}")
    if any(d < 0 for d in dims):
        raise InvalidRequestError(f"{where}: shape {list(dims)} has a negative size; every "
                                  "dimension must be known")
    n = 1
    for d in dims:
        n *= d
        if n > max_elements:
            raise InvalidRequestError(f"{where}: shape {list(dims)} is over the limit of "
                                      f"{max_elements} elements")
    return tuple(dims), n


def _typed(values: Sequence[Any], dt: np.dtype[Any], shape: tuple[int, ...], n: int,
           where: str, field: str) -> np.ndarray:
    if len(values) == n:
        return np.asarray(values, dtype=dt).reshape(shape)
    if len(values) == 1 and n > 0:  # TensorFlow's rule: one value fills the shape
        return np.full(shape, values[0], dtype=dt)
    raise InvalidRequestError(f"{where}: {len(values)} values in {field} do not fill shape "
                              f"{list(shape)} ({n} elements)")


def _raw(content: bytes, dt: np.dtype[Any], shape: tuple[int, ...], n: int,
         where: str, what: str) -> np.ndarray:
    if len(content) != n * dt.itemsize:
        raise InvalidRequestError(
            f"{where}: {what} has {len(content)} bytes; shape {list(shape)} of "
            f"{dt.name} needs {n} × {dt.itemsize} = {n * dt.itemsize}")
    return np.frombuffer(content, dtype=dt).reshape(shape)


def from_tensor_proto(t: tensor_pb2.TensorProto, where: str, *,
                      max_elements: int) -> np.ndarray | list[bytes]:
    """A TensorProto → an array (numbers) or a flat list of byte strings (``DT_STRING``)."""
    if t.tensor_shape.unknown_rank:
        raise InvalidRequestError(f"{where}: tensor_shape has unknown_rank; send its shape")
    shape, n = _shape([d.size for d in t.tensor_shape.dim], where, max_elements)
    if t.dtype == DT_STRING:
        vals = list(t.string_val)
        if len(vals) != n:
            raise InvalidRequestError(f"{where}: {len(vals)} values in string_val do not "
                                      f"fill shape {list(shape)} ({n} elements)")
        return vals
    dt = TF_DTYPES.get(t.dtype)
    if dt is None:
        raise InvalidRequestError(
            f"{where}: dtype {tf_dtype_name(t.dtype)} is not supported (send "
            f"{', '.join(tf_dtype_name(d) for d in TF_DTYPES)} or DT_STRING images)")
    if t.tensor_content:
        return _raw(t.tensor_content, dt.numpy, shape, n, where, "tensor_content")
    if dt.field == "half_val":  # float16 bit patterns carried in int32s
        bits = _typed(t.half_val, np.dtype("<u2"), shape, n, where, "half_val")
        return bits.view("<f2")
    return _typed(getattr(t, dt.field), dt.numpy, shape, n, where, dt.field)


def to_tensor_proto(arr: np.ndarray, out: tensor_pb2.TensorProto) -> None:
    """Fill ``out`` from ``arr`` as ``tensor_content`` (TF Serving's own reply format)."""
    a = np.ascontiguousarray(arr)
    dt = _TF_BY_NUMPY.get(a.dtype.newbyteorder("="))
    if dt is None:
        raise InvalidRequestError(f"output dtype {a.dtype} has no TensorFlow DataType")
    out.dtype = dt.enum  # type: ignore[assignment]  # the stubs type enums as NewType
    for d in a.shape:
        out.tensor_shape.dim.add().size = int(d)
    out.tensor_content = a.astype(dt.numpy, copy=False).tobytes()


# ---------------------------------------------------------------------------- KServe v2


@dataclass(frozen=True)
class V2Dtype:
    """One Open Inference Protocol datatype: its numpy dtype and ``contents`` field."""

    name: str
    numpy: np.dtype[Any]
    field: str | None  # InferTensorContents field; None: raw only (FP16)


_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents"}  # FP16: raw only
# The numpy dtypes are the REST codec's (one table for both transports); BYTES is separate.
V2_DTYPES: dict[str, V2Dtype] = {name: V2Dtype(name, dt, _CONTENTS.get(name))
                                 for name, dt in DATATYPES.items() if name != "BYTES"}
_V2_BY_NUMPY = {d.numpy.newbyteorder("="): d for d in V2_DTYPES.values()}


def v2_dtype(a: np.dtype[Any]) -> V2Dtype:
    d = _V2_BY_NUMPY.get(np.dtype(a).newbyteorder("="))
    if d is None:
        raise InvalidRequestError(f"dtype {a} has no Open Inference Protocol datatype")
    return d


def from_v2(datatype: str, dims: Sequence[int], contents: Any, raw: bytes | None,
            where: str, *, max_elements: int) -> np.ndarray | list[bytes]:
    """A v2 input (typed ``contents`` or its ``raw`` bytes) → an array, or byte strings
    for ``BYTES`` (encoded images)."""
    shape, n = _shape(list(dims), where, max_elements)
    if datatype == "BYTES":
        if raw is not None:
            return _split_v2_bytes(raw, n, where)
        vals = list(contents.bytes_contents)
        if len(vals) != n:
            raise InvalidRequestError(f"{where}: {len(vals)} bytes_contents do not fill "
                                      f"shape {list(shape)} ({n} elements)")
        return vals
    dt = V2_DTYPES.get(datatype)
    if dt is None:
        raise InvalidRequestError(f"{where}: datatype {datatype[:40]!r} is not one of "
                                  f"{', '.join(V2_DTYPES)}, BYTES")
    if raw is not None:
        return _raw(raw, dt.numpy, shape, n, where, "raw_input_contents")
    if dt.field is None:
        raise InvalidRequestError(f"{where}: {datatype} has no typed contents; send it in "
                                  "raw_input_contents")
    return _typed(getattr(contents, dt.field), dt.numpy, shape, n, where, dt.field)


def _split_v2_bytes(raw: bytes, n: int, where: str) -> list[bytes]:
    """``BYTES`` raw contents: each element a 4-byte little-endian length, then its bytes."""
    out: list[bytes] = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw) or len(out) >= n:
            raise InvalidRequestError(f"{where}: raw BYTES contents are not {n} "
                                      "length-prefixed elements")
        size = int.from_bytes(raw[i:i + 4], "little")
        if i + 4 + size > len(raw):
            raise InvalidRequestError(f"{where}: raw BYTES element {len(out)} claims {size} "
                                      f"bytes, {len(raw) - i - 4} left")
        out.append(raw[i + 4:i + 4 + size])
        i += 4 + size
    if len(out) != n:
        raise InvalidRequestError(f"{where}: {len(out)} raw BYTES elements, shape needs {n}")
    return out
