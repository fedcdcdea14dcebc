"""Output tensors → TensorFlow Serving's JSON text (pure: no sockets, no model).

Implements ``MakeJsonFromTensors`` of ``tensorflow_serving/util/json_tensor.cc``:

* row format → ``{"predictions": [...]}``: one value per instance for a single output; one
  object per instance, keyed by output name, for several (all outputs must share the batch
  size, else ``Tensor name: y has inconsistent batch size: 1 expecting: 2``);
* columnar format → ``{"outputs": ...}``: the whole tensor for a single output; an object
  keyed by output name for several.

Numbers are written the way TF Serving writes them (``WriteDecimal<float>``): ``%g`` (six
significant digits) when that reads back as the same float32, else ``%.9g``; a ``.0`` is
added to a number that has neither a ``.`` nor an exponent; ``NaN``, ``Infinity`` and
``-Infinity`` are written as those tokens. A raw (unquantized) integer tensor is written as
integers. So float32 ``0.2`` is ``0.2``, not ``0.20000000298023224``.

Why its own module, and a lookup table: formatting is most of a REST request's Python time
(0.5-1 µs per number). A dequantized int8/uint8 output takes one of 256 values, so their
texts are formatted once per (dtype, scale, zero point) and looked up.

Raises :class:`~edge_agent.errors.InvalidRequestError` when outputs cannot be written in the
requested format (inconsistent batch sizes in row format).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError
from edge_agent.runtime.quant import dequantize

__all__ = ["Format", "Layout", "NamedSpec", "encode_predict", "format_float32",
           "format_floats", "signature_keys", "tensor_json"]

_INT_DTYPES = ("int8", "uint8", "int16", "int32")


class Format(str, Enum):
    """Which of TF Serving's two request formats a predict request used."""

    ROW = "row"  # "instances" → "predictions"
    COLUMNAR = "columnar"  # "inputs" → "outputs"

    @property
    def response_key(self) -> str:
        return "predictions" if self is Format.ROW else "outputs"


@dataclass(frozen=True)
class Layout:
    """How a request was written, so the answer is written the same way.

    ``scalar``: every instance of a ``[batch, 1]`` input came as a bare number
    (``{"instances": [1.0, 2.0]}``), so ``[batch, 1]`` outputs are answered as bare numbers
    too (``{"predictions": [2.5, 3.0]}``), as TF Serving answers for a rank-1 model.
    """

    fmt: Format = Format.ROW
    scalar: bool = False


@dataclass(frozen=True)
class NamedSpec:
    """One signature tensor: the key clients use (``name``) and the tensor behind it.

    ``binary``: the input also takes one binary value (``{"b64": ...}``, an encoded image)
    in place of each instance's numbers; ``images``, for the others, says where images
    go instead (error messages).
    """

    name: str
    spec: TensorSpec
    binary: bool = False
    images: str = field(default="", compare=False)
    # a raw integer tensor: JSON integers in, integers out (``DT_INT32`` …)
    integer: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        integer = not self.spec.quantized and self.spec.dtype in _INT_DTYPES
        object.__setattr__(self, "integer", integer)

    @property
    def dtype(self) -> str:
        """The TF ``DataType`` clients see: model units are floats (``DT_FLOAT``)."""
        if self.integer:
            return f"DT_{self.spec.dtype.upper()}"
        return "DT_HALF" if self.spec.dtype == "float16" else "DT_FLOAT"

    @property
    def type_name(self) -> str:
        """``DataTypeString`` of :attr:`dtype` (``float``, ``int32``), for error messages."""
        return {"DT_FLOAT": "float", "DT_HALF": "half"}.get(self.dtype, self.spec.dtype)


def signature_keys(specs: Sequence[TensorSpec], *, image: str | None = None,
                   images: str = "") -> list[NamedSpec]:
    """The signature's keys for ``specs``: ``serving_default_x:0`` → ``x``; the input
    named ``image`` (the one images feed, ``Manifest.image_input``) is ``binary``, the
    others carry ``images`` (where images go instead, for error messages).

    Two tensors whose short names collide (``StatefulPartitionedCall:0`` and ``:1``) keep
    their full tensor names, so no output is ever dropped by a shared JSON key.
    """
    short = [_alias(s.name) for s in specs]
    unique = len(set(short)) == len(short)
    return [NamedSpec(k if unique else s.name, s, binary=image is not None and s.name == image,
                      images="" if image is not None and s.name == image else images)
            for k, s in zip(short, specs, strict=True)]


