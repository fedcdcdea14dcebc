"""KServe v2 requests fitted to one served model, and its v2 metadata (pure: no sockets).

The model's tensors are the ones TF Serving's REST signature shows
(:func:`edge_agent.serving.codec.input_specs`): the same names, and the same units —
quantized int8/uint8 tensors take and give FP32 values in model units (the agent quantizes),
a raw integer tensor takes its own integers. So a model has one datatype per tensor, the one
its v2 metadata advertises (``FP32``, ``FP16``, ``INT32`` …), and a request in another
datatype is refused, as the protocol's "datatype of the input tensor" requires. An image
input (rank 4) also takes BYTES of shape ``[N]``: N encoded images, decoded with the
bundle's preprocessing (OpenVINO Model Server's convention).

Raises :class:`~edge_agent.errors.InvalidRequestError` (400) naming the tensor and the
problem, and :class:`~edge_agent.errors.NotFoundError` for nothing: the caller looks the
model up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.registry import Prediction, ServedModel
from edge_agent.runtime.model import Inputs
from edge_agent.serving import codec
from edge_agent.serving.images import image_batch
from edge_agent.serving.json_encode import NamedSpec
from edge_agent.serving.v2_encode import OutputTensor
from edge_agent.serving.v2_tensor import InferRequest, InputTensor

PLATFORM = "tflite"  # the model format, as Triton names platforms after theirs (onnxruntime_onnx)
_V2_OF_TF = {"DT_FLOAT": "FP32", "DT_HALF": "FP16", "DT_DOUBLE": "FP64", "DT_INT8": "INT8",
             "DT_UINT8": "UINT8", "DT_INT16": "INT16", "DT_INT32": "INT32",
             "DT_INT64": "INT64", "DT_BOOL": "BOOL"}  # REST and gRPC metadata


def datatype(ns: NamedSpec) -> str:
    """The v2 datatype a model tensor takes and gives (see the module docstring)."""
    return _V2_OF_TF[ns.dtype]


def _tensor_meta(ns: NamedSpec) -> dict[str, Any]:
    return {"name": ns.name, "datatype": datatype(ns),
            "shape": [-1, *(int(d) for d in ns.spec.shape[1:])]}


def metadata(served: ServedModel, versions: Sequence[int]) -> dict[str, Any]:
    """``$metadata_model_response``: name, versions, platform, inputs and outputs."""
    return {"name": served.name, "versions": [str(v) for v in versions],
            "platform": PLATFORM,
            "inputs": [_tensor_meta(ns) for ns in codec.input_specs(served)],
            "outputs": [_tensor_meta(ns) for ns in codec.output_specs(served)]}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def decode(req: InferRequest, served: ServedModel, *, max_batch: int,
           max_image_pixels: int) -> Inputs:
    """The request's inputs as the model's input batch (one array for a one-input model,
    else arrays by tensor name). Raises InvalidRequestError for a missing or unknown input,
    a datatype or shape the model does not take, a batch over ``max_batch`` or inputs of
    different batch sizes."""
    specs = codec.input_specs(served)
    by_name = {t.name: t for t in req.inputs}
    names = ", ".join(ns.name for ns in specs)
    missing = [ns.name for ns in specs if ns.name not in by_name]
    if missing:
        raise InvalidRequestError(f"missing input {missing[0]!r}: model {served.name!r} "
                                  f"takes {names}")
    known = {ns.name for ns in specs}
    unknown = [n for n in by_name if n not in known]
    if unknown:
        raise InvalidRequestError(f"unknown input {unknown[0][:100]!r}: model "
                                  f"{served.name!r} takes {names}")
    arrays: dict[str, np.ndarray] = {}
    batch: tuple[str, int] | None = None
    for ns in specs:
        x = _fit(by_name[ns.name], ns, served, max_batch, max_image_pixels)
        n = int(x.shape[0])
        if n == 0 or n > max_batch:
            raise InvalidRequestError(f"input {ns.name!r}: batch of {n}, expected 1 to "
                                      f"{max_batch} (http.max_batch)")
        if batch is not None and batch[1] != n:
            raise InvalidRequestError(f"input {ns.name!r} has batch size {n}, input "
                                      f"{batch[0]!r} has {batch[1]}")
        batch = (ns.name, n)
        arrays[ns.spec.name] = x
    if len(specs) == 1:
        return arrays[specs[0].spec.name]
    return arrays


def _fit(t: InputTensor, ns: NamedSpec, served: ServedModel, max_batch: int,
         max_image_pixels: int) -> np.ndarray:
    """One request input checked against the model input it names."""
    want = datatype(ns)
    model_shape = _shape_text([-1, *ns.spec.shape[1:]])
    if t.datatype == "BYTES" and ns.binary:  # encoded images, one per batch entry
        if len(t.shape) != 1:
            raise InvalidRequestError(f"input {ns.name!r}: BYTES (encoded images) must have "
                                      f"shape [N], got {_shape_text(t.shape)}")
        if not 0 < t.shape[0] <= max_batch:  # before any image is opened
            raise InvalidRequestError(f"input {ns.name!r}: batch of {t.shape[0]}, expected 1 "
                                      f"to {max_batch} (http.max_batch)")
        return image_batch(served, list(t.array.tolist()), max_image_pixels, spec=ns.spec)
    if t.datatype != want:
        extra = " or BYTES (encoded images)" if ns.binary else ""
        raise InvalidRequestError(f"input {ns.name!r}: datatype {t.datatype} does not match "
                                  f"the model's {want}{extra}")
    if len(t.shape) != len(ns.spec.shape) or tuple(t.shape[1:]) != tuple(ns.spec.shape[1:]):
        raise InvalidRequestError(f"input {ns.name!r}: shape {_shape_text(t.shape)} does not "
                                  f"match the model's {model_shape}")
    return t.array


def outputs(req: InferRequest, served: ServedModel, pred: Prediction) -> list[OutputTensor]:
    """The outputs the request asks for (all, in the model's order, when it names none),
    each as JSON or binary as asked (:func:`check_outputs` has checked the names)."""
    specs = codec.output_specs(served)
    values = dict(zip((ns.name for ns in specs), pred.outputs, strict=True))
    by_name = {ns.name: ns for ns in specs}
    if req.outputs is None:
        wanted = [(ns, req.binary_output) for ns in specs]
    else:
        wanted = []
        wanted = [(by_name[o.name], req.binary_output if o.binary is None else o.binary)
                  for o in req.outputs]
    return [OutputTensor(ns, datatype(ns), values[ns.name], binary) for ns, binary in wanted]


def check_outputs(req: InferRequest, served: ServedModel) -> None:
    """Unknown requested outputs, refused before the model runs."""
    if req.outputs is None:
        return
    names = {ns.name for ns in codec.output_specs(served)}
    for o in req.outputs:
        if o.name not in names:
            raise InvalidRequestError(f"unknown output {o.name[:100]!r}: model "
                                      f"{served.name!r} gives {', '.join(sorted(names))}")
