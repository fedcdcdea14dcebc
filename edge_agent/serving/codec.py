"""TensorFlow Serving's REST bodies ↔ a :class:`~edge_agent.registry.ServedModel` (pure).

Implements the REST API at https://www.tensorflow.org/tfx/serving/api_rest as an adapter:
the TF Serving JSON rules themselves live in :mod:`~edge_agent.serving.json_tensor`
(predict requests), :mod:`~edge_agent.serving.json_values` (values and one dense tensor),
:mod:`~edge_agent.serving.json_encode` (predict responses) and
:mod:`~edge_agent.serving.json_examples` (classify/regress), and work over ordered lists of
named tensor specs. This module gives them the served model's specs (:func:`input_specs`,
:func:`output_specs`), turns binary instances into images with the bundle's preprocessing,
and builds the status (``GetModelStatusResponse``) and metadata
(``GetModelMetadataResponse``) documents.

Numbers are model units (floats; the agent quantizes to the tensor's scale/zero-point),
so the signature advertises ``DT_FLOAT`` whatever the tensor's integer type is.

Everything a client can get wrong raises :class:`~edge_agent.errors.InvalidRequestError`
with a message naming the problem; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np

from edge_agent import untrusted_json
from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError
from edge_agent.registry import Prediction, ServedModel
from edge_agent.runtime.model import Inputs
from edge_agent.serving import json_encode, json_examples, json_tensor
from edge_agent.serving.images import IMAGE_FORMATS as IMAGE_FORMATS
from edge_agent.serving.images import image_batch as image_batch
from edge_agent.serving.images import image_note
from edge_agent.serving.json_encode import Format, Layout, NamedSpec, signature_keys
from edge_agent.serving.json_examples import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD

SIGNATURE = json_tensor.DEFAULT_SIGNATURE
ROW = Layout(Format.ROW)  # the layout of answers to bodies that are not JSON (raw tensors)


# Python's JSON errors in rapidjson's words (TF Serving's ``GetParseError_En``)
_RAPIDJSON = {"Expecting value": "Invalid value.",
              "Expecting property name enclosed in double quotes":
                  "Missing a name for object member.",
              "Expecting ':' delimiter": "Missing a colon after a name of object member.",
              "Unterminated string starting at": "Missing a closing quotation mark in string.",
              "Extra data": "The document root must not be followed by other values."}


def parse_json(body: bytes) -> Any:
    """Request body → JSON value (``NaN``/``Infinity``/``-Infinity`` included).

    Raises InvalidRequestError in TF Serving's words (``JSON Parse error: Invalid value.
    at offset: 0``) with Python's position after them.
    """
    if not body:
        raise InvalidRequestError("JSON Parse error: The document is empty")
    try:
        return untrusted_json.loads(body, "request body")
    except InvalidRequestError as e:
        cause = e.__cause__
        if isinstance(cause, json.JSONDecodeError):
            raise InvalidRequestError(
                f"JSON Parse error: {_RAPIDJSON.get(cause.msg, cause.msg)} at offset: "
                f"{cause.pos} (line {cause.lineno} column {cause.colno})") from e
        raise InvalidRequestError(f"JSON Parse error: {e}") from e


_SPECS: WeakKeyDictionary[ServedModel, tuple[list[NamedSpec], list[NamedSpec]]] = \
    WeakKeyDictionary()  # a served model's specs never change: named once, not per request


def _specs(served: ServedModel) -> tuple[list[NamedSpec], list[NamedSpec]]:
    hit = _SPECS.get(served)
    if hit is None:
        image = served.manifest.image_input
        hit = (signature_keys(served.input_specs, image=image.name if image else None,
                              images=image_note(served)),
               signature_keys(served.output_specs))
        _SPECS[served] = hit
    return hit


def input_specs(served: ServedModel) -> list[NamedSpec]:
    """The served model's inputs by signature key; an image input also takes ``{"b64"}``."""
    return _specs(served)[0]


def output_specs(served: ServedModel) -> list[NamedSpec]:
    """The served model's outputs by signature key, in the model's order."""
    return _specs(served)[1]


