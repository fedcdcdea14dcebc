"""TensorFlow Serving's JSON shapes ↔ numpy batches (pure: no sockets, no files).

Implements the REST API at https://www.tensorflow.org/tfx/serving/api_rest:

* predict, row format: ``{"instances": [...]}`` → ``{"predictions": [...]}``
* predict, columnar format: ``{"inputs": ...}`` → ``{"outputs": ...}``
* binary values (encoded images) as ``{"b64": "<base64>"}``
* classify: ``{"examples": [{"image": {"b64": ...}}]}`` → ``{"result": [[[label, score]…]]}``
* model status (``GetModelStatusResponse``) and metadata (``GetModelMetadataResponse``).

Numbers are model units (floats; the agent quantizes to the tensor's scale/zero-point),
so the signature advertises ``DT_FLOAT`` whatever the tensor's integer type is.

Everything a client can get wrong raises :class:`~edge_agent.errors.InvalidRequestError`
with a message naming the problem; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edge_agent import untrusted_json
from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError, ShapeMismatchError
from edge_agent.registry import Prediction, ServedModel
from edge_agent.runtime.quant import dequantize
from edge_agent.serving.images import IMAGE_FORMATS as IMAGE_FORMATS
from edge_agent.serving.images import image_batch as image_batch

ROW, COLUMNAR = "row", "columnar"
SIGNATURE = "serving_default"
_DT = {"float32": "DT_FLOAT", "float16": "DT_HALF", "int8": "DT_INT8", "uint8": "DT_UINT8",
       "int16": "DT_INT16", "int32": "DT_INT32"}


def parse_json(body: bytes) -> Any:
    """Request body → JSON value. Raises InvalidRequestError naming the parse problem."""
    return untrusted_json.loads(body, "request body")


def alias(tensor_name: str) -> str:
    """``serving_default_input_layer:0`` → ``input_layer`` (the signature key)."""
    n = re.sub(r":\d+$", "", tensor_name)
    return n[len("serving_default_"):] if n.startswith("serving_default_") else n


def _b64(v: Any, where: str) -> bytes | None:
    """``{"b64": "..."}`` → bytes; ``None`` when ``v`` is not a b64 object."""
    if not (isinstance(v, dict) and "b64" in v):
        return None
    if len(v) != 1 or not isinstance(v["b64"], str):
        raise InvalidRequestError(f'{where}: expected {{"b64": "<base64 string>"}}')
    try:
        return base64.b64decode(v["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequestError(f"{where}: invalid base64 ({e})") from e


def _numbers(value: Any, spec: TensorSpec, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise InvalidRequestError(
            f"{where}: expected a regular nested list of numbers of shape "
            f"[batch, {', '.join(map(str, spec.shape[1:]))}] ({_first(e)})") from e
    if arr.dtype.kind not in "iuf":
        raise InvalidRequestError(f"{where}: expected numbers, got "
                                  f"{_kind(arr.dtype.kind)} values")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def _kind(k: str) -> str:
    return {"b": "boolean", "U": "string", "S": "string", "O": "mixed or non-numeric"}.get(k, k)


def _first(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def _check_instances(arr: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    want = tuple(spec.shape[1:])
    if tuple(arr.shape[1:]) != want or arr.ndim != len(spec.shape):
        raise ShapeMismatchError(
            f"{where}: expected shape [batch, {', '.join(map(str, want))}], got "
            f"{list(arr.shape)}", shape=tuple(int(d) for d in arr.shape))
    return arr


def _named(value: dict[str, Any], spec: TensorSpec, where: str) -> Any:
    """Unwrap ``{input_name: value}`` for the model's single input."""
    names = {alias(spec.name), spec.name}
    if len(value) != 1 or next(iter(value)) not in names:
        got = ", ".join(repr(k) for k in value) or "none"
        raise InvalidRequestError(f"{where}: unknown input name(s) {got}; this model has one "
                                  f"input {alias(spec.name)!r}")
    return next(iter(value.values()))


