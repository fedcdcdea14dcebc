"""TensorFlow Serving's gRPC API over the data plane: PredictionService and ModelService.

::

    tensorflow.serving.PredictionService/Predict           PredictRequest → PredictResponse
    tensorflow.serving.PredictionService/Classify          image examples → top classes
    tensorflow.serving.PredictionService/GetModelMetadata  signature_def (SignatureDefMap in Any)
    tensorflow.serving.ModelService/GetModelStatus         version states

``model_spec`` names a version by number (``version``) or label (``version_label``: the
registry's labels, as REST ``/labels/``). Regress, MultiInference and
HandleReloadConfigRequest are not served (UNIMPLEMENTED): nothing over gRPC changes the
control plane. No gRPC import here: :mod:`edge_agent.grpc.server` maps the errors raised
(NotFoundError, InvalidRequestError, Overloaded) to status codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import json_format

from edge_agent.errors import InvalidRequestError
from edge_agent.grpc import tensors
from edge_agent.grpc.inputs import Wire, element_limits, model_inputs
from edge_agent.grpc.protos import error_codes_pb2
from edge_agent.grpc.protos import tfs_apis_pb2 as tfs
from edge_agent.registry import ServedModel
from edge_agent.runtime.model import Inputs
from edge_agent.serving import codec
from edge_agent.serving.dataplane import DataPlane
from edge_agent.serving.json_tensor import check_predict_signature

SOURCE = "grpc"
SIGNATURE_DEF = "signature_def"
_STATES = {s: tfs.ModelVersionStatus.State.Value(s) for s in
           ("LOADING", "AVAILABLE", "UNLOADING", "END")}


@dataclass(frozen=True)
class Caller:
    """Who sent an RPC (for telemetry): gRPC's peer string and an optional request id."""

    peer: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Limits:
    max_batch: int = 64
    max_image_pixels: int = 12_000_000
    default_k: int = 5  # classes per example in a ClassificationResponse


