"""``edge-agent``: run the agent, predict files one-shot, benchmark a bundle.

::

    edge-agent run [--config agent.toml] [--model BUNDLE ...] [--http HOST:PORT|off]
                   [--grpc HOST:PORT|off]
                   [--device-id ID] [--profile NAME] [--store DIR] [--mqtt URL[,URL…]]
    edge-agent predict BUNDLE FILE... [--json] [-k K]
    edge-agent bench BUNDLE [--runs N] [--threads N] [--json]
    edge-agent check-config [--config agent.toml] [--no-models]
    edge-agent install-service [--root DIR] [--dry-run] [--print-unit] ...

``check-config`` and ``install-service`` live in :mod:`edge_agent.cli_service`; log
formatting in :mod:`edge_agent.logs`. Exit codes: 0 ok, 1 the operation failed, 2 bad
input (config, bundle, file); errors are one line on stderr, never a traceback for an
expected error. ``run`` stops cleanly on SIGTERM / SIGINT and rescans the model store on SIGHUP.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.cli_bench import add_sweep_options
from edge_agent.cli_keygen import add_keygen_command
from edge_agent.cli_service import add_service_commands
from edge_agent.errors import BadInputError, EdgeError
from edge_agent.homeassistant.cli import add_commands as add_homeassistant_commands
from edge_agent.logs import setup_logging

PROG = "edge-agent"


def _host_port(text: str) -> dict[str, Any]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``off`` → config overrides."""
    if text == "off":
        return {"http.enabled": False}
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    try:
        p = int(port)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from e
    out: dict[str, Any] = {"http.enabled": True, "http.port": p}
    if host:
        out["http.host"] = host.strip("[]")
    return out


def _grpc_host_port(text: str) -> dict[str, Any]:
    """``--grpc HOST:PORT`` (or ``off``) → the ``[grpc]`` overrides."""
    return {k.replace("http.", "grpc.", 1): v for k, v in _host_port(text).items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Edge inference agent (LiteRT).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="serve models over HTTP / MQTT / folders")
    r.add_argument("--config", type=Path, default=os.environ.get("EDGE_AGENT_CONFIG"),
                   help="agent.toml (default: $EDGE_AGENT_CONFIG, else built-in defaults)")
    r.add_argument("--model", nargs="+", action="extend", default=[], metavar="BUNDLE",
                   help="bundle directory or .tar to install and serve (repeatable)")
    r.add_argument("--http", type=_host_port, metavar="HOST:PORT",
                   help="listen address (port 0: any free port; 'off' disables HTTP)")
    r.add_argument("--grpc", type=_grpc_host_port, metavar="HOST:PORT",
                   help="serve gRPC (TF Serving and KServe v2) there (port 0: any free port; "
                        "'off' disables it); needs the grpc extra")
    r.add_argument("--device-id")
    r.add_argument("--profile", help="device profile name or .toml path (default: detect)")
    r.add_argument("--store", type=Path, help="model store directory")
    r.add_argument("--mqtt", metavar="URL", help="MQTT broker URL (mqtt[s]://host:port); "
                   "several, comma separated, are tried in order (failover)")
    r.add_argument("--log-format", choices=("text", "json"))
    r.set_defaults(func=cmd_run)

    pr = sub.add_parser("predict", help="classify image files (or .npy arrays) one-shot")
    pr.add_argument("bundle", type=Path)
    pr.add_argument("files", nargs="+", type=Path)
    pr.add_argument("-k", type=int, default=3, help="top-k labels (default 3)")
    pr.add_argument("--json", action="store_true", help="one JSON object per file")
    pr.add_argument("--threads", type=int)
    pr.add_argument("--runtime", default="auto")
    pr.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench", help="invoke latency/throughput: bare interpreter vs agent")
    b.add_argument("bundle", type=Path, nargs="?")
    b.add_argument("--runs", type=int, default=500)
    b.add_argument("--warmup", type=int, default=20)
    b.add_argument("--threads", type=int)
    b.add_argument("--runtime", default="auto")
    b.add_argument("--json", action="store_true")
    add_sweep_options(b, cmd_bench)  # --sweep: workers x threads through a real agent

    add_service_commands(sub)
    add_homeassistant_commands(sub)
    add_keygen_command(sub)
    return p


