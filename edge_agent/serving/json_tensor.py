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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from edge_agent.errors import InvalidRequestError, ShapeMismatchError
from edge_agent.serving.json_encode import Format, Layout, NamedSpec
from edge_agent.serving.json_values import (
    DEFAULT_SIGNATURE,
    ValueRefused,
    decode_b64,
    dense_tensor,
    instance_value,
    is_b64,
    json_text,
    json_type,
    signature_name,
)

__all__ = ["DEFAULT_SIGNATURE", "Decoded", "Tensor", "check_predict_signature",
           "decode_predict"]

Tensor: TypeAlias = "np.ndarray | list[bytes]"  # numbers, or one binary value per instance


@dataclass(frozen=True)
class Decoded:
    """A decoded predict request: each input by signature key, and how it was written."""

    tensors: dict[str, Tensor]
    layout: Layout


def check_predict_signature(sig: str) -> None:
    """The predict API's lookup (``GetInfoMap``): only ``serving_default`` exists here."""
    if sig not in ("", DEFAULT_SIGNATURE):
        raise InvalidRequestError(f'Serving signature name: "{sig}" not found in signature '
                                  "def")


# ----------------------------------------------------------------------------- row format


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


class _Column:
    """The instances of one input, checked as ``AddInstanceItem`` checks them."""

    def __init__(self, ns: NamedSpec) -> None:
        self.ns = ns
        self.items: list[np.ndarray | bytes] = []

    def add(self, value: Any) -> None:
        item = instance_value(value, self.ns)
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
            return {inputs[0].name: dense_tensor(items, inputs[0], bools)}
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
    return dense_tensor(value, ns, bools)


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
