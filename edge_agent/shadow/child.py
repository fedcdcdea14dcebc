"""The shadow candidate's process: load the staged bundle, judge copied requests, report.

``python -m edge_agent.shadow.child --bundle STAGED --runtime NAME [--threads N]
[--delegate LIB]``, started by :class:`edge_agent.shadow.runner.ShadowChild` with the
limits of :mod:`edge_agent.runtime.isolate` (memory ``RLIMIT_DATA``, CPU backstop,
parent-death signal) applied first. A candidate that crashes native code kills only this
process; the agent sees the pipe close and the signal, and discards the candidate.

Everything but copying a request happens here, not in the agent's process (whose threads
answering clients share one interpreter lock): the candidate's invoke, dequantizing the
active version's inputs and raw outputs (its specs arrive in the ``C`` frame), the
agreement and error (:func:`edge_agent.shadow.stats.compare`), the latency reservoirs and
the error count. The agent gets one ``S`` summary frame every ``summary_s`` (also when
idle: it is the heartbeat the agent's hang check waits for) and as soon as ``report_at``
requests were compared (so a count shadow ends without waiting for the next period).

The process runs :data:`NICE` steps nicer than the agent: where cores are spare (the
usual board, 4 cores) that changes nothing; where they are contended the kernel gives the
agent's threads the CPU first, and the candidate's figures and throughput pay instead
(its wall-clock latency grows, which fails a relative ``p99_ms`` clause rather than
passing it wrongly; fewer copies are compared, more dropped).

Frames (:mod:`edge_agent.shadow.frames`) on stdin/stdout; stderr is for logs. The fault
point ``shadow_child`` (:mod:`edge_agent.update.faults`) is reached before each invoke, so
``EDGE_UPDATE_FAULT=segv@shadow_child`` crashes the candidate on its first shadowed request.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Sequence
from typing import Any

from edge_agent.runtime.isolate import apply_limits
from edge_agent.update.check_child import parse_bundle_args

NICE = 10  # added to the agent's niceness: ~1/10 of an agent thread's CPU share when contended


def _send(kind: bytes, payload: bytes = b"") -> None:
    from edge_agent.shadow import frames

    view = memoryview(frames.encode(kind, payload))
    while view:
        view = view[os.write(1, view):]


def _codecs(specs: Any) -> list[Any]:
    from edge_agent.manifest import TensorSpec
    from edge_agent.runtime.quant import TensorCodec

    return [TensorCodec(TensorSpec(str(n), tuple(int(d) for d in s), str(dt), float(sc),
                                   int(zp))) for n, dt, s, sc, zp in specs]


def _serve(bundle_path: str, runtime: str, threads: int | None, delegate: str | None,
           device_key: str | None) -> int:
    from pathlib import Path

    import numpy as np

    from edge_agent.errors import EdgeError
    from edge_agent.runtime.backends import get_runtime
    from edge_agent.runtime.model import LoadedModel
    from edge_agent.shadow import frames
    from edge_agent.shadow.stats import Heads, ShadowStats, compare
    from edge_agent.store import read_target
    from edge_agent.update import faults

    try:
        bundle = read_target(Path(bundle_path), Path(device_key) if device_key else None,
                             source=bundle_path, max_bytes=os.path.getsize(bundle_path))
        rt = get_runtime(runtime)
        if rt is None:
            _send(b"E", f"runtime {runtime} does not import in the shadow process".encode())
            return 3
        delegates = [rt.load_delegate(delegate)] if delegate else []
        model = LoadedModel(rt, bundle.model_bytes, num_threads=threads, delegates=delegates)
        for g in bundle.manifest.golden[:2]:  # warm up: first invokes pack weights (XNNPACK)
            model.invoke_raw({k: v.decode() for k, v in g.inputs.items()})
    except EdgeError as e:
        _send(b"E", f"candidate did not load: {e}".encode()[:2000])
        return 3
    _send(b"R")
    reader = frames.FrameReader()
    stats = ShadowStats()
    cfg: dict[str, Any] | None = None
    ins: list[Any] = []
    outs: list[Any] = []
    names: list[str] = []
    heads = Heads()
    period, report_at, reported_at = 0.5, 0, 0
    due = time.monotonic() + period

    def report() -> None:
        nonlocal due, reported_at
        now = time.monotonic()
        if now >= due or (report_at and reported_at < report_at <= stats.requests):
            _send(b"S", json.dumps(stats.wire()).encode())
            reported_at = stats.requests
            due = now + period
    while True:
        ready, _, _ = select.select([0], [], [], max(0.0, due - time.monotonic()))
        if ready:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                return 0  # the agent closed the pipe: shadow over
            try:
                got = list(reader.feed(chunk))
            except frames.FrameError as e:
                _send(b"E", str(e).encode())
                return 2
            for kind, data in got:
                if kind == b"C":
                    cfg = json.loads(data)
                    ins, outs = _codecs(cfg["inputs"]), _codecs(cfg["outputs"])
                    names = [c.spec.name for c in ins]
                    heads = Heads(cfg.get("class_position"), cfg.get("scores"),
                                  cfg.get("classes"))
                    period = float(cfg.get("summary_s", period))
                    report_at = int(cfg.get("report_at", 0))
                    continue
                if kind != b"Q" or cfg is None:
                    _send(b"E", f"unexpected frame {kind!r}".encode())
                    return 2
                faults.point("shadow_child")
                try:
                    active_s, arrays = frames.unpack_request(data)
                    x = {n: c.dequantize(a) if a.dtype == c.dtype else a
                         for n, c, a in zip(names, ins, arrays[:len(ins)], strict=True)}
                    active = [c.dequantize(a) if a.dtype == c.dtype else
                              np.asarray(a, np.float32)
                              for c, a in zip(outs, arrays[len(ins):], strict=True)]
                    t0 = time.perf_counter()
                    got_outs = model.predict(x)
                    ms = (time.perf_counter() - t0) * 1000
                    n, agree, err = compare(active, got_outs, heads)
                except (EdgeError, frames.FrameError, ValueError, IndexError) as e:
                    stats.add_error(str(e))
                    report()
                    continue
                stats.add(n, agree, err, ms / 1000, active_s)
                report()  # a backlog of frames never delays the heartbeat
        report()


def main(argv: Sequence[str] | None = None) -> int:
    apply_limits()
    with contextlib.suppress(OSError):  # yield the CPU to the agent's clients when contended
        os.nice(NICE)
    a = parse_bundle_args("edge_agent.shadow.child", argv)
    try:
        return _serve(a.bundle, a.runtime, a.threads, a.delegate, a.device_key)
    except MemoryError:
        return 4


if __name__ == "__main__":
    sys.exit(main())
