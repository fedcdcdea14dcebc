"""Probe each runtime candidate once in a child process before the agent trusts it.

A native runtime that segfaults (ai-edge-litert 2.2+/2.3 does under qemu-user, see
``docs/install.md``) would otherwise take the agent down at every start, and systemd would
restart it into the same crash forever. So, before importing a candidate's native library
in the agent's own process:

1. a child process (``python -m edge_agent.runtime.probe --child NAME``) imports the runtime,
   creates an interpreter for a bundle's model and checks the bundle's golden vectors — or,
   without a bundle, runs the 952-byte int8 model of :mod:`~edge_agent.runtime.capabilities`;
2. the parent reads the child's verdict (a JSON line on stdout) or, if the child died, the
   signal that killed it and the last stage it reported;
3. the verdict is cached per runtime name + version (+ machine and Python) in
   ``<state_dir>/runtime-probes.json`` (atomic write), so each version is probed once; a
   crash verdict sticks until the runtime's version changes or a re-probe is forced;
4. :func:`select_probed_runtime` falls back to the next candidate and returns every verdict,
   for the agent's status and events (:meth:`ProbeVerdict.event`).

Cache rules: ``ok`` and ``crashed`` are verdicts on the runtime and are reused for any
bundle; ``load-failed`` / ``golden-mismatch`` are verdicts on one model and are reused
only for the same model (sha256).

Fault injection (tests only): the child honours ``EDGE_AGENT_PROBE_FAULT`` = ``segv``
(a real SIGSEGV through a NULL read with ctypes, right where the interpreter would be
created), ``abort``, ``hang`` or ``exit``, optionally for one runtime only
(``segv:ai-edge-litert``).

Raises :class:`~edge_agent.errors.RuntimeUnavailableError` when no candidate passes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edge_agent.bundle import read_bundle, sha256_bytes
from edge_agent.errors import BundleError, RuntimeUnavailableError
from edge_agent.fsutil import atomic_write_text
from edge_agent.protocol.kinds import EventKind, probe_event_kind
from edge_agent.runtime.backends import (
    _MODULES,  # name → (module, distributions): versions are read without importing
    DEFAULT_ORDER,
    Runtime,
    _dist_version,
    get_runtime,
    parse_version,
)

log = logging.getLogger(__name__)

STATE_FILE = "runtime-probes.json"
STATE_SCHEMA = 1
RESULT_TAG = "EDGE-PROBE-RESULT "
STAGE_TAG = "EDGE-PROBE-STAGE "
FAULT_ENV = "EDGE_AGENT_PROBE_FAULT"
DEFAULT_TIMEOUT_S = 120.0  # emulated aarch64 needs ~10 s for MobileNetV2's golden vectors
OUTCOMES = ("ok", "crashed", "timeout", "load-failed", "golden-mismatch", "not-installed",
            "too-old", "error")
MODEL_OUTCOMES = ("load-failed", "golden-mismatch")  # verdicts on a model, not a runtime
STAGES = {"import": "importing the runtime", "create": "creating the interpreter",
          "golden": "checking golden vectors", "done": "reporting"}


@dataclass(frozen=True)
class ProbeVerdict:
    """The outcome of probing one runtime version (or why it was not probed)."""

    runtime: str  # name, e.g. "ai-edge-litert"
    version: str
    outcome: str  # one of OUTCOMES
    detail: str  # one line for humans
    signal: str | None = None  # "SIGSEGV" when the child was killed by a signal
    stage: str | None = None  # last stage the child reached (see STAGES)
    duration_s: float = 0.0
    probed_at: float = 0.0  # epoch seconds
    model_sha256: str | None = None  # model probed with (None: the built-in probe model)
    int8_xnnpack: bool | None = None  # observed in the child (capabilities)
    machine: str = ""
    python: str = ""
    cached: bool = False  # True when read from the state file instead of probed now

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.version}".strip()

    @property
    def key(self) -> str:
        return cache_key(self.runtime, self.version, self.machine, self.python)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeVerdict:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        v = cls(**fields)
        if v.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {v.outcome!r}")
        return v

    def event(self) -> tuple[str, str, str, dict[str, Any]]:
        """``(level, kind, message, data)`` for ``Hooks.emit_event``."""
        if self.ok:
            return ("info", EventKind.RUNTIME_PROBE_OK, f"{self.label}: {self.detail}",
                    self.as_dict())
        level = "error" if self.outcome in ("crashed", "timeout") else "warning"
        return (level, probe_event_kind(self.outcome),
                f"{self.label}: {self.detail}", self.as_dict())


@dataclass(frozen=True)
class ProbeSelection:
    """The runtime the agent will use and the verdicts that led to it."""

    runtime: Runtime
    verdicts: tuple[ProbeVerdict, ...]

    @property
    def fell_back(self) -> bool:
        return any(not v.ok and v.outcome not in ("not-installed",) for v in self.verdicts)

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime.name, "version": self.runtime.version,
                "fell_back": self.fell_back,
                "probes": [v.as_dict() for v in self.verdicts]}


def _machine() -> str:
    return platform.machine()


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def cache_key(name: str, version: str, machine: str | None = None,
              python: str | None = None) -> str:
    return f"{name}=={version}|{machine or _machine()}|py{python or _python()}"


def installed_version(name: str) -> str | None:
    """A runtime's distribution version, read from metadata (its native code is not loaded)."""
    if name not in _MODULES:
        raise RuntimeUnavailableError(
            f"unknown runtime {name!r} (expected one of {', '.join(DEFAULT_ORDER)})")
    return _dist_version(_MODULES[name][1])


