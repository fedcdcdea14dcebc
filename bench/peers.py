"""The agent beside what a user would write instead (issue 17): ``bench/peers.py``.

    .venv/bin/pip install fastapi uvicorn gunicorn flask   # the peers (the [peers] extra)
    .venv/bin/python bench/peers.py [--cases digits,mnv2-raw,mnv2-b64] [--rounds 3]
                                    [--seconds 3] [--json OUT]

Every server serves the same bundle's ``model.tflite`` on ai-edge-litert behind TF
Serving's REST shape (``POST /v1/models/NAME:predict``, dequantized ``{"predictions": …}``
back), doing the agent's work for each body:

* ``digits``   — ``{"instances": …}`` floats (1×8×8×1) in model units, quantized to int8;
* ``mnv2-raw`` — MobileNetV2 int8, the input tensor's raw bytes
  (``application/octet-stream``, 150,528 B; the agent's documented fast path);
* ``mnv2-b64`` — MobileNetV2 int8, ``{"instances": [{"b64": JPEG}]}`` (TF Serving's image
  form): base64, JPEG decode (Pillow), resize to 224×224, ``(x − 127.5) / 127.5``, int8.

The servers:

* ``agent``   — ``edge-agent run`` (its own decoders; ``[agent] workers``/``threads`` below);
* ``fastapi`` — a minimal FastAPI app on uvicorn, one process, the invoke under a lock in
  an ``async def`` endpoint (what the tutorials write);
* ``gunicorn`` — a WSGI function on gunicorn's sync workers (its way to run in parallel:
  one process, one interpreter, per worker);
* ``flask``   — Flask's threaded server, the invoke under a lock.

Fair configuration: every server gets the same number of interpreter threads, each in its
own natural form. For ``digits`` that is 1 everywhere (one interpreter of one thread; an
8×8 CNN invokes in ~10 µs, a second XNNPACK thread costs more than it saves). For
MobileNetV2 it is 2 (the cores of the bench machine and the profile's
``default_threads``): the agent runs **its own default split** — what ``edge-agent run
--profile generic-x86_64`` uses without ``[agent] workers``/``threads``
(:func:`edge_agent.profiles.default_split`: 1 worker × 2 threads on this 2-core machine),
so the table shows what a user gets; gunicorn 2 sync workers × 1 thread (its own way to
use 2 cores), FastAPI and Flask one interpreter of 2 threads under a lock (one interpreter
is what their minimal scripts hold; two interpreters behind an ``async def`` would still
run one at a time). ``--agent-split WxT`` overrides the agent's MobileNetV2 split (``2x1``
as gunicorn splits; ``2x2`` oversubscribes the 2 cores, which a profile does not allow).

The load is ``wrk`` (a native load generator, one connection per client) at concurrency 1,
4 and 16, in alternating rounds (agent, fastapi, gunicorn, flask, agent, …) of
``--seconds`` each; the figures are medians over rounds, the ratios ours ÷ peer per round
then their median, p99 from wrk's latency distribution, CPU per request from the server
process tree's ``/proc`` times, and the load average. Before measuring, every server's
answer to each body is checked against the agent's (same top class, scores within 0.02).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("agent", "fastapi", "gunicorn", "flask")
CONCURRENCY = (1, 4, 16)
CACHE = ROOT / ".cache" / "bench"
DIGITS = CACHE / "digits" / "digits-v1"
MNV2 = CACHE / "mobilenet_v2" / "bundle-int8"
PROFILE = "generic-x86_64"  # the agent's profile here
# case: (bundle, the peers' interpreter threads in total, the agent's workers × threads;
# None: the agent's own default on PROFILE, default_split)
CASES: dict[str, tuple[Path, int, tuple[int, int] | None]] = {
    "digits": (DIGITS, 1, (1, 1)),
    "mnv2-raw": (MNV2, 2, None),
    "mnv2-b64": (MNV2, 2, None),
}


def agent_default_split() -> tuple[int, int]:
    """The agent's workers × threads on PROFILE here, as ``edge-agent run`` derives them
    (this checkout's code, as the agent it starts runs: ``PYTHONPATH=ROOT``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from edge_agent.profiles import default_split, load_profile

    return default_split(load_profile(PROFILE), os.cpu_count())


# ------------------------------------------------------------------ the peers' servers


def _model(bundle: Path, threads: int) -> tuple[Any, str]:
    """One interpreter (``threads`` threads) and a ``predict(body, content_type) -> bytes``
    doing the agent's work: decode (JSON floats, raw tensor bytes or b64 JPEG), quantize,
    invoke, dequantize, JSON out."""
    import base64
    import io

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    manifest = json.loads((bundle / "manifest.json").read_text())
    interp = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=threads)
    interp.allocate_tensors()
    ind, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = ind["quantization"]
    out_scale, out_zero = outd["quantization"]
    shape = tuple(int(d) for d in ind["shape"][1:])
    pre = manifest.get("preprocessing") or {}

    def image(b64: str) -> Any:
        from PIL import Image

        img = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
        h, w = shape[0], shape[1]
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32)
        return (x - np.float32(pre["mean"][0])) / np.float32(pre["std"][0])

    def predict(body: bytes, ctype: str = "application/json") -> bytes:
        if ctype.startswith("application/octet-stream"):
            q = np.frombuffer(body, dtype=ind["dtype"]).reshape(-1, *shape)
        else:
            inst = json.loads(body)["instances"]
            if inst and isinstance(inst[0], dict):
                x = np.stack([image(i["b64"]) for i in inst])
            else:
                x = np.asarray(inst, dtype=np.float32)
            if in_scale:
                x = np.clip(np.round(x / in_scale + in_zero), -128, 127)
            q = x.astype(ind["dtype"])
        interp.set_tensor(ind["index"], q)
        interp.invoke()
        y = interp.get_tensor(outd["index"]).astype(np.float32)
        if out_scale:
            y = (y - out_zero) * out_scale
        return json.dumps({"predictions": y.tolist()}).encode()

    return predict, str(manifest["name"])