def decode_predict(doc: Any, served: ServedModel, *, max_batch: int, max_image_pixels: int,
                   body: bytes | None = None) -> tuple[Inputs, Layout]:
    """A predict request (parsed, and its ``body`` text if at hand) → (the model's input
    batch: one array for a one-input model, else arrays by input name; how to write the
    answer).

    The adapter over :func:`json_tensor.decode_predict`, which checks every named input
    (missing, unknown, shape, one batch size) in TF Serving's words.
    """
    inputs = input_specs(served)
    bools = body is None or b"true" in body or b"false" in body
    decoded = json_tensor.decode_predict(doc, inputs, max_batch=max_batch, bools=bools)
    if len(inputs) == 1:  # one input: one array, no dict (the common, hot case)
        ns = inputs[0]
        x = decoded.tensors[ns.name]
        return (image_batch(served, x, max_image_pixels, spec=ns.spec)
                if isinstance(x, list) else x), decoded.layout
    named: dict[str, np.ndarray] = {}
    for ns in inputs:
        x = decoded.tensors[ns.name]
        named[ns.spec.name] = (image_batch(served, x, max_image_pixels, spec=ns.spec)
                               if isinstance(x, list) else x)
    return named, decoded.layout


def _outputs(pred: Prediction, specs: Sequence[NamedSpec]) -> dict[str, np.ndarray]:
    return {ns.name: out for ns, out in zip(specs, pred.outputs, strict=True)}


def encode_predict_bytes(pred: Prediction, served: ServedModel, layout: Layout) -> bytes:
    """``{"predictions": …}`` (row) or ``{"outputs": …}`` (columnar), TF Serving's text."""
    specs = output_specs(served)
    return json_encode.encode_predict(_outputs(pred, specs), specs, layout)


def encode_predict(pred: Prediction, served: ServedModel, layout: Layout) -> dict[str, Any]:
    """:func:`encode_predict_bytes` as a JSON value (for replies embedded in other JSON)."""
    return dict(json.loads(encode_predict_bytes(pred, served, layout)))


def signature_method(served: ServedModel) -> str:
    """What the one signature answers besides :predict: :classify when there is a class head."""
    return CLASSIFY_METHOD if served.class_position is not None else PREDICT_METHOD


def classify_inputs(doc: Any, served: ServedModel, *, max_batch: int, max_image_pixels: int
                    ) -> Inputs:
    """TF Serving's classify body → the model's input batch.

    Parsed by TF Serving's rules (:func:`json_examples.parse_examples`), then the signature
    is checked. Each example is one sample whose features are the model's inputs by name,
    as ``tf.io.parse_example`` reads them: numbers (a flat list of the input's values per
    sample), or ``{"b64": …}`` for the input images feed (:func:`image_target`). A
    one-input image model also takes one binary feature of any name (the image). Other
    features are ignored, as ``parse_example`` ignores features a model does not declare.
    """
    req = json_examples.parse_examples(doc, method="classify", max_examples=max_batch)
    check_classify(served, req.signature_name)
    if req.context is not None:
        raise InvalidRequestError('"context" is not supported: put every feature in each '
                                  "example")
    specs = input_specs(served)
    keys = {ns.name for ns in specs}
    if len(specs) == 1 and not any(k in keys for ex in req.examples for k in ex):
        images = []  # a one-input model and no feature by its name: one image per example
        for i, ex in enumerate(req.examples):
            found = [f for f in ex.values() if f.binary]
            if len(found) != 1 or len(found[0].values) != 1:
                raise InvalidRequestError(
                    f'examples[{i}]: expected a feature {specs[0].name!r} (the model\'s input) '
                    f'or exactly one {{"b64": ...}} image feature, found '
                    f"{sum(len(f.values) for f in found)} (features: {', '.join(ex) or 'none'})")
            images.append(found[0].values[0])
        return image_batch(served, images, max_image_pixels)
    named = {ns.spec.name: _feature_batch(req.examples, ns, served, max_image_pixels)
             for ns in specs}
    return named[specs[0].spec.name] if len(specs) == 1 else named


