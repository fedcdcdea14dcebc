"""The gRPC column of bench/serve.py (issue 13): ``bench/serve.py --grpc``.

1. p50 overhead over a bare ``Interpreter.invoke`` of TF Serving gRPC ``Predict`` with a
   raw ``tensor_content`` float32 tensor, for the digits CNN and MobileNetV2 int8 (goals:
   ≤ 0.25 ms and ≤ 0.5 ms), and with the raw int8 tensor, beside REST with that raw
   tensor as an octet-stream body and the float32 one as JSON — the same alternating
   rounds as ``--overhead-only`` (gRPC block, bare block, REST block, bare block, …),
   so every series sees the same load. The client floor is measured in the same rounds:
   an empty RPC to the agent (KServe ``ServerLive``) and to a pure-Python echo server
   with the same grpcio (:func:`echo_server`: a sync ``grpc.server``, bytes in, the same
   bytes out, in its own process), empty and Predict-sized. Each row reports its p50
   overhead over the bare invoke AND over the agent's empty RPC (Predict − ServerLive:
   what the agent adds to a gRPC call, without grpcio's own per-call cost);
2. throughput (requests/s) on digits at concurrency 1, 4 and 16: REST (JSON, one
   keep-alive connection per client) and gRPC (one channel per client), in alternating
   rounds of ``--seconds`` each (goal: gRPC ≥ REST at every concurrency). The load comes
   from :data:`CLIENT_PROCESSES` client processes for both protocols alike (the
   concurrency split evenly over their threads), so neither the GIL-bound grpcio client
   nor the cheap raw-socket one is held back by sharing one Python process.

Clients send pre-serialized bytes (REST: :class:`serve.RawClient`; gRPC: a channel's
``unary_unary`` with no serializer), so the figures are the server's. Request messages are
built with the agent's own vendored protos: no TensorFlow in this process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

PREDICT = "/tensorflow.serving.PredictionService/Predict"
LIVE = "/inference.GRPCInferenceService/ServerLive"  # an empty RPC: grpcio's own floor
ECHO = "/bench.Echo/Echo"  # echo_server(): bytes in, the same bytes out
CLIENT_PROCESSES = 4  # throughput clients at c >= 4, for REST and gRPC alike


class GrpcRawClient:
    """``call(request_bytes)`` like :class:`serve.RawClient`, on its own channel."""

    def __init__(self, address: str, method: str = PREDICT) -> None:
        self.channel = grpc.insecure_channel(address)
        self._call = self.channel.unary_unary(method)

    def call(self, request: bytes) -> tuple[int, bytes]:
        return 200, self._call(request, timeout=30)

    def close(self) -> None:
        self.channel.close()


class EchoServer:
    """A pure-Python grpcio server in its own process: a sync ``grpc.server`` with the
    agent's pool size whose one method answers the request bytes unchanged (no
    (de)serializer, no handler work) — the floor any Python grpcio server stands on."""

    def __init__(self, workers: int = 8) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--echo", str(workers)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.address = f"127.0.0.1:{int(self.proc.stdout.readline())}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _serve_echo(workers: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def echo(req: bytes, ctx: Any) -> bytes:
        return req

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.server(ThreadPoolExecutor(max_workers=workers), handlers=[handler],
                         maximum_concurrent_rpcs=64)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


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
            echo = EchoServer()
            try:
                name = agent_model_name(bundle)
                key = _input_key(bundle)
                path = f"/v1/models/{name}:predict"
                raw = _raw_input(bundle)  # the tensor's own dtype (int8): no quantizing
                preq = predict_request(name, key, x)
                clients = {
                    ECHO_EMPTY: (GrpcRawClient(echo.address, ECHO), b""),
                    f"gRPC echo, Predict-sized ({len(preq)} B each way)": (
                        GrpcRawClient(echo.address, ECHO), preq),
                    EMPTY: (GrpcRawClient(agent.grpc, LIVE), b""),
                    "gRPC Predict, float32 tensor_content": (GrpcRawClient(agent.grpc), preq),
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
                echo.stop()
            empty = serve.pct(lat[EMPTY], 50)
            for how, series in lat.items():
                rows[f"{model} | {how}"] = {
                    "p50_ms": serve.pct(series, 50), "p99_ms": serve.pct(series, 99),
                    "bare_p50_ms": serve.pct(bare, 50),
                    "overhead_p50_ms": serve.pct(series, 50) - serve.pct(bare, 50),
                    "over_empty_rpc_p50_ms": serve.pct(series, 50) - empty,
                    "requests": len(series)}
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return rows


EMPTY = "gRPC ServerLive (the agent's empty RPC)"
ECHO_EMPTY = "gRPC echo, empty (pure-Python grpcio server: the client + server floor)"


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


def _client(kind: str, target: str) -> Any:
    if kind == "rest":
        import serve

        host, _, port = target.rpartition(":")
        return serve.RawClient(host, int(port))
    return GrpcRawClient(target)


def _client_process(conn: Any) -> None:
    """One load-driving process: for each job ``(kind, target, request, threads,
    seconds)`` it opens ``threads`` clients, says ``ready``, waits for ``go``, calls for
    ``seconds`` from every thread and answers its requests per second."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    while (job := conn.recv()) is not None:
        kind, target, req, threads, seconds = job
        conns = [_client(kind, target) for _ in range(threads)]
        for c in conns:
            status, data = c.call(req)
            assert status == 200, data[:300]
        conn.send("ready")
        conn.recv()  # go
        counts = [0] * threads
        stop = time.perf_counter() + seconds

        def loop(i: int, stop: float = stop, conns: list[Any] = conns,
                 counts: list[int] = counts, req: bytes = req) -> None:
            n = 0
            while time.perf_counter() < stop:
                conns[i].call(req)
                n += 1
            counts[i] = n

        t0 = time.perf_counter()
        ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(seconds + 60)
        took = time.perf_counter() - t0
        for c in conns:
            c.close()
        conn.send(sum(counts) / took)


