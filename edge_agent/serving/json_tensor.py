"""TensorFlow Serving's predict request JSON → named numpy tensors (pure: no model, no IO).

Ports ``FillPredictRequestFromJson`` of ``tensorflow_serving/util/json_tensor.cc`` over an
ordered list of named input specs (:class:`~edge_agent.serving.json_encode.NamedSpec`),
with TF Serving's rules and error wording:

* ``signature_name`` must be a string naming the model's signature (``serving_default``);
* exactly one of ``instances`` (row format) and ``inputs`` (columnar format);
* row format: a non-empty list with one entry per instance — the value of the one input,
  or, for several inputs, an object with exactly one key per input name; every instance of
  an input has the same shape (``Expecting shape [2] but got: [1,2]``);
* columnar format: the whole tensor of the one input, or an object with every input name;
* a tensor is dense: every list at a level has the size of the first one there;
* ``DT_FLOAT`` takes JSON numbers (``NaN``, ``Infinity`` and ``-Infinity`` included) that fit
  a float32 without loss (integers up to 2^24 - 1); a raw ``DT_INT*`` tensor takes integers;
* ``{"b64": "…"}`` is a binary value: accepted where a binary input (an encoded image)
  takes one value per instance.

Then the model's own checks, ours: each input's shape is ``[batch, *spec.shape[1:]]``, or a
bare number per instance for a ``[batch, 1]`` or ``[batch]`` input; the batch is 1 to
``max_batch`` and the same for every input.

Raises :class:`~edge_agent.errors.InvalidRequestError` (400) for everything a client can get
wrong, :class:`~edge_agent.errors.ShapeMismatchError` for a shape the model does not take.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeAlias

import numpy as np

from edge_agent.errors import InvalidRequestError, ShapeMismatchError
from edge_agent.serving.json_encode import Format, Layout, NamedSpec

__all__ = ["DEFAULT_SIGNATURE", "Decoded", "Tensor", "ValueRefused",
           "check_predict_signature", "decode_b64", "decode_predict", "format_double", "is_b64",
           "json_text", "json_type", "signature_name"]

DEFAULT_SIGNATURE = "serving_default"
MAX_RANK = 16  # deeper nesting is refused before any recursion
_FLOAT_MAX_INT = (1 << 24) - 1  # largest integer a float32 holds exactly (TF's kMaxInt)
_FLOAT_MAX = float(np.finfo(np.float32).max)
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(1 << 15), (1 << 15) - 1),
              "int32": (-(1 << 31), (1 << 31) - 1)}

Tensor: TypeAlias = "np.ndarray | list[bytes]"  # numbers, or one binary value per instance


@dataclass(frozen=True)
class Decoded:
    """A decoded predict request: each input by signature key, and how it was written."""

    tensors: dict[str, Tensor]
    layout: Layout


class ValueRefused(InvalidRequestError):
    """A value TF Serving refuses (``InvalidArgument``); inside a request's tensor walk it is
    wrapped with where it was found (``Failed to process element: 2 …``)."""


# ----------------------------------------------------------------------------- helpers


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def json_text(v: Any, limit: int = 200) -> str:
    """``JsonValueToString``: a JSON value as compact one-line text, cut at ``limit``.

    Encoded lazily (``iterencode``), so quoting a multi-megabyte body costs ``limit``.
    """
    if isinstance(v, float):
        return format_double(v)
    chunks, size = [], 0
    try:
        for chunk in _ENCODER.iterencode(v):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    except (TypeError, ValueError, RecursionError):
        return repr(v)[:limit]
    text = "".join(chunks)
    return text if len(text) <= limit else text[:limit] + "…"


def format_double(v: float) -> str:
    """A JSON double as TF Serving prints one (``WriteDecimal<double>``)."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    t = f"{v:g}"
    if float(t) != v:
        t = f"{v:.17g}"
    return t if "." in t or "e" in t else t + ".0"


def json_type(v: Any) -> str:
    """rapidjson's type name of a parsed JSON value (``JsonTypeString``)."""
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    return "String" if isinstance(v, str) else "Number"


def is_b64(v: Any) -> bool:
    """``IsValBase64Object``: an object with exactly one key ``b64`` holding a string."""
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def decode_b64(v: dict[str, str]) -> bytes:
    try:
        return base64.b64decode(v["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueRefused("Unable to base64 decode") from e


def signature_name(doc: dict[str, Any]) -> str:
    """``FillSignature``: the request's ``signature_name`` ("" when absent).

    Raises InvalidRequestError when it is not a string.
    """
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} not formatted correctly. "
                                  "'signature_name' key must be a string value.")
    return sig