def _feature_batch(examples: Sequence[json_examples.Example], ns: NamedSpec,
                   served: ServedModel, max_image_pixels: int) -> np.ndarray:
    """One input's feature in every example → its batch (numbers, or images for the
    image input). Raises InvalidRequestError naming the example and the feature."""
    shape = ns.spec.shape
    want = math.prod(shape[1:])
    rows: list[Any] = []
    for i, ex in enumerate(examples):
        f = ex.get(ns.name)
        if f is None:
            raise InvalidRequestError(
                f"examples[{i}]: missing feature {ns.name!r} (the model's inputs: "
                f"{', '.join(repr(n.name) for n in input_specs(served))})")
        if f.binary and ns.binary and len(f.values) == 1:
            rows.append(f.values[0])
        elif f.kind == "bytes" or (ns.integer and f.kind == "float"):
            what = "integer(s)" if ns.integer else "number(s)"
            raise InvalidRequestError(
                f"examples[{i}].{ns.name}: expected {want} {what} (input shape "
                f"{list(shape)}), got {f.kind} values" + (f"; {ns.images}" if f.binary else ""))
        elif len(f.values) != want:
            raise InvalidRequestError(
                f"examples[{i}].{ns.name}: expected {want} value(s) (input shape "
                f"{list(shape)}), got {len(f.values)}")
        else:
            rows.append(f.values)
    if ns.binary and all(isinstance(r, bytes) for r in rows):
        return image_batch(served, rows, max_image_pixels, spec=ns.spec)
    if any(isinstance(r, bytes) for r in rows):
        raise InvalidRequestError(f"feature {ns.name!r}: images and numbers mixed across "
                                  "examples")
    dtype = np.float32 if ns.spec.quantized or ns.spec.dtype.startswith("float") else \
        np.dtype(ns.spec.dtype)
    return np.asarray(rows, dtype=dtype).reshape(len(rows), *shape[1:])


def check_classify(served: ServedModel, sig: str) -> None:
    """``:classify`` needs the model's class head. Raises InvalidRequestError."""
    json_examples.check_method(
        sig, CLASSIFY_METHOD, has=signature_method(served),
        why=f"model {served.name!r} has no class head (task {served.manifest.task!r}); "
            "use :predict")


def check_regress(doc: Any, served: ServedModel, *, max_batch: int) -> None:
    """``:regress``: the body and signature are checked, then refused (no regress method)."""
    req = json_examples.parse_examples(doc, method="regress", max_examples=max_batch)
    json_examples.check_method(
        req.signature_name, REGRESS_METHOD, has=signature_method(served),
        why="LiteRT models have no tf.Example signature; send the inputs to :predict")


def encode_classify(served: ServedModel, pred: Prediction, k: int) -> bytes:
    """TF Serving's ``{"results": [[[label, score], …]]}``, plus ``model_spec`` and a richer
    ``top_k`` (class indices) as extensions."""
    top = served.top_k(pred, k)
    probs = pred.probabilities
    assert probs is not None  # top_k raised otherwise
    rows = [[(c["label"], float(probs[r, c["index"]])) for c in row]
            for r, row in enumerate(top)]
    results = json_examples.classify_results(rows)
    spec = {"name": served.name, "version": str(served.version)}
    extra = json.dumps({"model_spec": spec, "top_k": top}, separators=(",", ":"))
    return (results[:-1] + "," + extra[1:]).encode()


def status(rows: Iterable[tuple[int, str, str, str]]) -> dict[str, Any]:
    """``GetModelStatusResponse`` from (version, state, error_code, error_message) rows."""
    return {"model_version_status": [
        {"version": str(v), "state": state, "status": {"error_code": code,
                                                       "error_message": msg}}
        for v, state, code, msg in rows]}


def _tensor_info(ns: NamedSpec) -> dict[str, Any]:
    spec = ns.spec
    dims = [{"size": "-1", "name": ""}] + [{"size": str(d), "name": ""} for d in spec.shape[1:]]
    return {"dtype": ns.dtype, "tensor_shape": {"dim": dims, "unknown_rank": False},
            "name": spec.name}


def _raw_spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype,
            "scale": spec.scale, "zero_point": spec.zero_point}


def metadata(served: ServedModel, query: Mapping[str, Sequence[str]] | None = None
             ) -> dict[str, Any]:
    """``GetModelMetadataResponse`` (signature_def) plus an ``edge`` block for the bundle.

    ``?signature_name=`` (an extension: TF Serving's REST metadata takes none) is checked
    like predict's. Raises InvalidRequestError.
    """
    sigs = (query or {}).get("signature_name")
    if sigs:
        json_tensor.check_predict_signature(sigs[-1])
    m = served.manifest
    sig = {"inputs": {ns.name: _tensor_info(ns) for ns in input_specs(served)},
           "outputs": {ns.name: _tensor_info(ns) for ns in output_specs(served)},
           "method_name": PREDICT_METHOD}
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
