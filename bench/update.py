"""Benchmark: a signed ~4 MB model update under steady REST load, and download throughput.

::

    python bench/update.py [--runs 3] [--rate 100] [--clients 2] [--json out.json]

Everything is real and on loopback: Mosquitto, the in-process agent (REST, telemetry and
update components, LiteRT), a separate load-generator process sending ``--rate``
requests/s over keep-alive HTTP connections, and ``edge-fleet``'s signing and
publishing. Each run publishes a new version of a 4.3 MB int8 model (built once with
TensorFlow in a child process, cached) through three transports: MQTT chunks of
256 KiB, MQTT chunks of 64 KiB, and the HTTP mirror (``edge-fleet serve``).

"announce → serving" is measured from the instant the announcement is published (chunks
are already on the broker, as ``edge-fleet publish`` does it) to the ``update.activated``
event (the registry serves the new version and ``active.json`` says so). Goal ≤ 1.5 s
with zero failed requests.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --- load generator (own process) ------------------------------------------------------------


def load_worker(host: str, port: int, rate: float, clients: int, stop: Any, out: Any) -> None:
    import threading

    body = json.dumps({"instances": [[[[0.5]] * 8] * 8]}).encode()
    ok = failed = 0
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        nonlocal ok, failed
        conn = http.client.HTTPConnection(host, port, timeout=10)
        period = clients / rate
        nxt = time.monotonic()
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/models/digits:predict", body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                good = r.status == 200
                err = f"HTTP {r.status}"
            except (OSError, http.client.HTTPException) as e:
                good, err = False, repr(e)
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
            with lock:
                if good:
                    ok += 1
                else:
                    failed += 1
                    errors.append(err)
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put({"ok": ok, "failed": failed, "errors": errors[:5]})


# --- setup ---------------------------------------------------------------------------------------


def big_model() -> Path:
    key = hashlib.sha256((ROOT / "tests/update/update_models.py").read_bytes()).hexdigest()[:12]
    out = ROOT / ".cache" / "bench-artifacts" / f"update-big-{key}"
    if not (out / "manifest.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        print("building the 4 MB benchmark model (TensorFlow, once)…", file=sys.stderr)
        subprocess.run([sys.executable, str(ROOT / "tests/update/update_models.py"), "big",
                        str(out), "--version", "1"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return out


def with_version(src: Path, out: Path, version: int) -> Path:
    from edge_agent.bundle import Bundle, read_bundle, write_bundle

    b = read_bundle(src)
    write_bundle(Bundle(replace(b.manifest, version=version), b.model_bytes, b.report,
                        str(out)), out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 100000\nmessage_size_limit 0\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"mqtt://127.0.0.1:{port}"


def make_repo(work: Path) -> tuple[Any, list[Any]]:
    from fleet import keys
    from fleet.repo import FleetRepo

    names = ("root-a", "root-b", "targets-a", "targets-b", "snapshot", "timestamp")
    pub = {n: keys.generate(work / "keys", n) for n in names}
    sig = {n: keys.load_signer(work / "keys" / f"{n}.key") for n in names}
    repo = FleetRepo.create(
        work / "repo", keys={"root": [pub["root-a"], pub["root-b"]],
                             "targets": [pub["targets-a"], pub["targets-b"]],
                             "snapshot": [pub["snapshot"]], "timestamp": [pub["timestamp"]]},
        thresholds={"root": 2, "targets": 2}, signers=[sig["root-a"], sig["root-b"]])
    return repo, [sig[n] for n in ("targets-a", "targets-b", "snapshot", "timestamp")]


# --- one update -----------------------------------------------------------------------------------


def one_update(agent: Any, repo: Any, signers: list[Any], broker_url: str, bundle: Path,
               transport: str, mirror: str) -> dict[str, Any]:
    from edge_agent.hooks import AgentEvent
    from edge_agent.update.wire import Announcement, Audience
    from fleet.publish import Broker, announce, audience_topics, publish_chunks, sign_bundle

    chunk = {"mqtt-256k": 256 * 1024, "mqtt-64k": 64 * 1024}.get(transport, 256 * 1024)
    aud = Audience((agent.device_id,), ())
    events: list[AgentEvent] = []
    remove = agent.hooks.on_event(lambda e: events.append(e) if e.kind.startswith("update.")
                                  else None)
    try:
        # the mirror is signed into the target's entry: devices ignore a mirror that only
        # the (unsigned) announcement names
        path, data, spec = sign_bundle(repo, bundle, signers, audience=aud, chunk_size=chunk,
                                       mirrors=(mirror,) if transport == "http" else ())
        sha = hashlib.sha256(data).hexdigest()
        b = Broker(broker_url)
        try:
            if transport != "http" and spec.chunks is not None:
                publish_chunks(b, data, spec.chunks, sha)
            ann = Announcement(path, repo.announce_files(), chunks=transport != "http",
                               mirrors=(mirror,) if transport == "http" else (),
                               published_at=time.time())
            t0 = time.time()
            announce(b, audience_topics(aud), ann)
        finally:
            b.close()
        deadline = time.monotonic() + 120
        while not any(e.kind in ("update.committed", "update.rejected", "update.rolled_back",
                                 "update.failed") for e in events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no outcome: {[e.kind for e in events]}")
            time.sleep(0.01)
    finally:
        remove()
    at = {e.kind: e.at for e in events}
    end = next(e for e in events if e.kind in ("update.committed", "update.rejected",
                                                "update.rolled_back", "update.failed"))
    if end.kind != "update.committed":
        raise RuntimeError(f"{transport}: {end.kind}: {end.message}")
    dl = next(e for e in events if e.kind == "update.downloaded")
    return {
        "transport": transport, "bytes": len(data),
        "announce_to_serving_s": at["update.activated"] - t0,
        "download_s": dl.data["seconds"],
        "throughput_mb_s": len(data) / 1e6 / max(dl.data["seconds"], 1e-9),
        "notified_s": at["update.notified"] - t0,
        "verified_s": at["update.verified"] - t0,
        "golden_s": at["update.golden_ok"] - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="REST requests/s (total)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)

    from edge_agent.app import Agent
    from edge_agent.config import load_config
    from fleet.serve import RepoServer

    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-update-"))
    broker, url = start_broker(work)
    agent = None
    try:
        src = big_model()
        repo, signers = make_repo(work)
        v1 = with_version(src, work / "v1", 1)
        agent = Agent(load_config(None, {
            "agent.store_dir": str(work / "store"), "agent.profile": "generic-x86_64",
            "agent.device_id": "bench1", "agent.probe_runtime": False, "agent.threads": 1,
            "agent.workers": 1, "http.port": 0, "mqtt.url": url,
            "update.root_file": str(repo.meta_dir / "1.root.json"),
            "update.probation_s": 1.0, "update.probation_min_requests": 20,
            "update.keep_versions": 2,
            "models": [{"bundle": str(v1)}]}, env={}))
        agent.start()
        assert agent.http is not None
        mirror = RepoServer(repo.path, port=0).start()
        ctx = mp.get_context("spawn")
        stop, q = ctx.Event(), ctx.Queue()
        host, port = agent.http.address
        lp = ctx.Process(target=load_worker, args=(host, port, a.rate, a.clients, stop, q))
        lp.start()
        time.sleep(1.0)
        rows = []
        version = 1
        for _ in range(a.runs):
            for transport in ("mqtt-256k", "mqtt-64k", "http"):
                version += 1
                b = with_version(src, work / f"v{version}", version)
                rows.append(one_update(agent, repo, signers, url, b, transport, mirror.url))
                print(f"v{version} {transport}: announce→serving "
                      f"{rows[-1]['announce_to_serving_s']:.3f} s, download "
                      f"{rows[-1]['throughput_mb_s']:.1f} MB/s", file=sys.stderr)
        stop.set()
        load = q.get(timeout=30)
        lp.join(10)
        mirror.stop()
    finally:
        if agent is not None:
            agent.stop()
        broker.terminate()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)

    def med(t: str, k: str) -> float:
        return statistics.median(r[k] for r in rows if r["transport"] == t)

    size = rows[0]["bytes"] / 1e6
    print(f"\nupdate of a {size:.1f} MB bundle, {a.runs} runs each, under {a.rate:g} req/s REST "
          f"load ({load['ok']} ok, {load['failed']} failed requests)\n")
    print("| transport | announce → serving (median) | max | download | throughput |")
    print("|---|---|---|---|---|")
    for t in ("mqtt-256k", "mqtt-64k", "http"):
        mx = max(r["announce_to_serving_s"] for r in rows if r["transport"] == t)
        print(f"| {t} | {med(t, 'announce_to_serving_s'):.2f} s | {mx:.2f} s | "
              f"{med(t, 'download_s'):.2f} s | {med(t, 'throughput_mb_s'):.1f} MB/s |")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "load": load}, indent=1))
    return 0 if load["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