def _alias(tensor_name: str) -> str:
    n = tensor_name.rsplit(":", 1)[0] if tensor_name.rpartition(":")[2].isdigit() else \
        tensor_name
    return n[len("serving_default_"):] if n.startswith("serving_default_") else n


# ----------------------------------------------------------------------------- numbers

_TOKENS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def format_float32(v: float) -> str:
    """One float32 value as TF Serving writes it (``WriteDecimal<float>``)."""
    return format_floats(np.asarray([v], dtype=np.float32))[0]


def format_floats(flat: np.ndarray) -> list[str]:
    """A 1-D float32 array → TF Serving's text for each value (see the module docstring)."""
    return _floats_few(flat.tolist()) if flat.size < _SMALL else _floats_many(flat)


_F32 = struct.Struct("<f")


def _floats_few(values: list[float]) -> list[str]:
    """:func:`format_floats` one value at a time (numpy's per-call cost exceeds it here)."""
    out = []
    pack, unpack = _F32.pack, _F32.unpack
    for v in values:
        t = f"{v:g}"
        token = _TOKENS.get(t)
        if token is not None:
            out.append(token)
            continue
        if unpack(pack(float(t)))[0] != v:
            t = f"{v:.9g}"
        out.append(t if "." in t or "e" in t else t + ".0")
    return out


def _floats_many(flat: np.ndarray) -> list[str]:
    """:func:`format_floats` with the round-trip and whole-number checks in numpy."""
    values = flat.tolist()
    text = list(map("{:g}".format, values))
    finite = np.isfinite(flat)
    with np.errstate(invalid="ignore"):
        back = np.array(list(map(float, text)), dtype=np.float64).astype(np.float32)
        redo = np.nonzero((back != flat) & finite)[0]
    for i in redo.tolist():
        text[i] = f"{values[i]:.9g}"
    whole = np.nonzero(finite & (flat == np.trunc(flat)))[0]
    for i in whole.tolist():
        t = text[i]
        if "." not in t and "e" not in t:
            text[i] = t + ".0"
    if not finite.all():
        for i in np.nonzero(~finite)[0].tolist():
            text[i] = _TOKENS[text[i]]
    return text


_LUTS: dict[tuple[str, float, int], tuple[int, np.ndarray, list[str]]] = {}
_TEXT_OF: dict[tuple[str, float, int], dict[float, str]] = {}
_SMALL = 64  # values; fewer are looked up one by one (numpy's per-call cost is higher)


def _lut(spec: TensorSpec) -> tuple[int, np.ndarray, list[str]]:
    """Every value an int8/uint8 output dequantizes to, and its text (cached per spec)."""
    key = (spec.dtype, spec.scale, spec.zero_point)
    hit = _LUTS.get(key)
    if hit is None:
        info = np.iinfo(np.dtype(spec.dtype))
        values = dequantize(np.arange(info.min, info.max + 1).astype(spec.dtype), spec)
        hit = (int(info.min), values, format_floats(values))
        _LUTS[key] = hit
    return hit


def _text_of(spec: TensorSpec) -> dict[float, str]:
    """:func:`_lut` as value → text, for small outputs (cached per spec)."""
    key = (spec.dtype, spec.scale, spec.zero_point)
    hit = _TEXT_OF.get(key)
    if hit is None:
        _, values, text = _lut(spec)
        hit = dict(zip(values.tolist(), text, strict=True))
        _TEXT_OF[key] = hit
    return hit


def _small(flat: np.ndarray, spec: TensorSpec) -> list[str] | None:
    """The texts of a few values by dict lookup, or None if one is not this spec's."""
    table = _text_of(spec)
    values = flat.tolist()
    try:
        out = [table[v] for v in values]
    except KeyError:
        return None
    if 0.0 in table and any(v == 0.0 and math.copysign(1.0, v) < 0 for v in values):
        return None  # -0.0 looks up as 0.0
    return out


