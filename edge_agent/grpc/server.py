"""The gRPC server (IO shell): services, auth, TLS, limits, status codes, metrics.

::

    GrpcServer ── tensorflow.serving.PredictionService  Predict, Classify, GetModelMetadata
              ├── tensorflow.serving.ModelService       GetModelStatus
              └── inference.GRPCInferenceService        ServerLive … ModelInfer
                    each RPC: decode (malformed → INVALID_ARGUMENT) → bearer token
                    → the service method (:mod:`~edge_agent.grpc.tfs`,
                    :mod:`~edge_agent.grpc.kserve`) → encode

Status codes, as TF Serving uses them: NotFoundError → NOT_FOUND, every other bad input →
INVALID_ARGUMENT, a full admission queue or an image over the decode budget →
RESOURCE_EXHAUSTED, a transport failure (no interpreter free in time) → UNAVAILABLE, a
missing or wrong token → UNAUTHENTICATED, anything unexpected → INTERNAL (logged, never a
traceback to the client). Messages over ``max_message_bytes`` are refused by gRPC itself
(RESOURCE_EXHAUSTED) before they are read. A fixed pool of ``workers`` threads answers
RPCs; gRPC refuses more than ``max_concurrent_rpcs`` at once (RESOURCE_EXHAUSTED).
ServerLive is the one RPC without the token (a liveness probe, like REST ``/healthz``).

Raises TransportError (cannot bind the port), ConfigError (unreadable TLS files).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from edge_agent.errors import (
    BadInputError,
    ConfigError,
    EdgeError,
    NotFoundError,
    TransportError,
)
from edge_agent.grpc.config import GrpcConfig
from edge_agent.grpc.kserve import KServeService
from edge_agent.grpc.protos import grpc_predict_v2_pb2 as v2
from edge_agent.grpc.protos import tfs_apis_pb2 as tfs
from edge_agent.grpc.tfs import Caller, TfServingService
from edge_agent.serving.admission import Overloaded
from edge_agent.serving.images import ImageTooLarge
from edge_agent.serving.metrics import Metrics
from edge_agent.threadname import name_this_thread

log = logging.getLogger(__name__)

Handler = Callable[[Any, Caller], Message]


@dataclass(frozen=True)
class _Malformed:
    """What the deserializer hands on for bytes that are not the request message."""

    error: str


def status_of(e: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception raised while serving (see module docstring)."""
    if isinstance(e, (Overloaded, ImageTooLarge)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(e, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(e, BadInputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(e, TransportError):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


class GrpcServer:
    """Serves :class:`TfServingService` and :class:`KServeService` on one port."""

    def __init__(self, *, config: GrpcConfig, tf_serving: TfServingService,
                 kserve: KServeService, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._token = config.token.encode() if config.token else None
        self._pool: ThreadPoolExecutor | None = None
        self._server: grpc.Server | None = None
        self.port: int | None = None
        t, k = tf_serving, kserve
        self._services: dict[str, dict[str, tuple[Handler, type[Message], bool]]] = {
            "tensorflow.serving.PredictionService": {
                "Predict": (t.predict, tfs.PredictRequest, True),
                "Classify": (t.classify, tfs.ClassificationRequest, True),
                "GetModelMetadata": (t.metadata, tfs.GetModelMetadataRequest, True)},
            "tensorflow.serving.ModelService": {
                "GetModelStatus": (t.status, tfs.GetModelStatusRequest, True)},
            "inference.GRPCInferenceService": {
                "ServerLive": (k.server_live, v2.ServerLiveRequest, False),
                "ServerReady": (k.server_ready, v2.ServerReadyRequest, True),
                "ModelReady": (k.model_ready, v2.ModelReadyRequest, True),
                "ServerMetadata": (k.server_metadata, v2.ServerMetadataRequest, True),
                "ModelMetadata": (k.model_metadata, v2.ModelMetadataRequest, True),
                "ModelInfer": (k.model_infer, v2.ModelInferRequest, True)},
        }

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    # ------------------------------------------------------------------ handlers

    def _authorized(self, metadata: dict[str, str]) -> bool:
        if self._token is None:
            return True
        value = metadata.get("authorization")
        if value is None:
            return False
        scheme, _, cred = value.partition(" ")
        # compare_digest on bytes: time depends only on the token's length
        return scheme.lower() == "bearer" and hmac.compare_digest(
            cred.strip().encode("utf-8", "replace"), self._token)

    @staticmethod
    def _metadata(ctx: grpc.ServicerContext) -> dict[str, str]:
        """The call's metadata in one pass (the first value of each key; binary ``-bin``
        values are skipped: no RPC reads them)."""
        out: dict[str, str] = {}
        for key, value in ctx.invocation_metadata():
            if isinstance(value, str):
                out.setdefault(key, value)
        return out

    def _wrap(self, rpc: str, fn: Handler, auth: bool) -> Callable[[Any, Any], Message]:
        def handle(req: Any, ctx: grpc.ServicerContext) -> Message:
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                md = self._metadata(ctx)
                if auth and not self._authorized(md):
                    code = grpc.StatusCode.UNAUTHENTICATED
                    ctx.abort(code, "missing or wrong bearer token: send metadata "
                                    "'authorization: Bearer <token>'")
                if isinstance(req, _Malformed):
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    ctx.abort(code, req.error)
                rid = md.get("x-request-id")
                return fn(req, Caller(ctx.peer(), rid[:128] if rid else None))
            except EdgeError as e:
                code = status_of(e)
                ctx.abort(code, str(e))
            except Exception as e:
                if code != grpc.StatusCode.OK:  # ctx.abort's own exception: already set
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("gRPC %s failed", rpc)
                ctx.abort(code, f"internal error in {rpc}: {type(e).__name__}")
            finally:
                self.metrics.observe_grpc(rpc, code.name, time.perf_counter() - t0)
            raise AssertionError("unreachable")  # ctx.abort always raises
        return handle

    @staticmethod
    def _decoder(cls: type[Message], rpc: str) -> Callable[[bytes], Any]:
        def decode(data: bytes) -> Any:
            try:
                return cls.FromString(data)
            except (DecodeError, RuntimeWarning, ValueError) as e:
                return _Malformed(f"{rpc}: request is not a valid {cls.DESCRIPTOR.full_name} "
                                  f"message ({len(data)} bytes): {e}")
        return decode

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service, methods in self._services.items():
            table: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
            for name, (fn, cls, auth) in methods.items():
                table[name] = grpc.unary_unary_rpc_method_handler(
                    self._wrap(name, fn, auth),
                    request_deserializer=self._decoder(cls, f"{service}/{name}"),
                    response_serializer=lambda m: m.SerializeToString())
            out.append(grpc.method_handlers_generic_handler(service, table))
        return out

    # ------------------------------------------------------------------ life cycle

    def _credentials(self) -> grpc.ServerCredentials | None:
        c = self.config
        if c.cert_file is None or c.key_file is None:
            return None
        try:
            pair = (c.key_file.read_bytes(), c.cert_file.read_bytes())
            ca = c.client_ca_file.read_bytes() if c.client_ca_file else None
        except OSError as e:
            raise ConfigError(f"cannot read a TLS file ({e})", key="grpc.cert_file") from e
        return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                           require_client_auth=ca is not None)

    def start(self) -> None:
        """Bind and serve. Idempotent. Raises TransportError when the port is taken."""
        if self._server is not None:
            return
        c = self.config
        self._pool = ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="grpc",
                                        initializer=name_this_thread)
        server = grpc.server(self._pool, handlers=self._handlers(),
                             maximum_concurrent_rpcs=c.max_concurrent_rpcs,
                             options=[("grpc.max_receive_message_length", c.max_message_bytes),
                                      ("grpc.max_send_message_length", c.max_message_bytes),
                                      ("grpc.so_reuseport", 0)])
        where = f"{c.host}:{c.port}"
        creds = self._credentials()
        try:
            port = (server.add_secure_port(where, creds) if creds is not None
                    else server.add_insecure_port(where))
        except RuntimeError as e:
            port = 0
            err: Exception | None = e
        else:
            err = None
        if not port:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise TransportError(f"cannot bind gRPC to {where} (port in use or address not "
                                 f"local){f': {err}' if err else ''}")
        server.start()
        self._server, self.port = server, port

    def stop(self) -> None:
        """Stop accepting, let RPCs in flight finish for ``grace_s``, join the threads."""
        server, pool = self._server, self._pool
        self._server = self._pool = None
        if server is not None:
            server.stop(self.config.grace_s).wait()
        if pool is not None:
            pool.shutdown(wait=True)
