"""The candidate's child process seen from the agent: start it, feed it, hear its summaries.

:class:`ShadowChild` starts ``python -m edge_agent.shadow.child`` with the limits of the
candidate check (:mod:`edge_agent.runtime.isolate`), waits for its ``R`` frame, and sends
the ``C`` configuration. Request copies go through a bounded :class:`queue.SimpleQueue`
(a C queue: ``put`` from a client's thread is one call, no Python lock) to **one sender
thread**, which wakes at most every ``batch_s``, joins whatever is queued and writes it
with one ``os.write`` (the interpreter lock is released while it blocks; a full pipe means
a slow candidate, and the queue then fills and drops). :meth:`ShadowChild.read` returns
the child's frames, waiting in ``select`` (no lock held).

Raises :class:`ShadowChildError` with a ``code``: ``shadow_failed`` (did not start or
load), ``shadow_crashed`` (died, named by its signal, or broke the protocol),
``shadow_timeout`` (silent past its deadline: killed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.runtime.isolate import ChildLimits, child_environment, signal_name
from edge_agent.shadow import frames
from edge_agent.threadname import NamedThread
from edge_agent.update.check_child import bundle_args

CHILD = "edge_agent.shadow.child"
START_TIMEOUT_S = 60.0  # child start + imports + load
PIPE_BYTES = 1 << 20  # the child's stdin pipe (Linux F_SETPIPE_SZ): room for a burst
_F_SETPIPE_SZ = 1031


@dataclass(frozen=True)
class ShadowSetup:
    runtime: str
    threads: int | None = None
    delegate_library: str | None = None
    memory_mb: int = 1024
    queue_size: int = 32  # request copies waiting for the sender (beyond: dropped)
    invoke_timeout_s: float = 10.0
    device_key: Path | None = None  # a sealed candidate: decrypted in the child's memory
    summary_s: float = 0.5  # the child's summary (and heartbeat) period
    batch_s: float = 0.01  # the sender gathers copies this long: one write, few wake-ups


class ShadowChildError(Exception):
    """The candidate's process died, hung or broke the protocol; ``code`` says which."""

    def __init__(self, message: str, *, code: str) -> None:
        self.code = code
        super().__init__(message)


class ShadowChild:
    """The candidate's long-lived child process, its pipes and its sender thread."""

    def __init__(self, staged: Path, setup: ShadowSetup, lifetime_s: float,
                 config: dict[str, Any]) -> None:
        self.setup = setup
        args = bundle_args(str(staged), setup.runtime, setup.threads, setup.delegate_library,
                           setup.device_key)
        threads = setup.threads or os.cpu_count() or 1
        limits = ChildLimits(lifetime_s + START_TIMEOUT_S, setup.memory_mb << 20,
                             threads=threads)
        self.proc = subprocess.Popen([sys.executable, "-m", CHILD, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=child_environment(limits))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        with contextlib.suppress(OSError):  # not Linux, or above pipe-max-size: the default
            fcntl.fcntl(self._in, _F_SETPIPE_SZ, PIPE_BYTES)
        self._reader = frames.FrameReader()
        self.q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.sent = 0  # request copies written to the child
        self.send_error: OSError | None = None
        self._sender: threading.Thread | None = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            got = self.read(max(0.0, deadline - time.monotonic()), what="start")
            if got:
                break
        kind, data = got[0]
        if kind != b"R":
            self.close()
            raise ShadowChildError(data.decode(errors="replace")[:400] or "no ready frame",
                                   code="shadow_failed")
        self._write(frames.encode(b"C", json.dumps(config).encode()))
        self._sender = NamedThread(target=self._send_loop, name="shadow-sender",
                                        daemon=True)
        self._sender.start()

    # --- the sender thread -----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def _send_loop(self) -> None:
        q, batch_s = self.q, self.setup.batch_s
        while True:
            first = q.get()
            if first is None:
                return
            if batch_s > 0:
                time.sleep(batch_s)  # gather: copies arriving meanwhile share one write
            chunk = [first]
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._flush(chunk)
                    return
                chunk.append(item)
            if not self._flush(chunk):
                return

    def _flush(self, chunk: list[bytes]) -> bool:
        try:
            self._write(b"".join(chunk))
        except OSError as e:  # the child is gone: the reader reports how
            self.send_error = e
            return False
        self.sent += len(chunk)
        return True

    # --- the update worker's side ----------------------------------------------------

    def died(self) -> ShadowChildError:
        rc = self.proc.poll()
        if rc is None:
            self.proc.kill()
            rc = self.proc.wait()
        what = f"killed by {signal_name(rc)}" if rc < 0 else f"exited with status {rc}"
        return ShadowChildError(f"the candidate's shadow process was {what}",
                                code="shadow_crashed")

    def read(self, timeout_s: float, *, what: str = "summary") -> list[tuple[bytes, bytes]]:
        """The frames that arrive within ``timeout_s`` (maybe none). Raises
        ShadowChildError when the child died, broke the protocol or, starting, was silent."""
        ready, _, _ = select.select([self._out], [], [], timeout_s)
        if not ready:
            if what == "start":
                self.proc.kill()
                raise ShadowChildError(f"the candidate's shadow process did not start within "
                                       f"{START_TIMEOUT_S:g} s; it was killed",
                                       code="shadow_timeout")
            return []
        chunk = os.read(self._out, 1 << 16)
        if not chunk:
            raise self.died()
        try:
            return list(self._reader.feed(chunk))
        except frames.FrameError as e:
            self.proc.kill()
            raise ShadowChildError(f"the candidate's shadow process broke the protocol: {e}",
                                   code="shadow_crashed") from e

    def kill(self) -> None:
        self.proc.kill()

    def close(self) -> None:
        if self._sender is not None:
            self.q.put(None)
            self._sender.join(2.0)
            if self._sender.is_alive():  # blocked on a full pipe of a stuck child
                self.proc.kill()
                self._sender.join(2.0)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