def decode_predict(doc: Any, served: ServedModel, *, max_batch: int,
                   max_image_pixels: int) -> tuple[np.ndarray, str]:
    """A predict request body → (float batch, ``row`` or ``columnar``)."""
    if not isinstance(doc, dict):
        raise InvalidRequestError('request body must be a JSON object with "instances" '
                                  f'or "inputs", got {type(doc).__name__}')
    sig = doc.get("signature_name")
    if sig not in (None, "", SIGNATURE):
        raise InvalidRequestError(f"unknown signature_name {sig!r} (this model has "
                                  f"{SIGNATURE!r})")
    if "instances" in doc and "inputs" in doc:
        raise InvalidRequestError('a request can have "instances" or "inputs", not both')
    spec = served.input_spec
    if "instances" in doc:
        fmt, where, value = ROW, "instances", doc["instances"]
        if not isinstance(value, list):
            raise InvalidRequestError(f'"instances" must be a list (one entry per instance), '
                                      f"got {type(value).__name__}")
        if value and all(isinstance(v, dict) for v in value):
            value = [v if "b64" in v else _named(v, spec, f"instances[{i}]")
                     for i, v in enumerate(value)]
    elif "inputs" in doc:
        fmt, where, value = COLUMNAR, "inputs", doc["inputs"]
        if isinstance(value, dict) and "b64" not in value:
            value = _named(value, spec, "inputs")
        if isinstance(value, dict):
            value = [value]  # one encoded image
    else:
        raise InvalidRequestError('request body must have "instances" (row format) or '
                                  '"inputs" (columnar format)')
    if isinstance(value, list) and len(value) == 0:
        raise InvalidRequestError(f'"{where}" is empty: send at least one instance')
    if isinstance(value, list) and len(value) > max_batch:
        raise InvalidRequestError(f'"{where}" has {len(value)} instances, over the limit of '
                                  f"{max_batch} per request")
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        images = []
        for i, v in enumerate(value):
            data = _b64(v, f"{where}[{i}]")
            if data is None:
                raise InvalidRequestError(f'{where}[{i}]: mix of {{"b64": ...}} images and '
                                          "other values")
            images.append(data)
        return image_batch(served, images, max_image_pixels), fmt
    arr = _check_instances(_numbers(value, spec, where), spec, where)
    if len(arr) > max_batch:
        raise InvalidRequestError(f'"{where}" has {len(arr)} instances, over the limit of '
                                  f"{max_batch} per request")
    return arr, fmt


def encode_predict(pred: Prediction, served: ServedModel, fmt: str) -> dict[str, Any]:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), TF Serving style."""
    outs = pred.outputs
    if len(outs) == 1:
        value: Any = outs[0].tolist()
    elif fmt == ROW:
        names = [alias(s.name) for s in served.output_specs]
        value = [{n: o[i].tolist() for n, o in zip(names, outs, strict=True)}
                 for i in range(len(outs[0]))]
    else:
        value = {alias(s.name): o.tolist()
                 for s, o in zip(served.output_specs, outs, strict=True)}
    return {"predictions" if fmt == ROW else "outputs": value}


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # TF Serving's tokens
_LUTS: dict[tuple[str, float, int], tuple[int, np.ndarray, list[str]]] = {}


def _number(v: float) -> str:
    r = repr(v)
    return _NON_FINITE.get(r, r)


def _lut(spec: TensorSpec) -> tuple[int, np.ndarray, list[str]]:
    """Every value an int8/uint8 output can dequantize to, and its JSON text (cached)."""
    key = (spec.dtype, spec.scale, spec.zero_point)
    hit = _LUTS.get(key)
    if hit is None:
        info = np.iinfo(np.dtype(spec.dtype))
        codes = np.arange(info.min, info.max + 1).astype(spec.dtype)
        values = dequantize(codes, spec)
        hit = (int(info.min), values, [_number(v) for v in values.tolist()])
        _LUTS[key] = hit
    return hit


def array_json(arr: np.ndarray, spec: TensorSpec | None = None) -> str:
    """JSON text of an output array, equal to ``json.dumps(arr.tolist())`` (compact).

    Why: ``json.dumps`` spends ~0.3 µs per float in ``repr`` — 0.3-0.5 ms for one
    1000-class output, the largest part of a REST request's overhead. A dequantized
    int8/uint8 output takes one of 256 values, so their texts are formatted once per
    (scale, zero point) and looked up; anything else goes through ``json.dumps``.
    """
    a = np.asarray(arr)
    if (spec is None or not spec.quantized or spec.dtype not in ("int8", "uint8")
            or a.ndim not in (1, 2) or a.size < 64 or a.dtype != np.float32
            or not np.isfinite(a).all()):
        return json.dumps(a.tolist(), separators=(",", ":"))
    lo, values, text = _lut(spec)
    pos = np.rint(a.astype(np.float64) / spec.scale + (spec.zero_point - lo))
    if pos.min() < 0 or pos.max() >= len(values):
        return json.dumps(a.tolist(), separators=(",", ":"))  # not this spec's values
    idx = pos.astype(np.int64)
    if not np.array_equal(values[idx], a):
        return json.dumps(a.tolist(), separators=(",", ":"))  # not this spec's values
    items = [text[i] for i in idx.reshape(-1).tolist()]
    if a.ndim == 1:
        return "[" + ",".join(items) + "]"
    n = a.shape[1]
    return "[" + ",".join("[" + ",".join(items[r * n:(r + 1) * n]) + "]"
                          for r in range(a.shape[0])) + "]"


def encode_predict_bytes(pred: Prediction, served: ServedModel, fmt: str) -> bytes:
    """:func:`encode_predict` serialised, with the fast path for one output tensor."""
    if len(pred.outputs) == 1:
        key = "predictions" if fmt == ROW else "outputs"
        return f'{{"{key}":{array_json(pred.outputs[0], served.output_specs[0])}}}'.encode()
    return json.dumps(encode_predict(pred, served, fmt), separators=(",", ":")).encode()


def classify_examples(doc: Any, *, max_batch: int) -> list[bytes]:
    """TF Serving's classify body ``{"examples": [{"<feature>": {"b64": ...}}]}`` → images."""
    if not isinstance(doc, dict) or not isinstance(doc.get("examples"), list):
        raise InvalidRequestError('classify JSON body must be {"examples": [{"image": '
                                  '{"b64": "..."}}, ...]} (or send the raw image bytes)')
    examples = doc["examples"]
    if not examples:
        raise InvalidRequestError('"examples" is empty: send at least one example')
    if len(examples) > max_batch:
        raise InvalidRequestError(f'"examples" has {len(examples)} entries, over the limit of '
                                  f"{max_batch} per request")
    images = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise InvalidRequestError(f"examples[{i}]: expected an object of features")
        found = [b for k, v in ex.items() if (b := _b64(v, f"examples[{i}].{k}")) is not None]
        if len(found) != 1:
            raise InvalidRequestError(f'examples[{i}]: expected exactly one {{"b64": ...}} '
                                      f"image feature, found {len(found)}")
        images.append(found[0])
    return images