def _fastapi_app(bundle: Path, threads: int) -> Any:
    import threading

    from fastapi import FastAPI, Request, Response

    predict, name = _model(bundle, threads)
    lock = threading.Lock()
    app = FastAPI()

    async def serve(request: Request) -> Response:
        body = await request.body()
        with lock:
            out = predict(body, request.headers.get("content-type", ""))
        return Response(out, media_type="application/json")

    # this module's `from __future__ import annotations` leaves strings FastAPI cannot
    # resolve to a local import: hand it the classes
    serve.__annotations__ = {"request": Request, "return": Response}
    app.post(f"/v1/models/{name}:predict")(serve)
    return app


def _wsgi_app(bundle: Path, threads: int) -> Any:
    predict, name = _model(bundle, threads)
    path = f"/v1/models/{name}:predict"

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != path:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        n = int(environ.get("CONTENT_LENGTH") or 0)
        out = predict(environ["wsgi.input"].read(n), environ.get("CONTENT_TYPE", ""))
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]

    return app


def _flask_app(bundle: Path, threads: int) -> Any:
    import threading

    from flask import Flask, Response, request

    predict, name = _model(bundle, threads)
    lock = threading.Lock()
    app = Flask("peer")

    @app.post(f"/v1/models/{name}:predict")
    def serve() -> Response:
        with lock:
            out = predict(request.get_data(), request.content_type or "")
        return Response(out, mimetype="application/json")

    return app


def serve_peer(kind: str, bundle: Path, port: int, threads: int) -> None:
    """Child process: serve one peer on 127.0.0.1:port until killed, with ``threads``
    interpreter threads in total (gunicorn: that many workers of one thread each)."""
    if kind == "fastapi":
        import uvicorn

        uvicorn.run(_fastapi_app(bundle, threads), host="127.0.0.1", port=port,
                    log_level="error", access_log=False)
    elif kind == "flask":
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _flask_app(bundle, threads).run(host="127.0.0.1", port=port, threaded=True)
    elif kind == "gunicorn":
        from gunicorn.app.base import BaseApplication

        class App(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for k, v in {"bind": f"127.0.0.1:{port}", "workers": threads,
                             "worker_class": "sync", "loglevel": "error",
                             "keepalive": 75}.items():
                    self.cfg.set(k, v)

            def load(self) -> Any:
                return _wsgi_app(bundle, 1)

        App().run()
    else:
        raise SystemExit(f"unknown peer {kind!r}")


# ------------------------------------------------------------------ the harness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, kind: str, bundle: Path, store: Path, threads: int,
                 split: tuple[int, int]) -> None:
        """``threads``: the peers' interpreter threads; ``split``: the agent's workers ×
        threads."""
        self.kind = kind
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.port = _free_port()
        if kind == "agent":
            cmd = [sys.executable, "-m", "edge_agent.cli", "run", "--store", str(store),
                   "--profile", PROFILE, "--http", f"127.0.0.1:{self.port}",
                   "--device-id", "peers", "--model", str(bundle)]
            env.update({"EDGE_AGENT__AGENT__WORKERS": str(split[0]),
                        "EDGE_AGENT__AGENT__THREADS": str(split[1]),
                        "EDGE_AGENT__AGENT__LOG_LEVEL": "warning"})
        else:
            cmd = [sys.executable, __file__, "--serve", kind, "--bundle", str(bundle),
                   "--port", str(self.port), "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{kind} exited {self.proc.returncode}") from None
                time.sleep(0.1)
        raise RuntimeError(f"{kind} did not listen on {self.port}")

    def cpu_s(self) -> float:
        """utime + stime of the server and its children (gunicorn's worker)."""
        total = 0.0
        pids = [self.proc.pid]
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in kids.split()]
        except OSError:
            pass
        for pid in pids:
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError):
                pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", v)
    if m is None:  # wrk prints e.g. "-nan" when no request completed
        raise RuntimeError(f"wrk latency not understood: {v!r}")
    num, unit = m.groups()
    return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def wrk(url: str, lua: Path, c: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t", str(min(c, 2)), "-c", str(c), "-d", f"{seconds}s",
                          "--latency", "-s", str(lua), url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)  # the distribution's line, not a "99.99%" stdev
    if not m or not p99:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    return {"requests": float(m.group(1)), "rps": float(m.group(1)) / seconds,
            "p99_ms": _ms(p99.group(1)), "non_2xx": float(bad.group(1)) if bad else 0.0,
            "socket_errors": float(sum(map(int, errs.groups()))) if errs else 0.0}