# ---------------------------------------------------------------------------- run


def run_overrides(a: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"agent.device_id": a.device_id, "agent.profile": a.profile,
                         "agent.store_dir": str(a.store) if a.store else None,
                         "agent.log_format": a.log_format}
    if a.mqtt and "," in a.mqtt:  # several brokers: tried in order, failing over
        o["mqtt.brokers"] = [u.strip() for u in a.mqtt.split(",") if u.strip()]
    else:
        o["mqtt.url"] = a.mqtt
    if a.http:
        o.update(a.http)
    if a.grpc:
        o.update(a.grpc)
    if a.model:
        o["models"] = [{"bundle": str(m), "activate": True} for m in a.model]
    return o


class _SignalPipe:
    """The main thread's sleep: ``signal.set_wakeup_fd`` writes each caught signal's number
    into a pipe and :meth:`wait` blocks reading it. The Python handlers do nothing (no
    lock, so nothing can deadlock in a handler); they only keep the default action (exit)
    away. Signals caught before :meth:`wait` are not lost: they wait in the pipe."""

    def __init__(self, sigs: tuple[signal.Signals, ...]) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        for s in sigs:
            signal.signal(s, lambda *_: None)
        self._old_fd = signal.set_wakeup_fd(self._w)

    def wait(self) -> set[int]:
        """The signals caught since the last call (blocks until there is one)."""
        return set(os.read(self._r, 64))

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._r)
        os.close(self._w)


