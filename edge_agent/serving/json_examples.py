"""TensorFlow Serving's classify/regress JSON (pure): ``{"examples": [...]}`` and ``results``.

Ports ``FillClassificationRequestFromJson`` / ``FillRegressionRequestFromJson`` and
``MakeJsonFromClassificationResult`` / ``MakeJsonFromRegressionResult`` of
``tensorflow_serving/util/json_tensor.cc``: a request is an optional ``signature_name``, an
optional ``context`` and a non-empty list of ``examples``; each example is an object of
features; a feature is a value or a flat list of values of one kind — ``bytes`` (strings and
``{"b64": …}``), ``float`` (decimals that fit a float32) or ``int64`` (integers and
booleans). A response is ``{"results": [[[label, score], …], …]}`` for classify and
``{"results": [value, …]}`` for regress, numbers written as TF Serving writes them.

Raises :class:`~edge_agent.errors.InvalidRequestError` with TF Serving's wording.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.serving.json_encode import format_floats
from edge_agent.serving.json_values import (
    DEFAULT_SIGNATURE,
    decode_b64,
    format_double,
    is_b64,
    json_text,
    json_type,
    signature_name,
)

__all__ = ["CLASSIFY_METHOD", "PREDICT_METHOD", "REGRESS_METHOD", "Example", "ExampleRequest",
           "Feature", "check_method", "classify_results", "parse_examples",
           "regress_results"]

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_FLOAT_MAX = float(np.finfo(np.float32).max)


@dataclass
class Feature:
    """One ``tf.train.Feature``: its kind (``bytes``/``float``/``int64``, None until a value
    is added) and values; ``binary`` marks bytes that came from ``{"b64": …}``."""

    kind: str | None = None
    values: list[Any] = field(default_factory=list)
    binary: bool = False


Example = dict[str, Feature]


@dataclass(frozen=True)
class ExampleRequest:
    """A parsed ``ClassificationRequest`` / ``RegressionRequest``."""

    signature_name: str
    context: Example | None
    examples: list[Example]


def _kind_error(name: str, feature: Feature) -> InvalidRequestError:
    return InvalidRequestError(f"Unexpected element type in feature: {name} expecting type: "
                               f"{feature.kind}")


def _add(v: Any, name: str, feature: Feature) -> None:
    """``AddValueToFeature``: one JSON value into a feature of one kind."""
    kind: str
    value: bytes | int | float
    if v is None or isinstance(v, list) or (isinstance(v, dict) and not is_b64(v)):
        raise InvalidRequestError(f"Feature: {name} has element with unexpected JSON type: "
                                  f"{json_type(v)}")
    if isinstance(v, bool):
        kind, value = "int64", int(v)
    elif isinstance(v, dict):
        kind, value = "bytes", decode_b64(v)
        feature.binary = True
    elif isinstance(v, str):
        kind, value = "bytes", v.encode()
    elif isinstance(v, int) and v <= _UINT64_MAX:
        kind, value = "int64", v
    else:  # a decimal, or an integer too large for 64 bits (rapidjson reads it as a double)
        try:
            kind, value = "float", float(v)
        except OverflowError as e:  # an integer past the double range: no number at all
            raise InvalidRequestError(f"Feature: {name} has a number too big to be stored in "
                                      f"double (about 2^{int(v).bit_length()})") from e
    if feature.kind not in (None, kind):
        raise _kind_error(name, feature)
    if isinstance(value, int) and value > _INT64[1]:
        raise InvalidRequestError(f"Feature: {name} has uint64 element. Only int64 is "
                                  "supported.")
    if isinstance(value, float) and value == value and abs(value) != float("inf") and \
            abs(value) > _FLOAT_MAX:
        raise InvalidRequestError(f"Cannot convert JSON value: {format_double(value)} to float "
                                  "without loss of precision.")
    feature.kind = kind
    feature.values.append(value)


def _example(v: Any) -> Example:
    """``MakeExampleFromJsonObject``."""
    if not isinstance(v, dict):
        raise InvalidRequestError(f"Example must be JSON object but got JSON {json_type(v)}")
    out: Example = {}
    for name, content in v.items():
        feature = Feature()
        for x in content if isinstance(content, list) else [content]:
            _add(x, name, feature)
        out[name] = feature
    return out


def parse_examples(doc: Any, *, method: str = "classify", max_examples: int) -> ExampleRequest:
    """``FillClassifyRegressRequestFromJson``. Raises InvalidRequestError."""
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} Is not object")
    sig = signature_name(doc)
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} When method is {method}, "
                                  "key 'examples' is expected and was not found")
    items = doc["examples"]
    if not isinstance(items, list):
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} Expecting 'examples' value "
                                  "to be an list/array")
    if not items:
        raise InvalidRequestError(f"JSON Value: {json_text(doc)} 'examples' value is an "
                                  "empty array")
    if len(items) > max_examples:
        raise InvalidRequestError(f'"examples" has {len(items)} entries, over the limit of '
                                  f"{max_examples} per request")
    return ExampleRequest(sig, context, [_example(e) for e in items])


def check_method(sig: str, method: str, *, has: str, why: str = "") -> None:
    """The classify/regress signature lookup: ``serving_default`` is the one signature here,
    and its method is ``has``. Raises InvalidRequestError in TF Serving's wording."""
    name = sig or DEFAULT_SIGNATURE
    if name != DEFAULT_SIGNATURE:
        raise InvalidRequestError(f"No signature was found with the name: {name}")
    if has != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise InvalidRequestError(f"Expected {kind} signature method_name to be {method}. "
                                  f"Was: {has}{f' ({why})' if why else ''}")


def classify_results(rows: Sequence[Sequence[tuple[str, float]]]) -> str:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], …], …]}``."""
    if not rows:
        raise InvalidRequestError("Cannot convert empty ClassificationResults to JSON")
    scores = format_floats(np.asarray([s for row in rows for _, s in row], dtype=np.float32))
    it = iter(scores)
    body = ",".join("[" + ",".join(f"[{json.dumps(label)},{next(it)}]" for label, _ in row)
                    + "]" for row in rows)
    return f'{{"results":[{body}]}}'


def regress_results(values: Sequence[float]) -> str:
    """``MakeJsonFromRegressionResult``: ``{"results": [value, …]}``."""
    if not len(values):
        raise InvalidRequestError("Cannot convert empty RegressionResults to JSON")
    return '{"results":[' + ",".join(format_floats(np.asarray(values, np.float32))) + "]}"
