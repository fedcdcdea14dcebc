"""KServe v2 / Open Inference Protocol tensors ↔ numpy (pure: no sockets, no registry).

Implements the tensor rules of the Open Inference Protocol's HTTP/REST API
(kserve/open-inference-protocol ``specification/protocol/inference_rest.md``, sections
"Inference Request JSON Object", "Tensor Data" and "Tensor Data Types") and Triton's
binary tensor data extension (``docs/protocol/extension_binary_data.md``):

* a request is one JSON object (``id``, ``parameters``, ``inputs``, ``outputs``), optionally
  followed by binary tensor data; ``Inference-Header-Content-Length`` gives the JSON
  object's length, and each binary input's ``binary_data_size`` parameter its share of the
  bytes after it, in input order (:func:`split_body`, :func:`parse_infer`);
* ``data`` is row-major, flat or nested; its element count must be the shape's product;
* binary data is little-endian, row-major, without padding; BOOL is one byte (0 or 1), a
  BYTES element is a 4-byte little-endian length and then its bytes;
* which outputs are asked for, and whether as binary data (``binary_data`` per output,
  ``binary_data_output`` per request).

Writing the response is :mod:`edge_agent.serving.v2_encode`'s job; fitting a request to one
model's inputs :mod:`edge_agent.serving.v2_model`'s.

Everything a client can get wrong raises :class:`~edge_agent.errors.InvalidRequestError`
naming the tensor and the problem; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent import untrusted_json
from edge_agent.errors import InvalidRequestError

# "Tensor Data Types" (inference_rest.md): datatype → numpy dtype (little-endian on the wire)
DATATYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
UNSUPPORTED = {"BF16": "BF16 (bfloat16) tensors are not supported: numpy has no bfloat16; "
                       "send FP32"}
MAX_RANK = 16  # dimensions per tensor
MAX_DIM = 2**31 - 1  # per dimension; the element count is bounded by the body anyway
_HEADER_LENGTH = re.compile(r"[0-9]{1,18}")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class InputTensor:
    """One request input: its name, datatype and shape as sent, and its values.

    ``array`` has ``shape``; BYTES tensors are object arrays of ``bytes``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray


@dataclass(frozen=True)
class OutputRequest:
    """One requested output; ``binary`` None: as the request's ``binary_data_output`` says."""

    name: str
    binary: bool | None


@dataclass(frozen=True)
class InferRequest:
    """A parsed ``/infer`` request. ``outputs`` None: every output, in the model's order."""

    id: str | None
    inputs: list[InputTensor]
    outputs: list[OutputRequest] | None
    binary_output: bool


# ----------------------------------------------------------------------------- request

