"""The shadow's IO shell: copy live requests, run them on the candidate's child, judge the gate.

The hook (:meth:`ShadowRun.on_prediction`) runs on the client's thread and does only
constant work: when the admission queue is saturated it skips the copy (``shed``), when
the bounded queue is full it drops the copy (drop-newest, ``dropped``), else it appends a
copy of the inputs and a reference to the (read-only, lazy) prediction. The client's
answer never waits for the candidate.

:meth:`ShadowRun.run` runs on the update worker thread: it feeds queued inputs to the
candidate's child process (:mod:`edge_agent.shadow.child`, the same isolation as the
candidate check), compares the outputs with the active version's
(:mod:`edge_agent.shadow.stats`), emits ``shadow.progress`` at most once a second, and
returns a :class:`ShadowOutcome` once ``min_requests`` were compared (count mode), or the
duration ended, or the time limit passed. Its work in the agent's process (framing,
comparing) is paced to ``max_busy`` of the wall time (``[update] shadow_max_busy``), as it
shares the interpreter lock with the threads answering clients. A child that dies, hangs
on one input past ``invoke_timeout_s`` or answers with a malformed frame ends the shadow
with a failure.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.protocol.kinds import EventKind
from edge_agent.runtime.isolate import ChildLimits, child_environment, signal_name
from edge_agent.runtime.quant import TensorCodec
from edge_agent.shadow import frames
from edge_agent.shadow.gate import Gate, GateVerdict
from edge_agent.shadow.stats import ShadowStats, agreement
from edge_agent.update.check_child import bundle_args

log = logging.getLogger(__name__)

CHILD = "edge_agent.shadow.child"
START_TIMEOUT_S = 60.0  # child start + imports + load


@dataclass(frozen=True)
class ShadowSetup:
    runtime: str
    threads: int | None = None
    delegate_library: str | None = None
    memory_mb: int = 1024
    queue_size: int = 32
    invoke_timeout_s: float = 10.0
    device_key: Path | None = None  # a sealed candidate: decrypted in the child's memory
    max_busy: float = 0.1  # share of wall time the shadow's work in this process may take


@dataclass(frozen=True)
class ShadowOutcome:
    passed: bool
    code: str  # ok | shadow_gate | shadow_crashed | shadow_timeout | shadow_no_traffic | stopping
    reason: str
    summary: dict[str, Any]


class ShadowChildError(Exception):
    """The candidate's process died, hung or broke the protocol; ``code`` says which."""

    def __init__(self, message: str, *, code: str) -> None:
        self.code = code
        super().__init__(message)


