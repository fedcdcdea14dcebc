"""TensorFlow Serving REST conformance: cases ported from TF Serving's own spec and tests.

Every case names its source in the ``tensorflow/serving`` repository:

* ``api_rest.md`` — ``tensorflow_serving/g3doc/api_rest.md`` (section named);
* ``json_tensor_test.cc`` — ``tensorflow_serving/util/json_tensor_test.cc`` (TEST named);
* ``json_tensor.cc`` — ``tensorflow_serving/util/json_tensor.cc`` (function named), for
  rules its tests do not spell out;
* ``handler_test.cc`` — ``tensorflow_serving/model_servers/http_rest_api_handler_test.cc``.

Codec cases run the pure codec on synthetic named specs. TF Serving's tests give tensor
dtypes only; the shapes here are the ones their requests imply. Where a TF test uses a
string (``DT_STRING``) or double tensor, which a LiteRT bundle does not have, the port says
what it changed, and "difference" cases check that what we do not support is a clear 400
(docs/rest.md lists every difference). The end-to-end cases run a real agent over a real
socket with the digits models the other REST tests use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client, DigitsEval, b64, make_config

from edge_agent.app import Agent
from edge_agent.bundle import TensorSpec
from edge_agent.errors import InvalidRequestError, ShapeMismatchError
from edge_agent.serving.codec import parse_json
from edge_agent.serving.json_encode import Format, Layout, NamedSpec, encode_predict
from edge_agent.serving.json_examples import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    check_method,
    classify_results,
    parse_examples,
    regress_results,
)
from edge_agent.serving.json_tensor import decode_predict

JT = "json_tensor_test.cc"
JC = "json_tensor.cc"
HT = "handler_test.cc"
API = "api_rest.md"


def spec(name: str, *shape: int, dtype: str = "float32", binary: bool = False) -> NamedSpec:
    """A named input/output with batch-first ``shape`` (``spec("x", 2)`` is ``[batch, 2]``)."""
    return NamedSpec(name, TensorSpec(f"serving_default_{name}:0", (1, *shape), dtype),
                     binary=binary)


INT = {"dtype": "int32"}
IMAGE = {"binary": True}  # an image input: also takes one {"b64": ...} per instance


def decode(text: str, *specs: NamedSpec) -> Any:
    return decode_predict(parse_json(text.encode()), list(specs), max_batch=64)


def refusal(text: str, *specs: NamedSpec) -> str:
    with pytest.raises(InvalidRequestError) as e:
        decode(text, *specs)
    return str(e.value)


# ----------------------------------------------------------------------------- decode: ok


@dataclass(frozen=True)
class Ok:
    source: str
    request: str
    specs: tuple[NamedSpec, ...]
    want: dict[str, Any]  # name → expected array (or list of bytes)
    fmt: Format = Format.ROW


DECODE_OK = [
    Ok(f"{JT} SingleUnnamedTensor", '{"instances": [[1,2],[3,4],[5,6]]}',
       (spec("default", 2, **INT),), {"default": [[1, 2], [3, 4], [5, 6]]}),
    Ok(f"{JT} MixedInputForFloatTensor", '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
       (spec("default"),), {"default": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}),
    Ok(f"{JT} MixedInputForDoubleTensor (DT_DOUBLE served as float32)",
       '{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', (spec("default"),),
       {"default": [1.0, 2, 3, 4, 0.662, 0, 0.0]}),
    Ok(f"{JT} SingleUnnamedTensorWithSignature (our signature's name)",
       '{"signature_name": "serving_default", "instances": [[1,2]]}',
       (spec("default", 2, **INT),), {"default": [[1, 2]]}),
    Ok(f"{JT} TensorFromNonNullTerminatedBuffer", '{"instances": [[1,2],[3,4],[5,6]]}X'[:-1],
       (spec("default", 2, **INT),), {"default": [[1, 2], [3, 4], [5, 6]]}),
    Ok(f"{JT} SingleUnnamedTensorBase64Scalars (an image input)",
       '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
       (spec("default", 8, 8, 1, **IMAGE),), {"default": [b"hello", b"world"]}),
    Ok(f"{JT} MultipleNamedTensor (str_tensor left out, dbl_tensor as float32)",
       '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "float_tensor": [1.0, NaN], '
       '"dbl_tensor": [NaN]}, {"int_tensor": [[7,8],[9,0],[1,2]], '
       '"float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}',
       (spec("int_tensor", 3, 2, **INT), spec("float_tensor", 2), spec("dbl_tensor", 1)),
       {"int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
        "float_tensor": [[1.0, np.nan], [2.0, np.inf]], "dbl_tensor": [[np.nan], [2.0]]}),
    Ok(f"{JT} SingleUnnamedTensorColumnarFormat (named)",
       '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', (spec("int_tensor", 3, 2, **INT),),
       {"int_tensor": [[[1, 2], [3, 4], [5, 6]]]}, Format.COLUMNAR),
    Ok(f"{JT} SingleUnnamedTensorColumnarFormat (name skipped)",
       '{"inputs": [[[1,2],[3,4],[5,6]]]}', (spec("int_tensor", 3, 2, **INT),),
       {"int_tensor": [[[1, 2], [3, 4], [5, 6]]]}, Format.COLUMNAR),
    Ok(f"{JT} MultipleNamedTensorColumnarFormat (str_tensor left out; bin_tensor an image)",
       '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "bin_tensor": { "b64" : "aGVsbG8=" }}}',
       (spec("int_tensor", 3, 2, **INT), spec("bin_tensor", 8, 8, 1, **IMAGE)),
       {"int_tensor": [[[1, 2], [3, 4], [5, 6]]], "bin_tensor": [b"hello"]}, Format.COLUMNAR),
    Ok(f"{API} Specifying input tensors in row format: 'List of 2 tensors each of [1, 2] shape'",
       '{"instances": [ [[1, 2]], [[3, 4]] ]}', (spec("x", 1, 2),),
       {"x": [[[1, 2]], [[3, 4]]]}),
    Ok(f"{API} row format, multiple named inputs (signal, sensor; the string 'tag' left out)",
       '{"instances": [{"signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]}, '
       '{"signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}]}',
       (spec("signal", 5), spec("sensor", 2, 2)),
       {"signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}),
    Ok(f"{API} Specifying input tensors in column format (the same tensors)",
       '{"inputs": {"signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]], '
       '"sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}}',
       (spec("signal", 5), spec("sensor", 2, 2)),
       {"signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}, Format.COLUMNAR),
    Ok(f"{API} JSON conformance: NaN, Infinity and -Infinity tokens",
       '{"instances": [[1.0, -3.14, NaN, Infinity, -Infinity]]}', (spec("sensor_readings", 5),),
       {"sensor_readings": [[1.0, -3.14, np.nan, np.inf, -np.inf]]}),
    Ok(f"{API} JSON mapping: DT_FLOAT 'Exponent notation is also accepted'",
       '{"instances": [[1e3, 2.5E-2, -1.1, 0]]}', (spec("x", 4),),
       {"x": [[1000.0, 0.025, -1.1, 0.0]]}),
    Ok(f"{HT} Predict: scalar instances for a [batch, 1] input",
       '{"instances": [1.0, 2.0]}', (spec("x", 1),), {"x": [[1.0], [2.0]]}),
    Ok(f"{HT} Predict: explicit signature_name and columnar inputs",
       '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', (spec("x", 1),),
       {"x": [[3.0], [4.0]]}, Format.COLUMNAR),
]


@pytest.mark.parametrize("case", DECODE_OK, ids=[c.source for c in DECODE_OK])
def test_decode(case: Ok) -> None:
    got = decode(case.request, *case.specs)
    assert got.layout.fmt is case.fmt
    assert list(got.tensors) == [ns.name for ns in case.specs]
    for ns in case.specs:
        want, have = case.want[ns.name], got.tensors[ns.name]
        if isinstance(want[0], bytes):
            assert have == want
            continue
        assert isinstance(have, np.ndarray)
        assert have.dtype == (np.int64 if ns.integer else np.float32)
        np.testing.assert_array_equal(have, np.asarray(want, dtype=have.dtype))


# ----------------------------------------------------------------------------- decode: errors


@dataclass(frozen=True)
class Bad:
    source: str
    request: str
    specs: tuple[NamedSpec, ...]
    fragment: str


I2 = (spec("default", 2, **INT),)
F1 = (spec("default"),)
TWO = (spec("int_tensor", 3, 2, **INT), spec("float_tensor", 2))  # str_tensor → float_tensor
DBL_MAX = "1.7976931348623157e+308"

DECODE_ERRORS = [
    Bad(f"{JT} SingleUnnamedTensorErrors: signature_name 5", '{"signature_name": 5, '
        '"instances": [[1,2],[3,4],[5,6,7]]}', I2, "must be a string value"),
    Bad(f"{JT} SingleUnnamedTensorErrors: instances and inputs",
        '{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', I2,
        "Not formatted correctly"),
    Bad(f"{JT} SingleUnnamedTensorErrors: [[1,2],[3,4],[5,6,7]]",
        '{"instances": [[1,2],[3,4],[5,6,7]]}', I2,
        "Failed to process element: 2 of 'instances' list. Error: Invalid argument: "
        "Expecting tensor size: 2 but got: 3"),
    Bad(f"{JT} SingleUnnamedTensorErrors: [[1,2],[3,4],[[5,6]]]",
        '{"instances": [[1,2],[3,4],[[5,6]]]}', I2, "Expecting shape [2] but got: [1,2]"),
    Bad(f"{JT} SingleUnnamedTensorErrors: [1, [1]]", '{"instances": [1, [1]]}', I2,
        "Expecting shape [] but got: [1]"),
    Bad(f"{JT} SingleUnnamedTensorErrors: [[1,2],[\"a\", \"b\"]]",
        '{"instances": [[1,2],["a", "b"]]}', I2,
        'JSON Value: "a" Type: String is not of expected type: int32'),
    Bad(f"{JT} SingleUnnamedTensorErrors: DT_FLOAT max double",
        f'{{ "instances": [{DBL_MAX}] }}', F1,
        f"Cannot convert JSON value: {DBL_MAX} to float without loss of precision."),
    Bad(f"{JT} SingleUnnamedTensorErrors: DT_FLOAT 16777217", '{ "instances": [16777217] }',
        F1, "Cannot convert JSON value: 16777217 to float without loss of precision."),
    Bad(f"{JT} SingleUnnamedTensorErrors: 9007199254740993 (DT_DOUBLE served as float32)",
        '{ "instances": [9007199254740993] }', F1, "loss of precision"),
    Bad(f"{JT} MultipleNamedTensorErrors: different shapes across int_tensor instances",
        '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "float_tensor": [1, 2]}, '
        '{"int_tensor": [[[7,8],[9,0],[1,2]]], "float_tensor": [3, 4]}]}', TWO,
        "Failed to process element: 1 key: int_tensor of 'instances' list. Error: Invalid "
        "argument: Expecting shape [3,2] but got: [1,3,2]"),
    Bad(f"{JT} MultipleNamedTensorErrors: different size/length across int_tensor instances",
        '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "float_tensor": [1, 2]}, '
        '{"int_tensor": [[7,8],[9,0],[1,2]], "float_tensor": [3, 4]}]}', TWO,
        "Expecting tensor size: 8 but got: 6"),
    Bad(f"{JT} MultipleNamedTensorErrors: first an object, then a list",
        '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "float_tensor": [1, 2]}, '
        '[1, 20, 30], {"int_tensor": [[[7,8],[9,0],[1,2]]], "float_tensor": [3, 4]}]}', TWO,
        "Expecting object but got list at item 1 of input list"),
    Bad(f"{JT} MultipleNamedTensorErrors: first a list, then an object",
        '{"instances": [[1, 2], {"float_tensor": [3, 4]}]}', (spec("float_tensor", 2),),
        "Expecting value/list but got object at item 1 of input list"),
    Bad(f"{HT} PredictRequestErrors: badly formatted JSON", "instances = [1, 2]", F1,
        "JSON Parse error: Invalid value"),
    Bad(f"{HT} PredictRequestErrors: empty document", "", F1,
        "JSON Parse error: The document is empty"),
    Bad(f"{HT} PredictRequestErrors: incorrect type", '{ "instances": ["x", "y"] }', F1,
        "not of expected type: float"),
    Bad(f"{HT} PredictRequestErrors: incorrect signature_name type",
        '{ "signature_name": 100 }', F1, "'signature_name' key must be a string value."),
    Bad(f"{JC} FillTensorMapFromInstancesList: an instance missing a named input",
        '{"instances": [{"a": [1, 2], "b": [3]}, {"a": [4, 5]}]}',
        (spec("a", 2), spec("b", 1)),
        "Failed to process element: 1 of 'instances' list. JSON object: {\"a\":[4,5]} keys "
        "must be equal to: a,b"),
    Bad(f"{JC} FillTensorMapFromInstancesList: a key that is no input",
        '{"instances": [{"a": [1, 2], "c": [3]}]}', (spec("a", 2), spec("b", 1)),
        "Failed to process element: 0 key: c of 'instances' list. Error: Invalid argument: "
        "JSON object: does not have named input: c"),
    Bad(f"{JC} FillTensorMapFromInstancesList: plain list for several inputs",
        '{"instances": [[1, 2]]}', (spec("a", 2), spec("b", 1)),
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"),
    Bad(f"{JC} FillTensorMapFromInputsMap: a named input missing from 'inputs'",
        '{"inputs": {"a": [[1, 2]]}}', (spec("a", 2), spec("b", 1)),
        "Missing named input: b in 'inputs' object."),
    Bad(f"{JC} FillTensorMapFromInputsMap: plain value for several inputs",
        '{"inputs": [[1, 2]]}', (spec("a", 2), spec("b", 1)),
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map"),
    Bad(f"{JC} FillPredictRequestFromJson: neither key", '{"rows": [1]}', F1,
        "Missing 'inputs' or 'instances' key"),
    Bad(f"{JC} FillPredictRequestFromJson: instances not a list", '{"instances": 1}', F1,
        "Excepting 'instances' to be an list/array"),
    Bad(f"{JC} FillPredictRequestFromJson: empty instances", '{"instances": []}', F1,
        "No values in 'instances' array"),
    Bad(f"{JC} FillTensorProto: a ragged list inside one instance",
        '{"instances": [[[1, 2], [3]]]}', (spec("x", 2, 2),),
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    Bad(f"{JC} AddValueToTensor: DT_INT32 takes integers only", '{"instances": [[1.5, 2]]}',
        I2, "JSON Value: 1.5 Type: Number is not of expected type: int32"),
    Bad(f"{JC} AddValueToTensor: a boolean is not a float", '{"instances": [true, 1.0]}', F1,
        "JSON Value: true Type: True is not of expected type: float"),
    Bad(f"{JT} SingleUnnamedTensorWithSignature: a signature this model does not have",
        '{"signature_name": "predict_images", "instances": [[1,2]]}', I2,
        'Serving signature name: "predict_images" not found in signature def'),
    Bad(f"{JC} ParseJson's TODO 'protect against deep nested structures': 500 lists deep",
        '{"instances": ' + "[" * 500 + "1" + "]" * 500 + "}", F1,
        "nested more than 16 lists deep"),
    Bad(f"{JC} inconsistent batch sizes across columnar inputs",
        '{"inputs": {"a": [[1, 2], [3, 4]], "b": [[1]]}}', (spec("a", 2), spec("b", 1)),
        "Tensor name: b has inconsistent batch size: 1 expecting: 2"),
]

DIFFERENCES = [  # what a LiteRT bundle has no tensor for: a clear 400, never a crash
    Bad(f"{API} row format 'List of 3 scalar tensors' of strings (no DT_STRING tensors)",
        '{"instances": [ "foo", "bar", "baz" ]}', F1,
        'JSON Value: "foo" Type: String is not of expected type: float'),
    Bad(f"{JT} SingleUnnamedTensorBase64Lists (binary values only as a whole image)",
        '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
        (spec("default", 8, 8, 1, **IMAGE),), "Type: Object is not of expected type: float"),
    Bad(f"{JT} SingleNamedTensorBase64 (binary values only as a whole image)",
        '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
        (spec("default", 8, 8, 1, **IMAGE),), "Type: Object is not of expected type: float"),
    Bad(f"{JT} MultipleNamedTensor with its str_tensor (no DT_STRING tensors)",
        '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}]}',
        (spec("int_tensor", 3, 2, **INT), spec("str_tensor", 2)),
        "key: str_tensor of 'instances' list. Error: Invalid argument: JSON Value: \"foo\" "
        "Type: String is not of expected type: float"),
    Bad(f"{API} JSON conformance: rapidjson's short Inf (use Infinity)",
        '{"instances": [Inf]}', F1, "JSON Parse error: Invalid value"),
    Bad(f"{API} JSON conformance: the 'Nan' of its example is no token either",
        '{"instances": [Nan]}', F1, "JSON Parse error: Invalid value"),
    Bad(f"{API} Encoding binary values: b64 for an input that is not an image",
        '{"instances": [{"b64": "aGVsbG8="}]}', F1,
        "binary values are taken only as a whole instance of an image input"),
    Bad(f"{API} Floating Point Precision: 1435774380 as a float (json_tensor.cc refuses it)",
        '{"instances": [{"x": 1435774380}]}', (spec("x"),), "loss of precision"),
]


@pytest.mark.parametrize("case", DECODE_ERRORS + DIFFERENCES,
                         ids=[c.source for c in DECODE_ERRORS + DIFFERENCES])
def test_decode_refuses(case: Bad) -> None:
    msg = refusal(case.request, *case.specs)
    assert case.fragment in msg
    assert "\n" not in msg and len(msg) < 600  # one line


def test_decode_shape_the_model_does_not_take_is_a_shape_error() -> None:
    """json_tensor.cc leaves shapes to the model; ours checks them against the spec."""
    with pytest.raises(ShapeMismatchError, match=r"expected shape \[batch, 2\], got \[1, 3\]"):
        decode('{"instances": [[1, 2, 3]]}', spec("x", 2))


# ----------------------------------------------------------------------------- encode


def enc(outputs: dict[str, Any], specs: list[NamedSpec], fmt: Format = Format.ROW,
        scalar: bool = False) -> str:
    arrays = {ns.name: np.asarray(outputs[ns.name],
                                  dtype=np.int32 if ns.integer else np.float32)
              for ns in specs}
    return encode_predict(arrays, specs, Layout(fmt, scalar)).decode()


def same_json(a: str, b: str) -> bool:
    """CompareJson: equal as JSON documents (numbers compared as numbers)."""
    return bool(json.loads(a) == json.loads(b))


def same_text(a: str, b: str) -> bool:
    """CompareJsonAllValuesAsStrings: equal as text, whitespace aside."""
    return re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b)


INT_232 = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]
MULTI = [spec("int_tensor", 3, 2, **INT), spec("float_tensor", 1),
         NamedSpec("double_scalar_tensor", TensorSpec("d", (1,), "float32"))]
MULTI_OUT = {"int_tensor": INT_232, "float_tensor": [[1.0], [2.0]],
             "double_scalar_tensor": [8.0, 9.0]}

ENCODE = [
    (f"{JT} FromJsonSingleTensor (row)", {"int_tensor": INT_232},
     [spec("int_tensor", 3, 2, **INT)], Format.ROW, same_json,
     '{"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}'),
    (f"{JT} FromJsonSingleTensor (columnar)", {"int_tensor": INT_232},
     [spec("int_tensor", 3, 2, **INT)], Format.COLUMNAR, same_json,
     '{"outputs": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}'),
    (f"{JT} FromJsonSingleScalarTensor (row)", {"int_tensor": [1, 2, 3, 4, 5]},
     [NamedSpec("int_tensor", TensorSpec("t", (1,), "int32"))], Format.ROW, same_json,
     '{ "predictions": [1, 2, 3, 4, 5] }'),
    (f"{JT} FromJsonSingleScalarTensor (columnar)", {"int_tensor": [1, 2, 3, 4, 5]},
     [NamedSpec("int_tensor", TensorSpec("t", (1,), "int32"))], Format.COLUMNAR, same_json,
     '{ "outputs": [1, 2, 3, 4, 5] }'),
    (f"{JT} FromJsonSingleFloatTensorSixDigitPrecision",
     {"float_tensor": [[9000000, 999999, 0.50000], [.0003, .00003, 555557.5]]},
     [spec("float_tensor", 3)], Format.ROW, same_text,
     '{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}'),
    (f"{JT} FromJsonSingleFloatTensorNonFinite",
     {"float_tensor": [[np.nan, np.inf], [3, -np.inf]]}, [spec("float_tensor", 2)],
     Format.ROW, same_text, '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}'),
    (f"{JT} FromJsonMultipleNamedTensors (row; string tensors left out)", MULTI_OUT, MULTI,
     Format.ROW, same_json,
     '{"predictions": [{"double_scalar_tensor": 8.0, "float_tensor": [1.0], '
     '"int_tensor": [[1, 2], [3, 4], [5, 6]]}, {"double_scalar_tensor": 9.0, '
     '"float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]]}]}'),
    (f"{JT} FromJsonMultipleNamedTensors (columnar; string tensors left out)", MULTI_OUT,
     MULTI, Format.COLUMNAR, same_json,
     '{"outputs": {"double_scalar_tensor": [8.0, 9.0], "float_tensor": [[1.0], [2.0]], '
     '"int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}}'),
    (f"{JT} FromJsonSingleZeroBatchTensor", {"int_tensor": np.zeros((0, 2))},
     [spec("int_tensor", 2, **INT)], Format.ROW, same_json, '{ "predictions": [] }'),
    (f"{JT} FromJsonMultipleZeroBatchTensors (str_tensor as float)",
     {"str_tensor": np.zeros((0, 1, 2)), "float_tensor": np.zeros((0, 3, 4))},
     [spec("str_tensor", 1, 2), spec("float_tensor", 3, 4)], Format.ROW, same_json,
     '{ "predictions": [] }'),
    (f"{API} Response format: one named output in row format is a list of its values",
     {"y": [[0.25, 0.75]]}, [spec("y", 2)], Format.ROW, same_text,
     '{"predictions": [[0.25, 0.75]]}'),
    (f"{HT} Predict: bare numbers in, bare numbers out for a [batch, 1] output",
     {"y": [[2.5], [3.0]]}, [spec("y", 1)], "scalar", same_json,
     '{ "predictions": [2.5, 3.0] }'),
]


@pytest.mark.parametrize(("source", "outputs", "specs", "fmt", "compare", "want"), ENCODE,
                         ids=[c[0] for c in ENCODE])
def test_encode(source: str, outputs: dict[str, Any], specs: list[NamedSpec], fmt: Any,
                compare: Any, want: str) -> None:
    scalar = fmt == "scalar"
    got = enc(outputs, specs, Format.ROW if scalar else fmt, scalar)
    assert compare(got, want), got
    json.loads(got)  # and Python's json reads it (NaN/Infinity tokens included)


ENCODE_ERRORS = [
    (f"{JT} FromJsonMultipleNamedTensorsErrors (str_tensor as float)",
     {"int_tensor": [[1, 2, 3], [4, 5, 6]], "str_tensor": [[1, 2, 3]]},
     [spec("int_tensor", 3, **INT), spec("str_tensor", 3)], "inconsistent batch size"),
    (f"{JT} FromJsonMultipleZeroBatchTensorsErrors (str_tensor as float)",
     {"int_tensor": np.zeros((0, 2)), "str_tensor": [[1, 2]]},
     [spec("int_tensor", 2, **INT), spec("str_tensor", 2)],
     "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 0"),
    (f"{JT} FromJsonSingleTensorErrors: empty tensor map", {}, [], "empty tensor map"),
    (f"{JT} FromJsonSingleTensorErrors: no shape information", {"tensor": 1},
     [NamedSpec("tensor", TensorSpec("t", (), "int32"))], "no shape information"),
]


@pytest.mark.parametrize(("source", "outputs", "specs", "fragment"), ENCODE_ERRORS,
                         ids=[c[0] for c in ENCODE_ERRORS])
def test_encode_refuses(source: str, outputs: dict[str, Any], specs: list[NamedSpec],
                        fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(fragment)):
        enc(outputs, specs)


HALF_PLUS_TWO = [  # decode → y = x / 2 + 2 (the test model, in numpy) → encode
    (f"{HT} Predict: query latest version", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}', 2,
     '{ "predictions": [[2.5, 3.0], [3.5, 4.0]] }'),
    (f"{HT} Predict: query specific versions", '{"instances": [1.0, 2.0]}', 1,
     '{ "predictions": [2.5, 3.0] }'),
    (f"{HT} Predict: explicit signature_name",
     '{"signature_name": "serving_default", "instances": [3.0, 4.0]}', 1,
     '{ "predictions": [3.5, 4.0] }'),
    (f"{HT} Predict: explicit signature_name and columnar inputs",
     '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', 1,
     '{ "outputs": [3.5, 4.0] }'),
    (f"{API} Example: half_plus_three predict (y = x / 2 + 3)",
     '{"instances": [1.0,2.0,5.0]}', 1, '{ "predictions": [3.5, 4.0, 5.5] }'),
]


@pytest.mark.parametrize(("source", "request_text", "width", "want"), HALF_PLUS_TWO,
                         ids=[c[0] for c in HALF_PLUS_TWO])
def test_half_plus_two_round_trip(source: str, request_text: str, width: int,
                                  want: str) -> None:
    x, y = spec("x", width), spec("y", width)
    got = decode(request_text, x)
    plus = 3.0 if "half_plus_three" in source else 2.0
    out = {"y": np.asarray(got.tensors["x"]) / 2 + plus}
    body = encode_predict(out, [y], got.layout).decode()
    assert same_json(body, want), body


# ----------------------------------------------------------------------------- classify/regress


def test_classify_regress_request_no_context() -> None:
    """json_tensor_test.cc ClassifyRegressRequestTest.RequestNoContext."""
    req = parse_examples(json.loads(
        '{"examples": [{"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0 ], "age": 20}, '
        '{"names": [ "baz" ], "ratings": 6.0}]}'), max_examples=64)
    assert req.context is None and req.signature_name == ""
    (a, b) = req.examples
    assert {k: (f.kind, f.values) for k, f in a.items()} == {
        "names": ("bytes", [b"foo", b"bar"]), "ratings": ("float", [8.0, 9.0]),
        "age": ("int64", [20])}
    assert {k: (f.kind, f.values) for k, f in b.items()} == {
        "names": ("bytes", [b"baz"]), "ratings": ("float", [6.0])}


def test_classify_regress_request_with_context_and_signature() -> None:
    """json_tensor_test.cc ClassifyRegressRequestTest.RequestWithContextAndSignature."""
    req = parse_examples(parse_json(
        b'{"signature_name": "custom_signture", "context": {"query": "pizza", '
        b'"location": [ "sfo" ]}, "examples": [{"names": [ "foo", "bar" ], '
        b'"ratings": [ 8.0, 9.0, NaN, Infinity ], "age": 20}, {"names": [ "baz", '
        b'{ "b64": "aGVsbG8=" } ], "ratings": 6.0, "intboolmix": [ 1, true, false ]}, '
        b'{"names": "bar", "ratings": -Infinity}]}'), max_examples=64)
    assert req.signature_name == "custom_signture"
    assert req.context is not None
    assert {k: f.values for k, f in req.context.items()} == {"query": [b"pizza"],
                                                             "location": [b"sfo"]}
    first, second, third = req.examples
    ratings = first["ratings"].values
    assert ratings[:2] == [8.0, 9.0] and np.isnan(ratings[2]) and ratings[3] == np.inf
    assert second["names"].values == [b"baz", b"hello"] and second["names"].binary
    assert (second["intboolmix"].kind, second["intboolmix"].values) == ("int64", [1, 1, 0])
    assert third["names"].values == [b"bar"] and third["ratings"].values == [-np.inf]


EXAMPLE_ERRORS = [  # json_tensor_test.cc ClassifyRegressRequestTest.JsonErrors, in order
    ('{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}',
     "'signature_name' key must be a string"),
    ('{"context": [ { "names": [ "foo", "bar" ] } ]}', "Example must be JSON object"),
    ('{"examples": { "names": [ "foo", "bar" ] }}', "list/array"),
    ('{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}', "Example must be JSON object"),
    ('{"examples": [ { "names": [ 10, null ] } ]}',
     "names has element with unexpected JSON type: Null"),
    ('{"examples": [ { "names": [ 10, 10.0 ] } ]}', "feature: names expecting type: int64"),
    ('{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}',
     "names has element with unexpected JSON type: Object"),
    ('{"examples": [ { "names": [ [10], 20 ] } ]}',
     "names has element with unexpected JSON type: Array"),
    ('{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}',
     "Only int64 is supported"),
    (f'{{ "examples": [ {{ "names": {DBL_MAX} }} ] }}', "loss of precision"),
    ('{"examples": []}', "'examples' value is an empty array"),  # json_tensor.cc
    ('{"signature_name": "x"}', "When method is classify, key 'examples' is expected"),
]


@pytest.mark.parametrize(("request_text", "fragment"), EXAMPLE_ERRORS,
                         ids=[f"{JT} JsonErrors {i}" for i in range(len(EXAMPLE_ERRORS))])
def test_classify_regress_request_errors(request_text: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(fragment)):
        parse_examples(parse_json(request_text.encode()), max_examples=64)


def test_encoding_binary_values_classify_example() -> None:
    """api_rest.md Encoding binary values: the image + caption classification request."""
    req = parse_examples(json.loads(
        '{"signature_name": "classify_objects", "examples": [{"image": { "b64": '
        '"aW1hZ2UgYnl0ZXM=" }, "caption": "seaside"}, {"image": { "b64": '
        '"YXdlc29tZSBpbWFnZSBieXRlcw==" }, "caption": "mountains"}]}'), max_examples=64)
    assert [ex["image"].values for ex in req.examples] == [[b"image bytes"],
                                                          [b"awesome image bytes"]]
    assert [ex["image"].binary for ex in req.examples] == [True, True]
    assert [ex["caption"].values for ex in req.examples] == [[b"seaside"], [b"mountains"]]
    with pytest.raises(InvalidRequestError, match="No signature was found with the name: "
                                                  "classify_objects"):  # a difference
        check_method(req.signature_name, CLASSIFY_METHOD, has=CLASSIFY_METHOD)


def test_json_from_classification_result() -> None:
    """json_tensor_test.cc ClassifyRegressnResultTest.JsonFromClassificationResult."""
    got = classify_results([[("car", 0.2), ("bike", 0.7), ("bus", 0.1)],
                            [("car", 0.7), ("bike", 0.1), ("bus", 0.2)]])
    assert same_json(got, '{"results": [[ ["car", 0.2], ["bike", 0.7], ["bus", 0.1] ], '
                          '[ ["car", 0.7], ["bike", 0.1], ["bus", 0.2] ]]}'), got


def test_json_from_regression_result() -> None:
    """json_tensor_test.cc ClassifyRegressnResultTest.JsonFromRegressionResult."""
    assert same_json(regress_results([0.2, 0.9, 1.0]), '{ "results": [ 0.2, 0.9, 1.0 ] }')


def test_json_from_regression_result_with_non_finite() -> None:
    """json_tensor_test.cc ClassifyRegressnResultTest.JsonFromRegressionResultWithNonFinite."""
    got = regress_results([0.2, np.inf, 1.0, -np.inf, np.nan])
    assert same_text(got, '{ "results": [ 0.2, Infinity, 1.0, -Infinity, NaN ] }'), got


def test_json_from_result_errors() -> None:
    """json_tensor_test.cc ClassifyRegressnResultTest.JsonFromResultErrors."""
    with pytest.raises(InvalidRequestError, match="empty ClassificationResults"):
        classify_results([])
    with pytest.raises(InvalidRequestError, match="empty RegressionResults"):
        regress_results([])


@pytest.mark.parametrize(("sig", "method", "has", "fragment"), [
    ("classify_x_to_y", CLASSIFY_METHOD, CLASSIFY_METHOD,
     "No signature was found with the name: classify_x_to_y"),
    ("regress_x_to_y", REGRESS_METHOD, CLASSIFY_METHOD,
     "No signature was found with the name: regress_x_to_y"),
    ("", REGRESS_METHOD, PREDICT_METHOD, "Expected regression signature method_name to be "
     "tensorflow/serving/regress. Was: tensorflow/serving/predict"),
    ("", CLASSIFY_METHOD, PREDICT_METHOD, "Expected classification signature method_name to "
     "be tensorflow/serving/classify. Was: tensorflow/serving/predict"),
], ids=[f"{HT} Classify: classify_x_to_y (a difference)",
        f"{HT} Regress: regress_x_to_y (a difference)",
        "classifier.cc-style method check: regress on a predict signature",
        "classifier.cc-style method check: classify without a class head"])
def test_signature_method_checks(sig: str, method: str, has: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(fragment)):
        check_method(sig, method, has=has)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def agent(digits: Any, digits_raw: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Agent, Client]]:
    """digits v1 + v2 (v2 active), a raw model, and the label Version_Label → 1 from config."""
    cfg = make_config(tmp_path_factory.mktemp("store"), models=[
        {"bundle": str(digits.bundle), "activate": False}, {"bundle": str(digits.bundle_v2)},
        {"bundle": str(digits_raw)}],
        **{"http.version_labels": {"digits": {"Version_Label": 1}}})
    a = Agent(cfg, components=())
    a.start()
    assert a.http is not None
    c = Client(*a.http.address)
    yield a, c
    c.close()
    a.stop()


@pytest.fixture
def client(agent: tuple[Agent, Client], digits_eval: DigitsEval) -> Iterator[Client]:
    c = agent[1]
    yield c
    ok = c.post("/v1/models/digits:predict", {"instances": digits_eval.x[:1].tolist()})
    assert ok.status == 200  # every case leaves the agent serving, on the same connection


def status_of(version: str) -> dict[str, Any]:
    return {"version": version, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}


@pytest.mark.parametrize(("path", "versions"), [
    ("/v1/models/digits", ["2", "1"]), ("/v1/models/digits/versions/1", ["1"]),
    ("/v1/models/digits/labels/Version_Label", ["1"]), ("/v1/models/digits/labels/stable", ["2"]),
], ids=[f"{HT} GetStatus: all versions", f"{HT} GetStatus: specific version",
        f"{HT} GetStatus: using a version label", f"{API} Model status API: /labels/ (stable "
        "is the active version)"])
def test_e2e_status(client: Client, path: str, versions: list[str]) -> None:
    r = client.get(path)
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"model_version_status": [status_of(v) for v in versions]}


@pytest.mark.parametrize("path", ["/v1/models/digits/metadata",
                                  "/v1/models/digits/labels/Version_Label/metadata"],
                         ids=[f"{HT} GetModelMetadata", f"{API} Model Metadata API: /labels/"])
def test_e2e_metadata(client: Client, path: str) -> None:
    r = client.get(path)
    assert r.status == 200
    doc = r.json()
    version = "1" if "labels" in path else "2"
    assert doc["model_spec"] == {"name": "digits", "signature_name": "", "version": version}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig) == {"inputs", "outputs", "method_name"}
    assert sig["method_name"] == "tensorflow/serving/predict"
    (inp,) = sig["inputs"].values()
    # a difference: the int8 tensor is shown as DT_FLOAT (clients send model units)
    assert inp["dtype"] == "DT_FLOAT" and inp["tensor_shape"]["unknown_rank"] is False
    assert inp["tensor_shape"]["dim"][0] == {"size": "-1", "name": ""}


def test_e2e_predict_by_version_label(client: Client, digits_eval: DigitsEval) -> None:
    """handler_test.cc Predict: 'Query specific versions using a version label'."""
    body = {"instances": digits_eval.x[:3].tolist()}
    by_label = client.post("/v1/models/digits/labels/Version_Label:predict", body)
    by_version = client.post("/v1/models/digits/versions/1:predict", body)
    assert by_label.status == 200 and by_label.headers["content-type"] == "application/json"
    assert by_label.body == by_version.body


def test_e2e_labels_set_at_run_time(agent: tuple[Agent, Client], client: Client,
                                    digits_eval: DigitsEval) -> None:
    """The registry method the update flow calls: canary → a version, then removed."""
    registry = agent[0].registry
    body = {"instances": digits_eval.x[:1].tolist()}
    assert client.post("/v1/models/digits/labels/canary:predict", body).status == 400
    registry.set_label("digits", "canary", 1)
    try:
        assert client.get("/v1/models/digits/labels/canary").json() == {
            "model_version_status": [status_of("1")]}
        assert registry.labels("digits") == {"Version_Label": 1, "canary": 1, "stable": 2}
    finally:
        registry.set_label("digits", "canary", None)
    r = client.post("/v1/models/digits/labels/canary:predict", body)
    assert r.status == 400 and r.json() == {
        "error": "Unrecognized servable version label: canary"}
    assert registry.active_version("digits") == 2  # labels never move the active version


def test_e2e_stable_follows_the_active_version_unless_pinned(agent: tuple[Agent, Client],
                                                             client: Client) -> None:
    """docs/rest.md Version labels: a pinned stable, and a label of a version not loaded."""
    registry = agent[0].registry
    registry.set_label("digits", "stable", 1)
    registry.set_label("digits", "gone", 9)
    try:
        assert client.get("/v1/models/digits/labels/stable").json() == {
            "model_version_status": [status_of("1")]}
        r = client.post("/v1/models/digits/labels/gone:predict", {"instances": [1]})
        assert r.status == 404 and "Specific(digits, 9)" in r.json()["error"]
    finally:
        registry.set_label("digits", "stable", None)
        registry.set_label("digits", "gone", None)
    assert client.get("/v1/models/digits/labels/stable").json() == {
        "model_version_status": [status_of("2")]}


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), [
    ("POST", "/v1/models/digits/labels/Version_Nonexistent:predict", '{ "instances": ["x"] }',
     400, "Unrecognized servable version label: Version_Nonexistent"),
    ("POST", "/v1/models/digits:predict", "", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/digits:predict", "instances = [1, 2]", 400,
     "JSON Parse error: Invalid value"),
    ("POST", "/v1/models/digits:predict", '{ "instances": ["x", "y"] }', 400,
     "not of expected type: float"),
    ("POST", "/v1/models/digits:predict", '{ "signature_name": 100 }', 400,
     "'signature_name' key must be a string value."),
    ("POST", "/v1/models/foo:predict", '{ "instances": [1] }', 404,
     "Servable not found for request: Latest(foo)"),
    ("POST", "/v1/models/foo/versions/50:predict", '{ "instances": [1] }', 404,
     "Servable not found for request: Specific(foo, 50)"),
    ("POST", "/v1/models/digits99:predict", '{ "instances": [1] }', 404, "digits99"),
    ("POST", "/v1/models/half:predict", '{"instances": [1.0,5.0]}', 404,
     "Servable not found for request: Latest(half)"),
    ("POST", "/v1/models/digits:classify",
     '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }', 400,
     "No signature was found with the name: classify_x_to_y"),
    ("POST", "/v1/models/digits:regress",
     '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }', 400,
     "No signature was found with the name: regress_x_to_y"),
    ("POST", "/v1/models/digits/labels/Version_Label:regress",
     '{"examples": [ { "x": 80.0 } ] }', 400,
     "Expected regression signature method_name to be tensorflow/serving/regress"),
    ("POST", "/v1/models/digits-raw:classify", '{"examples": [{"image": {"b64": "AA=="}}]}',
     400, "model 'digits-raw' has no class head (task 'raw'); use :predict"),
    ("GET", "/v1/models/digits/metadata?signature_name=other", None, 400,
     'Serving signature name: "other" not found in signature def'),
    ("POST", "/v1/models/digits:predict", '{"signature_name": "Bad key: \\"key\\""}', 400,
     'Serving signature name: "Bad key: "key"" not found'),
    ("POST", "/v1/models/digits:predict", '{"inputs": ' + "[" * 500 + "]" * 500 + "}", 400,
     "nested more than 16 lists deep"),
    ("GET", "/v1/foo", None, 404, "unknown route: GET /v1/foo"),
    ("POST", "/v1/models/foo/metadata", "", 405, "method POST not allowed"),
    ("GET", "/v1/models/foo:predict", None, 405, "method GET not allowed"),
    ("POST", "/v1/models/foo/version/50:predict", "", 404, "unknown route"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "", 400,
     "version must be a positive integer"),
    ("POST", "/v1/models/foo/versions/18446744073709551615:regress", "", 400,
     "version must be a positive integer of at most 18 digits"),
    ("POST", "/v1/models/foo/label/some_label:regress", "", 404, "unknown route"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "", 404,
     "unknown route"),
], ids=[f"{HT} PredictRequestErrors: nonexistent version label",
        f"{HT} PredictRequestErrors: empty document",
        f"{HT} PredictRequestErrors: badly formatted JSON",
        f"{HT} PredictRequestErrors: incorrect type",
        f"{HT} PredictRequestErrors: incorrect signature_name type",
        f"{HT} PredictModelNameVersionErrors: foo", f"{HT} PredictModelNameVersionErrors: "
        "foo/versions/50", f"{HT} PredictModelNameVersionErrors: name99",
        f"{API} Example: incorrect request URL is 404",
        f"{HT} Classify: classify_x_to_y (a difference: no such signature)",
        f"{HT} Regress: regress_x_to_y (a difference: no such signature)",
        f"{HT} Regress: using a version label (a difference: no regress method)",
        "issue 12: classify without a class head says so",
        f"{HT} GetModelMetadata: signature_name checked (extension)",
        f"{JT} MakeJsonFromTensors StatusError: quotes in the error survive",
        f"{JC} ParseJson TODO: deep nesting is a 400, not a crash",
        f"{HT} UnsupportedApiCalls: GET /v1/foo (a difference: 404, not 400)",
        f"{HT} UnsupportedApiCalls: POST .../metadata (a difference: 405)",
        f"{HT} UnsupportedApiCalls: GET ...:predict (a difference: 405)",
        f"{HT} UnsupportedApiCalls: /version/50 (a difference: 404)",
        f"{HT} UnsupportedApiCalls: /versions/HELLO",
        f"{HT} UnsupportedApiCalls: uint64 max version",
        f"{HT} UnsupportedApiCalls: /label/ (a difference: 404)",
        f"{HT} UnsupportedApiCalls: /versions/50/labels/ (a difference: 404)"])
def test_e2e_errors(client: Client, method: str, path: str, body: str | None, status: int,
                    fragment: str) -> None:
    r = client.request(method, path, body=body,
                       headers={"Content-Type": "application/json"} if body is not None
                       else {})
    assert r.status == status, r.body
    doc = r.json()
    assert set(doc) == {"error"} and fragment in doc["error"], doc
    assert "\n" not in doc["error"]


def test_e2e_classify_results(client: Client, digits_eval: DigitsEval) -> None:
    """handler_test.cc Classify (by label) + json_tensor_test.cc JsonFromClassificationResult:
    ``{"results": [[[label, score], …]]}`` and application/json."""
    examples = [{"image": b64(digits_eval.png(i))} for i in range(3)]
    r = client.post("/v1/models/digits/labels/Version_Label:classify?k=2",
                    {"signature_name": "serving_default", "examples": examples})
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert len(doc["results"]) == 3 and all(len(row) == 2 for row in doc["results"])
    assert all(isinstance(lbl, str) and isinstance(s, float) for row in doc["results"]
               for lbl, s in row)
    assert [row[0][0] for row in doc["results"]] == [str(v) for v in digits_eval.y[:3]]
    assert doc["model_spec"] == {"name": "digits", "version": "1"}  # extension keys
    assert [[c["label"] for c in row] for row in doc["top_k"]] == [
        [lbl for lbl, _ in row] for row in doc["results"]]


def test_e2e_predict_numbers_are_tf_serving_text(client: Client,
                                                 digits_eval: DigitsEval) -> None:
    """json_tensor.cc WriteDecimal: float32 values without noise digits, read back exactly."""
    r = client.post("/v1/models/digits:predict", {"instances": digits_eval.x[:2].tolist()})
    text = r.body.decode()
    numbers = re.findall(r"-?[0-9][0-9.e+-]*", text)
    assert numbers and all(len(n.lstrip("-").split("e")[0].replace(".", "").strip("0")) <= 9
                           for n in numbers), text
    assert all("." in n or "e" in n for n in numbers)
    col = client.post("/v1/models/digits:predict", {"inputs": digits_eval.x[:2].tolist()})
    assert col.json()["outputs"] == r.json()["predictions"]


def test_e2e_nan_token_parses_and_the_model_refuses_it(client: Client) -> None:
    """api_rest.md JSON conformance: NaN parses; a model input refuses it (a difference)."""
    row = [[[0.0]] * 8] * 8
    text = json.dumps({"instances": [row]}).replace("0.0", "NaN", 1)
    r = client.request("POST", "/v1/models/digits:predict", body=text,
                       headers={"Content-Type": "application/json"})
    assert r.status == 400 and "contains NaN or infinity" in r.json()["error"]


def test_example_integer_past_the_double_range_is_a_400_naming_the_feature() -> None:
    """Found by test_fuzz's body fuzzer: float() of a 400-digit integer raised
    OverflowError (a 500 with a traceback)."""
    from edge_agent.serving.json_examples import parse_examples

    with pytest.raises(InvalidRequestError, match="Feature: image has a number too big"):
        parse_examples({"examples": [{"image": int("9" * 400)}]}, method="classify",
                       max_examples=8)
