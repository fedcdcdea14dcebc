"""The agent beside what a user would write instead (issue 17): ``bench/peers.py``.

    .venv/bin/pip install fastapi uvicorn gunicorn flask   # the peers (the [peers] extra)
    .venv/bin/python bench/peers.py [--rounds 3] [--seconds 3] [--bundle DIR] [--json OUT]

Every server serves the same bundle's ``model.tflite`` on ai-edge-litert with one
interpreter of one thread, behind TF Serving's REST shape (``POST
/v1/models/NAME:predict`` with ``{"instances": …}`` in model units, quantized to the
input's int8, dequantized ``{"predictions": …}`` back):

* ``agent``   — ``edge-agent run`` (``[agent] workers = 1``, ``threads = 1``);
* ``fastapi`` — a minimal FastAPI app on uvicorn, one process, the invoke under a lock in
  an ``async def`` endpoint (what the tutorials write);
* ``gunicorn`` — a WSGI function on gunicorn's sync worker, one worker (one interpreter,
  as the agent);
* ``flask``   — Flask's threaded server, the invoke under a lock.

The load is ``wrk`` (a native load generator, one connection per client) at concurrency 1,
4 and 16, in alternating rounds (agent, fastapi, gunicorn, flask, agent, …) of
``--seconds`` each; the figures are medians over rounds, the ratios ours ÷ peer per round
then their median, p99 from wrk's latency distribution, CPU per request from the server
process tree's ``/proc`` times, and the load average.
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


# ------------------------------------------------------------------ the peers' servers


def _model(bundle: Path) -> tuple[Any, Any, str]:
    """One interpreter (1 thread) and a ``predict(body) -> bytes`` doing the agent's work:
    JSON in, quantize, invoke, dequantize, JSON out."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    manifest = json.loads((bundle / "manifest.json").read_text())
    interp = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=1)
    interp.allocate_tensors()
    ind, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = ind["quantization"]
    out_scale, out_zero = outd["quantization"]

    def predict(body: bytes) -> bytes:
        x = np.asarray(json.loads(body)["instances"], dtype=np.float32)
        if in_scale:
            x = np.clip(np.round(x / in_scale + in_zero), -128, 127)
        interp.set_tensor(ind["index"], x.astype(ind["dtype"]))
        interp.invoke()
        y = interp.get_tensor(outd["index"]).astype(np.float32)
        if out_scale:
            y = (y - out_zero) * out_scale
        return json.dumps({"predictions": y.tolist()}).encode()

    return predict, interp, str(manifest["name"])


def _fastapi_app(bundle: Path) -> Any:
    import threading

    from fastapi import FastAPI, Request, Response

    predict, _, name = _model(bundle)
    lock = threading.Lock()
    app = FastAPI()

    async def serve(request: Request) -> Response:
        body = await request.body()
        with lock:
            out = predict(body)
        return Response(out, media_type="application/json")

    # this module's `from __future__ import annotations` leaves strings FastAPI cannot
    # resolve to a local import: hand it the classes
    serve.__annotations__ = {"request": Request, "return": Response}
    app.post(f"/v1/models/{name}:predict")(serve)
    return app


def _wsgi_app(bundle: Path) -> Any:
    predict, _, name = _model(bundle)
    path = f"/v1/models/{name}:predict"

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != path:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        n = int(environ.get("CONTENT_LENGTH") or 0)
        out = predict(environ["wsgi.input"].read(n))
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]

    return app


def _flask_app(bundle: Path) -> Any:
    import threading

    from flask import Flask, Response, request

    predict, _, name = _model(bundle)
    lock = threading.Lock()
    app = Flask("peer")

    @app.post(f"/v1/models/{name}:predict")
    def serve() -> Response:
        with lock:
            out = predict(request.get_data())
        return Response(out, mimetype="application/json")

    return app