def median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def bodies(case: str, bundle: Path) -> tuple[bytes, str]:
    """The request body of ``case`` and its content type (the same bytes for every server)."""
    import base64
    import io

    import numpy as np

    manifest = json.loads((bundle / "manifest.json").read_text())
    shape = manifest["inputs"][0]["shape"]
    if case == "digits":
        x = np.random.default_rng(0).uniform(0, 1, size=[1, *shape[1:]]).round(3)
        return json.dumps({"instances": x.tolist()}).encode(), "application/json"
    from PIL import Image

    rng = np.random.default_rng(3)  # bench/serve.py's smooth image: upscaled 7×7 noise
    small = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((shape[2], shape[1]), Image.Resampling.BICUBIC)
    if case == "mnv2-raw":
        x = (np.asarray(img, dtype=np.float32) - 127.5) / 127.5
        spec = manifest["inputs"][0]
        q = np.clip(np.round(x / spec["scale"] + spec["zero_point"]), -128, 127)
        return q.astype(np.int8)[None].tobytes(), "application/octet-stream"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    doc = {"instances": [{"b64": base64.b64encode(buf.getvalue()).decode()}]}
    return json.dumps(doc).encode(), "application/json"


def _answer(port: int, path: str, body: bytes, ctype: str) -> list[float]:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("POST", path, body, {"Content-Type": ctype})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return [float(v) for v in json.loads(data)["predictions"][0]]
    finally:
        c.close()


def check_alike(servers: dict[str, Server], path: str, body: bytes, ctype: str) -> None:
    """Every server's answer has the agent's top class and scores within 0.02 of it."""
    want = _answer(servers["agent"].port, path, body, ctype)
    for k, s in servers.items():
        got = _answer(s.port, path, body, ctype)
        worst = max(abs(a - b) for a, b in zip(want, got, strict=True))
        if got.index(max(got)) != want.index(max(want)) or worst > 0.02:
            raise RuntimeError(f"{k} answers unlike the agent (max score difference {worst})")


def run(cases: tuple[str, ...], rounds: int, seconds: int, peers: tuple[str, ...],
        agent_split: tuple[int, int] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "rounds": rounds,
                           "seconds": seconds, "versions": versions(), "cases": {}}
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        for case in cases:
            bundle, threads, fixed = CASES[case]
            split = fixed or agent_default_split()
            if agent_split is not None and case != "digits":
                split = agent_split
            res["cases"][case] = measure(case, bundle, threads, split, rounds, seconds,
                                         peers, work / case)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    return res


