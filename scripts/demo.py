"""End-to-end demo driven through the real CLIs (what a user would type), step by step.

convert → serve (REST) → telemetry (MQTT) → signed update v2 → forged v3 rejected →
signed rollback → shadow run blocks v5 → encrypted v3 (refused when sealed for another
board, committed when sealed for this board's group; ``demo_sealed.py``).
Everything runs on loopback; the agent is a real ``edge-agent run``
subprocess. Output (bundles, keys, repository, agent store, logs) goes to ``demo-out/``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo-out"
BIN = Path(sys.executable).parent
DEVICE = "demo-pi"
PROFILE = "generic-x86_64"  # the profile of the machine the demo agent runs on


def say(title: str) -> None:
    print(f"\n\033[1;36m== {title}\033[0m", flush=True)


def run(*args: str | Path, check: bool = True, quiet: bool = False, **kw: Any
        ) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in args]
    shown = " ".join(c if not c.startswith(str(ROOT)) else os.path.relpath(c, ROOT) for c in cmd)
    print(f"$ {shown}", flush=True)
    r = subprocess.run(cmd, text=True, capture_output=quiet, **kw)
    if check and r.returncode != 0:
        if quiet:
            print(r.stdout, r.stderr)
        raise SystemExit(f"demo: step failed (exit {r.returncode}): {shown}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, ctype: str = "application/json"
         ) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(pred: Any, timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            v = pred()
            if v:
                return v
        time.sleep(every_s)
    raise SystemExit(f"demo: timed out after {timeout_s:g} s waiting for {what}")


class EventTap:
    """Subscribes to edge/<device>/# and keeps what arrives (paho-mqtt 2.x)."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.msgs: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-tap")
        self.c.on_message = self._on
        self.c.connect(host, port)
        self.c.subscribe(f"edge/{DEVICE}/#", qos=1)
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, msg: Any) -> None:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            payload = json.loads(msg.payload) if msg.payload else {}
            with self.lock:
                self.msgs.append((msg.topic, payload if isinstance(payload, dict) else
                                  {"value": payload}))

    def find(self, suffix: str, **match: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [p for t, p in self.msgs if t.endswith(suffix)
                    and all(str(p.get(k, "")).startswith(str(v)) for k, v in match.items())]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@contextlib.contextmanager
def broker() -> Iterator[tuple[str, int]]:
    url = os.environ.get("EDGE_DEMO_BROKER")
    if url:
        hostport = url.split("://", 1)[-1]
        host, _, port = hostport.partition(":")
        yield host, int(port or 1883)
        return
    import logging

    from edge_agent.mqtt.embedded import start_embedded_broker


    port = free_port()
    b = start_embedded_broker("127.0.0.1", port)
    # amqtt logs a traceback when a client probes MQTT 5 first and falls back to 3.1.1
    for noisy in ("asyncio", "amqtt"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    print(f"(no EDGE_DEMO_BROKER set: embedded amqtt broker on mqtt://127.0.0.1:{port})")
    try:
        yield "127.0.0.1", port
    finally:
        b.stop()


def step_convert() -> dict[str, Path]:
    say("1. Train a small CNN on scikit-learn's digits and convert it to full int8")
    if not (OUT / "digits.keras").exists():
        run(BIN / "python", "-m", "converter.digits", OUT)
    bundles = {}
    for v in (1, 2):
        out = OUT / "bundles" / f"digits-v{v}"
        if not (out / "manifest.json").exists():
            run(BIN / "edge-convert", "convert", OUT / "digits.keras",
                "--representative", OUT / "calib.npz", "--eval", OUT / "eval.npz",
                "--profile", PROFILE, "--name", "digits", "--version", str(v), "-o", out,
                quiet=v != 1)
        bundles[f"v{v}"] = out
    run(BIN / "edge-convert", "verify", bundles["v1"])
    say("1b. Bring your own .tflite: wrap a flatbuffer that has no bundle (edge-convert bundle)")
    byo = OUT / "bundles" / "byo-v1"
    if not (byo / "manifest.json").exists():
        run(BIN / "edge-convert", "bundle", bundles["v1"] / "model.tflite", "--name", "byo",
            "--version", "1", "--representative", OUT / "calib.npz", "--profile", PROFILE,
            "-o", byo)
    run(BIN / "edge-convert", "verify", byo)
    bundles["byo"] = byo
    return bundles


def main() -> int:
    if "--clean" in sys.argv:
        shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    bundles = step_convert()
    with broker() as (mhost, mport):
        import demo_sealed as sealed  # the encrypted update (same folder)
        import demo_update as upd  # the signed-update half of the demo (same folder)

        repo = upd.prepare_repository(OUT, run, BIN)
        say("2. Start the agent: REST on loopback, MQTT telemetry, signed updates")
        http_port = free_port()
        store = OUT / "store"
        shutil.rmtree(store, ignore_errors=True)
        cfg = OUT / "agent.toml"
        cfg.write_text(
            f'[agent]\ndevice_id = "{DEVICE}"\nprofile = "{PROFILE}"\nstore_dir = "{store}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
            f'[mqtt]\nurl = "mqtt://{mhost}:{mport}"\n'
            f'[telemetry]\ninterval_s = 2\n'
            + upd.update_section(repo))
        tap = EventTap(mhost, mport)
        log = open(OUT / "agent.log", "w")  # noqa: SIM115
        agent = subprocess.Popen([str(BIN / "edge-agent"), "run", "--config", str(cfg),
                                  "--model", str(bundles["v1"]), str(bundles["byo"])],
                                 stdout=log, stderr=log)
        base = f"http://127.0.0.1:{http_port}"
        try:
            t0 = time.monotonic()
            wait_for(lambda: http("GET", f"{base}/readyz")[0] == 200, 30, "agent ready")
            print(f"agent ready in {time.monotonic() - t0:.2f} s: {base} (log: demo-out/agent.log)")
            step_predict(base)
            step_telemetry(tap, mhost, mport)
            upd.step_update(OUT, run, BIN, repo, bundles, base, tap, f"mqtt://{mhost}:{mport}",
                            DEVICE, say, http, wait_for)
            upd.step_shadow(OUT, run, BIN, repo, bundles, base, tap, f"mqtt://{mhost}:{mport}",
                            DEVICE, say, http, wait_for)
            sealed.step_encrypted(OUT, run, BIN, repo, upd.build_extra_bundles(OUT, run, BIN)["v3"],
                                  cfg, base, tap, f"mqtt://{mhost}:{mport}", DEVICE, say, http,
                                  wait_for, upd.signing_args(OUT))
            step_dashboards(base, f"mqtt://{mhost}:{mport}")
        finally:
            agent.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(15)
            if agent.poll() is None:
                agent.kill()
            tap.close()
    say("Done. Everything above ran on real parts: TF, LiteRT, MQTT, HTTP, TUF.")
    return 0


def step_predict(base: str) -> None:
    from converter.digits import image_bytes

    say("3. Predictions over HTTP (TensorFlow Serving's REST shape)")
    ev = np.load(OUT / "eval.npz")
    x, y = ev["x"][:64], ev["y"][:64]
    st, body = http("GET", f"{base}/v1/models/digits")
    print(f"GET /v1/models/digits → {st} {json.dumps(body)}")
    st, body = http("POST", f"{base}/v1/models/digits:predict",
                    json.dumps({"instances": x.tolist()}).encode())
    pred = np.asarray(body["predictions"]).argmax(1)
    print(f"POST :predict 64 instances → {st}; accuracy vs labels {np.mean(pred == y):.3f}")
    b64 = base64.b64encode(image_bytes(x[0])).decode()
    st, body = http("POST", f"{base}/v1/models/digits:predict",
                    json.dumps({"instances": [{"b64": b64}]}).encode())
    print(f"POST :predict with a b64 PNG (label {y[0]}) → {st} top-1 "
          f"{int(np.argmax(body['predictions'][0]))}")
    st, body = http("POST", f"{base}/v1/models/digits:classify?k=3", image_bytes(x[1]),
                    "image/png")
    print(f"POST :classify raw PNG (label {y[1]}) → {st} {json.dumps(body)[:200]}")
    st, body = http("POST", f"{base}/v1/models/byo:predict",
                    json.dumps({"inputs": x[:2].tolist()}).encode())
    print(f"POST byo:predict, columnar, on the wrapped .tflite → {st}; outputs of shape "
          f"{np.asarray(body['outputs']).shape}")
    st, body = http("POST", f"{base}/v1/models/digits/labels/stable:predict",
                    json.dumps({"instances": x[:1].tolist()}).encode())
    print(f"POST /labels/stable:predict (version label → active version) → {st}")
    st, meta = http("GET", f"{base}/v2/models/digits")
    inp = meta["inputs"][0]
    st, body = http("POST", f"{base}/v2/models/digits/infer", json.dumps(
        {"inputs": [{"name": inp["name"], "datatype": inp["datatype"], "shape": [2, *x.shape[1:]],
                     "data": x[:2].ravel().tolist()}]}).encode())
    out = body["outputs"][0]
    top = np.asarray(out["data"]).reshape(out["shape"]).argmax(1)
    print(f"POST /v2/models/digits/infer (KServe v2, the protocol tritonclient speaks) → {st}; "
          f"top-1 {top.tolist()} (labels {y[:2].tolist()})")
    st, body = http("POST", f"{base}/v1/models/digits:predict", b'{"instances": [[1, 2]]}')
    print(f"POST :predict with a wrong shape → {st} {json.dumps(body)}")


def step_dashboards(base: str, broker_url: str) -> None:
    """Both pages up and answering, then their URLs; an interactive run keeps them open."""
    say("8. See it: the device dashboard and the fleet dashboard (edge-fleet dashboard)")
    with urllib.request.urlopen(f"{base}/ui/", timeout=10) as r:
        print(f"GET /ui/ → {r.status}, {len(r.read())} bytes of page")
    port = free_port()
    log = open(OUT / "fleet-dashboard.log", "w")  # noqa: SIM115
    fleet = subprocess.Popen([str(BIN / "edge-fleet"), "dashboard", "--broker", broker_url,
                              "--port", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    try:
        def listed() -> bool:
            st, body = http("GET", f"{url}api/fleet")
            return st == 200 and any(d.get("device") == DEVICE
                                     for d in body.get("devices", []))
        wait_for(listed, 30, f"{DEVICE} on the fleet dashboard")
        print(f"GET /api/fleet → 200, {DEVICE} listed")
        print(f"\n  device dashboard: {base}/ui/\n  fleet dashboard:  {url}")
        if sys.stdin.isatty() and "--exit" not in sys.argv:
            print("(both stay up until Ctrl-C; run with --exit to stop here)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                fleet.wait()
    finally:
        fleet.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            fleet.wait(10)
        if fleet.poll() is None:
            fleet.kill()


def step_telemetry(tap: EventTap, host: str, port: int) -> None:
    say("4. Telemetry over MQTT: retained birth status, periodic metrics")
    birth = wait_for(lambda: tap.find("/status", state="online"), 15, "birth message")[-1]
    models = [(m.get("name"), m.get("active")) for m in birth.get("models", [])]
    print(f"edge/{DEVICE}/status (retained): state=online agent={birth.get('agent_version')} "
          f"runtime={birth.get('runtime')} models={models}")
    tele = wait_for(lambda: tap.find("/telemetry"), 15, "telemetry")[-1]
    print(f"edge/{DEVICE}/telemetry: seq={tele.get('seq')} keys={sorted(tele)[:12]}")
    run(BIN / "edge-fleet", "watch", "--broker", f"mqtt://{host}:{port}", "--once",
        "--duration", "3")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
