"""``[grpc]``: the gRPC endpoint (TF Serving PredictionService/ModelService, KServe v2).

Off by default. Turning it on needs the ``grpc`` extra (``pip install
'edge-inference[grpc]'``: grpcio and protobuf); without it the start fails with one line
naming the extra. The light agent install never imports grpc.

Raises ConfigError naming ``grpc.<key>`` and the file or environment variable.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.config_reader import Table

MIB = 1024 * 1024
EXTRA = "pip install 'edge-inference[grpc]'"


@dataclass(frozen=True)
class GrpcConfig:
    """The validated ``[grpc]`` table (units in the names)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8500  # TF Serving's gRPC port; 0 picks a free port (tests)
    max_message_bytes: int = 8 * MIB  # one request or response message
    workers: int = 8  # threads answering RPCs; more concurrent RPCs wait in gRPC's queue
    max_concurrent_rpcs: int = 64  # beyond this gRPC answers RESOURCE_EXHAUSTED at once
    token: str | None = field(default=None, repr=False)  # bearer token; default http.token
    token_file: Path | None = None
    cert_file: Path | None = None  # TLS: server certificate chain (PEM)
    key_file: Path | None = None  # TLS: its private key (PEM)
    client_ca_file: Path | None = None  # mTLS: clients must present a cert signed by this
    grace_s: float = 5.0  # on stop, RPCs in flight get this long to finish

    @classmethod
    def parse(cls, t: Table, *, http_token: str | None = None) -> GrpcConfig:
        """Validate ``[grpc]``; ``http_token`` is the token used when it sets none."""
        d = cls
        token, token_file = t.opt_text("token"), t.path("token_file")
        if token is not None and token_file is not None:
            raise t.err("token_file", "set grpc.token or grpc.token_file, not both")
        if token_file is not None:
            token = t.read_secret("token_file", token_file)
        cert, key, ca = t.path("cert_file"), t.path("key_file"), t.path("client_ca_file")
        if (cert is None) != (key is None):
            raise t.err("key_file" if key is None else "cert_file",
                        "set both grpc.cert_file and grpc.key_file for TLS, or neither")
        if ca is not None and cert is None:
            raise t.err("client_ca_file", "mTLS needs TLS: set grpc.cert_file and "
                                          "grpc.key_file too")
        for k, p in (("cert_file", cert), ("key_file", key), ("client_ca_file", ca)):
            if p is not None and not p.is_file():
                raise t.err(k, f"no such file: {p}")
        s = cls(
            enabled=t.flag("enabled", False),
            host=t.text("host", d.host),
            port=t.integer("port", d.port, 1, 65535, allow=(0,)),
            max_message_bytes=t.integer("max_message_bytes", d.max_message_bytes, 1024,
                                        1 << 30),
            workers=t.integer("workers", d.workers, 1, 256),
            max_concurrent_rpcs=t.integer("max_concurrent_rpcs", d.max_concurrent_rpcs, 1,
                                          100_000),
            token=token if token is not None else http_token,
            token_file=token_file,
            cert_file=cert, key_file=key, client_ca_file=ca,
            grace_s=t.number("grace_s", d.grace_s, 0.0, 600.0, exclusive=False),
        )
        if s.enabled:
            problem = missing_extra()
            if problem is not None:
                raise t.err("enabled", problem)
        t.finish()
        return s


def missing_extra() -> str | None:
    """Why the gRPC server cannot run here (None: it can): no grpcio/protobuf, or too old."""
    try:
        importlib.import_module("grpc")
        importlib.import_module("edge_agent.grpc.protos.tfs_apis_pb2")
        importlib.import_module("edge_agent.grpc.protos.grpc_predict_v2_pb2")
    except ImportError as e:
        return f"gRPC serving needs the grpc extra: {EXTRA} ({e})"
    except Exception as e:  # protobuf's VersionError: a runtime older than the gencode
        return f"gRPC serving needs a newer protobuf: {EXTRA} ({type(e).__name__}: {e})"
    return None