def serve_peer(kind: str, bundle: Path, port: int) -> None:
    """Child process: serve one peer on 127.0.0.1:port until killed."""
    if kind == "fastapi":
        import uvicorn

        uvicorn.run(_fastapi_app(bundle), host="127.0.0.1", port=port, log_level="error",
                    access_log=False)
    elif kind == "flask":
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _flask_app(bundle).run(host="127.0.0.1", port=port, threaded=True)
    elif kind == "gunicorn":
        from gunicorn.app.base import BaseApplication

        class App(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for k, v in {"bind": f"127.0.0.1:{port}", "workers": 1,
                             "worker_class": "sync", "loglevel": "error",
                             "keepalive": 75}.items():
                    self.cfg.set(k, v)

            def load(self) -> Any:
                return _wsgi_app(bundle)

        App().run()
    else:
        raise SystemExit(f"unknown peer {kind!r}")


# ------------------------------------------------------------------ the harness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, kind: str, bundle: Path, store: Path) -> None:
        self.kind = kind
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if kind == "agent":
            self.port = _free_port()
            cmd = [sys.executable, "-m", "edge_agent.cli", "run", "--store", str(store),
                   "--profile", "generic-x86_64", "--http", f"127.0.0.1:{self.port}",
                   "--device-id", "peers", "--model", str(bundle)]
            env.update({"EDGE_AGENT__AGENT__THREADS": "1", "EDGE_AGENT__AGENT__WORKERS": "1",
                        "EDGE_AGENT__AGENT__LOG_LEVEL": "warning"})
        else:
            self.port = _free_port()
            cmd = [sys.executable, __file__, "--serve", kind, "--bundle", str(bundle),
                   "--port", str(self.port)]
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
    num, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, lua: Path, c: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t", str(min(c, 2)), "-c", str(c), "-d", f"{seconds}s",
                          "--latency", "-s", str(lua), url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    if not m or not p99:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    return {"requests": float(m.group(1)), "rps": float(m.group(1)) / seconds,
            "p99_ms": _ms(p99.group(1)), "non_2xx": float(bad.group(1)) if bad else 0.0,
            "socket_errors": float(sum(map(int, errs.groups()))) if errs else 0.0}


def median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def run(bundle: Path, rounds: int, seconds: int, peers: tuple[str, ...]) -> dict[str, Any]:
    import numpy as np

    manifest = json.loads((bundle / "manifest.json").read_text())
    name = manifest["name"]
    shape = manifest["inputs"][0]["shape"]
    x = np.random.default_rng(0).uniform(0, 1, size=[1, *shape[1:]]).round(3)
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    body = work / "body.json"
    body.write_text(json.dumps({"instances": x.tolist()}))
    lua = work / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    servers = {k: Server(k, bundle, work / "store") for k in peers}
    res: dict[str, Any] = {"loadavg_start": os.getloadavg(), "rounds": rounds,
                           "seconds": seconds, "body_bytes": body.stat().st_size,
                           "versions": versions(), "by_concurrency": {}}
    try:
        for k, s in servers.items():  # warm up, and check every peer answers alike
            out = wrk(f"http://127.0.0.1:{s.port}/v1/models/{name}:predict", lua, 1, 1)
            if out["non_2xx"] or out["socket_errors"]:
                raise RuntimeError(f"{k}: failed requests in the warm-up: {out}")
        for c in CONCURRENCY:
            per: dict[str, list[dict[str, float]]] = {k: [] for k in peers}
            for _ in range(rounds):
                for k, s in servers.items():
                    cpu0 = s.cpu_s()
                    r = wrk(f"http://127.0.0.1:{s.port}/v1/models/{name}:predict", lua, c,
                            seconds)
                    r["cpu_ms_per_request"] = (s.cpu_s() - cpu0) * 1e3 / max(r["requests"], 1)
                    per[k].append(r)
            row: dict[str, Any] = {"loadavg": os.getloadavg()[0]}
            for k, rs in per.items():
                row[k] = {f: median([r[f] for r in rs]) for f in rs[0]}
                if k != "agent":
                    row[k]["ours_over_peer"] = median(
                        [a["rps"] / p["rps"] for a, p in zip(per["agent"], rs, strict=True)])
            res["by_concurrency"][str(c)] = row
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
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
          f"and concurrency, {r['body_bytes']} B JSON bodies, load average "
          f"{r['loadavg_start'][0]:.2f} → {r['loadavg_end'][0]:.2f}; "
          + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + "\n")
    print("| c | server | req/s | ours ÷ it | p99 | CPU ms/request | load |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for c, row in r["by_concurrency"].items():
        for k, v in row.items():
            if k == "loadavg":
                continue
            ratio = f"{v['ours_over_peer']:.2f}" if "ours_over_peer" in v else "—"
            print(f"| {c} | {k} | {v['rps']:.0f} | {ratio} | {v['p99_ms']:.1f} ms | "
                  f"{v['cpu_ms_per_request']:.3f} | {row['loadavg']:.2f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, default=ROOT / ".cache" / "bench" / "digits" /
                   "digits-v1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--json", type=Path)
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        serve_peer(a.serve, a.bundle, a.port)
        return 0
    if not shutil.which("wrk"):
        raise SystemExit("bench/peers.py needs wrk (apt install wrk)")
    if not (a.bundle / "manifest.json").exists():
        raise SystemExit(f"{a.bundle}: no bundle (bench/serve.py --build-only --overhead-only "
                         "builds the digits one)")
    peers = tuple(a.peers.split(","))
    if peers[0] != "agent" or not set(peers) <= set(PEERS):
        raise SystemExit(f"--peers: agent first, then any of {', '.join(PEERS[1:])}")
    r = run(a.bundle, a.rounds, a.seconds, peers)
    print_table(r)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
