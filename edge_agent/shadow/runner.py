"""The shadow's IO shell: copy live requests to the candidate's child, judge its summaries.

The hook (:meth:`ShadowRun.on_prediction`) runs on the client's thread and does a bounded,
constant amount of work, none of it numeric: it skips the copy when the agent is loaded
(``busy``: requests wait for an interpreter, or more than half the workers are taken —
``shed``, the shadow is the first thing to give way), drops it when
``shadow_queue`` copies already wait (``dropped``), else packs the request's input tensors
and the active version's *raw* output tensors into one frame
(:func:`~edge_agent.shadow.frames.pack_request`) and puts it on a C queue. The client's
answer never waits for the candidate, and no Python thread of the agent computes
anything for it: the sender thread only joins and writes frames
(:class:`~edge_agent.shadow.pipe.ShadowChild`), and the child
(:mod:`edge_agent.shadow.child`, the same isolation as the candidate check) runs the
candidate, compares and keeps the statistics.

:meth:`ShadowRun.run` runs on the update worker thread, asleep in ``select`` between the
child's summaries (every ``summary_s``): it emits ``shadow.progress`` every
:data:`PROGRESS_S` and returns a :class:`ShadowOutcome` once ``min_requests`` were compared (count
mode), or the duration ended, or the time limit passed. A child that dies, answers with
a malformed frame or stays silent past ``invoke_timeout_s`` (one request hangs) ends the
shadow with a failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.manifest import TensorSpec
from edge_agent.protocol.kinds import EventKind
from edge_agent.shadow import frames
from edge_agent.shadow.gate import Gate, GateVerdict
from edge_agent.shadow.pipe import ShadowChild, ShadowChildError, ShadowSetup
from edge_agent.shadow.stats import Figures, Heads, ShadowStats, from_wire

__all__ = ["ShadowChildError", "ShadowOutcome", "ShadowRun", "ShadowSetup"]

log = logging.getLogger(__name__)

PROGRESS_S = 5.0  # shadow.progress events: each costs the agent an MQTT publish and more


@dataclass(frozen=True)
class ShadowOutcome:
    passed: bool
    code: str  # ok | shadow_gate | shadow_crashed | shadow_timeout | shadow_no_traffic | stopping
    reason: str
    summary: dict[str, Any]


def _specs(specs: Sequence[TensorSpec]) -> list[list[Any]]:
    return [[s.name, s.dtype, list(s.shape), s.scale, s.zero_point] for s in specs]


class ShadowRun:
    """One candidate in the shadow of the active version of ``name`` (see module doc)."""

    def __init__(self, *, hooks: Hooks, name: str, active_version: int, candidate_version: int,
                 input_specs: Sequence[TensorSpec], output_specs: Sequence[TensorSpec],
                 heads: Heads, setup: ShadowSetup, busy: Callable[[], bool] | None = None,
                 emit: Callable[..., None]) -> None:
        self.hooks = hooks
        self.name = name
        self.active_version = active_version
        self.candidate_version = candidate_version
        self.input_specs = tuple(input_specs)
        self.output_specs = tuple(output_specs)
        self._in_names = tuple(s.name for s in input_specs)
        self.heads = heads
        self.setup = setup
        self.busy = busy
        self.emit = emit
        self.figures = Figures(ShadowStats().summary(), {}, {})
        self.dropped = 0  # queue full: copy dropped (drop-newest)
        self.shed = 0  # the agent was loaded: not copied at all
        self._child: ShadowChild | None = None
        self._sent = 0  # copies the last child was sent
        self._unsub: Callable[[], None] | None = None
        self.started_at = 0.0
        self.phase = "starting"

    # --- the client's thread: constant work only ------------------------------------------

    def on_prediction(self, rec: PredictionRecord) -> None:
        if rec.model != self.name or rec.version != self.active_version or not rec.ok \
                or rec.inputs is None or rec.source == "probe":
            return
        child = self._child
        if child is None:
            return
        if self.busy is not None and self.busy():
            self.shed += 1  # shed first under load: the candidate waits, clients don't
            return
        if child.q.qsize() >= self.setup.queue_size:
            self.dropped += 1  # drop-newest: what is queued is already paid for
            return
        raw = rec.outputs_raw
        try:
            arrays = [rec.inputs[n] for n in self._in_names]
        except KeyError:
            return
        if raw is not None:
            child.q.put(frames.pack_request(rec.latency_s, [*arrays, *raw]))

    # --- the update worker --------------------------------------------------------------

    def config(self, min_requests: int) -> dict[str, Any]:
        """The child's ``C`` frame: the active version's tensors and heads."""
        return {"inputs": _specs(self.input_specs), "outputs": _specs(self.output_specs),
                "class_position": self.heads.class_position, "scores": self.heads.scores,
                "classes": self.heads.classes, "summary_s": self.setup.summary_s,
                "report_at": min_requests}

    def run(self, staged: Path, gate: Gate, *, min_requests: int, duration_s: float | None,
            timeout_s: float, stop: threading.Event) -> ShadowOutcome:
        lifetime = duration_s if duration_s is not None else timeout_s
        self.started_at = time.time()
        try:
            child = ShadowChild(staged, self.setup, lifetime,
                                self.config(min_requests if duration_s is None else 0))
        except ShadowChildError as e:
            return self._end(False, e.code, str(e))
        except OSError as e:
            return self._end(False, "shadow_failed", f"could not start the shadow process: {e}")
        self._child = child
        self._unsub = self.hooks.on_prediction(self.on_prediction)
        self.phase = "running"
        t0 = time.monotonic()
        end, last, heard = t0 + lifetime, 0.0, t0
        silent_s = self.setup.invoke_timeout_s + self.setup.summary_s
        try:
            while True:
                now = time.monotonic()
                requests = int(self.figures.summary.get("requests") or 0)
                if stop.is_set():
                    return self._end(False, "stopping", "agent stopping during shadow")
                if duration_s is None and requests >= min_requests:
                    return self._judge(gate, min_requests)
                if now >= end:
                    if duration_s is not None:
                        return self._judge(gate, max(min_requests, 1))
                    return self._end(False, "shadow_timeout", f"only {requests} of "
                                     f"{min_requests} requests compared within {timeout_s:g} s "
                                     "(update.shadow_timeout_s)")
                if now - heard > silent_s:
                    child.kill()
                    return self._end(False, "shadow_timeout", "the candidate did not answer "
                                     f"within {self.setup.invoke_timeout_s:g} s "
                                     "(update.shadow_invoke_timeout_s); its process was killed")
                if now - last >= PROGRESS_S:
                    last = now
                    self.emit("info", EventKind.SHADOW_PROGRESS, f"{requests} compared",
                              shadow=self.summary())
                wait_s = min(self.setup.summary_s, max(0.0, end - now))
                for kind, data in child.read(wait_s):
                    heard = time.monotonic()
                    self._frame(kind, data)
        except ShadowChildError as e:
            return self._end(False, e.code, str(e))
        finally:
            self._unsubscribe()
            self._child = None
            child.close()
            self._sent = child.sent

    def _frame(self, kind: bytes, data: bytes) -> None:
        if kind == b"E":
            raise ShadowChildError("the candidate's shadow process failed: "
                                   f"{data.decode(errors='replace')[:400]}",
                                   code="shadow_crashed")
        if kind != b"S":
            raise ShadowChildError(f"unexpected frame {kind!r}", code="shadow_crashed")
        try:  # the child is the candidate's: its frames are checked like any input
            fig = from_wire(json.loads(data))
        except ValueError as e:
            raise ShadowChildError(f"the candidate's shadow process sent a malformed summary: "
                                   f"{e}", code="shadow_crashed") from e
        if fig.last_error and fig.last_error != self.figures.last_error:
            log.info("shadow: candidate failed a request: %s", fig.last_error)
        self.figures = fig

    def summary(self) -> dict[str, Any]:
        """The child's latest figures with the agent's own counts (dropped, shed, sent)."""
        child = self._child
        return {**self.figures.summary, "dropped": self.dropped, "shed": self.shed,
                "sent": self._sent if child is None else child.sent}

    def _judge(self, gate: Gate, min_requests: int) -> ShadowOutcome:
        s = self.figures.summary
        requests, samples, errors = (int(s.get(k) or 0) for k in ("requests", "samples",
                                                                  "errors"))
        if requests < min_requests or (not samples and not errors):
            return self._end(False, "shadow_no_traffic", f"{requests} requests "
                             f"compared, at least {min_requests} needed")
        v: GateVerdict = gate.evaluate(self.figures.candidate, self.figures.active)
        return self._end(v.ok, "ok" if v.ok else "shadow_gate",
                         f"gate {gate.text()} {'holds' if v.ok else 'fails'} over "
                         f"{requests} requests: {v.reason}")

    def _end(self, ok: bool, code: str, reason: str) -> ShadowOutcome:
        self._unsubscribe()
        self.phase = "passed" if ok else "failed"
        return ShadowOutcome(ok, code, reason, self.summary())

    def _unsubscribe(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.candidate_version,
                "active_version": self.active_version, "phase": self.phase,
                "started_at": self.started_at, **self.summary()}
