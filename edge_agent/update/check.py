"""Prove a candidate bundle in a child process, under a time and a memory limit, first.

Test-loading a model and running its golden vectors is the first time this device runs
the candidate, and a model can be written to defeat both steps: a WHILE loop that never
terminates on its golden input hung the single update worker forever; a model that
crashes the runtime killed the agent, and systemd restarted it into the same crash. So
:meth:`UpdateFlow._test_load <edge_agent.update.flow.UpdateFlow._test_load>` first runs
:mod:`edge_agent.update.check_child` — the staged bundle, the agent's runtime, threads and
delegate — through :func:`edge_agent.runtime.isolate.run_child` (the runtime probe's
isolation), and loads the candidate into the agent only after the child's ``ok``. The
agent keeps serving the old model throughout.

Limits (:class:`CheckLimits`): ``[update] check_timeout_s`` (wall clock: child start,
load, golden vectors) and a memory limit (``RLIMIT_DATA``) of ``[update]
check_memory_mb``, by default the device profile's ``memory_budget_mb`` — a check that
needs more than the agent's whole budget could not be served anyway.

:func:`judge` (pure) turns how the child ended into a :class:`CheckResult` or a
:class:`~edge_agent.update.errors.ModelRejectedError`:

================================  ==================  =======
child                             code                blocked
================================  ==================  =======
over the time limit (killed)      ``check_timeout``   yes
killed by a signal (named)        ``check_crashed``   yes
``MemoryError`` under the limit   ``check_memory``    yes
the runtime refused the model     ``load_failed``     no
golden outputs differ             ``golden_mismatch`` no
no verdict, could not start       ``check_failed``    no
================================  ==================  =======

Blocked (:data:`BLOCKING`) candidates join the state's ``blocked`` list, like a rolled
back version, so a retained or re-signed announcement of that version does not run the
check again; ``check_failed`` is more likely this device's trouble than the model's.

A bundle with variants (:func:`check_variants`) is checked one variant per child: each
variant this device would serve (its requirements met), with its own golden vectors. A
variant whose child fails for any reason of the table is skipped, with that reason, and is
never loaded into the agent; the others go on. None passing: ``no_runnable_variant``,
naming every variant's reason (blocked when every one of them is a blocking reason).

Verdicts are memoised per process for the same inputs (signed bytes, runtime setup,
limits, fault injection): one agent checks a target once anyway, and the fleet simulator,
which runs many agents in one process, checks a release once instead of once per agent.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.bundle import Manifest
from edge_agent.runtime.isolate import ChildLimits, ChildRun, run_child
from edge_agent.update import faults
from edge_agent.update.check_child import STAGES, bundle_args
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import ModelRejectedError
from edge_agent.update.fetchers import Cancelled

__all__ = ["BLOCKING", "CheckLimits", "CheckResult", "CheckSetup", "check_candidate",
           "check_variants", "judge"]

CHILD = "edge_agent.update.check_child"
DEFAULT_MEMORY_MB = 1024  # neither update.check_memory_mb nor a profile budget known
BLOCKING = frozenset({"check_timeout", "check_crashed", "check_memory"})
_MEMO_SIZE = 32


@dataclass(frozen=True)
class CheckSetup:
    """How this agent builds interpreters (the child builds the same), and its budget."""

    runtime: str  # e.g. "ai-edge-litert"
    threads: int | None = None
    delegate_library: str | None = None  # only when the agent's registry uses it
    memory_budget_mb: int | None = None  # the device profile's
    profile: str = ""


@dataclass(frozen=True)
class CheckLimits:
    timeout_s: float
    memory_mb: int
    memory_from: str  # where the memory limit came from, for messages

    @classmethod
    def resolve(cls, cfg: UpdateConfig, setup: CheckSetup) -> CheckLimits:
        if cfg.check_memory_mb:
            return cls(cfg.check_timeout_s, cfg.check_memory_mb, "update.check_memory_mb")
        if setup.memory_budget_mb:
            return cls(cfg.check_timeout_s, setup.memory_budget_mb,
                       f"the {setup.profile or 'device'} profile's memory_budget_mb")
        return cls(cfg.check_timeout_s, DEFAULT_MEMORY_MB, "the default")

    def describe(self) -> str:
        return f"{self.timeout_s:g} s, {self.memory_mb} MiB"


@dataclass(frozen=True)
class CheckResult:
    vectors: int
    max_abs_diff: float
    duration_s: float  # the child's whole life: start, imports, load, golden vectors
    peak_rss_mb: float | None
    reused: bool = False  # the memoised verdict of an identical check in this process
    # a bundle with variants: those that failed their check (name → why), never loaded
    variants_failed: tuple[tuple[str, str], ...] = ()


def judge(run: ChildRun, limits: CheckLimits) -> CheckResult:
    """How the child ended → the result, or the rejection (see the module docstring).

    Raises ModelRejectedError with the codes of the table, Cancelled when stopped.
    """
    where = STAGES.get(run.stage or "", "starting")
    if run.status == "stopped":
        raise Cancelled("the agent is stopping: candidate check interrupted")
    if run.status == "timeout":
        raise ModelRejectedError(
            f"the candidate check did not finish within {limits.timeout_s:g} s "
            f"(update.check_timeout_s) while {where}; the check process was killed",
            code="check_timeout")
    if run.status == "crashed":
        raise ModelRejectedError(f"the candidate check process was killed by {run.signal} "
                                 f"while {where}", code="check_crashed")
    r = run.result
    if r is None:
        raise ModelRejectedError(f"the candidate check ended without a verdict while {where} "
                                 f"({run.detail})", code="check_failed")
    outcome, detail = r.get("outcome"), str(r.get("detail", ""))[:400]
    if outcome == "memory":
        raise ModelRejectedError(
            f"the candidate check ran out of memory under its limit of {limits.memory_mb} MiB "
            f"({limits.memory_from}) while {where}: {detail}", code="check_memory")
    if outcome == "load-failed":
        raise ModelRejectedError(f"test-load failed: {detail}", code="load_failed")
    if outcome == "golden-mismatch":
        raise ModelRejectedError(f"golden vectors failed: {detail}", code="golden_mismatch")
    if outcome == "ok":
        try:
            rss = r.get("peak_rss_mb")
            return CheckResult(int(r["vectors"]), float(r["max_abs_diff"]), run.duration_s,
                               float(rss) if rss is not None else None)
        except (KeyError, TypeError, ValueError):
            detail = f"malformed verdict {r!r:.200}"
    raise ModelRejectedError(f"the candidate check could not run: {detail}",
                             code="check_failed")


def _on_the_candidate(run: ChildRun) -> bool:
    """A verdict on the candidate itself (memoised), not on this process's circumstances."""
    return run.status in ("timeout", "crashed") or (run.status == "finished" and (
        run.result or {}).get("outcome") in ("ok", "memory", "load-failed", "golden-mismatch"))