def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON inference header and the binary tensor data after it.

    Without ``Inference-Header-Content-Length`` the whole body is JSON. Raises
    InvalidRequestError for a header that is not a number or says more than the body has.
    """
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if _HEADER_LENGTH.fullmatch(text) is None:
        raise InvalidRequestError(f"Inference-Header-Content-Length must be a non-negative "
                                  f"integer, got {header_length[:40]!r}")
    n = int(text)
    if n > len(body):
        raise InvalidRequestError(f"Inference-Header-Content-Length {n} is beyond the body "
                                  f"of {len(body)} bytes")
    return body[:n], body[n:]


def parse_header(data: bytes) -> Any:
    """The JSON inference header. Raises InvalidRequestError naming the parse error."""
    return untrusted_json.loads(data, "inference request JSON")


def parse_infer(doc: Any, binary: bytes) -> InferRequest:
    """An inference request object (parsed) and its binary data → an :class:`InferRequest`.

    Checks what the protocol says of every input (name, known datatype, shape of
    non-negative integers, ``data`` or ``binary_data_size``, element count) and that the
    binary sizes add up to the bytes sent. Raises InvalidRequestError.
    """
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"inference request must be a JSON object, got "
                                  f"{_kind(doc)}")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidRequestError(f"'id' must be a string, got {_kind(rid)}")
    params = _parameters(doc.get("parameters"), "request")
    binary_output = _bool_param(params, "binary_data_output", "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        got = "an empty list" if raw_inputs == [] else _kind(raw_inputs)
        raise InvalidRequestError(f"'inputs' must be a non-empty list of input tensors, got "
                                  f"{got}")
    inputs: list[InputTensor] = []
    offset = 0
    seen: set[str] = set()
    for i, raw in enumerate(raw_inputs):
        tensor, used = _input(raw, i, binary, offset)
        if tensor.name in seen:
            raise InvalidRequestError(f"input {tensor.name!r} is given more than once")
        seen.add(tensor.name)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidRequestError(
            f"binary_data_size of the inputs adds up to {offset} bytes, but {len(binary)} "
            "bytes of binary data follow the JSON header (Inference-Header-Content-Length)")
    return InferRequest(rid, inputs, _outputs(doc.get("outputs")), bool(binary_output))


def _input(raw: Any, i: int, binary: bytes, offset: int) -> tuple[InputTensor, int]:
    """``inputs[i]`` → (the tensor, the binary bytes it took)."""
    where = f"inputs[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"{where} must be a JSON object, got {_kind(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"{where}: 'name' must be a non-empty string")
    where = f"input {name[:100]!r}"
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidRequestError(f"{where}: 'datatype' must be a string, got {_kind(datatype)}")
    dtype = datatype_dtype(datatype, where)
    shape = _shape(raw.get("shape"), where)
    params = _parameters(raw.get("parameters"), where)
    for key in params:
        if key.startswith("shared_memory"):
            raise InvalidRequestError(f"{where}: the shared memory extension is not supported "
                                      f"(parameter {key!r}); send data or binary data")
    size = params.get("binary_data_size")
    count = _count(shape)
    if size is None:
        if "data" not in raw:
            raise InvalidRequestError(f"{where}: has neither 'data' nor a binary_data_size "
                                      "parameter")
        return InputTensor(name, datatype, shape,
                           _from_json(raw["data"], dtype, datatype, shape, count, where)), 0
    if "data" in raw:
        raise InvalidRequestError(f"{where}: has both 'data' and binary_data_size; send one")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidRequestError(f"{where}: binary_data_size must be a non-negative integer, "
                                  f"got {json.dumps(size)[:40]}")
    if offset + size > len(binary):
        raise InvalidRequestError(
            f"{where}: binary_data_size {size} is beyond the binary data (bytes {offset}.."
            f"{offset + size} of {len(binary)} after the JSON header)")
    chunk = binary[offset:offset + size]
    return InputTensor(name, datatype, shape,
                       _from_binary(chunk, dtype, datatype, shape, count, where)), size


def datatype_dtype(datatype: str, where: str) -> np.dtype[Any]:
    """A v2 datatype's numpy dtype. Raises InvalidRequestError for an unknown one."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        why = UNSUPPORTED.get(datatype)
        if why is not None:
            raise InvalidRequestError(f"{where}: {why}")
        raise InvalidRequestError(f"{where}: unknown datatype {datatype[:40]!r} (expected one "
                                  f"of {', '.join(DATATYPES)})")
    return dtype


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise InvalidRequestError(f"{where}: 'shape' must be a list of integers, got "
                                  f"{_kind(raw)}")
    if len(raw) > MAX_RANK:
        raise InvalidRequestError(f"{where}: shape has {len(raw)} dimensions, over the limit "
                                  f"of {MAX_RANK}")
    for d in raw:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= MAX_DIM:
            raise InvalidRequestError(f"{where}: shape {json.dumps(raw)[:100]} must hold "
                                      f"integers from 0 to {MAX_DIM}")
    return tuple(raw)


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _from_json(data: Any, dtype: np.dtype[Any], datatype: str, shape: tuple[int, ...],
               count: int, where: str) -> np.ndarray:
    """``data`` (row-major, flat or nested) → an array of ``shape``."""
    if not isinstance(data, list):
        raise InvalidRequestError(f"{where}: 'data' must be a list, got {_kind(data)}")
    depth, first = 1, data
    while first and isinstance(first[0], list):  # numpy refuses past 64 levels, unclearly
        depth, first = depth + 1, first[0]
        if depth > MAX_RANK:
            raise InvalidRequestError(f"{where}: 'data' nests lists more than {MAX_RANK} "
                                      "deep")
    try:
        got = np.asarray(data, dtype=object if datatype == "BYTES" else None)
    except ValueError as e:  # ragged, or deeper further in than the first elements
        raise InvalidRequestError(f"{where}: 'data' nests lists of different lengths or "
                                  f"more than {MAX_RANK} deep") from e
    if got.size != count:
        raise InvalidRequestError(f"{where}: 'data' has {got.size} elements, shape "
                                  f"{list(shape)} needs {count}")
    flat = got.reshape(-1)
    if datatype == "BYTES":
        return _bytes_json(flat, where).reshape(shape)
    kind = flat.dtype.kind
    if datatype == "BOOL":
        if count and kind != "b":
            raise InvalidRequestError(f"{where}: BOOL data must be true/false")
        return flat.astype(np.bool_).reshape(shape)
    floating = dtype.kind == "f"
    allowed = (int, float) if floating else (int,)
    leaves = data if got.ndim == 1 else got.astype(object).reshape(-1).tolist()
    odd = [t for t in set(map(type, leaves)) if t not in allowed]
    if odd:
        what = "numbers" if floating else "integers"
        raise InvalidRequestError(f"{where}: {datatype} data must be JSON {what}, got "
                                  f"{_sample(leaves, allowed)}")
    if kind not in "iuf":  # integers past 64 bits: numpy kept them as Python ints
        raise InvalidRequestError(f"{where}: a value is out of {datatype}'s range")
    if floating:
        with np.errstate(over="ignore"):
            out = flat.astype(dtype)
        if not np.isfinite(out).all() and np.isfinite(flat.astype(np.float64)).all():
            raise InvalidRequestError(f"{where}: a value is out of {datatype}'s range")
        return out.reshape(shape)
    info = np.iinfo(dtype)
    if count and (int(flat.min()) < info.min or int(flat.max()) > info.max):
        raise InvalidRequestError(f"{where}: a value is out of {datatype}'s range "
                                  f"[{info.min}, {info.max}]")
    return flat.astype(dtype).reshape(shape)


