"""The probe's child process: import one runtime, run a model, print one verdict line.

Runs as ``python -m edge_agent.runtime.probe --child NAME [--bundle DIR [--variant V]
[--device-key KEY]]`` (see
:mod:`edge_agent.runtime.probe`, the parent), so that a runtime whose native code crashes
takes down this process and not the agent. It talks to the parent with the stage and
verdict lines of :mod:`edge_agent.runtime.isolate` (its stages: :data:`STAGES`). Exit
status 0 only when the runtime is trustworthy.

Fault injection (tests only): the child honours ``EDGE_AGENT_PROBE_FAULT`` = ``segv``
(a real SIGSEGV through a NULL read with ctypes, right where the interpreter would be
created), ``abort``, ``hang`` or ``exit``, optionally for one runtime only
(``segv:ai-edge-litert``) or for the probe of one variant of a bundle only
(``segv:variant=fast``: :mod:`edge_agent.runtime.variant_probe`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edge_agent.bundle import Bundle, sha256_bytes
from edge_agent.errors import BundleError
from edge_agent.runtime.backends import get_runtime
from edge_agent.runtime.isolate import apply_limits, report, stage

FAULT_ENV = "EDGE_AGENT_PROBE_FAULT"
STAGES = {"import": "importing the runtime", "create": "creating the interpreter",
          "golden": "checking golden vectors", "done": "reporting"}


def _inject_fault(name: str, variant: str | None = None) -> None:
    fault, _, only = os.environ.get(FAULT_ENV, "").partition(":")
    if only.startswith("variant="):
        if variant != only[len("variant="):]:
            return
    elif only and only != name:
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


def _read(bundle_path: str, variant: str | None, device_key: str | None) -> Bundle:
    """The bundle (a sealed one decrypted in memory), or one of its variants as a bundle."""
    from edge_agent.store import ModelStore

    p = Path(bundle_path)
    bundle = ModelStore(p.parent, device_key=Path(device_key) if device_key else None).read(p)
    if variant is None:
        return bundle
    from edge_agent.variants import variant_bundles

    for v, _, vb in variant_bundles(bundle):
        if v == variant:
            return vb
    raise BundleError(f"{bundle_path}: no variant {variant!r}")


def child_main(name: str, bundle_path: str | None, variant: str | None = None,
               device_key: str | None = None) -> int:
    """Import, create, verify; print one result line. Exit 0 only when trustworthy."""
    apply_limits()
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
        stage("done")
        report({"outcome": outcome, "detail": detail, **extra})
        return 0 if outcome == "ok" else 3

    stage("import")
    rt = get_runtime(name)
    if rt is None:
        return result("not-installed", "does not import in this Python")
    stage("create")
    _inject_fault(name, variant)
    try:
        probe = LoadedModel(rt, PROBE_MODEL)
        int8 = xnnpack_applied(probe.interpreter)
        got = probe.invoke_raw(PROBE_INPUT)[0]
        if np.max(np.abs(got.astype(int) - PROBE_OUTPUT.astype(int))) > PROBE_ATOL:
            return result("golden-mismatch", f"probe model gave {got.tolist()}, expected "
                          f"{PROBE_OUTPUT.tolist()}", int8_xnnpack=int8)
        if bundle_path is None:
            return result("ok", "probe model loads and computes correctly", int8_xnnpack=int8)
        bundle = _read(bundle_path, variant, device_key)
        model = LoadedModel(rt, bundle.model_bytes)
        stage("golden")
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