class VerdictCache:
    """``<state_dir>/runtime-probes.json``; unreadable contents count as empty (logged)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / STATE_FILE

    def load(self) -> dict[str, ProbeVerdict]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("schema") != STATE_SCHEMA:
                raise ValueError(f"schema {doc.get('schema')!r}, expected {STATE_SCHEMA}")
            return {k: ProbeVerdict.from_dict(v) for k, v in doc["verdicts"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s: ignoring unreadable probe cache (%s)", self.path, e)
            return {}

    def get(self, key: str) -> ProbeVerdict | None:
        return self.load().get(key)

    def put(self, verdict: ProbeVerdict) -> None:
        """Store one verdict (atomic). Raises OSError if the state dir is unwritable."""
        verdicts = self.load()
        verdicts[verdict.key] = replace(verdict, cached=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"schema": STATE_SCHEMA,
               "verdicts": {k: v.as_dict() for k, v in sorted(verdicts.items())}}
        atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def forget(self, key: str | None = None) -> None:
        if key is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        verdicts = self.load()
        if verdicts.pop(key, None) is not None:
            atomic_write_text(self.path, json.dumps(
                {"schema": STATE_SCHEMA, "verdicts": {k: v.as_dict() for k, v in
                                                       sorted(verdicts.items())}},
                indent=1, sort_keys=True) + "\n")


def model_sha256(bundle: Path) -> str | None:
    """sha256 of a bundle's model (dir or tar), read without any runtime; None if unreadable."""
    try:
        return sha256_bytes(read_bundle(bundle, verify_hash=False).model_bytes)
    except BundleError:
        return None


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _parse_child(stdout: str) -> tuple[dict[str, Any] | None, str | None]:
    result, stage = None, None
    for line in stdout.splitlines():
        if line.startswith(STAGE_TAG):
            stage = line[len(STAGE_TAG):].strip()
        elif line.startswith(RESULT_TAG):
            with contextlib.suppress(ValueError):
                result = json.loads(line[len(RESULT_TAG):])
    return result, stage


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_probe(name: str, version: str, bundle: Path | None = None, *,
              timeout_s: float = DEFAULT_TIMEOUT_S, python: str | None = None,
              env: dict[str, str] | None = None) -> ProbeVerdict:
    """Probe one runtime now, in a child process; never raises for what the child does."""
    cmd = [python or sys.executable, "-m", "edge_agent.runtime.probe", "--child", name]
    sha = None
    if bundle is not None:
        bundle = Path(bundle).resolve()
        cmd += ["--bundle", str(bundle)]
        sha = model_sha256(bundle)
    child_env = {**os.environ, **(env or {})}
    # The child must import this agent, wherever the parent found it (venv or source tree).
    pkg_root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pkg_root, child_env.get("PYTHONPATH", "")) if p)
    base = ProbeVerdict(name, version, "error", "", machine=_machine(), python=_python(),
                        probed_at=time.time(), model_sha256=sha)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env=child_env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        _, stage = _parse_child(out)
        return replace(base, outcome="timeout", stage=stage,
                       duration_s=time.monotonic() - t0,
                       detail=f"no answer within {timeout_s:g} s while "
                              f"{STAGES.get(stage or '', 'starting')}; not trusted")
    except OSError as e:
        return replace(base, outcome="error", duration_s=time.monotonic() - t0,
                       detail=f"could not start the probe process: {e}")
    dt = time.monotonic() - t0
    result, stage = _parse_child(proc.stdout)
    if proc.returncode < 0:
        sig = _signal_name(proc.returncode)
        return replace(base, outcome="crashed", signal=sig, stage=stage, duration_s=dt,
                       detail=f"crashed with {sig} while "
                              f"{STAGES.get(stage or '', 'starting')}; not trusted")
    if result is None:
        why = _last_line(proc.stderr) or f"exit status {proc.returncode}"
        return replace(base, outcome="error", stage=stage, duration_s=dt,
                       detail=f"probe ended without a verdict ({why})")
    outcome = str(result.get("outcome", "error"))
    return replace(base, outcome=outcome if outcome in OUTCOMES else "error",
                   stage=stage, duration_s=dt, detail=str(result.get("detail", ""))[:400],
                   int8_xnnpack=result.get("int8_xnnpack"))