class LoadProcesses:
    """``n`` client processes (spawned, so no grpcio state is forked), reused per round."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes = []
        self.procs = []
        for _ in range(n):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_client_process, args=(b,), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)

    def drive(self, kind: str, target: str, req: bytes, clients: int, seconds: float
              ) -> float:
        """``clients`` connections split evenly over the processes: total req/s."""
        used = self.pipes[:min(clients, len(self.pipes))]
        per = [clients // len(used) + (i < clients % len(used)) for i in range(len(used))]
        for pipe, k in zip(used, per, strict=True):
            pipe.send((kind, target, req, k, seconds))
        for pipe in used:
            assert pipe.recv() == "ready"
        for pipe in used:
            pipe.send("go")
        return float(sum(pipe.recv() for pipe in used))

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for p in self.procs:
            p.join(30)


def throughput(serve: Any, bundle: Path, x: np.ndarray, concurrency: tuple[int, ...],
               rounds: int, seconds: float) -> dict[str, Any]:
    """REST JSON vs gRPC raw on one agent, alternating rounds per concurrency, the load
    from the same client processes for both (one process at c=1)."""
    store = Path(tempfile.mkdtemp(prefix="bench-grpc-tp-"))
    out: dict[str, Any] = {}
    agent = serve.Agent(store / "tp", [bundle], 1, env=GRPC_ENV)
    load = LoadProcesses(CLIENT_PROCESSES)
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
                rest.append(load.drive("rest", f"{agent.host}:{agent.port}", rest_req, c,
                                       seconds))
                grp.append(load.drive("grpc", agent.grpc, grpc_req, c, seconds))
            out[str(c)] = {"rest_json_rps": float(np.median(rest)),
                           "grpc_raw_rps": float(np.median(grp)),
                           "client_processes": min(c, CLIENT_PROCESSES),
                           "rounds": rounds, "seconds": seconds,
                           "loadavg": os.getloadavg()[0]}
    finally:
        load.close()
        agent.stop()
        shutil.rmtree(store, ignore_errors=True)
    return out


def run(serve: Any, rounds: int, seconds: float) -> dict[str, Any]:
    from converter.digits import load_split

    digits_x = load_split().x_test[:1].astype(np.float32)  # model units, as clients send
    mn_x = np.random.default_rng(3).uniform(-1, 1, size=(1, 224, 224, 3)).astype(np.float32)
    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "rounds": rounds,
                           "versions": {"grpcio": grpc.__version__,
                                        "protobuf": _protobuf_version(),
                                        "python": platform.python_version()}}
    res["overhead"] = overhead(serve, [("digits", serve.DIGITS, digits_x, 1),
                                       ("mobilenet_v2_int8", serve.MNV2_INT8, mn_x, 2)],
                               rounds)
    res["throughput"] = throughput(serve, serve.DIGITS, digits_x, (1, 4, 16), 3, seconds)
    res["loadavg_end"] = os.getloadavg()
    return res


def _protobuf_version() -> str:
    from google.protobuf import __version__

    return str(__version__)


def print_table(r: dict[str, Any]) -> None:
    v = r["versions"]
    print(f"\nbench/serve --grpc — {r['rounds']} alternating rounds of 20, load average "
          f"{r['loadavg_start'][0]:.2f} → {r['loadavg_end'][0]:.2f}; grpcio {v['grpcio']}, "
          f"protobuf {v['protobuf']}, Python {v['python']}\n")
    print("| model · protocol (real `edge-agent run`) | p50 | p99 | bare p50 | p50 − bare | "
          "p50 − empty RPC |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, row in r["overhead"].items():
        print(f"| {k} | {row['p50_ms']:.3f} ms | {row['p99_ms']:.3f} ms | "
              f"{row['bare_p50_ms']:.3f} ms | {row['overhead_p50_ms']:.3f} ms | "
              f"{row['over_empty_rpc_p50_ms']:.3f} ms |")
    print("\n| digits, concurrency | client processes | REST JSON req/s | gRPC tensor_content "
          "req/s | gRPC ÷ REST | load |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c, row in r["throughput"].items():
        print(f"| {c} | {row['client_processes']} | {row['rest_json_rps']:.0f} | "
              f"{row['grpc_raw_rps']:.0f} | {row['grpc_raw_rps'] / row['rest_json_rps']:.2f} | "
              f"{row['loadavg']:.2f} |")


if __name__ == "__main__" and sys.argv[1:2] == ["--echo"]:
    _serve_echo(int(sys.argv[2]))