class ShadowChild:
    """The candidate's long-lived child process and its two pipes."""

    def __init__(self, staged: Path, setup: ShadowSetup, lifetime_s: float) -> None:
        self.setup = setup
        args = bundle_args(str(staged), setup.runtime, setup.threads, setup.delegate_library,
                           setup.device_key)
        threads = setup.threads or os.cpu_count() or 1
        limits = ChildLimits(lifetime_s + START_TIMEOUT_S, setup.memory_mb << 20,
                             threads=threads)
        self.proc = subprocess.Popen([sys.executable, "-m", CHILD, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=child_environment(limits))
        kind, data = self._read(START_TIMEOUT_S)
        if kind != b"R":
            self.close()
            raise ShadowChildError(data.decode(errors="replace")[:400] or "no ready frame",
                                   code="shadow_failed")

    def _died(self) -> ShadowChildError:
        rc = self.proc.poll()
        if rc is None:
            self.proc.kill()
            rc = self.proc.wait()
        what = f"killed by {signal_name(rc)}" if rc < 0 else f"exited with status {rc}"
        return ShadowChildError(f"the candidate's shadow process was {what}",
                                code="shadow_crashed")

    def _read(self, timeout_s: float) -> tuple[bytes, bytes]:
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout_s)
        if not ready:
            self.proc.kill()
            raise ShadowChildError(f"the candidate did not answer within {timeout_s:g} s "
                                   "(update.shadow_invoke_timeout_s); its process was killed",
                                   code="shadow_timeout")
        try:
            return frames.read_frame(out)  # type: ignore[arg-type]
        except frames.FrameError as e:
            err = self._died()
            if self.proc.returncode is not None and self.proc.returncode < 0:
                raise err from e
            raise ShadowChildError(f"the candidate's shadow process broke the protocol: {e}",
                                   code="shadow_crashed") from e

    def invoke(self, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray] | None, float, str]:
        """(outputs, invoke ms, error message) for one request. Raises ShadowChildError."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(frames.encode(b"I", frames.pack_arrays(inputs)))
            stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise self._died() from e
        kind, data = self._read(self.setup.invoke_timeout_s)
        if kind == b"E":
            return None, 0.0, data.decode(errors="replace")[:400]
        if kind != b"O":
            raise ShadowChildError(f"unexpected frame {kind!r}", code="shadow_crashed")
        try:  # the child is the candidate's: its frames are checked like any input
            arrs = frames.unpack_arrays(data)
            outs = [arrs[f"o{i}"] for i in range(len(arrs) - 1)]
            ms = float(arrs["ms"].reshape(-1)[0])
        except (frames.FrameError, KeyError, IndexError, ValueError, TypeError) as e:
            raise ShadowChildError(f"the candidate's shadow process sent a malformed answer: "
                                   f"{e}", code="shadow_crashed") from e
        return outs, ms, ""

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_Item = tuple[dict[str, np.ndarray], PredictionRecord]


class ShadowRun:
    """One candidate in the shadow of the active version of ``name`` (see module doc)."""

    def __init__(self, *, hooks: Hooks, name: str, active_version: int, candidate_version: int,
                 codecs: dict[str, TensorCodec], class_position: int | None,
                 setup: ShadowSetup, busy: Callable[[], bool] | None = None,
                 emit: Callable[..., None]) -> None:
        self.hooks = hooks
        self.name = name
        self.active_version = active_version
        self.candidate_version = candidate_version
        self.codecs = codecs  # the active version's input codecs: raw → float model units
        self.class_position = class_position
        self.setup = setup
        self.busy = busy
        self.emit = emit
        self.stats = ShadowStats()
        self._q: collections.deque[_Item] = collections.deque()
        self._wake = threading.Event()
        self._unsub: Callable[[], None] | None = None
        self.started_at = 0.0
        self.phase = "starting"

    # --- the client's thread: constant work only ------------------------------------------

    def on_prediction(self, rec: PredictionRecord) -> None:
        if rec.model != self.name or rec.version != self.active_version or not rec.ok \
                or rec.inputs is None or rec.source == "probe":
            return
        if self.busy is not None and self.busy():
            self.stats.shed += 1  # shed first under load: the candidate waits, clients don't
            return
        if len(self._q) >= self.setup.queue_size:
            self.stats.dropped += 1  # drop-newest: what is queued is already paid for
            return
        self._q.append(({k: v.copy() for k, v in rec.inputs.items()}, rec))
        self._wake.set()

    # --- the update worker --------------------------------------------------------------

    def run(self, staged: Path, gate: Gate, *, min_requests: int, duration_s: float | None,
            timeout_s: float, stop: threading.Event) -> ShadowOutcome:
        lifetime = duration_s if duration_s is not None else timeout_s
        self.started_at = time.time()
        try:
            child = ShadowChild(staged, self.setup, lifetime)
        except ShadowChildError as e:
            return self._end(False, e.code, str(e))
        except OSError as e:
            return self._end(False, "shadow_failed", f"could not start the shadow process: {e}")
        self._unsub = self.hooks.on_prediction(self.on_prediction)
        self.phase = "running"
        t0 = time.monotonic()
        end = t0 + lifetime
        last = 0.0
        busy = 0.0  # seconds this thread spent comparing: held to max_busy of the elapsed
        try:
            while True:
                now = time.monotonic()
                if stop.is_set():
                    return self._end(False, "stopping", "agent stopping during shadow")
                if duration_s is None and self.stats.requests >= min_requests:
                    return self._judge(gate, min_requests)
                if now >= end:
                    if duration_s is not None:
                        return self._judge(gate, max(min_requests, 1))
                    return self._end(False, "shadow_timeout", f"only {self.stats.requests} of "
                                     f"{min_requests} requests compared within {timeout_s:g} s "
                                     "(update.shadow_timeout_s)")
                if now - last >= 1.0:
                    last = now
                    self.emit("info", EventKind.SHADOW_PROGRESS, f"{self.stats.requests} compared",
                              shadow=self.stats.summary())
                if not self._q:
                    self._wake.wait(min(0.2, max(0.0, end - now)))
                    self._wake.clear()
                    continue
                inputs, rec = self._q.popleft()
                c0 = time.monotonic()
                self._compare(child, inputs, rec)
                busy += time.monotonic() - c0
                # the worker shares the interpreter lock with the request threads: pace it
                # (copies queued meanwhile are dropped, counted) so clients keep the process
                owed = busy / self.setup.max_busy - (time.monotonic() - t0)
                if owed > 0:
                    stop.wait(min(owed, 1.0))
        except ShadowChildError as e:
            return self._end(False, e.code, str(e))
        finally:
            self._unsubscribe()
            child.close()

    def _compare(self, child: ShadowChild, inputs: dict[str, np.ndarray],
                 rec: PredictionRecord) -> None:
        floats = {k: (self.codecs[k].dequantize(v) if k in self.codecs else v)
                  for k, v in inputs.items()}
        outs, ms, err = child.invoke(floats)
        active = rec.outputs
        if outs is None or active is None or len(outs) != len(active):
            self.stats.add_error()
            if err:
                log.info("shadow: candidate failed a request: %s", err)
            return
        n, agree, rel = agreement(active, outs, self.class_position)
        self.stats.add(n, agree, rel, ms / 1000, rec.latency_s)

    def _judge(self, gate: Gate, min_requests: int) -> ShadowOutcome:
        if self.stats.requests < min_requests or (not self.stats.samples
                                                  and not self.stats.errors):
            return self._end(False, "shadow_no_traffic", f"{self.stats.requests} requests "
                             f"compared, at least {min_requests} needed")
        v: GateVerdict = gate.evaluate(self.stats.candidate(), self.stats.active())
        return self._end(v.ok, "ok" if v.ok else "shadow_gate",
                         f"gate {gate.text()} {'holds' if v.ok else 'fails'} over "
                         f"{self.stats.requests} requests: {v.reason}")

    def _end(self, ok: bool, code: str, reason: str) -> ShadowOutcome:
        self._unsubscribe()
        self.phase = "passed" if ok else "failed"
        return ShadowOutcome(ok, code, reason, self.stats.summary())

    def _unsubscribe(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        self._q.clear()

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.candidate_version,
                "active_version": self.active_version, "phase": self.phase,
                "started_at": self.started_at, **self.stats.summary()}