def encode_classify(served: ServedModel, pred: Prediction, k: int) -> dict[str, Any]:
    """TF Serving's ``{"result": [[[label, score], ...]]}`` plus a richer ``top_k``."""
    top = served.top_k(pred, k)
    return {
        "model_spec": {"name": served.name, "version": str(served.version)},
        "result": [[[c["label"], c["score"]] for c in row] for row in top],
        "top_k": top,
    }


def status(rows: Iterable[tuple[int, str, str, str]]) -> dict[str, Any]:
    """``GetModelStatusResponse`` from (version, state, error_code, error_message) rows."""
    return {"model_version_status": [
        {"version": str(v), "state": state, "status": {"error_code": code,
                                                       "error_message": msg}}
        for v, state, code, msg in rows]}


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"size": "-1", "name": ""}] + [{"size": str(d), "name": ""} for d in spec.shape[1:]]
    return {"dtype": "DT_FLOAT" if spec.quantized else _DT.get(spec.dtype, "DT_INVALID"),
            "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": spec.name}


def _raw_spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype,
            "scale": spec.scale, "zero_point": spec.zero_point}


def metadata(served: ServedModel) -> dict[str, Any]:
    """``GetModelMetadataResponse`` (signature_def) plus an ``edge`` block for the bundle."""
    m = served.manifest
    sig = {"inputs": {alias(served.input_spec.name): _tensor_info(served.input_spec)},
           "outputs": {alias(s.name): _tensor_info(s) for s in served.output_specs},
           "method_name": "tensorflow/serving/predict"}
    pre = m.preprocessing
    return {
        "model_spec": {"name": served.name, "signature_name": "", "version": str(served.version)},
        "metadata": {
            "signature_def": {"signature_def": {SIGNATURE: sig}},
            "edge": {
                "task": m.task, "labels": list(m.labels),
                "output_is_probability": m.output_is_probability,
                "quantization_mode": m.quantization_mode,
                "input_tensor": _raw_spec(served.input_spec),
                "output_tensors": [_raw_spec(s) for s in served.output_specs],
                "preprocessing": {"resize": list(pre.resize) if pre.resize else None,
                                  "color": pre.color, "channel_order": pre.channel_order,
                                  "mean": list(pre.mean), "std": list(pre.std)},
                "sha256": m.model_sha256, "created_at": m.created_at,
                "target_profiles": list(m.target_profiles), "runtime": str(served.runtime),
            },
        },
    }


def parse_k(query: Mapping[str, Sequence[str]], default: int, classes: int) -> int:
    """``?k=3`` → 3 (capped at the number of classes). Raises InvalidRequestError."""
    raw = query.get("k")
    if not raw:
        return min(default, classes)
    text = raw[-1].strip()
    if re.fullmatch(r"[0-9]{1,18}", text) is None or int(text) < 1:
        raise InvalidRequestError(f"k must be a positive integer, got {raw[-1][:40]!r}")
    return min(int(text), classes)