def probe_runtime(name: str, bundle: Path | None = None, *, state_dir: str | Path,
                  timeout_s: float = DEFAULT_TIMEOUT_S, reprobe: bool = False,
                  min_version: str | None = None, python: str | None = None,
                  env: dict[str, str] | None = None) -> ProbeVerdict:
    """The cached verdict for this runtime version, or a fresh probe (then cached)."""
    version = installed_version(name)
    if version is None:
        return ProbeVerdict(name, "", "not-installed", "not installed", machine=_machine(),
                            python=_python(), probed_at=time.time())
    if min_version and parse_version(version) < parse_version(min_version):
        return ProbeVerdict(name, version, "too-old", f"{version} < required {min_version}",
                            machine=_machine(), python=_python(), probed_at=time.time())
    cache = VerdictCache(state_dir)
    key = cache_key(name, version)
    if not reprobe:
        hit = cache.get(key)
        sha = model_sha256(bundle) if bundle is not None else None
        if hit is not None and (hit.outcome not in MODEL_OUTCOMES or hit.model_sha256 == sha):
            return replace(hit, cached=True)
    verdict = run_probe(name, version, bundle, timeout_s=timeout_s, python=python, env=env)
    try:
        cache.put(verdict)
    except OSError as e:
        log.warning("%s: cannot cache the probe verdict (%s)", cache.path, e)
    return verdict


def select_probed_runtime(candidates: Sequence[str] | None = None,
                          bundle: Path | None = None, *, state_dir: str | Path,
                          min_versions: dict[str, str] | None = None,
                          timeout_s: float = DEFAULT_TIMEOUT_S, reprobe: bool = False,
                          env: dict[str, str] | None = None) -> ProbeSelection:
    """The first candidate whose probe passes, imported into this process.

    Raises RuntimeUnavailableError naming every candidate and its verdict.
    """
    verdicts: list[ProbeVerdict] = []
    for name in candidates or DEFAULT_ORDER[:2]:
        v = probe_runtime(name, bundle, state_dir=state_dir, timeout_s=timeout_s,
                          reprobe=reprobe, min_version=(min_versions or {}).get(name), env=env)
        verdicts.append(v)
        if not v.ok:
            if v.outcome != "not-installed":
                log.warning("runtime %s: %s", v.label, v.detail)
            continue
        rt = get_runtime(name)
        if rt is None:  # passed in the child, fails to import here: do not trust it
            verdicts[-1] = replace(v, outcome="error", detail="imports in the probe but not "
                                   "in the agent")
            continue
        return ProbeSelection(rt, tuple(verdicts))
    raise RuntimeUnavailableError(
        "no runtime passed its probe (" + "; ".join(f"{v.label}: {v.detail}" for v in verdicts)
        + "); install ai-edge-litert (pip install ai-edge-litert) or tflite-runtime")


# ---------------------------------------------------------------------------- the child


