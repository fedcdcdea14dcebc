"""KServe v2 / Open Inference Protocol REST routes, on the agent's HTTP port.

::

    GET  /v2/health/live                                   {"live": true} (no token)
    GET  /v2/health/ready                                  {"ready": …}, 503 when not
    GET  /v2                                               server metadata
    GET  /v2/models/{m}[/versions/{v}]                     model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready               {"name", "ready"}
    POST /v2/models/{m}[/versions/{v}]/infer               JSON tensors + binary extension

One path inside: every route takes the same registry lookup, admission slot
(:meth:`ServingApi.admit`), bearer token, body limit, route metrics and prediction hooks
(``ServedModel.predict`` / ``record_rejected``) as TF Serving REST
(:mod:`edge_agent.serving.api`). The protocol's rules are in the pure
:mod:`~edge_agent.serving.v2_tensor` (request tensors, binary data),
:mod:`~edge_agent.serving.v2_encode` (the response) and :mod:`~edge_agent.serving.v2_model`
(one model's inputs, outputs, metadata).

Errors are ``{"error": "..."}``: 400 for a bad request, 404 for an unknown model or
version (versions are numbers: v2 has no version labels), 503 + ``Retry-After`` when the
model's queue is full. See docs/kserve.md.
"""

from __future__ import annotations

from typing import Any

from edge_agent import __version__
from edge_agent.errors import InvalidRequestError
from edge_agent.registry import ModelState, ServedModel
from edge_agent.serving import v2_encode, v2_model, v2_tensor
from edge_agent.serving.api import ServingApi
from edge_agent.serving.http import HttpServer, HTTPStatusError, Request, Response

_MODEL = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
EXTENSIONS = ("binary_tensor_data",)
SERVER_NAME = "edge-agent"
HEADER_LENGTH = "Inference-Header-Content-Length"
SOURCE = "kserve_rest"  # PredictionRecord.source of v2 REST requests


class V2Api:
    """The KServe v2 REST routes over a :class:`ServingApi`'s registry and gates."""

    def __init__(self, api: ServingApi) -> None:
        self.api = api
        self.registry = api.registry

    def register(self, http: HttpServer) -> None:
        http.add_route("GET", "/v2/health/live", self.live, name="v2_live", auth=False)
        http.add_route("GET", "/v2/health/ready", self.ready, name="v2_ready")
        http.add_route("GET", "/v2", self.server_metadata, name="v2_server_metadata")
        http.add_route("GET", _MODEL, self.model_metadata, name="v2_model_metadata")
        http.add_route("GET", _MODEL + "/ready", self.model_ready, name="v2_model_ready")
        http.add_route("POST", _MODEL + "/infer", self.infer, name="v2_infer", inline=True,
                       takes_cores=self.registry.invoke_takes_every_core)

    def _served(self, req: Request) -> ServedModel:
        """The version the path names, or the active one. Raises NotFoundError (404) and
        InvalidRequestError (a version that is not a number)."""
        name, version = self.api.name_version(req)
        return self.registry.get(name, version)

    # ------------------------------------------------------------------ health, metadata

    def live(self, req: Request) -> tuple[int, Any]:
        return 200, {"live": True}

    def ready(self, req: Request) -> tuple[int, Any]:
        ok, reason = self.api.ready()
        return (200, {"ready": True}) if ok else (503, {"ready": False, "error": reason})

    def server_metadata(self, req: Request) -> tuple[int, Any]:
        return 200, {"name": SERVER_NAME, "version": __version__,
                     "extensions": list(EXTENSIONS)}

    def model_metadata(self, req: Request) -> tuple[int, Any]:
        served = self._served(req)
        versions = [sm.version for sm in self.registry.versions(served.name)]
        return 200, v2_model.metadata(served, versions)

    def model_ready(self, req: Request) -> tuple[int, Any]:
        served = self._served(req)
        ok = served.state is ModelState.AVAILABLE
        return (200 if ok else 503), {"name": served.name, "ready": ok}

    # ------------------------------------------------------------------ inference

    def infer(self, req: Request) -> Response:
        served = self._served(req)
        encoding = (req.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise HTTPStatusError(415, f"Content-Encoding {encoding[:40]!r} is not supported: "
                                       "send the request uncompressed")
        with self.api.admit(served.name):
            # at most `workers` bodies decoded at once (serving/admission.py)
            with self.api.admission.decoding(len(req.body)):
                try:  # the body parsed and fitted to this model version
                    header, binary = v2_tensor.split_body(req.body,
                                                          req.headers.get(HEADER_LENGTH))
                    parsed = v2_tensor.parse_infer(v2_tensor.parse_header(header), binary)
                    v2_model.check_outputs(parsed, served)
                    x = v2_model.decode(parsed, served, max_batch=self.api.max_batch,
                                        max_image_pixels=self.api.max_image_pixels)
                except InvalidRequestError as e:
                    served.record_rejected(e, source=SOURCE, request_id=req.request_id,
                                           client=req.client)
                    raise
            pred = served.predict(x, source=SOURCE, request_id=req.request_id,
                                  client=req.client)
        body, json_length = v2_encode.encode_infer(
            v2_model.outputs(parsed, served, pred), model_name=served.name,
            model_version=str(served.version), request_id=parsed.id)
        if json_length is None:
            return Response(200, body)
        return Response(200, body, "application/octet-stream",
                        {HEADER_LENGTH: str(json_length)})
