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

The child's side (what runs in the other process and the ``EDGE_AGENT_PROBE_FAULT`` fault
injection for tests) is :mod:`edge_agent.runtime.probe_child`; how a child is started,
limited and read (shared with the update's candidate check) is
:mod:`edge_agent.runtime.isolate`; this module is the parent: verdicts, their cache and
the selection.

Raises :class:`~edge_agent.errors.RuntimeUnavailableError` when no candidate passes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
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
from edge_agent.runtime.isolate import ChildLimits, run_child
from edge_agent.runtime.probe_child import FAULT_ENV, STAGES, child_main

__all__ = ["DEFAULT_TIMEOUT_S", "FAULT_ENV", "OUTCOMES", "STATE_FILE", "ProbeSelection",
           "ProbeVerdict", "VerdictCache", "cache_key", "installed_version", "main",
           "model_sha256", "probe_runtime", "run_probe", "select_probed_runtime"]

log = logging.getLogger(__name__)

STATE_FILE = "runtime-probes.json"
STATE_SCHEMA = 1
DEFAULT_TIMEOUT_S = 120.0  # emulated aarch64 needs ~10 s for MobileNetV2's golden vectors
OUTCOMES = ("ok", "crashed", "timeout", "load-failed", "golden-mismatch", "not-installed",
            "too-old", "error")
MODEL_OUTCOMES = ("load-failed", "golden-mismatch")  # verdicts on a model, not a runtime


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


def model_sha256(bundle: Path) -> str | None:
    """sha256 of a bundle's model (dir or tar), read without any runtime; None if unreadable."""
    try:
        return sha256_bytes(read_bundle(bundle, verify_hash=False).model_bytes)
    except BundleError:
        return None


def run_probe(name: str, version: str, bundle: Path | None = None, *,
              timeout_s: float = DEFAULT_TIMEOUT_S, python: str | None = None,
              env: dict[str, str] | None = None, variant: str | None = None,
              variant_sha256: str | None = None,
              device_key: Path | None = None) -> ProbeVerdict:
    """Probe one runtime now, in a child process; never raises for what the child does.
    ``variant``: with that variant of ``bundle`` (:mod:`edge_agent.runtime.variant_probe`)."""
    args = ["--child", name]
    sha = None
    if bundle is not None:
        bundle = Path(bundle).resolve()
        args += ["--bundle", str(bundle)]
        if variant is not None:
            args += ["--variant", variant]
        if device_key is not None:
            args += ["--device-key", str(device_key)]
        sha = variant_sha256 or model_sha256(bundle)
    base = ProbeVerdict(name, version, "error", "", machine=_machine(), python=_python(),
                        probed_at=time.time(), model_sha256=sha)
    run = run_child("edge_agent.runtime.probe", args, env=env, python=python,
                    limits=ChildLimits(timeout_s, threads=os.cpu_count() or 1))
    where = STAGES.get(run.stage or "", "starting")
    base = replace(base, stage=run.stage, duration_s=run.duration_s)
    if run.status == "timeout":
        return replace(base, outcome="timeout",
                       detail=f"no answer within {timeout_s:g} s while {where}; not trusted")
    if run.status == "crashed":
        return replace(base, outcome="crashed", signal=run.signal,
                       detail=f"crashed with {run.signal} while {where}; not trusted")
    if run.status == "spawn-failed":
        return replace(base, outcome="error", detail=run.detail)
    if run.result is None:
        return replace(base, outcome="error",
                       detail=f"probe ended without a verdict ({run.detail})")
    outcome = str(run.result.get("outcome", "error"))
    return replace(base, outcome=outcome if outcome in OUTCOMES else "error",
                   detail=str(run.result.get("detail", ""))[:400],
                   int8_xnnpack=run.result.get("int8_xnnpack"))


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
    p.add_argument("--variant", help=argparse.SUPPRESS)  # one variant of --bundle
    p.add_argument("--device-key", help=argparse.SUPPRESS)  # a sealed --bundle
    a = p.parse_args(argv)
    if a.child:
        return child_main(a.child, a.bundle, a.variant, a.device_key)
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