def measure(case: str, bundle: Path, threads: int, split: tuple[int, int], rounds: int,
            seconds: int, peers: tuple[str, ...], work: Path) -> dict[str, Any]:
    """One case: its servers, the answers checked alike, then alternating wrk rounds."""
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    path = f"/v1/models/{name}:predict"
    work.mkdir(parents=True)
    data, ctype = bodies(case, bundle)
    body = work / "body"
    body.write_bytes(data)
    lua = work / "post.lua"
    lua.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{ctype}"\n'
                   f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    res: dict[str, Any] = {"bundle": bundle.name, "body_bytes": len(data),
                           "content_type": ctype, "peer_threads": threads,
                           "agent_workers_threads": list(split), "by_concurrency": {}}
    servers: dict[str, Server] = {}
    try:
        for k in peers:
            servers[k] = Server(k, bundle, work / "store", threads, split)
        check_alike(servers, path, data, ctype)
        for k, s in servers.items():  # warm up; every request must succeed
            out = wrk(f"http://127.0.0.1:{s.port}{path}", lua, 1, 1)
            if out["non_2xx"] or out["socket_errors"]:
                raise RuntimeError(f"{k}: failed requests in the warm-up: {out}")
        for c in CONCURRENCY:
            per: dict[str, list[dict[str, float]]] = {k: [] for k in peers}
            for _ in range(rounds):
                for k, s in servers.items():
                    cpu0 = s.cpu_s()
                    r = wrk(f"http://127.0.0.1:{s.port}{path}", lua, c, seconds)
                    r["cpu_ms_per_request"] = (s.cpu_s() - cpu0) * 1e3 / max(r["requests"], 1)
                    per[k].append(r)
            row: dict[str, Any] = {"loadavg": os.getloadavg()[0]}
            for k, rs in per.items():
                row[k] = {f: median([r[f] for r in rs]) for f in rs[0]}
                if k != "agent":
                    row[k]["ours_over_peer"] = median(
                        [a["rps"] / p["rps"] for a, p in zip(per["agent"], rs, strict=True)])
                    row[k]["p99_ours_over_peer"] = median(
                        [a["p99_ms"] / p["p99_ms"] for a, p in zip(per["agent"], rs,
                                                                   strict=True)])
            res["by_concurrency"][str(c)] = row
    finally:
        for s in servers.values():
            s.stop()
    return res


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for p in ("ai-edge-litert", "numpy", "fastapi", "uvicorn", "gunicorn", "flask"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def print_table(r: dict[str, Any]) -> None:
    print(f"\nbench/peers.py — {r['rounds']} alternating rounds of {r['seconds']} s per server "
          f"and concurrency, load average {r['loadavg_start'][0]:.2f} → "
          f"{r['loadavg_end'][0]:.2f}; "
          + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + "\n")
    for case, cr in r["cases"].items():
        w, t = cr["agent_workers_threads"]
        print(f"{case}: {cr['body_bytes']} B {cr['content_type']} bodies; agent {w} workers × "
              f"{t} threads, peers {cr['peer_threads']} interpreter threads\n")
        print("| c | server | req/s | ours ÷ it | p99 | p99 ours ÷ it | CPU ms/request | load |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for c, row in cr["by_concurrency"].items():
            for k, v in row.items():
                if k == "loadavg":
                    continue
                ratio = f"{v['ours_over_peer']:.2f}" if "ours_over_peer" in v else "—"
                p99r = f"{v['p99_ours_over_peer']:.2f}" if "p99_ours_over_peer" in v else "—"
                print(f"| {c} | {k} | {v['rps']:.0f} | {ratio} | {v['p99_ms']:.1f} ms | "
                      f"{p99r} | {v['cpu_ms_per_request']:.3f} | {row['loadavg']:.2f} |")
        print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--agent-split", help="the agent's MobileNetV2 WORKERSxTHREADS (default: "
                   "the agent's own default on the profile, e.g. 1x2 on 2 cores)")
    p.add_argument("--json", type=Path)
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        serve_peer(a.serve, a.bundle, a.port, a.threads)
        return 0
    if not shutil.which("wrk"):
        raise SystemExit("bench/peers.py needs wrk (apt install wrk)")
    cases = tuple(a.cases.split(","))
    if not set(cases) <= set(CASES):
        raise SystemExit(f"--cases: any of {', '.join(CASES)}")
    for case in cases:
        if not (CASES[case][0] / "manifest.json").exists():
            raise SystemExit(f"{CASES[case][0]}: no bundle (bench/serve.py --build-only "
                             "builds digits and MobileNetV2)")
    peers = tuple(a.peers.split(","))
    if peers[0] != "agent" or not set(peers) <= set(PEERS):
        raise SystemExit(f"--peers: agent first, then any of {', '.join(PEERS[1:])}")
    split = None
    if a.agent_split:
        w, _, t = a.agent_split.partition("x")
        split = (int(w), int(t))
    r = run(cases, a.rounds, a.seconds, peers, split)
    print_table(r)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
