"""The agent's REST routes: TensorFlow Serving's API, classify, health, readiness, metrics.

::

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status (all or one)
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature_def + bundle
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    {"instances"|"inputs": ...}
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   image body, or {"examples"}
                                                                  (features by input name)
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress    checked, then refused
    GET  /v1/models                                   every loaded model (extension)
    GET  /v1/agent/status                             Agent.status() (extension)
    GET  /healthz  /readyz  /metrics

``:predict`` also takes ``Content-Type: application/octet-stream``: the input tensor's raw
bytes in its own dtype (batch inferred from the length) — the fastest way to send big
tensors. See docs/rest.md.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.registry import ModelRegistry, ServedModel
from edge_agent.runtime.model import Inputs
from edge_agent.serving import codec
from edge_agent.serving.admission import Admission
from edge_agent.serving.dataplane import DataPlane
from edge_agent.serving.http import HttpServer, HTTPStatusError, Request, Response
from edge_agent.serving.metrics import Metrics, wants_openmetrics

_MODEL = (r"/v1/models/(?P<name>[^/:]+)"
          r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?")
_VERSION = re.compile(r"[0-9]{1,18}")


class ServingApi:
    """Binds the registry, the admission gate and metrics to HTTP routes."""

    def __init__(self, registry: ModelRegistry, admission: Admission, metrics: Metrics, *,
                 max_batch: int = 64, max_image_pixels: int = 12_000_000, default_k: int = 5,
                 ready: Callable[[], tuple[bool, str]] | None = None,
                 status: Callable[[], dict[str, Any]] | None = None,
                 failures: Callable[[str], Mapping[int, str]] | None = None) -> None:
        self.registry = registry
        self.admission = admission
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_image_pixels = max_image_pixels
        self.default_k = default_k
        self._ready = ready or (lambda: (bool(registry.names()), "no model loaded"))
        self._status = status or (lambda: {"models": registry.snapshot()})
        self.plane = DataPlane(registry, admission, metrics, failures=failures)

    def register(self, http: HttpServer) -> None:
        # inline=True: quick data-plane handlers may run on the event loop (serving/inline.py)
        http.add_route("GET", "/healthz", self.healthz, name="healthz", auth=False, inline=True)
        http.add_route("GET", "/readyz", self.readyz, name="readyz", inline=True)
        http.add_route("GET", "/metrics", self.metrics_page, name="metrics")
        http.add_route("GET", "/v1/agent/status", lambda r: (200, self._status()),
                       name="agent_status")
        http.add_route("GET", "/v1/models", self.models, name="models")
        http.add_route("GET", _MODEL, self.status, name="status", inline=True)
        http.add_route("GET", _MODEL + "/metadata", self.metadata, name="metadata", inline=True)
        cores = self.registry.invoke_takes_every_core  # a longer inline budget (inline.py)
        http.add_route("POST", _MODEL + ":predict", self.predict, name="predict", inline=True,
                       takes_cores=cores)
        http.add_route("POST", _MODEL + ":classify", self.classify, name="classify",
                       inline=True, takes_cores=cores)
        http.add_route("POST", _MODEL + ":regress", self.regress, name="regress", inline=True,
                       takes_cores=cores)

    # ------------------------------------------------------------------ helpers

    def name_version(self, req: Request) -> tuple[str, int | None]:
        """The model name and the version the path names (by number or label), or None."""
        name = req.params["name"] or ""
        v = req.params.get("version")
        if v is not None and (_VERSION.fullmatch(v) is None or int(v) < 1):
            raise InvalidRequestError(f"version must be a positive integer of at most 18 "
                                      f"digits, got {v[:40]!r}")  # never int() of 5000 digits
        return name, self.plane.version_of(name, None if v is None else int(v),
                                           req.params.get("label"))

    def _served(self, req: Request) -> ServedModel:
        """The model version the path names. Raises NotFoundError in TF Serving's words."""
        return self.plane.served(*self.name_version(req))

    def ready(self) -> tuple[bool, str]:
        """(ready to serve, why not): what ``/readyz`` and ``/v2/health/ready`` answer."""
        return self._ready()

    def admit(self, model: str) -> AbstractContextManager[None]:
        """A work slot for ``model`` (every protocol's one gate: :class:`DataPlane`).
        Raises Overloaded."""
        return self.plane.admit(model)

    # ------------------------------------------------------------------ routes

    def healthz(self, req: Request) -> tuple[int, Any]:
        return 200, {"status": "ok"}

    def readyz(self, req: Request) -> tuple[int, Any]:
        ok, reason = self.ready()
        if not ok:
            return 503, {"ready": False, "error": reason}
        return 200, {"ready": True, "models": self.registry.names()}

    def metrics_page(self, req: Request) -> Response:
        snapshot = self.registry.snapshot()
        self.metrics.models_loaded.set(sum(len(m["versions"]) for m in snapshot))
        for m in snapshot:
            for v in m["versions"]:
                if "variant_index" in v:
                    labels = (m["name"], str(v["version"]))
                    self.metrics.model_variant.labels(*labels).set(v["variant_index"])
                    self.metrics.model_degraded.labels(*labels).set(int(v["degraded"]))
        body, ctype = self.metrics.exposition(
            openmetrics_format=wants_openmetrics(req.headers.get("Accept")))
        return Response(200, body, ctype)

    def models(self, req: Request) -> tuple[int, Any]:
        return 200, {"models": self.registry.snapshot()}

    def status(self, req: Request) -> tuple[int, Any]:
        """TF Serving's GetModelStatusResponse; failed loads show as END with their error."""
        return 200, codec.status(self.plane.status_rows(*self.name_version(req)))

    def metadata(self, req: Request) -> tuple[int, Any]:
        return 200, codec.metadata(self._served(req), req.query)

    def predict(self, req: Request) -> Response:
        served = self._served(req)
        with self.admit(served.name):
            x: Inputs
            if req.content_type == "application/octet-stream":
                x, layout = self._raw_tensor(served, req.body, req), codec.ROW
            else:
                with self.admission.decoding(len(req.body)):  # bounded decodes in flight
                    doc = req.json()
                    try:  # the body parsed; now it must fit this model version
                        x, layout = codec.decode_predict(
                            doc, served, max_batch=self.max_batch,
                            max_image_pixels=self.max_image_pixels, body=req.body)
                    except InvalidRequestError as e:
                        del doc
                        self._rejected(served, e, req)
                        raise
                    del doc  # the Python objects go before the invoke, not after it
            pred = served.predict(x, source="rest", request_id=req.request_id,
                                  client=req.client)
        return Response(200, codec.encode_predict_bytes(pred, served, layout))

    @staticmethod
    def _rejected(served: ServedModel, e: InvalidRequestError, req: Request) -> None:
        """A body that parsed but does not fit this model version: recorded, and the
        decoder's frames in the traceback cleared, so the parsed body's objects are freed
        now (inside the decode permit), not when the 400 has been written."""
        traceback.clear_frames(e.__traceback__)
        served.record_rejected(e, source="rest", request_id=req.request_id,
                               client=req.client)

    def _raw_tensor(self, served: ServedModel, body: bytes, req: Request) -> np.ndarray:
        try:
            return self._raw_tensor_of(served, body)
        except InvalidRequestError as e:
            self._rejected(served, e, req)
            raise

    def _raw_tensor_of(self, served: ServedModel, body: bytes) -> np.ndarray:
        if len(served.input_specs) != 1:
            raise InvalidRequestError(
                f"an octet-stream body is one input tensor; {served.name} takes "
                f"{len(served.input_specs)} ({', '.join(s.name for s in served.input_specs)}): "
                "send them by name as JSON")
        spec = served.input_spec
        dtype = np.dtype(spec.dtype)
        per = int(np.prod(spec.shape[1:])) * dtype.itemsize
        if not body or len(body) % per:
            raise InvalidRequestError(
                f"octet-stream body of {len(body)} bytes is not a whole number of "
                f"{spec.dtype} tensors of shape {list(spec.shape[1:])} ({per} bytes each)")
        n = len(body) // per
        if n > self.max_batch:
            raise InvalidRequestError(f"{n} instances, over the limit of {self.max_batch} "
                                      "per request")
        return np.frombuffer(body, dtype=dtype).reshape(n, *spec.shape[1:])

    def classify(self, req: Request) -> Response:
        """TF Serving's classify (``{"examples": …}``) or a raw image body (extension)."""
        served = self._served(req)
        ctype = req.content_type
        if ctype.startswith("multipart/"):
            raise HTTPStatusError(415, "multipart uploads are not supported: send the image "
                                       "bytes as the body (e.g. curl --data-binary @img.png "
                                       "-H 'Content-Type: image/png')")
        json_body = "json" in ctype
        if not json_body:
            codec.check_classify(served, "")  # no body signature: is there a class head?
        head = served.class_position  # check_classify refused a model without one
        classes = int(np.prod(served.output_specs[head or 0].shape[1:]))
        k = codec.parse_k(req.query, self.default_k, classes)
        with self.admit(served.name):
            if not json_body and not req.body:
                raise InvalidRequestError("empty body: send the image bytes (PNG, JPEG, …)")
            with self.admission.decoding(len(req.body)):  # bounded decodes in flight
                x = (codec.classify_inputs(req.json(), served, max_batch=self.max_batch,
                                           max_image_pixels=self.max_image_pixels)
                     if json_body else codec.image_batch(served, [req.body],
                                                         self.max_image_pixels))
            pred = served.predict(x, source="rest", request_id=req.request_id,
                                  client=req.client)
        return Response(200, codec.encode_classify(served, pred, k))

    def regress(self, req: Request) -> tuple[int, Any]:
        """TF Serving's regress: the body and ``signature_name`` are checked as TF Serving
        checks them, then refused (no model here has a regression signature)."""
        served = self._served(req)  # 404 first for an unknown model
        codec.check_regress(req.json(), served, max_batch=self.max_batch)
        raise InvalidRequestError(":regress is not supported; use :predict")
