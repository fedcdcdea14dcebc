"""Agent memory under big bodies and hostile images (issue 17 part 3).

    .venv/bin/python bench/memory.py [--seconds 15] [--clients 16] [--src DIR] [--json OUT]

A real ``edge-agent run`` process serving MobileNetV2 int8 (``bench/serve.py``'s cache,
``.cache/bench/mobilenet_v2/bundle-int8``) over HTTP, measured from ``/proc/PID/status``:

1. idle RSS (``VmRSS``) after start;
2. a burst: ``--clients`` keep-alive connections each posting 3.2 MB JSON ``:predict``
   bodies (one 224×224×3 float instance, full float repr) for ``--seconds``; peak RSS is
   ``VmHWM`` (the kernel's high-water mark) over the burst; then RSS 10 s after it;
3. decompression bombs: the peak is reset (``clear_refs`` 5), then a 3400×3400 black RGB
   PNG (33 KB that decode to 46 MB of pixels, under ``max_image_pixels``) is posted to
   ``:classify`` by 4 clients for 3 s; the figure is the peak rise over the RSS before.

``--src DIR`` runs the agent from another checkout (before/after); ``--idle-only`` stops
after the idle figure (step 1), for alternating before/after rounds of the idle footprint
(``--rounds N`` alternates this checkout and ``--src``, medians). The load average is noted.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNV2 = ROOT / ".cache" / "bench" / "mobilenet_v2" / "bundle-int8"


def status_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def mb(kb: int) -> float:
    return kb / 1024.0


def post(conn: http.client.HTTPConnection, path: str, body: bytes, ctype: str) -> int:
    conn.request("POST", path, body, {"Content-Type": ctype})
    r = conn.getresponse()
    r.read()
    return r.status


def burst(host: str, port: int, clients: int, seconds: float, path: str, body: bytes,
          ctype: str) -> dict[str, int]:
    codes: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while time.monotonic() < stop:
            try:
                code = str(post(conn, path, body, ctype))
            except (OSError, http.client.HTTPException) as e:
                code = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            with lock:
                codes[code] = codes.get(code, 0) + 1
        conn.close()

    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes


def bomb_png(side: int = 3400) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--src", type=Path, default=ROOT)
    p.add_argument("--extra", default="", help="extra TOML lines for [http]")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the agent")
    p.add_argument("--json", type=Path)
    p.add_argument("--idle-only", action="store_true", help="only the idle RSS (step 1)")
    p.add_argument("--rounds", type=int, default=0,
                   help="with --idle-only: N alternating rounds of this checkout and --src")
    a = p.parse_args()
    if a.idle_only and a.rounds:
        return idle_rounds(a)
    if not (MNV2 / "manifest.json").exists():
        sys.exit(f"no MobileNetV2 bundle at {MNV2}: run bench/serve.py once to build it")
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    conf = tmp / "agent.toml"
    conf.write_text(f'[agent]\ndevice_id = "mem"\nstore_dir = "{tmp / "store"}"\n'
                    'profile = "generic-x86_64"\nprobe_runtime = false\n'
                    f'[http]\nport = 0\n{a.extra}\n[[models]]\nbundle = "{MNV2}"\n')
    env = dict(os.environ, PYTHONPATH=str(a.src.resolve()))
    env.update(kv.split("=", 1) for kv in a.env)
    log_path = tmp / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                                 str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=tmp)  # not this checkout: -m would import from the cwd
    res: dict[str, Any] = {"src": str(a.src), "clients": a.clients, "seconds": a.seconds,
                           "env": a.env, "loadavg_start": os.getloadavg()}
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(rb"ready: .* on http://([\d.]+):(\d+)",
                                  log_path.read_bytes())):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"agent did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        host, port = m.group(1).decode(), int(m.group(2))
        pid = proc.pid
        x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
        body = json.dumps({"instances": x.tolist()}).encode()
        conn = http.client.HTTPConnection(host, port, timeout=60)
        assert post(conn, "/v1/models/mobilenet_v2:predict", body, "application/json") == 200
        conn.close()
        time.sleep(3.0)
        res["idle_rss_mb"] = mb(status_kb(pid, "VmRSS"))
        if a.idle_only:
            res["loadavg_end"] = os.getloadavg()
            print(f"src {a.src}: idle {res['idle_rss_mb']:.1f} MB after one request; load "
                  f"{res['loadavg_start'][0]:.2f} → {res['loadavg_end'][0]:.2f}")
            if a.json:
                a.json.write_text(json.dumps(res, indent=1))
            return 0
        res["body_mb"] = len(body) / 1e6
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM
        res["json_codes"] = burst(host, port, a.clients, a.seconds,
                                  "/v1/models/mobilenet_v2:predict", body, "application/json")
        res["json_peak_rss_mb"] = mb(status_kb(pid, "VmHWM"))
        res["rss_after_burst_mb"] = mb(status_kb(pid, "VmRSS"))
        time.sleep(10.0)
        res["rss_10s_after_mb"] = mb(status_kb(pid, "VmRSS"))
        png = bomb_png()
        res["bomb_png_kb"] = len(png) / 1024
        before = status_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        res["bomb_codes"] = burst(host, port, 4, 3.0, "/v1/models/mobilenet_v2:classify", png,
                                  "image/png")
        res["bomb_rss_before_mb"] = mb(before)
        res["bomb_peak_rise_mb"] = mb(status_kb(pid, "VmHWM") - before)
        res["loadavg_end"] = os.getloadavg()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"src {a.src} {' '.join(a.env)}: idle {res['idle_rss_mb']:.1f} MB; "
          f"{res['body_mb']:.1f} MB JSON × c={a.clients} for {a.seconds:g} s "
          f"{res['json_codes']}: peak {res['json_peak_rss_mb']:.1f} MB, right after "
          f"{res['rss_after_burst_mb']:.1f} MB, 10 s after {res['rss_10s_after_mb']:.1f} MB; "
          f"bomb PNG {res['bomb_png_kb']:.0f} KB {res['bomb_codes']}: peak rise "
          f"{res['bomb_peak_rise_mb']:.1f} MB; load {res['loadavg_start'][0]:.2f} → "
          f"{res['loadavg_end'][0]:.2f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


def idle_rounds(a: argparse.Namespace) -> int:
    """Alternate this checkout and ``--src`` for ``--rounds``; print each and the medians."""
    import statistics

    got: dict[str, list[float]] = {str(ROOT): [], str(a.src): []}
    for _ in range(a.rounds):
        for src in (ROOT, a.src):
            out = Path(tempfile.mkdtemp(prefix="bench-memory-")) / "idle.json"
            subprocess.run([sys.executable, __file__, "--idle-only", "--src", str(src),
                            "--json", str(out)], check=True)
            got[str(src)].append(json.loads(out.read_text())["idle_rss_mb"])
    for src, vals in got.items():
        print(f"median idle RSS {statistics.median(vals):.1f} MB over {len(vals)} rounds "
              f"({', '.join(f'{v:.1f}' for v in vals)}): {src}")
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