def check_predict_signature(sig: str) -> None:
    """The predict API's lookup (``GetInfoMap``): only ``serving_default`` exists here."""
    if sig not in ("", DEFAULT_SIGNATURE):
        raise InvalidRequestError(f'Serving signature name: "{sig}" not found in signature '
                                  "def")


# ----------------------------------------------------------------------------- one tensor


def _leaf(v: Any, ns: NamedSpec, out: list[Any]) -> None:
    """``AddValueToTensor``: one JSON value into a tensor of ``ns``'s type."""
    if ns.integer:
        lo, hi = _INT_RANGE[ns.spec.dtype]
        if type(v) is not int or not -(1 << 31) <= v < (1 << 31):
            raise ValueRefused(f"JSON Value: {json_text(v)} Type: {json_type(v)} is not of "
                               f"expected type: {ns.type_name}")
        if not lo <= v <= hi:
            raise ValueRefused(f"JSON Value: {v} is out of range for type: {ns.type_name} "
                               f"[{lo}, {hi}]")
        out.append(v)
        return
    if type(v) is int:
        if abs(v) > _FLOAT_MAX_INT:
            raise ValueRefused(f"Cannot convert JSON value: {v} to {ns.type_name} without "
                               "loss of precision.")
    elif type(v) is float:
        if v == v and abs(v) != float("inf") and abs(v) > _FLOAT_MAX:
            raise ValueRefused(f"Cannot convert JSON value: {format_double(v)} to "
                               f"{ns.type_name} without loss of precision.")
    else:
        hint = ""
        if is_b64(v):
            hint = (" (binary values are taken only as a whole instance of an image input)"
                    if not ns.binary else " (an encoded image stands for a whole instance)")
        raise ValueRefused(f"JSON Value: {json_text(v)} Type: {json_type(v)} is not of "
                           f"expected type: {ns.type_name}{hint}")
    out.append(v)


def _dense_shape(v: Any) -> list[int]:
    """``GetDenseTensorShape``: sizes of the first list at every level."""
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if len(shape) > MAX_RANK:
            raise ValueRefused(f"JSON Value nested more than {MAX_RANK} lists deep: a tensor "
                               f"has at most {MAX_RANK} dimensions")
        if not v:
            break
        v = v[0]
    return shape