_LOCK = threading.Lock()
_MEMO: OrderedDict[tuple[object, ...], ChildRun] = OrderedDict()


def check_candidate(staged: Path, manifest: Manifest, setup: CheckSetup, limits: CheckLimits,
                    *, sha256: str, stop: threading.Event | None = None,
                    device_key: Path | None = None, variant: str | None = None) -> CheckResult:
    """Test-load ``staged`` and run its golden vectors in a child, under ``limits``.

    Raises ModelRejectedError (``golden_missing`` before any child, else see :func:`judge`),
    Cancelled when ``stop`` is set meanwhile.
    """
    if not manifest.golden:
        raise ModelRejectedError("bundle carries no golden vectors: it cannot be proven on "
                                 "this device", code="golden_missing")
    key = (sha256, setup, limits, os.environ.get(faults.ENV, ""), variant)
    while not _LOCK.acquire(timeout=0.2):  # one check at a time per process
        if stop is not None and stop.is_set():
            raise Cancelled("the agent is stopping: candidate check not started")
    try:
        run = _MEMO.get(key)
        if run is not None:
            res = judge(run, limits)
            return CheckResult(res.vectors, res.max_abs_diff, 0.0, res.peak_rss_mb, True)
        args = bundle_args(str(staged), setup.runtime, setup.threads, setup.delegate_library,
                           device_key) + ([] if variant is None else ["--variant", variant])
        threads = setup.threads or os.cpu_count() or 1  # LiteRT's own default otherwise
        run = run_child(CHILD, args, stop=stop, limits=ChildLimits(
            limits.timeout_s, limits.memory_mb << 20, threads=threads))
        if _on_the_candidate(run):
            _MEMO[key] = run
            while len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
    finally:
        _LOCK.release()
    return judge(run, limits)


def check_variants(staged: Path, manifest: Manifest, setup: CheckSetup, limits: CheckLimits,
                   *, sha256: str, variants: Sequence[str], unmet: Mapping[str, str],
                   stop: threading.Event | None = None,
                   device_key: Path | None = None) -> CheckResult:
    """:func:`check_candidate` for each of ``variants`` (those this device would serve, in
    the bundle's order; ``unmet``: the others and why), one child each.

    Raises ModelRejectedError ``no_runnable_variant`` naming each variant's reason when
    none passes (code ``check_crashed`` … of the table are kept in the message), Cancelled.
    """
    passed: list[CheckResult] = []
    failed: dict[str, str] = {}
    codes: list[str] = []
    for name in variants:
        try:
            passed.append(check_candidate(staged, manifest, setup, limits, sha256=sha256,
                                          stop=stop, device_key=device_key, variant=name))
        except ModelRejectedError as e:
            failed[name] = f"check {e.code}: {e}"[:300]
            codes.append(e.code)
    if not passed:
        reasons = {**unmet, **failed}
        none = ModelRejectedError(
            f"{manifest.name} v{manifest.version}: no variant this device can run ("
            + "; ".join(f"{n}: {w}" for n, w in reasons.items()) + ")",
            code="no_runnable_variant")
        none.blocking = bool(codes) and all(c in BLOCKING for c in codes)
        raise none
    return CheckResult(sum(r.vectors for r in passed), max(r.max_abs_diff for r in passed),
                       sum(r.duration_s for r in passed),
                       max((r.peak_rss_mb for r in passed if r.peak_rss_mb is not None),
                           default=None),
                       all(r.reused for r in passed), tuple(failed.items()))