def _stage(name: str) -> None:
    print(STAGE_TAG + name, flush=True)


def _inject_fault(name: str) -> None:
    fault, _, only = os.environ.get(FAULT_ENV, "").partition(":")
    if only and only != name:
        return
    if fault == "segv":
        import ctypes

        ctypes.string_at(0)  # a real SIGSEGV in native code, where the interpreter would be
    elif fault == "abort":
        os.abort()
    elif fault == "hang":
        time.sleep(3600)
    elif fault == "exit":
        os._exit(7)


def _child(name: str, bundle_path: str | None) -> int:
    """Import, create, verify; print one result line. Exit 0 only when trustworthy."""
    import numpy as np

    from edge_agent.errors import GoldenMismatchError, ModelLoadError
    from edge_agent.runtime.capabilities import (
        PROBE_ATOL,
        PROBE_INPUT,
        PROBE_MODEL,
        PROBE_OUTPUT,
        xnnpack_applied,
    )
    from edge_agent.runtime.model import LoadedModel, verify_golden

    def result(outcome: str, detail: str, **extra: Any) -> int:
        _stage("done")
        print(RESULT_TAG + json.dumps({"outcome": outcome, "detail": detail, **extra}),
              flush=True)
        return 0 if outcome == "ok" else 3

    _stage("import")
    rt = get_runtime(name)
    if rt is None:
        return result("not-installed", "does not import in this Python")
    _stage("create")
    _inject_fault(name)
    try:
        probe = LoadedModel(rt, PROBE_MODEL)
        int8 = xnnpack_applied(probe.interpreter)
        got = probe.invoke_raw(PROBE_INPUT)[0]
        if np.max(np.abs(got.astype(int) - PROBE_OUTPUT.astype(int))) > PROBE_ATOL:
            return result("golden-mismatch", f"probe model gave {got.tolist()}, expected "
                          f"{PROBE_OUTPUT.tolist()}", int8_xnnpack=int8)
        if bundle_path is None:
            return result("ok", "probe model loads and computes correctly", int8_xnnpack=int8)
        bundle = read_bundle(bundle_path)
        model = LoadedModel(rt, bundle.model_bytes)
        _stage("golden")
        g = verify_golden(bundle, rt, model=model)
    except ModelLoadError as e:
        return result("load-failed", str(e))
    except GoldenMismatchError as e:
        return result("golden-mismatch", str(e))
    except BundleError as e:
        return result("error", f"probe bundle unreadable: {e}")
    sha = sha256_bytes(bundle.model_bytes)[:12]
    return result("ok", f"{bundle.name} v{bundle.version} ({sha}) loads; {g.vectors} golden "
                  f"vectors match (max diff {g.max_abs_diff:g})", int8_xnnpack=int8)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge_agent.runtime.probe [--child NAME] [--bundle DIR] [--state-dir DIR]``.

    Without ``--child``: probe the candidates, print the verdicts as JSON, exit 0 if one
    passed (its name and version in ``selected``), 1 otherwise.
    """
    import argparse

    p = argparse.ArgumentParser(prog="python -m edge_agent.runtime.probe")
    p.add_argument("--child", metavar="RUNTIME", help=argparse.SUPPRESS)
    p.add_argument("--bundle", help="bundle to probe with (default: built-in int8 model)")
    p.add_argument("--state-dir", default=os.environ.get("EDGE_AGENT_STATE_DIR", "."),
                   help="where runtime-probes.json is kept")
    p.add_argument("--runtime", action="append", dest="runtimes",
                   help="candidate, in order (repeatable; default: ai-edge-litert, "
                        "tflite-runtime)")
    p.add_argument("--reprobe", action="store_true", help="ignore cached verdicts")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    a = p.parse_args(argv)
    if a.child:
        return _child(a.child, a.bundle)
    try:
        sel = select_probed_runtime(a.runtimes, Path(a.bundle) if a.bundle else None,
                                    state_dir=a.state_dir, reprobe=a.reprobe,
                                    timeout_s=a.timeout_s)
    except RuntimeUnavailableError as e:
        print(json.dumps({"selected": None, "error": str(e)}, indent=1))
        return 1
    print(json.dumps({"selected": f"{sel.runtime}", **sel.as_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
