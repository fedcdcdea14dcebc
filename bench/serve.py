"""Serving benchmark, side by side in one run (issue 4: ``bench/serve``).

    .venv/bin/pip install onnxruntime onnx                              # ONNX Runtime rows
    .venv/bin/pip install --no-deps --target .cache/bench/pylib tf2onnx  # once, to convert
    .venv/bin/python bench/serve.py [--threads N] [--quick] [--json OUT]
    .venv/bin/python bench/serve.py --overhead-only [--rounds N] [--baseline-src DIR]
    .venv/bin/python bench/serve.py --grpc [--rounds N] [--seconds S]   # bench/serve_grpc.py
    .venv/bin/python bench/serve.py --grpc-native [--rounds N]          # bench/grpc_floor.py

Rows (same model, same thread count within a row group):

1. in-process ``ServedModel.predict`` throughput ÷ a bare ``Interpreter.invoke`` loop
   (goal ≥ 0.97), for the digits CNN, a two-head tabular model (class + regression, both
   outputs read back) and MobileNetV2 int8;
2. REST p50/p99 against a real ``edge-agent run`` process over keep-alive HTTP, minus the
   bare invoke p50 (goal: p50 overhead ≤ 0.5 ms), per request format: TF Serving REST's,
   and KServe v2 ``/infer`` with a binary tensor (``Inference-Header-Content-Length``) and
   with JSON ``data``, side by side;
3. RSS of an idle agent with MobileNetV2 int8 loaded (goal ≤ 70 MB) and start → first
   answer (goal ≤ 1.5 s; warm = model store and runtime probe already on disk);
4. MobileNetV2 on ONNX Runtime (tf2onnx) beside LiteRT float and int8 — skipped, with a
   note, when onnxruntime / tf2onnx are not installed.

``--dashboard``: the device dashboard's cost (issue 16): page weight in bytes, the
agent's CPU time (``/proc/PID/stat`` utime+stime) over ``--seconds`` idle with a page
polling ``/ui/api/state`` as ``app.js`` does (every 2 s, charts every 5th poll) vs none,
and REST throughput (closed loop, one keep-alive client) in alternating closed/open
blocks: the open/closed ratio (goal ≥ 0.97).

``--overhead-only``: just the REST overhead over bare invoke for digits and the two-head
model (TF Serving JSON, and KServe v2 binary tensor / JSON on the same agent), in
alternating rounds (REST block, bare block, …), the load average noted;
``--baseline-src DIR`` adds an agent run from another checkout (e.g. a temporary worktree
of an older commit) serving digits, its rounds interleaved with this checkout's, so both
figures see the same machine load.

Artifacts (digits bundle, MobileNetV2 with ``weights=None`` as .keras, int8 and float
bundles, ONNX) are built once by a child process (the only one importing TensorFlow) and
cached under ``.cache/bench/``. Measurements never run with TensorFlow in the process.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
DIGITS = CACHE / "digits" / "digits-v1"
MNV2 = CACHE / "mobilenet_v2"
MNV2_INT8, MNV2_ONNX = MNV2 / "bundle-int8", MNV2 / "model.onnx"
MNV2_FLOAT = MNV2 / "model-float32.tflite"  # the converter bundles quantized modes only
MNV2_ONNX_INT8 = MNV2 / "model-int8.onnx"
TWO_HEADS = CACHE / "two-heads"  # tests/model_fixtures.py builds it (the tests' model)
PYLIB = CACHE / "pylib"  # tf2onnx, installed with pip --target (see build())


# ---------------------------------------------------------------------------- build (TF)


def build(small: bool = False) -> None:
    """Child process: everything that needs TensorFlow, each artifact only if missing
    (``small``: digits and the two-head model only, what --overhead-only measures)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from converter.build import ConvertOptions, convert_to_bundle
    from converter.tfload import import_tf
    from edge_agent.bundle import Preprocessing

    if not (DIGITS / "manifest.json").exists():
        from converter.digits import load_split, train_cnn, write_npz

        out = DIGITS.parent
        split = load_split()
        train_cnn(split, out / "digits.keras")
        calib, ev = write_npz(split, out)
        convert_to_bundle(ConvertOptions(model=out / "digits.keras", representative=calib,
                                         eval_data=ev, profile="generic-x86_64", name="digits",
                                         output=DIGITS))
    sys.path.insert(0, str(ROOT / "tests"))
    from model_fixtures import two_heads_at

    two_heads_at(TWO_HEADS)
    if small:
        return
    tf = import_tf()
    MNV2.mkdir(parents=True, exist_ok=True)
    keras_path = MNV2 / "mobilenet_v2.keras"
    if not keras_path.exists():
        tf.keras.utils.set_random_seed(0)
        tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(
            keras_path)
    calib = MNV2 / "calib.npz"
    if not calib.exists():
        np.savez(calib, x=_smooth_images(64, seed=1))
    pre = Preprocessing(resize=(224, 224), mean=(127.5,) * 3, std=(127.5,) * 3)
    if not (MNV2_INT8 / "manifest.json").exists():
        convert_to_bundle(ConvertOptions(model=keras_path, representative=calib,
                                         profile="generic-x86_64", name="mobilenet_v2",
                                         mode="int8", preprocessing=pre, samples=64,
                                         output=MNV2_INT8, latency_runs=3))
    if not MNV2_FLOAT.exists():
        model = tf.keras.models.load_model(keras_path)
        MNV2_FLOAT.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    if not have_onnx():
        print(f"onnxruntime/tf2onnx not installed: no ONNX models (install: {ONNX_NOTE})",
              file=sys.stderr)
        return
    if not MNV2_ONNX.exists():
        # tf2onnx ships a top-level ``tests`` package that shadows this repository's tests
        # when installed into the venv, so it lives apart and is on sys.path only here.
        sys.path.insert(0, str(PYLIB))
        try:
            import tf2onnx
        except ImportError as e:
            raise SystemExit(f"tf2onnx is needed once to build {MNV2_ONNX.name}: .venv/bin/pip "
                             f"install --no-deps --target {PYLIB} tf2onnx") from e

        model = tf.keras.models.load_model(keras_path)
        spec = (tf.TensorSpec((1, 224, 224, 3), tf.float32, name="input"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17,
                                   output_path=str(MNV2_ONNX))
    if not MNV2_ONNX_INT8.exists():
        from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

        xs = (_smooth_images(32, seed=2).astype(np.float32) - 127.5) / 127.5

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(xs[i:i + 1] for i in range(len(xs)))

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.it, None)
                return None if x is None else {"input": x}

        quantize_static(str(MNV2_ONNX), str(MNV2_ONNX_INT8), Reader(),
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


ONNX_NOTE = ("pip install onnxruntime onnx; pip install --no-deps --target "
             ".cache/bench/pylib tf2onnx")


def have_onnx() -> bool:
    import importlib.util

    sys.path.insert(0, str(PYLIB))
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tf2onnx"))
    finally:
        sys.path.remove(str(PYLIB))


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """Plausible-looking images (upscaled low-res noise), uint8 (n, 224, 224, 3)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((224, 224),
                                                            Image.Resampling.BICUBIC)))
    return np.stack(out)


# ---------------------------------------------------------------------------- measure


def pct(lat_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat_s) * 1000.0, q))


def bare_vs_predict(bundle: Path, threads: int, runs: int) -> dict[str, Any]:
    """Bare invoke loop vs ``ServedModel.predict`` on the *same* interpreter and input,
    interleaved call by call so both see the same machine load (the CPUs are shared)."""
    from edge_agent.bundle import read_bundle
    from edge_agent.hooks import Hooks
    from edge_agent.registry import ModelRegistry
    from edge_agent.runtime.backends import select_runtime

    b = read_bundle(bundle)
    served = ModelRegistry(select_runtime(), Hooks(), num_threads=threads).load(b)
    with served.borrow() as m:
        interp = m.interpreter  # used below from this thread only, never concurrently
    bare_once, x = bare_loop(interp, b)

    bare: list[float] = []
    pred: list[float] = []
    for i in range(runs + 10):
        t0 = time.perf_counter()
        bare_once()
        t1 = time.perf_counter()
        served.predict(x, source="bench")
        t2 = time.perf_counter()
        if i >= 10:
            bare.append(t1 - t0)
            pred.append(t2 - t1)
    return {"bare_p50_ms": pct(bare, 50), "bare_p99_ms": pct(bare, 99),
            "predict_p50_ms": pct(pred, 50), "bare_per_s": 1 / trimmed(bare),
            "predict_per_s": 1 / trimmed(pred), "ratio": trimmed(bare) / trimmed(pred),
            "ratio_min": min(bare) / min(pred)}


def trimmed(lat: list[float]) -> float:
    """Mean of the fastest 90 %: the CPUs are shared, so the slowest tail is other people's
    work, not ours (the raw p99 is reported separately)."""
    a = np.sort(np.asarray(lat))
    return float(a[: max(1, int(len(a) * 0.9))].mean())


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on a socket: pre-built request bytes, so the
    measured time is the server's, not the client library's."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @staticmethod
    def build(path: str, body: bytes, ctype: str, headers: dict[str, str] | None = None
              ) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {ctype}\r\n"
                f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body

    def call(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore
        while len(rest) < length:
            rest += self.sock.recv(65536)
        return int(head[9:12]), rest

    def close(self) -> None:
        self.sock.close()


class Agent:
    """``edge-agent run`` as a child process on a free port."""

    def __init__(self, store: Path, bundles: list[Path], threads: int,
                 env: dict[str, str] | None = None, src: Path | None = None) -> None:
        """``src``: run the agent code of that checkout (default: this one)."""
        cmd = [sys.executable, "-m", "edge_agent.cli", "run", "--store", str(store),
               "--profile", "generic-x86_64", "--http", "127.0.0.1:0",
               "--device-id", "bench", *(["--model", *map(str, bundles)] if bundles else [])]
        src = src or ROOT
        env = {**os.environ, "EDGE_AGENT__AGENT__THREADS": str(threads),
               "EDGE_AGENT__AGENT__LOG_LEVEL": "warning", "PYTHONPATH": str(src), **(env or {})}
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=src)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = re.search(r"ready: .* on http://([\d.]+):(\d+)", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                g = re.search(r"grpc on ([\d.]+:\d+)", line)
                self.grpc = g.group(1) if g else ""
                break
        else:
            raise RuntimeError(f"agent did not start (exit {self.proc.wait()})")
        self.conn = http.client.HTTPConnection(self.host, self.port)

    def post(self, path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
        self.conn.request("POST", path, body, {"Content-Type": ctype})
        r = self.conn.getresponse()
        return r.status, r.read()

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.proc.pid).memory_info().rss / 2**20)

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(30)


def rest_latency(agent: Agent, path: str, body: bytes, ctype: str, runs: int,
                 bare_once: Any, block: int = 10, headers: dict[str, str] | None = None
                 ) -> tuple[list[float], list[float]]:
    """REST requests and bare invokes of the same model here (same threads), alternating in
    blocks with a pause between, so both see the same background load but never overlap
    with the other process's spinning XNNPACK worker threads (2 processes, 2 cores)."""
    c = RawClient(agent.host, agent.port)
    req = RawClient.build(path, body, ctype, headers)
    for _ in range(max(5, runs // 10)):
        status, data = c.call(req)
        assert status == 200, data[:300]
        bare_once()
    rest: list[float] = []
    bare: list[float] = []
    while len(rest) < runs:
        time.sleep(0.01)
        for _ in range(block):
            t0 = time.perf_counter()
            c.call(req)
            rest.append(time.perf_counter() - t0)
        time.sleep(0.01)
        for _ in range(block):
            t0 = time.perf_counter()
            bare_once()
            bare.append(time.perf_counter() - t0)
    c.close()
    return rest, bare


def alternating(reqs: dict[str, tuple[Agent, bytes]], bare_once: Any, rounds: int,
                block: int = 20) -> tuple[dict[str, list[float]], list[float]]:
    """Rounds of one block of requests per agent, each followed by a block of bare invokes
    here, with short pauses: every series sees the same background load, none overlaps
    another process's busy threads."""
    return alternating_clients({k: (RawClient(a.host, a.port), req)
                                for k, (a, req) in reqs.items()}, bare_once, rounds, block)


def alternating_clients(clients: dict[str, tuple[Any, bytes]], bare_once: Any, rounds: int,
                        block: int = 20) -> tuple[dict[str, list[float]], list[float]]:
    """:func:`alternating` over ready clients (anything with ``call(bytes)`` and
    ``close()``: :class:`RawClient`, bench/serve_grpc.py's gRPC client)."""
    for c, req in clients.values():  # warm up
        for _ in range(20):
            status, data = c.call(req)
            assert status == 200, data[:300]
    lat: dict[str, list[float]] = {k: [] for k in clients}
    bare: list[float] = []
    for _ in range(rounds):
        for k, (c, req) in clients.items():
            time.sleep(0.005)
            for _ in range(block):
                t0 = time.perf_counter()
                c.call(req)
                lat[k].append(time.perf_counter() - t0)
            time.sleep(0.005)
            for _ in range(block):
                t0 = time.perf_counter()
                bare_once()
                bare.append(time.perf_counter() - t0)
    for c, _ in clients.values():
        c.close()
    return lat, bare


def overhead_only(rounds: int, baseline: Path | None) -> dict[str, Any]:
    """REST p50 − bare p50 for digits (and a baseline checkout's agent on digits) and the
    two-head model, alternating rounds (see module docstring)."""
    from converter.digits import load_split

    res: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count(), "rounds": rounds,
                           "loadavg_start": os.getloadavg(), "versions": versions(),
                           "baseline_src": str(baseline) if baseline else None}
    digit_x = load_split().x_test[0]
    digit_json = json.dumps({"instances": [digit_x.tolist()]}).encode()
    two = np.load(TWO_HEADS / "held.npz")["x"][:1]
    two_json = json.dumps({"instances": two.tolist()}).encode()
    store = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    rows: dict[str, Any] = {}
    try:
        v2 = {"digits": [("KServe v2 binary tensor",
                          v2_request(DIGITS, digit_x[None], binary=True)),
                         ("KServe v2 JSON", v2_request(DIGITS, digit_x[None], binary=False))],
              "two-head (class + score)": [
                  ("KServe v2 binary tensor",
                   v2_request(TWO_HEADS / "two-v1", two, binary=True))]}
        groups: list[tuple[str, Path, str, bytes, list[tuple[str, Path | None]]]] = [
            ("digits", DIGITS, "/v1/models/digits:predict", digit_json,
             [("this checkout", None)] + ([("baseline", baseline)] if baseline else [])),
            ("two-head (class + score)", TWO_HEADS / "two-v1", "/v1/models/two:predict",
             two_json, [("this checkout", None)])]
        for model, bundle, path, body, srcs in groups:
            agents = {who: Agent(store / f"{model[:6]}-{i}", [bundle], 1, src=src)
                      for i, (who, src) in enumerate(srcs)}
            try:
                req = RawClient.build(path, body, "application/json")
                reqs = {k: (a, req) for k, a in agents.items()}
                for fmt, (v2_path, v2_body, ctype, headers) in v2.get(model, []):
                    reqs[f"this checkout, {fmt}"] = (
                        agents["this checkout"], RawClient.build(v2_path, v2_body, ctype,
                                                                 headers))
                lat, bare = alternating(reqs, bare_invoker(bundle, 1), rounds)
            finally:
                for a in agents.values():
                    a.stop()
            for who, series in lat.items():
                rows[f"{model} | {who}"] = {
                    "p50_ms": pct(series, 50), "p99_ms": pct(series, 99),
                    "bare_p50_ms": pct(bare, 50), "overhead_p50_ms": pct(series, 50)
                    - pct(bare, 50), "overhead_min_ms": 1000.0 * (min(series) - min(bare)),
                    "requests": len(series)}
    finally:
        shutil.rmtree(store, ignore_errors=True)
    res["rest"] = rows
    res["loadavg_end"] = os.getloadavg()
    return res


class PagePoller:
    """What an open dashboard asks of the agent: ``app.js``'s polls, on a thread."""

    def __init__(self, host: str, port: int, interval_s: float = 2.0) -> None:
        import threading

        self.host, self.port, self.interval_s = host, port, interval_s
        self.polls = 0
        self.state_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        seq = 0
        while not self._stop.is_set():
            conn.request("GET", f"/ui/api/state?since={seq}&series="
                                f"{1 if self.polls % 5 == 0 else 0}")
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body[:200]
            doc = json.loads(body)  # the page parses it too
            seq = doc["seq"]
            self.polls += 1
            self.state_bytes = max(self.state_bytes, len(body))
            self._stop.wait(self.interval_s)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dashboard_cost(seconds: float, rounds: int) -> dict[str, Any]:
    """Page weight, agent CPU with the page open vs closed, throughput open/closed."""
    from converter.digits import load_split

    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "seconds": seconds,
                           "rounds": rounds}
    body = json.dumps({"instances": [load_split().x_test[0].tolist()]}).encode()
    store = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    agent = Agent(store, [DIGITS], 1)
    try:
        weight = {}
        for f in ("", "app.js", "app.css"):
            agent.conn.request("GET", "/ui/" + f)
            r = agent.conn.getresponse()
            weight[f or "index.html"] = len(r.read())
        res["page_bytes"] = weight
        res["page_bytes_total"] = sum(weight.values())
        cpu: dict[str, float] = {}
        for state in ("closed", "open"):  # idle agent: what the page alone costs
            poller = PagePoller(agent.host, agent.port) if state == "open" else None
            c0, t0 = _cpu_s(agent.proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu[state] = (_cpu_s(agent.proc.pid) - c0) / (time.monotonic() - t0)
            if poller is not None:
                poller.stop()
                res["state_bytes_max"] = poller.state_bytes
        res["agent_cpu_percent"] = {k: round(100 * v, 3) for k, v in cpu.items()}
        c = RawClient(agent.host, agent.port)
        req = RawClient.build("/v1/models/digits:predict", body, "application/json")
        for _ in range(200):
            c.call(req)
        done: dict[str, list[float]] = {"closed": [], "open": []}
        block_s = 5.0
        for i in range(2 * rounds):  # closed, open, closed, open, … (same load for both)
            state = "closed" if i % 2 == 0 else "open"
            poller = PagePoller(agent.host, agent.port) if state == "open" else None
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < block_s:
                c.call(req)
                n += 1
            done[state].append(n / (time.perf_counter() - t0))
            if poller is not None:
                poller.stop()
        c.close()
        closed, opened = float(np.median(done["closed"])), float(np.median(done["open"]))
        res["throughput_rps"] = {"closed": round(closed, 1), "open": round(opened, 1)}
        res["throughput_ratio"] = round(opened / closed, 4)
    finally:
        agent.stop()
        shutil.rmtree(store, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    return res


def print_dashboard(r: dict[str, Any]) -> None:
    print(f"page weight: {r['page_bytes_total']} bytes {r['page_bytes']}; largest state "
          f"document {r.get('state_bytes_max')} bytes")
    cpu = r["agent_cpu_percent"]
    print(f"idle agent CPU over {r['seconds']:g} s: closed {cpu['closed']:.3f} %, page open "
          f"{cpu['open']:.3f} %")
    t = r["throughput_rps"]
    print(f"REST throughput: closed {t['closed']} req/s, open {t['open']} req/s, ratio "
          f"{r['throughput_ratio']:.3f} (goal >= 0.97); load {r['loadavg_start']} -> "
          f"{r['loadavg_end']}")


def print_overhead(r: dict[str, Any]) -> None:
    print(f"\nbench/serve --overhead-only — {r['machine']}, {r['cpus']} CPUs, Python "
          f"{r['python']}, 1 interpreter thread, {r['rounds']} alternating rounds of 20\n")
    print("| REST (keep-alive, real `edge-agent run`; TF Serving JSON `:predict` unless the row "
          "says KServe v2 `/infer`) | p50 | p99 | bare p50 | p50 overhead | min − min |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, v in r["rest"].items():
        print(f"| {k} | {v['p50_ms']:.3f} ms | {v['p99_ms']:.3f} ms | {v['bare_p50_ms']:.3f} "
              f"ms | {v['overhead_p50_ms']:.3f} ms | {v['overhead_min_ms']:.3f} ms |")
    print(f"\nversions: {r['versions']}; baseline: {r['baseline_src']}; load average at start "
          f"{r['loadavg_start'][0]:.2f}, at end {r['loadavg_end'][0]:.2f}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("ai-edge-litert", "numpy", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def scrape(agent: Agent) -> dict[str, float]:
    agent.conn.request("GET", "/metrics")
    text = agent.conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def server_overhead_ms(before: dict[str, float], after: dict[str, float], route: str) -> float:
    """Mean time the agent spent per request outside the model (HTTP, JSON, images),
    from its own metrics: HTTP request duration minus time inside the registry."""
    def delta(prefix: str, suffix: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items()
                   if k.startswith(prefix) and k.endswith(suffix))
    http_key = f'edge_agent_http_request_duration_seconds_{{}}{{{{route="{route}"}}}}'
    n = after[http_key.format("count")] - before.get(http_key.format("count"), 0.0)
    http_s = after[http_key.format("sum")] - before.get(http_key.format("sum"), 0.0)
    reg_s = delta("edge_agent_request_latency_seconds_sum", "}")
    reg_n = delta("edge_agent_request_latency_seconds_count", "}")
    return 1000.0 * (http_s / max(n, 1) - reg_s / max(reg_n, 1))


def bare_loop(interp: Any, b: Any) -> tuple[Any, np.ndarray]:
    """The bare work a request needs: set the (first golden) input, invoke, read *every*
    output (a two-head model answers with both)."""
    ind = interp.get_input_details()[0]
    outs = [d["index"] for d in interp.get_output_details()]
    x = b.manifest.golden[0].input.decode()

    def once() -> None:
        interp.set_tensor(ind["index"], x)
        interp.invoke()
        for i in outs:
            interp.get_tensor(i)
    return once, x


def bare_invoker(bundle: Path, threads: int) -> Any:
    from edge_agent.bundle import read_bundle
    from edge_agent.runtime.backends import select_runtime

    b = read_bundle(bundle)
    return bare_loop(select_runtime().make_interpreter(b.model_bytes, threads), b)[0]


def first_answer_s(store: Path, bundles: list[Path], threads: int, path: str, body: bytes,
                   ctype: str, env: dict[str, str] | None = None) -> tuple[float, Agent]:
    """Process start → first 200 answer to a real request (includes Python start-up)."""
    t0 = time.perf_counter()
    agent = Agent(store, bundles, threads, env)
    while True:
        try:
            status, _ = agent.post(path, body, ctype)
            if status == 200:
                return time.perf_counter() - t0, agent
        except (ConnectionError, http.client.HTTPException):
            agent.conn.close()
        time.sleep(0.005)


def onnx_latency(model: Path, threads: int, x: np.ndarray, runs: int) -> list[float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    lat = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, {name: x})
        lat.append(time.perf_counter() - t0)
    return lat


def litert_latency(model: bytes, x: np.ndarray, threads: int, runs: int) -> list[float]:
    from edge_agent.runtime.backends import select_runtime

    interp = select_runtime().make_interpreter(model, threads)
    ind, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    lat = []
    for i in range(runs + 5):
        t0 = time.perf_counter()
        interp.set_tensor(ind["index"], x)
        interp.invoke()
        interp.get_tensor(outd["index"])
        if i >= 5:
            lat.append(time.perf_counter() - t0)
    return lat


def _jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def v2_request(bundle: Path, x: np.ndarray, *, binary: bool
               ) -> tuple[str, bytes, str, dict[str, str]]:
    """A KServe v2 ``/infer`` request for the bundle's FP32 input ``x`` (path, body, content
    type, headers), every output asked for in the same form as the input: binary tensor
    data (``Inference-Header-Content-Length``) or JSON ``data``."""
    from edge_agent.bundle import read_bundle
    from edge_agent.serving.json_encode import signature_keys

    m = read_bundle(bundle).manifest
    model, name = m.name, signature_keys(m.inputs)[0].name  # the v2 metadata's input name
    x = np.ascontiguousarray(x, dtype="<f4")
    tensor: dict[str, Any] = {"name": name, "shape": list(x.shape), "datatype": "FP32"}
    if binary:
        tensor["parameters"] = {"binary_data_size": x.nbytes}
    else:
        tensor["data"] = x.reshape(-1).round(4).tolist()
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": binary}}
                      ).encode()
    path = f"/v2/models/{model}/infer"
    if not binary:
        return path, head, "application/json", {}
    return (path, head + x.tobytes(), "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(head))})


def v2_cases(bundle: Path, x: np.ndarray, n: int
             ) -> list[tuple[str, str, bytes, str, int, dict[str, str]]]:
    """KServe v2 REST rows beside TF Serving REST's: binary tensor vs JSON."""
    out = []
    for binary in (True, False):
        path, body, ctype, headers = v2_request(bundle, x, binary=binary)
        out.append((f"KServe v2 {'binary tensor' if binary else 'JSON'}", path, body, ctype,
                    n, headers))
    return out


def run(threads: int, quick: bool) -> dict[str, Any]:
    from converter.digits import image_bytes, load_split

    n_small, n_big = (1000, 30) if quick else (5000, 100)
    res: dict[str, Any] = {"threads": threads, "digits_threads": 1,
                           "machine": platform.machine(), "cpus": os.cpu_count(),
                           "python": platform.python_version(),
                           "loadavg_start": os.getloadavg()}
    # An 8×8 CNN invokes in ~10 µs: waking a second XNNPACK thread costs more than it saves
    # (and on shared CPUs the op waits for a descheduled thread), so digits runs 1 thread.
    # 1. in-process predict vs bare invoke
    res["inproc"] = {"digits": bare_vs_predict(DIGITS, 1, n_small),
                     "two-head (class + score)": bare_vs_predict(TWO_HEADS / "two-v1", 1,
                                                                 n_small),
                     "mobilenet_v2_int8": bare_vs_predict(MNV2_INT8, threads, n_big)}
    # 2. REST against a real agent process per model
    split = load_split()
    digit_x = split.x_test[0]
    digit_json = json.dumps({"instances": [digit_x.tolist()]}).encode()
    digit_png = image_bytes(digit_x)
    two_json = json.dumps({"instances": np.load(TWO_HEADS / "held.npz")["x"][:1].tolist()}
                          ).encode()
    img = _smooth_images(1, seed=3)[0]
    from edge_agent.bundle import read_bundle

    raw_int8 = read_bundle(MNV2_INT8).manifest.golden[0].input.decode().tobytes()
    mn_json = json.dumps({"instances": [((img.astype(np.float32) - 127.5) / 127.5).round(4)
                                        .tolist()]}).encode()
    mn_b64 = json.dumps({"instances": [{"b64": base64.b64encode(_jpeg(img)).decode()}]}
                        ).encode()
    store = Path(tempfile.mkdtemp(prefix="bench-store-"))
    rest: dict[str, Any] = {}
    cases: dict[str, list[tuple[str, str, bytes, str, int]]] = {
        "digits": [
            ("JSON instances (1×8×8×1)", "/v1/models/digits:predict", digit_json,
             "application/json", n_small // 5),
            ("classify PNG", "/v1/models/digits:classify", digit_png, "image/png",
             n_small // 5)],
        "two-head": [
            ("JSON instances (1×8), both outputs", "/v1/models/two:predict", two_json,
             "application/json", n_small // 5)],
        "mobilenet_v2_int8": [
            ("octet-stream int8 tensor", "/v1/models/mobilenet_v2:predict", raw_int8,
             "application/octet-stream", n_big),
            ("classify JPEG 224×224", "/v1/models/mobilenet_v2:classify", _jpeg(img),
             "image/jpeg", n_big),
            ("b64 JPEG in JSON", "/v1/models/mobilenet_v2:predict", mn_b64, "application/json",
             n_big),
            ("JSON instances (150,528 floats)", "/v1/models/mobilenet_v2:predict", mn_json,
             "application/json", max(10, n_big // 3))]}
    v2: dict[str, list[tuple[str, str, bytes, str, int, dict[str, str]]]] = {
        "digits": v2_cases(DIGITS, digit_x[None], n_small // 5),
        "two-head": v2_cases(TWO_HEADS / "two-v1", np.load(TWO_HEADS / "held.npz")["x"][:1],
                             n_small // 5),
        "mobilenet_v2_int8": v2_cases(
            MNV2_INT8, (img[None].astype(np.float32) - 127.5) / 127.5, n_big)}
    try:
        for model, bundle, t in (("digits", DIGITS, 1), ("two-head", TWO_HEADS / "two-v1", 1),
                                 ("mobilenet_v2_int8", MNV2_INT8, threads)):
            agent = Agent(store / model, [bundle], t)
            bare_once = bare_invoker(bundle, t)
            try:
                rows = [(*c, {}) for c in cases[model]] + v2[model]
                for fmt, path, body, ctype, n, headers in rows:
                    route = path.rsplit(":", 1)[1] if ":" in path else "v2_infer"
                    before = scrape(agent)
                    lat, bare = rest_latency(agent, path, body, ctype, n, bare_once,
                                             headers=headers)
                    after = scrape(agent)
                    rest[f"{model} | {fmt}"] = {
                        "server_overhead_mean_ms": server_overhead_ms(before, after, route),
                        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                        "bare_p50_ms": pct(bare, 50), "threads": t,
                        "overhead_p50_ms": pct(lat, 50) - pct(bare, 50),
                        "overhead_p99_ms": pct(lat, 99) - pct(bare, 99),
                        "overhead_min_ms": 1000.0 * (min(lat) - min(bare)),
                        "body_bytes": len(body)}
            finally:
                agent.stop()
        res["rest"] = rest
    # 3. idle RSS with only MobileNetV2 int8, and start → first answer
        mstore = Path(tempfile.mkdtemp(prefix="bench-mnv2-"))
        try:
            cold_s, a = first_answer_s(mstore, [MNV2_INT8], threads,
                                       "/v1/models/mobilenet_v2:predict", raw_int8,
                                       "application/octet-stream")
            a.stop()
            warm_s, a = first_answer_s(mstore, [], threads, "/v1/models/mobilenet_v2:predict",
                                       raw_int8, "application/octet-stream")
            time.sleep(3.0)
            res["idle_rss_mb"] = a.rss_mb()
            a.stop()
            _, a = first_answer_s(mstore, [], threads, "/v1/models/mobilenet_v2:predict",
                                  raw_int8, "application/octet-stream",
                                  env={"EDGE_AGENT__AGENT__COMPONENTS": "[]"})
            time.sleep(3.0)
            res["idle_rss_mb_no_components"] = a.rss_mb()
            a.stop()
            res["first_answer_s"] = {"warm": warm_s, "cold": cold_s}
        finally:
            shutil.rmtree(mstore, ignore_errors=True)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    # 4. ONNX Runtime beside LiteRT float and int8
    b8 = read_bundle(MNV2_INT8)
    xf = ((_smooth_images(1, seed=4).astype(np.float32) - 127.5) / 127.5)
    lf = litert_latency(MNV2_FLOAT.read_bytes(), xf, threads, n_big)
    li = litert_latency(b8.model_bytes, b8.manifest.golden[0].input.decode(), threads, n_big)
    side: dict[str, Any] = {"LiteRT int8": li, "LiteRT float32": lf}
    onnx = have_onnx() and MNV2_ONNX.exists() and MNV2_ONNX_INT8.exists()
    if onnx:
        side["ONNX Runtime float32 (tf2onnx)"] = onnx_latency(MNV2_ONNX, threads, xf, n_big)
        side["ONNX Runtime int8 (QDQ static)"] = onnx_latency(MNV2_ONNX_INT8, threads, xf, n_big)
    res["runtimes"] = {k: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99),
                           "per_s": 1000.0 / float(np.mean(np.asarray(v) * 1000))}
                       for k, v in side.items()}
    res["runtimes_note"] = None if onnx else f"ONNX Runtime rows skipped: onnxruntime/tf2onnx " \
        f"not installed ({ONNX_NOTE})"
    res["loadavg_end"] = os.getloadavg()
    res["versions"] = versions()
    return res


def print_table(r: dict[str, Any]) -> None:
    t = r["threads"]
    print(f"\nbench/serve — {r['machine']}, {r['cpus']} CPUs, Python {r['python']}; "
          f"interpreter threads: MobileNetV2 {t}, digits {r['digits_threads']}\n")
    print("| in-process, same interpreter | bare invoke p50 | predict p50 | bare /s | "
          "predict /s | ratio (goal ≥ 0.97) | ratio of minima |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k, v in r["inproc"].items():
        print(f"| {k} | {v['bare_p50_ms']:.3f} ms | {v['predict_p50_ms']:.3f} ms | "
              f"{v['bare_per_s']:.0f} | {v['predict_per_s']:.0f} | {v['ratio']:.3f} | "
              f"{v['ratio_min']:.3f} |")
    print("\n| REST (keep-alive, real `edge-agent run`) | p50 | p99 | bare p50 | "
          "p50 overhead (goal ≤ 0.5 ms) | p99 overhead | min − min | server-side overhead "
          "(mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, v in r["rest"].items():
        print(f"| {k} | {v['p50_ms']:.3f} ms | {v['p99_ms']:.3f} ms | {v['bare_p50_ms']:.3f} ms"
              f" | {v['overhead_p50_ms']:.3f} ms | {v['overhead_p99_ms']:.3f} ms | "
              f"{v['overhead_min_ms']:.3f} ms | {v['server_overhead_mean_ms']:.3f} ms |")
    fa = r["first_answer_s"]
    print("\n| agent process | value | goal |\n|---|---:|---:|")
    print(f"| idle RSS, MobileNetV2 int8 loaded | {r['idle_rss_mb']:.1f} MB | ≤ 70 MB |")
    print(f"| idle RSS, same, `agent.components = []` (no telemetry/update modules imported)"
          f" | {r['idle_rss_mb_no_components']:.1f} MB | ≤ 70 MB |")
    print(f"| start → first answer (warm store) | {fa['warm']:.2f} s | ≤ 1.5 s |")
    print(f"| start → first answer (cold: install + runtime probe) | {fa['cold']:.2f} s | — |")
    print(f"\n| MobileNetV2 224×224, {t} threads, batch 1 | p50 | p99 | per s |")
    print("|---|---:|---:|---:|")
    for k, v in r["runtimes"].items():
        print(f"| {k} | {v['p50_ms']:.2f} ms | {v['p99_ms']:.2f} ms | {v['per_s']:.1f} |")
    if r.get("runtimes_note"):
        print(f"\n{r['runtimes_note']}")
    print(f"\nversions: {r['versions']}; load average at start {r['loadavg_start'][0]:.2f}, "
          f"at end {r['loadavg_end'][0]:.2f} (the CPUs are shared: see p99)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--quick", action="store_true", help="fewer runs")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--overhead-only", action="store_true",
                   help="only REST overhead over bare invoke: digits and the two-head model")
    p.add_argument("--rounds", type=int, default=50,
                   help="--overhead-only: alternating rounds of 20 requests (default 50)")
    p.add_argument("--grpc", action="store_true",
                   help="only the gRPC column (bench/serve_grpc.py): overhead and throughput")
    p.add_argument("--grpc-native", action="store_true",
                   help="only gRPC with a native C++ client (bench/grpc_floor.py): the floor "
                        "of grpcio, the agent's Predict, and throughput vs REST from wrk")
    p.add_argument("--seconds", type=float, default=None,
                   help="--grpc: seconds per throughput round (default 1); "
                        "--dashboard: idle CPU window per state (default 60)")
    p.add_argument("--baseline-src", type=Path,
                   help="--overhead-only: also an agent from this checkout, on digits")
    p.add_argument("--dashboard", action="store_true",
                   help="only the device dashboard's cost: page weight, CPU, throughput")
    a = p.parse_args()
    if a.dashboard or a.grpc_native:
        a.overhead_only = True  # digits is all it needs
    if a.build_only:
        build(small=a.overhead_only)
        return 0
    needed = [DIGITS / "manifest.json", TWO_HEADS / "report.json"]
    if not a.overhead_only:
        needed += [MNV2_INT8 / "manifest.json", MNV2_FLOAT,
                   *((MNV2_ONNX, MNV2_ONNX_INT8) if have_onnx() else ())]
    if not all(f.exists() for f in needed):
        print("building benchmark models (TensorFlow, once; cached in .cache/bench) ...",
              file=sys.stderr)
        subprocess.run([sys.executable, __file__, "--build-only",
                        *(["--overhead-only"] if a.overhead_only else [])], check=True)
    if a.grpc_native:
        import grpc_floor

        r = grpc_floor.run(sys.modules[__name__], min(a.rounds, 10), a.seconds or 3.0)
        grpc_floor.print_table(r)
    elif a.grpc:
        import serve_grpc

        r = serve_grpc.run(sys.modules[__name__], a.rounds, a.seconds or 1.0)
        serve_grpc.print_table(r)
    elif a.dashboard:
        r = dashboard_cost(a.seconds or 60.0, min(a.rounds, 6))
        print_dashboard(r)
    elif a.overhead_only:
        r = overhead_only(a.rounds, a.baseline_src)
        print_overhead(r)
    else:
        r = run(a.threads, a.quick)
        print_table(r)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
