"""gRPC with a native client: where the agent's gRPC time goes (issue 13), ``bench/serve.py
--grpc-native``.

bench/serve_grpc.py drives the agent with Python grpcio clients, so its figures hold the
client's cost too. This one takes the client out: a C++ client (bench/native/grpc_load.cc,
grpc++ generic stub, pre-serialized request bytes) calls, in alternating rounds,

1. a C++ echo server (bench/native/echo_server.cc): gRPC's own floor on this machine;
2. a pure-Python grpcio echo server, sync ``grpc.server`` and ``grpc.aio`` (the same
   grpcio as the agent): the floor any server written on Python grpcio stands on;
3. the agent's empty RPC (KServe ``ServerLive``) and TF Serving ``Predict`` on digits with a
   float32 ``tensor_content`` — beside a bare ``Interpreter.invoke`` block in every round,

and compares throughput of that ``Predict`` with REST JSON from ``wrk`` (a native HTTP load
generator) at concurrency 1, 4 and 16, alternating rounds. Needs ``g++``, ``pkg-config``
and Debian's ``libgrpc++-dev`` (the tools are built once into .cache/bench/native) and
``wrk``; without them it says what to install and exits 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import serve_grpc as sg

HERE = Path(__file__).resolve().parent
NATIVE = HERE / "native"
NEEDS = "apt install g++ pkg-config libgrpc++-dev wrk"
CONCURRENCY = (1, 4, 16)


def build_native(cache: Path) -> dict[str, Path] | None:
    """The C++ tools, compiled once (again when a source is newer); None when the
    toolchain or grpc++ is missing."""
    if not (shutil.which("g++") and shutil.which("pkg-config") and shutil.which("wrk")):
        return None
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True,
                           text=True)
    if flags.returncode != 0:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in ("grpc_load", "echo_server"):
        src, exe = NATIVE / f"{name}.cc", cache / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["g++", "-O2", "-std=c++17", str(src), "-o", str(exe),
                            *flags.stdout.split()], check=True)
        out[name] = exe
    return out


class Server:
    """A server process that prints its port on its first line of stdout."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.address = f"127.0.0.1:{int(self.proc.stdout.readline())}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _serve_aio_echo() -> None:
    import asyncio

    import grpc

    async def main() -> None:
        async def echo(req: bytes, ctx: Any) -> bytes:
            return req

        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
        server = grpc.aio.server(handlers=[handler])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def native_latency(load: Path, target: str, method: str, request: Path, n: int) -> list[float]:
    """``n`` sequential calls from the C++ client, seconds each (the first tenth dropped:
    warm-up)."""
    out = subprocess.run([str(load), target, method, str(request), "lat", str(n)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"grpc_load {method} on {target}: {out.stderr.strip()[-300:]}")
    return [ns / 1e9 for ns in json.loads(out.stdout)[n // 10:]]


def native_rps(load: Path, target: str, request: Path, c: int, seconds: float) -> float:
    out = subprocess.run([str(load), target, sg.PREDICT, str(request), "tput", str(seconds),
                          str(c)], capture_output=True, text=True, timeout=seconds + 60)
    r = json.loads(out.stdout)
    if r["errors"]:
        raise RuntimeError(f"grpc_load: {r['errors']} failed calls at c={c}")
    return float(r["requests"] / seconds)


def wrk_rps(url: str, body: Path, c: int, seconds: float, script_dir: Path) -> float:
    lua = script_dir / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    duration = f"{max(1, round(seconds))}s"
    out = subprocess.run(["wrk", "-t", str(min(c, 2)), "-c", str(c), "-d", duration,
                          "-s", str(lua), url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk: some answers were not 2xx at c={c}:\n{out}")
    (line,) = [ln for ln in out.splitlines() if ln.startswith("Requests/sec")]
    return float(line.split()[1])


def run(serve: Any, rounds: int, seconds: float) -> dict[str, Any]:
    tools = build_native(serve.CACHE / "native")
    if tools is None:
        raise SystemExit(f"bench/serve.py --grpc-native needs a C++ gRPC toolchain and wrk: "
                         f"{NEEDS}")
    from converter.digits import load_split

    x = load_split().x_test[:1].astype(np.float32)
    bundle = serve.DIGITS
    work = Path(tempfile.mkdtemp(prefix="bench-grpc-native-"))
    agent = serve.Agent(work / "store", [bundle], 1, env=sg.GRPC_ENV)
    servers = {"native": Server([str(tools["echo_server"])]),
               "sync": Server([sys.executable, sg.__file__, "--echo", "8"]),
               "aio": Server([sys.executable, __file__, "--aio-echo"])}
    import grpc

    grpcxx = subprocess.run(["pkg-config", "--modversion", "grpc++"], capture_output=True,
                            text=True).stdout.strip()
    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "rounds": rounds,
                           "seconds": seconds,
                           "versions": {**serve.versions(), "grpcio": grpc.__version__,
                                        "grpc++ (C++ tools)": grpcxx}}
    try:
        name = sg.agent_model_name(bundle)
        req = work / "predict.bin"
        req.write_bytes(sg.predict_request(name, sg._input_key(bundle), x))
        empty = work / "empty.bin"
        empty.write_bytes(b"")
        body = work / "predict.json"
        body.write_bytes(json.dumps({"instances": x.tolist()}).encode())
        series = {
            "C++ client → C++ echo server (gRPC's floor)":
                (servers["native"].address, sg.ECHO, req),
            "C++ client → Python grpcio echo, sync grpc.server":
                (servers["sync"].address, sg.ECHO, req),
            "C++ client → Python grpcio echo, grpc.aio":
                (servers["aio"].address, sg.ECHO, req),
            "C++ client → agent ServerLive (empty RPC)": (agent.grpc, sg.LIVE, empty),
            "C++ client → agent Predict, digits float32 tensor_content":
                (agent.grpc, sg.PREDICT, req)}
        bare_once = serve.bare_invoker(bundle, 1)
        lat: dict[str, list[float]] = {k: [] for k in series}
        bare: list[float] = []
        for _ in range(rounds):
            for k, (target, method, request) in series.items():
                lat[k] += native_latency(tools["grpc_load"], target, method, request, 1000)
                for _ in range(200):
                    t0 = time.perf_counter()
                    bare_once()
                    bare.append(time.perf_counter() - t0)
        bare_p50 = serve.pct(bare, 50)
        res["latency"] = {k: {"p50_ms": serve.pct(v, 50), "p99_ms": serve.pct(v, 99),
                              "over_bare_p50_ms": serve.pct(v, 50) - bare_p50,
                              "calls": len(v)} for k, v in lat.items()}
        res["bare_p50_ms"] = bare_p50
        url = f"http://{agent.host}:{agent.port}/v1/models/{name}:predict"
        tput: dict[str, Any] = {}
        for c in CONCURRENCY:
            rest, grp = [], []
            for _ in range(rounds):
                rest.append(wrk_rps(url, body, c, seconds, work))
                grp.append(native_rps(tools["grpc_load"], agent.grpc, req, c, seconds))
            tput[str(c)] = {"rest_json_wrk_rps": float(np.median(rest)),
                            "grpc_native_rps": float(np.median(grp)),
                            "ratio": float(np.median(np.asarray(grp) / np.asarray(rest))),
                            "loadavg": os.getloadavg()[0]}
        res["throughput"] = tput
    finally:
        agent.stop()
        for s in servers.values():
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    return res


def print_table(r: dict[str, Any]) -> None:
    v = r["versions"]
    print(f"\nbench/serve.py --grpc-native — {r['rounds']} alternating rounds, load average "
          f"{r['loadavg_start'][0]:.2f} → {r['loadavg_end'][0]:.2f}; "
          + ", ".join(f"{k} {val}" for k, val in v.items()) + "\n")
    print(f"| sequential unary calls (bare digits invoke p50 {r['bare_p50_ms']:.3f} ms) "
          "| p50 | p99 | p50 − bare |")
    print("|---|---:|---:|---:|")
    for k, row in r["latency"].items():
        print(f"| {k} | {row['p50_ms']:.3f} ms | {row['p99_ms']:.3f} ms | "
              f"{row['over_bare_p50_ms']:.3f} ms |")
    print("\n| digits, concurrency | REST JSON (wrk) req/s | gRPC Predict (C++ client) req/s "
          "| gRPC ÷ REST | load |")
    print("|---:|---:|---:|---:|---:|")
    for c, row in r["throughput"].items():
        print(f"| {c} | {row['rest_json_wrk_rps']:.0f} | {row['grpc_native_rps']:.0f} | "
              f"{row['ratio']:.2f} | {row['loadavg']:.2f} |")


if __name__ == "__main__" and sys.argv[1:2] == ["--aio-echo"]:
    _serve_aio_echo()
