"""The shadow candidate's process: load the staged bundle, answer input frames, forever.

``python -m edge_agent.shadow.child --bundle STAGED --runtime NAME [--threads N]
[--delegate LIB]``, started by :class:`edge_agent.shadow.runner.ShadowChild` with the
limits of :mod:`edge_agent.runtime.isolate` (memory ``RLIMIT_DATA``, CPU backstop,
parent-death signal) applied first. A candidate that crashes native code kills only this
process; the agent sees the pipe close and the signal, and discards the candidate.

Frames (:mod:`edge_agent.shadow.frames`) on stdin/stdout; stderr is for logs. The fault
point ``shadow_child`` (:mod:`edge_agent.update.faults`) is reached before each invoke, so
``EDGE_UPDATE_FAULT=segv@shadow_child`` crashes the candidate on its first shadowed request.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from edge_agent.runtime.isolate import apply_limits
from edge_agent.update.check_child import parse_bundle_args


def _serve(bundle_path: str, runtime: str, threads: int | None, delegate: str | None,
           device_key: str | None) -> int:
    from pathlib import Path

    from edge_agent.errors import EdgeError
    from edge_agent.runtime.backends import get_runtime
    from edge_agent.runtime.model import LoadedModel
    from edge_agent.shadow import frames
    from edge_agent.store import read_target
    from edge_agent.update import faults

    out, inp = sys.stdout.buffer, sys.stdin.buffer

    def send(kind: bytes, payload: bytes = b"") -> None:
        out.write(frames.encode(kind, payload))
        out.flush()

    try:
        bundle = read_target(Path(bundle_path), Path(device_key) if device_key else None,
                             source=bundle_path, max_bytes=os.path.getsize(bundle_path))
        rt = get_runtime(runtime)
        if rt is None:
            send(b"E", f"runtime {runtime} does not import in the shadow process".encode())
            return 3
        delegates = [rt.load_delegate(delegate)] if delegate else []
        model = LoadedModel(rt, bundle.model_bytes, num_threads=threads, delegates=delegates)
        for g in bundle.manifest.golden[:2]:  # warm up: first invokes pack weights (XNNPACK)
            model.invoke_raw({k: v.decode() for k, v in g.inputs.items()})
    except EdgeError as e:
        send(b"E", f"candidate did not load: {e}".encode()[:2000])
        return 3
    send(b"R")
    while True:
        try:
            kind, data = frames.read_frame(inp)
        except frames.FrameError:
            return 0  # the agent closed the pipe: shadow over
        if kind != b"I":
            send(b"E", f"unexpected frame {kind!r}".encode())
            continue
        faults.point("shadow_child")
        try:
            x = frames.unpack_arrays(data)
            t0 = time.perf_counter()
            outs = model.predict(x)
            ms = (time.perf_counter() - t0) * 1000
        except (EdgeError, frames.FrameError, ValueError) as e:
            send(b"E", str(e).encode()[:2000])
            continue
        import numpy as np

        send(b"O", frames.pack_arrays({**{f"o{i}": o for i, o in enumerate(outs)},
                                       "ms": np.array(ms)}))


def main(argv: Sequence[str] | None = None) -> int:
    apply_limits()
    a = parse_bundle_args("edge_agent.shadow.child", argv)
    try:
        return _serve(a.bundle, a.runtime, a.threads, a.delegate, a.device_key)
    except MemoryError:
        return 4


if __name__ == "__main__":
    sys.exit(main())