def _texts(a: np.ndarray, ns: NamedSpec | None) -> list[str]:
    """The text of every value of ``a``, in C order."""
    flat = a.reshape(-1)
    spec = ns.spec if ns is not None else None
    if ns is not None and ns.integer:
        return list(map(str, np.rint(flat).astype(np.int64).tolist()))
    flat = flat.astype(np.float32, copy=False)
    lut = spec is not None and spec.quantized and spec.dtype in ("int8", "uint8")
    if lut and spec is not None and flat.size < _SMALL:
        found = _small(flat, spec)
        if found is not None:
            return found
    elif lut and spec is not None and flat.size and np.isfinite(flat).all():
        lo, values, text = _lut(spec)
        pos = np.rint(flat.astype(np.float64) / spec.scale + (spec.zero_point - lo))
        if pos.min() >= 0 and pos.max() < len(values):
            idx = pos.astype(np.int64)
            # bit for bit (-0.0 is not 0.0); else these are not this spec's values
            if np.array_equal(values[idx].view(np.int32), flat.view(np.int32)):
                return [text[i] for i in idx.tolist()]
    return format_floats(flat)


def _nest(items: list[str], shape: tuple[int, ...]) -> list[str]:
    """Flat texts → the texts of the sub-arrays along the first axis of ``shape``."""
    for n in reversed(shape[1:]):
        items = ["[" + ",".join(items[i:i + n]) + "]" for i in range(0, len(items), n)]
    return items


def _empty(shape: tuple[int, ...]) -> str:
    """The text of an array of ``shape`` that holds no value (some dimension is 0)."""
    if shape[0] == 0:
        return "[]"
    return "[" + ",".join([_empty(shape[1:])] * shape[0]) + "]"


def _rows(a: np.ndarray, ns: NamedSpec | None) -> list[str]:
    """JSON text of ``a[i]`` for every ``i`` along the batch axis."""
    if a.ndim == 0:
        raise InvalidRequestError(f"Tensor name: {ns.name if ns else '?'} has no shape "
                                  "information")
    if 0 in a.shape[1:]:  # no values to nest
        return [_empty(a.shape[1:])] * a.shape[0]
    return _nest(_texts(a, ns), a.shape)


def tensor_json(a: np.ndarray, ns: NamedSpec | None = None) -> str:
    """The JSON text of a whole tensor (batch included), as TF Serving writes it."""
    a = np.asarray(a)
    if a.ndim == 0:
        return _texts(a, ns)[0]
    return "[" + ",".join(_rows(a, ns)) + "]"


def _shaped(a: np.ndarray, layout: Layout) -> np.ndarray:
    a = np.asarray(a)
    return a[:, 0] if layout.scalar and a.ndim == 2 and a.shape[1] == 1 else a


def encode_predict(outputs: Mapping[str, np.ndarray], specs: Sequence[NamedSpec],
                   layout: Layout) -> bytes:
    """Outputs by signature key → the response body (``predictions`` or ``outputs``).

    ``specs`` gives the order and the number formats. Raises InvalidRequestError for
    outputs that do not share a batch size in row format (TF Serving's wording).
    """
    if not specs:
        raise InvalidRequestError("Cannot convert empty tensor map to JSON")
    key = layout.fmt.response_key
    arrays = [(ns, _shaped(outputs[ns.name], layout)) for ns in specs]
    if layout.fmt is Format.ROW:
        for ns, a in arrays:
            if a.ndim == 0:
                raise InvalidRequestError(f"Tensor name: {ns.name} has no shape information")
    if len(arrays) == 1:
        ns, a = arrays[0]
        return f'{{"{key}":{tensor_json(a, ns)}}}'.encode()
    names = [json.dumps(ns.name) for ns, _ in arrays]
    if layout.fmt is Format.COLUMNAR:
        body = ",".join(f"{n}:{tensor_json(a, ns)}" for n, (ns, a) in zip(names, arrays,
                                                                             strict=True))
        return f'{{"{key}":{{{body}}}}}'.encode()
    batch = -1
    for ns, a in arrays:
        if batch >= 0 and a.shape[0] != batch:
            raise InvalidRequestError(
                f"Tensor name: {ns.name} has inconsistent batch size: {a.shape[0]} expecting: "
                f"{batch} (send the request in the columnar \"inputs\" format to get each "
                "output whole)")
        batch = a.shape[0]
    rows = [_rows(a, ns) for ns, a in arrays]
    objs = ["{" + ",".join(f"{n}:{r[i]}" for n, r in zip(names, rows, strict=True)) + "}"
            for i in range(batch)]
    return f'{{"{key}":[{",".join(objs)}]}}'.encode()