def _bytes_json(flat: np.ndarray, where: str) -> np.ndarray:
    out = np.empty(flat.size, dtype=object)
    for i, v in enumerate(flat.tolist()):
        if not isinstance(v, str):
            raise InvalidRequestError(f"{where}: BYTES data must be strings, got {_kind(v)}")
        out[i] = v.encode("utf-8")
    return out


def _from_binary(chunk: bytes, dtype: np.dtype[Any], datatype: str, shape: tuple[int, ...],
                 count: int, where: str) -> np.ndarray:
    """``binary_data_size`` bytes → an array of ``shape`` (a copy: native byte order)."""
    if datatype == "BYTES":
        return _bytes_binary(chunk, count, where).reshape(shape)
    need = count * dtype.itemsize
    if len(chunk) != need:
        raise InvalidRequestError(f"{where}: binary_data_size is {len(chunk)} bytes, shape "
                                  f"{list(shape)} of {datatype} needs {need}")
    if datatype == "BOOL":
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            raise InvalidRequestError(f"{where}: BOOL binary data must be bytes 0 or 1")
        return raw.astype(np.bool_).reshape(shape)
    return np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))\
        .reshape(shape)


def _bytes_binary(chunk: bytes, count: int, where: str) -> np.ndarray:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    if count * 4 > len(chunk):
        raise InvalidRequestError(f"{where}: {count} BYTES elements need at least "
                                  f"{count * 4} bytes, binary_data_size is {len(chunk)}")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(chunk):
            raise InvalidRequestError(f"{where}: BYTES element {i} has no length "
                                      "(binary data ends)")
        (n,) = _U32.unpack_from(chunk, pos)
        pos += 4
        if pos + n > len(chunk):
            raise InvalidRequestError(f"{where}: BYTES element {i} says {n} bytes, only "
                                      f"{len(chunk) - pos} remain")
        out[i] = chunk[pos:pos + n]
        pos += n
    if pos != len(chunk):
        raise InvalidRequestError(f"{where}: {len(chunk) - pos} bytes left over after "
                                  f"{count} BYTES elements")
    return out


def _outputs(raw: Any) -> list[OutputRequest] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequestError(f"'outputs' must be a list, got {_kind(raw)}")
    out: list[OutputRequest] = []
    for i, o in enumerate(raw):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidRequestError(f"outputs[{i}] must be an object with a string 'name'")
        name = o["name"]
        params = _parameters(o.get("parameters"), f"output {name[:100]!r}")
        for key in params:
            if key.startswith("shared_memory") or key == "classification":
                ext = "classification" if key == "classification" else "shared memory"
                raise InvalidRequestError(f"output {name[:100]!r}: the {ext} extension is not "
                                          f"supported (parameter {key!r})")
        if any(r.name == name for r in out):
            raise InvalidRequestError(f"output {name[:100]!r} is requested more than once")
        out.append(OutputRequest(name, _bool_param(params, "binary_data",
                                                    f"output {name[:100]!r}")))
    return out


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    """A ``parameters`` object (``$parameters``: string keys, scalar values)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"{where}: 'parameters' must be an object, got {_kind(raw)}")
    for k, v in raw.items():
        if not isinstance(v, (str, int, float, bool)):
            raise InvalidRequestError(f"{where}: parameter {k[:100]!r} must be a string, "
                                      f"number or boolean, got {_kind(v)}")
    return raw


def _bool_param(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    v = params.get(key)
    if v is not None and not isinstance(v, bool):
        raise InvalidRequestError(f"{where}: parameter {key!r} must be a boolean, got "
                                  f"{json.dumps(v)[:40]}")
    return v


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _sample(leaves: list[Any], allowed: tuple[type, ...]) -> str:
    """The first value not of an ``allowed`` type, as JSON text."""
    for v in leaves:
        if type(v) not in allowed:
            return json.dumps(v)[:40]
    return "?"
