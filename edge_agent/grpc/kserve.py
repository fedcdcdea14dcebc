"""KServe v2 / Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, over the
same :class:`~edge_agent.serving.dataplane.DataPlane` and input decoding as TF Serving's
API. Tensor names are the signature keys TF Serving's API uses. Inputs come as typed
``contents`` or ``raw_input_contents``; outputs go back raw (``raw_output_contents``, what
Triton sends and tritonclient reads) when the request sent raw inputs or asks for them
(request parameter ``binary_data_output`` or an output's ``binary_data``), else typed.
Datatypes: :data:`edge_agent.grpc.tensors.V2_DTYPES`. No gRPC import here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

import edge_agent
from edge_agent.errors import InvalidRequestError, NotFoundError
from edge_agent.grpc import tensors
from edge_agent.grpc.inputs import Wire, element_limits, model_inputs
from edge_agent.grpc.protos import grpc_predict_v2_pb2 as v2
from edge_agent.grpc.tfs import SOURCE, Caller, Limits
from edge_agent.registry import ServedModel
from edge_agent.runtime.model import Inputs
from edge_agent.serving import codec, v2_model
from edge_agent.serving.dataplane import DataPlane


def _version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise InvalidRequestError(f"model version must be a positive integer of at most 18 "
                                  f"digits, got {text[:40]!r}")
    return int(text)


class KServeService:
    """The six RPCs as plain methods: request message in, response message out."""

    def __init__(self, plane: DataPlane, limits: Limits,
                 ready: Callable[[], tuple[bool, str]]) -> None:
        self.plane = plane
        self.limits = limits
        self._ready = ready

    def _served(self, name: str, version: str) -> ServedModel:
        if not name:
            raise InvalidRequestError("model name is empty: name the model")
        return self.plane.served(name, _version(version))

    def server_live(self, req: v2.ServerLiveRequest, caller: Caller) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    def server_ready(self, req: v2.ServerReadyRequest, caller: Caller
                     ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self._ready()[0])

    def model_ready(self, req: v2.ModelReadyRequest, caller: Caller) -> v2.ModelReadyResponse:
        try:
            served = self._served(req.name, req.version)
        except NotFoundError:
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=served.state.value == "AVAILABLE")

    def server_metadata(self, req: v2.ServerMetadataRequest, caller: Caller
                        ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name="edge-agent", version=edge_agent.__version__,
                                         extensions=[])

    def model_metadata(self, req: v2.ModelMetadataRequest, caller: Caller
                       ) -> v2.ModelMetadataResponse:
        served = self._served(req.name, req.version)
        resp = v2.ModelMetadataResponse(
            name=served.name, platform=v2_model.PLATFORM,
            versions=[str(sm.version) for sm in self.plane.registry.versions(served.name)])
        for specs, out in ((codec.input_specs(served), resp.inputs),
                           (codec.output_specs(served), resp.outputs)):
            for ns in specs:
                out.add(name=ns.name, datatype=v2_model.datatype(ns),
                        shape=[-1, *ns.spec.shape[1:]])
        return resp

    def model_infer(self, req: v2.ModelInferRequest, caller: Caller) -> v2.ModelInferResponse:
        served = self._served(req.model_name, req.model_version)
        caller = Caller(caller.peer, req.id or caller.request_id)
        raw = list(req.raw_input_contents)
        if raw and len(raw) != len(req.inputs):
            raise InvalidRequestError(f"{len(raw)} raw_input_contents for {len(req.inputs)} "
                                      "inputs: send one per input, in order")
        keys = [ns.name for ns in codec.output_specs(served)]
        for o in req.outputs:
            if o.name not in keys:
                raise InvalidRequestError(f"unknown output {o.name[:100]!r} (outputs of "
                                          f"{served.name}: {', '.join(keys)})")
        lim = self.limits
        def decode() -> Inputs:
            most = element_limits(served, {t.name: t for t in req.inputs},
                                  max_batch=lim.max_batch)
            wire: dict[str, Wire] = {}
            for i, t in enumerate(req.inputs):
                where = f"input {t.name[:100]!r}"
                if t.name in wire:
                    raise InvalidRequestError(f"{where} is sent twice")
                if raw and t.HasField("contents"):
                    raise InvalidRequestError(f"{where}: contents and raw_input_contents "
                                              "together; send one")
                wire[t.name] = tensors.from_v2(t.datatype, t.shape, t.contents,
                                               raw[i] if raw else None, where,
                                               max_elements=most[t.name])
            return model_inputs(served, wire, max_batch=lim.max_batch,
                                max_image_pixels=lim.max_image_pixels)

        with self.plane.admit(served.name):
            x = self.plane.decode(served, decode, size=req.ByteSize(), source=SOURCE,
                                  request_id=caller.request_id, client=caller.peer)
            pred = served.predict(x, source=SOURCE, request_id=caller.request_id,
                                  client=caller.peer)
        resp = v2.ModelInferResponse(model_name=served.name, model_version=str(served.version),
                                     id=req.id)
        wanted = [o.name for o in req.outputs] or keys
        by_key = dict(zip(keys, pred.outputs, strict=True))
        as_raw = bool(raw) or _flag(req.parameters, "binary_data_output") or any(
            _flag(o.parameters, "binary_data") for o in req.outputs)
        for key in wanted:
            _encode(np.ascontiguousarray(by_key[key]), key, resp, as_raw)
        return resp


def _flag(params: Mapping[str, v2.InferParameter], key: str) -> bool:
    p = params.get(key)
    return bool(p is not None and p.WhichOneof("parameter_choice") == "bool_param"
                and p.bool_param)


def _encode(arr: np.ndarray, key: str, resp: v2.ModelInferResponse, as_raw: bool) -> None:
    dt = tensors.v2_dtype(arr.dtype)
    out = resp.outputs.add(name=key, datatype=dt.name, shape=list(arr.shape))
    if as_raw or dt.field is None:
        resp.raw_output_contents.append(arr.astype(dt.numpy, copy=False).tobytes())
    else:
        getattr(out.contents, dt.field).extend(arr.ravel().tolist())
