"""The candidate check's child process: load a staged bundle, run its golden vectors, report.

Runs as ``python -m edge_agent.update.check_child --bundle STAGED --runtime NAME
[--threads N] [--delegate LIB] [--device-key KEY] [--variant NAME]``, started by
:mod:`edge_agent.update.check`
through :func:`edge_agent.runtime.isolate.run_child`. Its limits (memory, CPU, parent death) are
applied first, before a byte of the bundle is read. It builds the interpreter the way the
agent's registry does (runtime, threads, delegate) and prints one verdict
(:func:`edge_agent.runtime.isolate.report`):

* ``ok`` with ``vectors``, ``max_abs_diff`` and ``peak_rss_mb``;
* ``load-failed`` / ``golden-mismatch`` with the runtime's or the comparison's message;
* ``memory``: an allocation was refused (``MemoryError``: the limit, or the device);
* ``error``: the bundle or the runtime is unusable here.

A bundle with variants is checked one variant per child (``--variant NAME``, ``default``
being ``model.tflite``), each with its own golden vectors, so a variant that crashes its
child does not take the other variants' checks with it (:mod:`edge_agent.update.check`).

Stages: ``load`` (reading the staged bundle, hash-verified), ``import`` (the runtime),
``create`` (the interpreter; the fault points ``check`` and ``check:VARIANT`` of
:mod:`edge_agent.update.faults` are here), ``golden``, ``done``. Like the agent, it
never imports TensorFlow unless ``tensorflow`` is the configured runtime. Exit status 0
only for ``ok``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.runtime.isolate import apply_limits, peak_rss_mb, report, stage

STAGES = {"load": "reading the bundle", "import": "importing the runtime",
          "create": "creating the interpreter", "golden": "running the golden vectors",
          "done": "reporting"}


def _result(outcome: str, detail: str = "", **extra: Any) -> int:
    stage("done")
    report({"outcome": outcome, "detail": detail[:400], "peak_rss_mb": peak_rss_mb(), **extra})
    return 0 if outcome == "ok" else 3


def _check(bundle_path: str, runtime: str, threads: int | None, delegate: str | None,
           device_key: str | None = None, variant: str | None = None) -> int:
    from edge_agent.bundle_zstd import MAX_RATIO
    from edge_agent.errors import (
        BundleError,
        GoldenMismatchError,
        ModelLoadError,
        RuntimeUnavailableError,
    )
    from edge_agent.runtime.backends import get_runtime
    from edge_agent.runtime.model import LoadedModel, verify_golden
    from edge_agent.store import read_target
    from edge_agent.update import faults

    stage("load")
    try:
        # the staged file is the signed target: its length (a .tar.zst: the ratio cap on
        # it) bounds the read, as the parent read it
        bundle = read_target(Path(bundle_path), Path(device_key) if device_key else None,
                             source=bundle_path,
                             max_bytes=os.path.getsize(bundle_path) * MAX_RATIO)
    except BundleError as e:
        return _result("error", f"bundle unreadable: {e}")
    if variant is not None:
        from edge_agent.variants import variant_bundles

        chosen = [vb for name, _, vb in variant_bundles(bundle) if name == variant]
        if not chosen:
            return _result("error", f"the bundle has no variant {variant!r}")
        bundle = chosen[0]
    stage("import")
    rt = get_runtime(runtime)
    if rt is None:
        return _result("error", f"runtime {runtime} does not import in the check process")
    stage("create")
    faults.point("check")
    if variant is not None:
        faults.point(f"check:{variant}")
    try:
        delegates = [rt.load_delegate(delegate)] if delegate else []
        model = LoadedModel(rt, bundle.model_bytes, num_threads=threads, delegates=delegates)
        stage("golden")
        g = verify_golden(bundle, rt, model=model)
    except ModelLoadError as e:
        return _result("load-failed", str(e))
    except GoldenMismatchError as e:
        return _result("golden-mismatch", str(e))
    except RuntimeUnavailableError as e:  # the delegate would not load here
        return _result("error", str(e))
    return _result("ok", f"{g.vectors} golden vectors match (max diff {g.max_abs_diff:g})",
                   vectors=g.vectors, max_abs_diff=g.max_abs_diff)


def bundle_args(bundle: str, runtime: str, threads: int | None,
                delegate: str | None, device_key: Path | None = None) -> list[str]:
    """The command line of a child that builds a staged bundle like the agent (this one,
    and the shadow candidate's :mod:`edge_agent.shadow.child`)."""
    args = ["--bundle", bundle, "--runtime", runtime]
    if threads:
        args += ["--threads", str(threads)]
    if delegate:
        args += ["--delegate", delegate]
    if device_key is not None:  # a sealed candidate is decrypted in the child's memory
        args += ["--device-key", str(device_key)]
    return args


def parse_bundle_args(module: str, argv: Sequence[str] | None, *,
                      variant: bool = False) -> argparse.Namespace:
    """The child's side of :func:`bundle_args` (``variant``: and ``--variant NAME``)."""
    p = argparse.ArgumentParser(prog=f"python -m {module}")
    if variant:
        p.add_argument("--variant")
    p.add_argument("--bundle", required=True)
    p.add_argument("--runtime", required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--delegate")
    p.add_argument("--device-key")  # a sealed candidate: decrypted here, in memory only
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    apply_limits()
    a = parse_bundle_args("edge_agent.update.check_child", argv, variant=True)
    try:
        return _check(a.bundle, a.runtime, a.threads, a.delegate, a.device_key, a.variant)
    except MemoryError:
        return _result("memory", "an allocation was refused (MemoryError)")


if __name__ == "__main__":
    sys.exit(main())
