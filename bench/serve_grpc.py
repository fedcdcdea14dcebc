"""The gRPC column of bench/serve.py (issue 13): ``bench/serve.py --grpc``.

1. p50 overhead over a bare ``Interpreter.invoke`` of TF Serving gRPC ``Predict`` with a
   raw ``tensor_content`` float32 tensor, for the digits CNN and MobileNetV2 int8 (goals:
   ≤ 0.25 ms and ≤ 0.5 ms), and with the raw int8 tensor, beside REST with that raw
   tensor as an octet-stream body and the float32 one as JSON — the same alternating
   rounds as ``--overhead-only`` (gRPC block, bare block, REST block, bare block, …),
   so every series sees the same load; an empty RPC
   (KServe ``ServerLive``) in the same rounds shows what grpcio itself costs per call;
2. throughput (requests/s) on digits at concurrency 1, 4 and 16: REST (JSON, one
   keep-alive connection per client) and gRPC (one channel per client), in alternating
   rounds of ``--seconds`` each (goal: gRPC ≥ REST at every concurrency).

Clients send pre-serialized bytes (REST: :class:`serve.RawClient`; gRPC: a channel's
``unary_unary`` with no serializer), so the figures are the server's. Request messages are
built with the agent's own vendored protos: no TensorFlow in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

PREDICT = "/tensorflow.serving.PredictionService/Predict"
LIVE = "/inference.GRPCInferenceService/ServerLive"  # an empty RPC: grpcio's own floor


class GrpcRawClient:
    """``call(request_bytes)`` like :class:`serve.RawClient`, on its own channel."""

    def __init__(self, address: str, method: str = PREDICT) -> None:
        self.channel = grpc.insecure_channel(address)
        self._call = self.channel.unary_unary(method)

    def call(self, request: bytes) -> tuple[int, bytes]:
        return 200, self._call(request, timeout=30)

    def close(self) -> None:
        self.channel.close()


def predict_request(model: str, key: str, x: np.ndarray) -> bytes:
    from edge_agent.grpc import tensors
    from edge_agent.grpc.protos import tfs_apis_pb2

    req = tfs_apis_pb2.PredictRequest()
    req.model_spec.name = model
    tensors.to_tensor_proto(x, req.inputs[key])
    return bytes(req.SerializeToString())


def _input_key(bundle: Path) -> str:
    from edge_agent.bundle import read_bundle
    from edge_agent.runtime.backends import select_runtime
    from edge_agent.runtime.model import LoadedModel
    from edge_agent.serving.json_encode import signature_keys

    b = read_bundle(bundle)
    m = LoadedModel(select_runtime(), b.model_bytes, num_threads=1)
    return signature_keys(m.input_specs)[0].name


def overhead(serve: Any, cases: list[tuple[str, Path, np.ndarray, int]], rounds: int
             ) -> dict[str, Any]:
    """Per model: gRPC raw, REST octet-stream, REST JSON p50 minus bare p50."""
    rows: dict[str, Any] = {}
    store = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    try:
        for model, bundle, x, threads in cases:
            agent = serve.Agent(store / model, [bundle], threads, env=GRPC_ENV)
            try:
                name = agent_model_name(bundle)
                key = _input_key(bundle)
                path = f"/v1/models/{name}:predict"
                raw = _raw_input(bundle)  # the tensor's own dtype (int8): no quantizing
                clients = {
                    "gRPC ServerLive (empty RPC: grpcio client + server floor)": (
                        GrpcRawClient(agent.grpc, LIVE), b""),
                    "gRPC Predict, float32 tensor_content": (GrpcRawClient(agent.grpc),
                                                             predict_request(name, key, x)),
                    "gRPC Predict, raw int8 tensor_content": (
                        GrpcRawClient(agent.grpc), predict_request(name, key, raw)),
                    "REST octet-stream, raw int8": (
                        serve.RawClient(agent.host, agent.port),
                        serve.RawClient.build(path, raw.tobytes(),
                                              "application/octet-stream")),
                    "REST JSON instances": (serve.RawClient(agent.host, agent.port),
                                            serve.RawClient.build(path, json.dumps(
                                                {"instances": x.tolist()}).encode(),
                                                "application/json"))}
                lat, bare = serve.alternating_clients(clients, serve.bare_invoker(bundle,
                                                                                  threads),
                                                      rounds)
            finally:
                agent.stop()
            for how, series in lat.items():
                rows[f"{model} | {how}"] = {
                    "p50_ms": serve.pct(series, 50), "p99_ms": serve.pct(series, 99),
                    "bare_p50_ms": serve.pct(bare, 50),
                    "overhead_p50_ms": serve.pct(series, 50) - serve.pct(bare, 50),
                    "requests": len(series)}
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return rows


def _raw_input(bundle: Path) -> np.ndarray:
    """One instance in the input tensor's own dtype: the first golden vector's input."""
    from edge_agent.bundle import read_bundle

    x: np.ndarray = read_bundle(bundle).manifest.golden[0].input.decode()[:1]
    return x


def agent_model_name(bundle: Path) -> str:
    from edge_agent.bundle import read_bundle

    return read_bundle(bundle).manifest.name


GRPC_ENV = {"EDGE_AGENT__GRPC__ENABLED": "true", "EDGE_AGENT__GRPC__PORT": "0",
            "EDGE_AGENT__HTTP__QUEUE_SIZE": "64"}


def _drive(make: Callable[[], Any], req: bytes, clients: int, seconds: float) -> float:
    """``clients`` threads, each with its own client, calling for ``seconds``: req/s."""
    conns = [make() for _ in range(clients)]
    for c in conns:
        status, data = c.call(req)
        assert status == 200, data[:300]
    counts = [0] * clients
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(clients + 1)

    def loop(i: int) -> None:
        c = conns[i]
        barrier.wait()
        n = 0
        while time.perf_counter() < stop:
            c.call(req)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(seconds + 60)
    took = time.perf_counter() - t0
    for c in conns:
        c.close()
    return sum(counts) / took


def throughput(serve: Any, bundle: Path, x: np.ndarray, concurrency: tuple[int, ...],
               rounds: int, seconds: float) -> dict[str, Any]:
    """REST JSON vs gRPC raw on one agent, alternating rounds per concurrency."""
    store = Path(tempfile.mkdtemp(prefix="bench-grpc-tp-"))
    out: dict[str, Any] = {}
    agent = serve.Agent(store / "tp", [bundle], 1, env=GRPC_ENV)
    try:
        name, key = agent_model_name(bundle), _input_key(bundle)
        path = f"/v1/models/{name}:predict"
        rest_req = serve.RawClient.build(path, json.dumps({"instances": x.tolist()}).encode(),
                                         "application/json")
        grpc_req = predict_request(name, key, x)
        for c in concurrency:
            rest: list[float] = []
            grp: list[float] = []
            for _ in range(rounds):
                rest.append(_drive(lambda: serve.RawClient(agent.host, agent.port), rest_req,
                                   c, seconds))
                grp.append(_drive(lambda: GrpcRawClient(agent.grpc), grpc_req, c, seconds))
            out[str(c)] = {"rest_json_rps": float(np.median(rest)),
                           "grpc_raw_rps": float(np.median(grp)),
                           "rounds": rounds, "seconds": seconds}
    finally:
        agent.stop()
        shutil.rmtree(store, ignore_errors=True)
    return out


def run(serve: Any, rounds: int, seconds: float) -> dict[str, Any]:
    from converter.digits import load_split

    digits_x = load_split().x_test[:1].astype(np.float32)  # model units, as clients send
    mn_x = np.random.default_rng(3).uniform(-1, 1, size=(1, 224, 224, 3)).astype(np.float32)
    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "rounds": rounds}
    res["overhead"] = overhead(serve, [("digits", serve.DIGITS, digits_x, 1),
                                       ("mobilenet_v2_int8", serve.MNV2_INT8, mn_x, 2)],
                               rounds)
    res["throughput"] = throughput(serve, serve.DIGITS, digits_x, (1, 4, 16), 3, seconds)
    res["loadavg_end"] = os.getloadavg()
    return res


def print_table(r: dict[str, Any]) -> None:
    print(f"\nbench/serve --grpc — {r['rounds']} alternating rounds of 20, load average "
          f"{r['loadavg_start'][0]:.2f} → {r['loadavg_end'][0]:.2f}\n")
    print("| model · protocol (real `edge-agent run`) | p50 | p99 | bare p50 | p50 overhead |")
    print("|---|---:|---:|---:|---:|")
    for k, v in r["overhead"].items():
        print(f"| {k} | {v['p50_ms']:.3f} ms | {v['p99_ms']:.3f} ms | {v['bare_p50_ms']:.3f} "
              f"ms | {v['overhead_p50_ms']:.3f} ms |")
    print("\n| digits, concurrency | REST JSON req/s | gRPC tensor_content req/s | gRPC ÷ REST |")
    print("|---:|---:|---:|---:|")
    for c, v in r["throughput"].items():
        print(f"| {c} | {v['rest_json_rps']:.0f} | {v['grpc_raw_rps']:.0f} | "
              f"{v['grpc_raw_rps'] / v['rest_json_rps']:.2f} |")