def _fill(v: Any, level: int, shape: list[int], ns: NamedSpec, out: list[Any]) -> None:
    """``FillTensorProto``: every value at the leaf level, every list of its level's size."""
    rank = len(shape)
    if not isinstance(v, list):
        if level != rank:
            raise ValueRefused(f"JSON Value: {json_text(v)} found at incorrect level: "
                               f"{level + 1} in the JSON DOM. Expected at level: {rank}")
        _leaf(v, ns, out)
        return
    if level >= rank:
        raise ValueRefused(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(v) != shape[level]:
        raise ValueRefused(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                           f"expected size: {shape[level]}")
    for x in v:
        _fill(x, level + 1, shape, ns, out)


def _exact(value: Any, ns: NamedSpec) -> np.ndarray:
    """The exact (slow) walk: TF Serving's checks in TF Serving's order."""
    shape = _dense_shape(value)
    out: list[Any] = []
    _fill(value, 0, shape, ns, out)
    dtype = np.int64 if ns.integer else np.float32
    return np.asarray(out, dtype=dtype).reshape(shape)


def _tensor(value: Any, ns: NamedSpec, bools: bool = True) -> np.ndarray:
    """A JSON value → a dense array of ``ns``'s type, or raise ``ValueRefused``.

    Fast path: numpy builds the array and one pass over the leaves checks their JSON types
    (skipped when ``bools`` is False: the document holds no ``true``/``false``, the only
    values numpy would silently turn into numbers); anything unusual takes the exact walk,
    which finds TF Serving's error.
    """
    if isinstance(value, list):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            return _exact(value, ns)
        if arr.dtype.kind in "if" and arr.ndim <= MAX_RANK and _plain(value, arr, ns, bools):
            return arr.astype(np.int64 if ns.integer else np.float32)  # every value fits
    return _exact(value, ns)


def _plain(value: list[Any], arr: np.ndarray, ns: NamedSpec, bools: bool) -> bool:
    """Did numpy's array come from JSON values ``ns`` takes as they are?

    numpy turns ``true`` into 1 and a mix of ints and floats into floats. So the leaves'
    JSON types are checked in one pass when the document may hold booleans, and integer
    magnitudes always (an integer past 2^24 - 1 is lossy as a float32, as in TF Serving);
    False sends the value to the exact walk.
    """
    if not arr.size:
        return True
    if bools:
        leaves = value
        for _ in range(arr.ndim - 1):
            leaves = list(chain.from_iterable(leaves))
        if not set(map(type, leaves)) <= ({int} if ns.integer else {int, float}):
            return False
    if ns.integer:
        lo, hi = _INT_RANGE[ns.spec.dtype]
        return arr.dtype.kind == "i" and int(arr.min()) >= lo and int(arr.max()) <= hi
    if arr.dtype.kind == "i":
        return max(-int(arr.min()), int(arr.max())) <= _FLOAT_MAX_INT
    top = float(np.abs(arr).max())
    if top > _FLOAT_MAX_INT:  # a large integer, a large float, or an infinity: be exact
        return False
    if not top <= _FLOAT_MAX:  # NaN somewhere: look at the other values
        finite = np.abs(arr[np.isfinite(arr)])
        return not finite.size or float(finite.max()) <= _FLOAT_MAX_INT
    return True


def _item(value: Any, ns: NamedSpec) -> np.ndarray | bytes:
    """One instance's value (row format): a binary value, or a dense tensor."""
    if ns.binary and is_b64(value):
        return decode_b64(value)
    return _tensor(value, ns)


# ----------------------------------------------------------------------------- row format


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


class _Column:
    """The instances of one input, checked as ``AddInstanceItem`` checks them."""

    def __init__(self, ns: NamedSpec) -> None:
        self.ns = ns
        self.items: list[np.ndarray | bytes] = []

    def add(self, value: Any) -> None:
        item = _item(value, self.ns)
        if self.items:
            first = self.items[0]
            size, shape = _size_shape(first)
            got_size, got_shape = _size_shape(item)
            if isinstance(item, bytes) != isinstance(first, bytes):
                want = "string" if isinstance(first, bytes) else self.ns.type_name
                raise ValueRefused(f"JSON Value: {json_text(value)} Type: {json_type(value)} "
                                   f"is not of expected type: {want}")
            if got_size != size:
                raise ValueRefused(f"Expecting tensor size: {size} but got: {got_size}")
            if got_shape != shape:
                raise ValueRefused(f"Expecting shape {_shape_text(shape)} but got: "
                                   f"{_shape_text(got_shape)}")
        self.items.append(item)

    def tensor(self) -> Tensor:
        if isinstance(self.items[0], bytes):
            return [b for b in self.items if isinstance(b, bytes)]  # all are (add checks)
        return np.stack([np.asarray(a) for a in self.items])


def _size_shape(item: np.ndarray | bytes) -> tuple[int, tuple[int, ...]]:
    if isinstance(item, bytes):
        return 1, ()
    return int(item.size), tuple(item.shape)


def _rows_exact(items: list[Any], inputs: Sequence[NamedSpec]) -> dict[str, Tensor]:
    """``FillTensorMapFromInstancesList``, element by element (finds the first error)."""
    by_name = {ns.name: ns for ns in inputs}
    columns = {ns.name: _Column(ns) for ns in inputs}
    objects = isinstance(items[0], dict) and not is_b64(items[0])
    names = sorted(by_name)
    for i, elem in enumerate(items):
        if objects:
            if not isinstance(elem, dict) or is_b64(elem):
                raise InvalidRequestError(f"Expecting object but got list at item {i} of "
                                          "input list")
            for key, value in elem.items():
                if key not in by_name:
                    raise _wrap(i, key, f"JSON object: does not have named input: {key}")
                try:
                    columns[key].add(value)
                except ValueRefused as e:
                    raise _wrap(i, key, str(e)) from e
            if set(elem) != set(names):
                raise InvalidRequestError(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{json_text(elem)} keys must be equal to: {','.join(names)}")
        else:
            if isinstance(elem, dict) and not is_b64(elem):
                raise InvalidRequestError(f"Expecting value/list but got object at item {i} "
                                          "of input list")
            try:
                columns[inputs[0].name].add(elem)
            except ValueRefused as e:
                raise _wrap(i, None, str(e)) from e
    return {name: col.tensor() for name, col in columns.items()}


def _wrap(i: int, key: str | None, msg: str) -> InvalidRequestError:
    where = f" key: {key}" if key is not None else ""
    return InvalidRequestError(f"Failed to process element: {i}{where} of 'instances' list. "
                               f"Error: Invalid argument: {msg}")


def _rows(items: list[Any], inputs: Sequence[NamedSpec], bools: bool) -> dict[str, Tensor]:
    if (not isinstance(items[0], dict) or is_b64(items[0])) and len(inputs) > 1:
        raise InvalidRequestError(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map")
    if len(inputs) == 1 and not isinstance(items[0], dict):
        try:  # the common case in one numpy call: one input, numbers
            return {inputs[0].name: _tensor(items, inputs[0], bools)}
        except ValueRefused:
            pass  # the exact walk names the element, as TF Serving does
    return _rows_exact(items, inputs)


# ----------------------------------------------------------------------------- columnar


def _column(value: Any, ns: NamedSpec, bools: bool) -> Tensor:
    """One input's whole tensor in columnar format (batch included)."""
    if ns.binary and is_b64(value):
        return [decode_b64(value)]
    if ns.binary and isinstance(value, list) and value and all(map(is_b64, value)):
        return [decode_b64(v) for v in value]
    return _tensor(value, ns, bools)


def _columns(value: Any, inputs: Sequence[NamedSpec], bools: bool) -> dict[str, Tensor]:
    """``FillTensorMapFromInputsMap``. Keys that are no input name are ignored, as there.

    A value's error is TF Serving's, unwrapped (columnar errors name no element).
    """
    if not isinstance(value, dict) or is_b64(value):
        if len(inputs) > 1:
            raise InvalidRequestError(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map")
        return {inputs[0].name: _column(value, inputs[0], bools)}
    out = {}
    for ns in inputs:
        if ns.name not in value:
            raise InvalidRequestError(f"Missing named input: {ns.name} in 'inputs' object.")
        out[ns.name] = _column(value[ns.name], ns, bools)
    return out


# ----------------------------------------------------------------------------- the request


def decode_predict(doc: Any, inputs: Sequence[NamedSpec], *, max_batch: int,
                   bools: bool = True) -> Decoded:
    """A parsed predict body → each input's tensor, checked against its spec.

    Numbers come back as float32 (model units) or int64 (raw integer inputs) arrays of
    shape ``[batch, *spec.shape[1:]]``; a binary input may come back as one ``bytes`` per
    instance instead. ``bools=False`` says the document holds no JSON ``true``/``false``
    (its text has neither word), which saves a pass over every number.
    Raises InvalidRequestError / ShapeMismatchError.
    """
    if not inputs:
        raise InvalidRequestError("Failed to get input map for signature: DEFAULT")
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} Is not object")
    check_predict_signature(signature_name(doc))
    if "instances" in doc and "inputs" in doc:
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} Not formatted correctly "
                                  "expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in doc:
        items = doc["instances"]
        if not isinstance(items, list):
            raise InvalidRequestError(f"JSON Value: {json_text(doc)} Excepting 'instances' "
                                      "to be an list/array")
        if not items:
            raise InvalidRequestError(f"JSON Value: {json_text(doc)} No values in "
                                      "'instances' array")
        _check_batch(len(items), "instances", max_batch)
        fmt, tensors = Format.ROW, _rows(items, inputs, bools)
    elif "inputs" in doc:
        value = doc["inputs"]
        if isinstance(value, list):
            _check_batch(len(value), "inputs", max_batch)
        fmt, tensors = Format.COLUMNAR, _columns(value, inputs, bools)
    else:
        raise InvalidRequestError("Missing 'inputs' or 'instances' key")
    return _fit(tensors, inputs, fmt, max_batch)


def _check_batch(n: int, where: str, max_batch: int) -> None:
    if n > max_batch:
        raise InvalidRequestError(f'"{where}" has {n} instances, over the limit of '
                                  f"{max_batch} per request")


def _fit(tensors: dict[str, Tensor], inputs: Sequence[NamedSpec], fmt: Format,
         max_batch: int) -> Decoded:
    """The model's checks: shape ``[batch, …]`` per input, one batch size, within limits."""
    where = "instances" if fmt is Format.ROW else "inputs"
    out: dict[str, Tensor] = {}
    scalar = False
    batch: tuple[str, int] | None = None
    for ns in inputs:
        t = tensors[ns.name]
        if isinstance(t, list):
            n = len(t)
        else:
            want = tuple(ns.spec.shape[1:])
            if t.ndim == 1 and want == (1,):  # a bare number per instance
                t, scalar = t[:, None], True
            if t.ndim == 0 or tuple(t.shape[1:]) != want:
                raise ShapeMismatchError(
                    f"{where}: input {ns.name!r} expected shape [batch, "
                    f"{', '.join(map(str, want))}], got {list(t.shape)}",
                    shape=tuple(int(d) for d in t.shape))
            n = int(t.shape[0])
        if n == 0:
            raise InvalidRequestError(f'"{where}": input {ns.name!r} has no instances '
                                      "(batch size 0)")
        _check_batch(n, where, max_batch)
        if batch is not None and n != batch[1]:
            raise InvalidRequestError(f"Tensor name: {ns.name} has inconsistent batch size: "
                                      f"{n} expecting: {batch[1]}")
        batch = batch or (ns.name, n)
        out[ns.name] = t
    return Decoded(out, Layout(fmt, scalar))