class TfServingService:
    """The four RPCs as plain methods: request message in, response message out."""

    def __init__(self, plane: DataPlane, limits: Limits) -> None:
        self.plane = plane
        self.limits = limits

    def _served(self, spec: tfs.ModelSpec) -> ServedModel:
        if not spec.name:
            raise InvalidRequestError("model_spec.name is empty: name the model")
        return self.plane.served(spec.name, self._version(spec))

    def _version(self, spec: tfs.ModelSpec) -> int | None:
        which = spec.WhichOneof("version_choice")
        if which == "version_label":
            return self.plane.version_of(spec.name, None, spec.version_label)
        if which == "version":
            if spec.version.value < 1:
                raise InvalidRequestError(f"model_spec.version must be a positive integer, "
                                          f"got {spec.version.value}")
            return int(spec.version.value)
        return None

    @staticmethod
    def _spec_of(served: ServedModel, out: tfs.ModelSpec, signature: str = "") -> None:
        out.name = served.name
        out.version.value = served.version
        out.signature_name = signature or codec.SIGNATURE

    def predict(self, req: tfs.PredictRequest, caller: Caller) -> tfs.PredictResponse:
        served = self._served(req.model_spec)
        check_predict_signature(req.model_spec.signature_name)
        keys = [ns.name for ns in codec.output_specs(served)]
        for f in req.output_filter:
            if f not in keys:
                raise InvalidRequestError(f"output tensor alias not found in signature: "
                                          f"{f[:100]} (outputs: {', '.join(keys)})")
        lim = self.limits
        def decode() -> Inputs:
            most = element_limits(served, req.inputs, max_batch=lim.max_batch)
            wire: dict[str, Wire] = {
                k: tensors.from_tensor_proto(t, f"input {k!r}", max_elements=most[k])
                for k, t in req.inputs.items()}
            return model_inputs(served, wire, max_batch=lim.max_batch,
                                max_image_pixels=lim.max_image_pixels)

        with self.plane.admit(served.name):
            x = self.plane.decode(served, decode, size=req.ByteSize(), source=SOURCE,
                                  request_id=caller.request_id, client=caller.peer)
            pred = served.predict(x, source=SOURCE, request_id=caller.request_id,
                                  client=caller.peer)
        resp = tfs.PredictResponse()
        self._spec_of(served, resp.model_spec, req.model_spec.signature_name)
        wanted = set(req.output_filter) or set(keys)
        for key, arr in zip(keys, pred.outputs, strict=True):
            if key in wanted:
                tensors.to_tensor_proto(arr, resp.outputs[key])
        return resp

    def classify(self, req: tfs.ClassificationRequest, caller: Caller
                 ) -> tfs.ClassificationResponse:
        """Each example carries one bytes feature: the encoded image (as REST's rule)."""
        served = self._served(req.model_spec)
        codec.check_classify(served, req.model_spec.signature_name)
        kind = req.input.WhichOneof("kind")
        if kind is None:
            raise InvalidRequestError("input is empty: send input.example_list")
        if kind == "example_list_with_context":
            raise InvalidRequestError("example_list_with_context is not supported: put the "
                                      "image feature in each example of example_list")
        examples = req.input.example_list.examples
        lim = self.limits
        if not examples or len(examples) > lim.max_batch:
            raise InvalidRequestError(f"{len(examples)} examples; send 1 to {lim.max_batch}")
        images = []
        for i, ex in enumerate(examples):
            found = [(k, f) for k, f in ex.features.feature.items()
                     if f.WhichOneof("kind") == "bytes_list"]
            if len(found) != 1 or len(found[0][1].bytes_list.value) != 1:
                raise InvalidRequestError(
                    f"examples[{i}]: expected exactly one bytes_list feature with one value "
                    f"(the encoded image), found {len(found)} bytes features (features: "
                    f"{', '.join(list(ex.features.feature)[:10]) or 'none'})")
            images.append(found[0][1].bytes_list.value[0])
        with self.plane.admit(served.name):
            x = self.plane.decode(
                served, lambda: codec.image_batch(served, images, lim.max_image_pixels),
                size=req.ByteSize(), source=SOURCE, request_id=caller.request_id,
                client=caller.peer)
            pred = served.predict(x, source=SOURCE, request_id=caller.request_id,
                                  client=caller.peer)
        probs = pred.probabilities
        assert probs is not None  # check_classify refused a model without a class head
        resp = tfs.ClassificationResponse()
        self._spec_of(served, resp.model_spec, req.model_spec.signature_name)
        for r, row in enumerate(served.top_k(pred, min(lim.default_k, probs.shape[1]))):
            cl = resp.result.classifications.add()
            for c in row:
                cl.classes.add(label=c["label"], score=float(probs[r, c["index"]]))
        return resp

    def metadata(self, req: tfs.GetModelMetadataRequest, caller: Caller
                 ) -> tfs.GetModelMetadataResponse:
        """The REST metadata document's signature_def, which is SignatureDefMap's JSON."""
        served = self._served(req.model_spec)
        fields = list(req.metadata_field)
        if fields != [SIGNATURE_DEF]:
            raise InvalidRequestError(f"metadata_field must be [{SIGNATURE_DEF!r}] (the only "
                                      f"metadata served), got {fields[:4]}")
        doc = codec.metadata(served)["metadata"][SIGNATURE_DEF]
        sigs = json_format.ParseDict(doc, tfs.SignatureDefMap())
        resp = tfs.GetModelMetadataResponse()
        self._spec_of(served, resp.model_spec)
        resp.model_spec.signature_name = ""
        resp.metadata[SIGNATURE_DEF].Pack(sigs)
        return resp

    def status(self, req: tfs.GetModelStatusRequest, caller: Caller
               ) -> tfs.GetModelStatusResponse:
        spec = req.model_spec
        if not spec.name:
            raise InvalidRequestError("model_spec.name is empty: name the model")
        rows = self.plane.status_rows(spec.name, self._version(spec))
        resp = tfs.GetModelStatusResponse()
        for version, state, code, message in rows:
            st = resp.model_version_status.add(version=version, state=_STATES[state])
            st.status.error_code = error_codes_pb2.Code.Value(code)  # type: ignore[assignment]
            st.status.error_message = message
        return resp