def cmd_run(a: argparse.Namespace) -> int:
    from edge_agent.app import Agent
    from edge_agent.config import load_config

    cfg = load_config(a.config, run_overrides(a))
    setup_logging(cfg.agent.log_format, "debug" if a.verbose else cfg.agent.log_level)
    signals = _SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    from edge_agent import memtrim

    memtrim.tune()  # before any thread: fewer malloc arenas, large blocks mapped
    agent = Agent(cfg)
    try:
        agent.start()
        memtrim.after_load()  # what loading left behind goes back to the OS before idling
        models = ", ".join(f"{m['name']} v{m['active']}" for m in agent.registry.snapshot())
        where = f" on {agent.http.url}" if agent.http else ""
        where += f", grpc on {agent.grpc.address}" if agent.grpc else ""
        print(f"{PROG}: ready: {models or 'no models'}{where} ({agent.runtime}, "
              f"{agent.threads} threads, profile {agent.profile.name})", file=sys.stderr,
              flush=True)
        while True:  # asleep until a signal: no polling
            got = signals.wait()
            if signal.SIGTERM in got or signal.SIGINT in got:
                break
            if signal.SIGHUP in got:
                agent.reload()
    finally:
        agent.stop()
        signals.close()
    print(f"{PROG}: stopped", file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------------------- predict


def _registry(bundle_path: Path, runtime_name: str, threads: int | None) -> Any:
    from edge_agent.bundle import read_bundle
    from edge_agent.hooks import Hooks
    from edge_agent.registry import ModelRegistry
    from edge_agent.runtime.backends import select_runtime

    bundle = read_bundle(bundle_path)
    runtime = select_runtime(None if runtime_name == "auto" else [runtime_name])
    threads = threads or min(4, os.cpu_count() or 1)
    reg = ModelRegistry(runtime, Hooks(), workers=1, num_threads=threads)
    return bundle, runtime, threads, reg.load(bundle)


def cmd_predict(a: argparse.Namespace) -> int:
    from edge_agent.serving.codec import image_batch

    _, _, _, served = _registry(a.bundle, a.runtime, a.threads)
    bad = 0
    for f in a.files:
        try:
            if f.suffix == ".npy":
                try:
                    x = np.load(f, allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise BadInputError(f"cannot read {f} as a numpy array ({e})") from e
            else:
                try:
                    data = f.read_bytes()
                except OSError as e:
                    raise BadInputError(f"cannot read {f} ({e.strerror or e})") from e
                x = image_batch(served, [data], 40_000_000)
            pred = served.predict(x, source="cli")
        except BadInputError as e:
            bad += 1
            print(json.dumps({"file": str(f), "error": str(e)}) if a.json
                  else f"{f}: error: {e}", file=sys.stdout if a.json else sys.stderr)
            continue
        if pred.probabilities is None:
            outs = {k: o.tolist() for k, o in pred.by_name().items()}
            print(json.dumps({"file": str(f), "outputs": outs}) if a.json else f"{f}: {outs}")
            continue
        for i, top in enumerate(served.top_k(pred, max(1, a.k))):
            name = str(f) if len(pred.probabilities) == 1 else f"{f}[{i}]"
            if a.json:
                print(json.dumps({"file": name, "model": served.name, "version": served.version,
                                  "labels": [c["label"] for c in top],
                                  "scores": [c["score"] for c in top]}))
            else:
                print(f"{name}: " + "  ".join(f"{c['label']} {c['score']:.3f}" for c in top))
    return 2 if bad else 0


# ---------------------------------------------------------------------------- bench


def _stats(lat_s: list[float]) -> dict[str, float]:
    arr = np.asarray(lat_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 4),
            "p99_ms": round(float(np.percentile(arr, 99)), 4),
            "mean_ms": round(float(arr.mean()), 4),
            "per_s": round(1000.0 / float(arr.mean()), 1)}


def bench_bundle(bundle_path: Path, *, runs: int = 500, warmup: int = 20,
                 threads: int | None = None, runtime_name: str = "auto") -> dict[str, Any]:
    """Bare ``Interpreter.invoke`` vs the agent's ``predict``: the same interpreter, input
    and threads, interleaved call by call so both see the same machine load."""
    bundle, runtime, threads, served = _registry(bundle_path, runtime_name, threads)
    with served.borrow() as m:
        interp = m.interpreter  # used from this thread only, never concurrently
    ind, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = tuple(int(d) for d in ind["shape"])
    x = (bundle.manifest.golden[0].input.decode() if bundle.manifest.golden
         else np.zeros(shape, dtype=ind["dtype"]))
    bare, agent = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        interp.set_tensor(ind["index"], x)
        interp.invoke()
        interp.get_tensor(outd["index"])
        t1 = time.perf_counter()
        served.predict(x, source="bench")
        t2 = time.perf_counter()
        if i >= warmup:
            bare.append(t1 - t0)
            agent.append(t2 - t1)
    b, g = _stats(bare), _stats(agent)
    return {"model": f"{bundle.name} v{bundle.version}", "runtime": str(runtime),
            "threads": threads, "input": list(shape), "runs": runs, "bare_invoke": b,
            "agent_predict": g, "throughput_ratio": round(g["per_s"] / b["per_s"], 3)}


def cmd_bench(a: argparse.Namespace) -> int:
    if a.bundle is None:
        raise BadInputError("bench needs a BUNDLE (or --sweep --model BUNDLE)")
    r = bench_bundle(a.bundle, runs=a.runs, warmup=a.warmup, threads=a.threads,
                     runtime_name=a.runtime)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['model']} on {r['runtime']}, {r['threads']} threads, input {r['input']}, "
          f"{r['runs']} runs")
    print(f"{'':16}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'per s':>10}")
    for label, k in (("bare invoke", "bare_invoke"), ("agent predict", "agent_predict")):
        s = r[k]
        print(f"{label:16}{s['p50_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['mean_ms']:>10.3f}"
              f"{s['per_s']:>10.1f}")
    print(f"throughput ratio agent/bare: {r['throughput_ratio']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd != "run":
        setup_logging("text", "debug" if args.verbose else "warning")
    try:
        return int(args.func(args))
    except BadInputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except EdgeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
