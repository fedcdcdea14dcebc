"""Runtime fault seam for failover tests: ``EDGE_RUNTIME_FAULT=<action>@<variant>:<file>[,…]``.

While ``<file>`` exists, every invoke of an interpreter of variant ``<variant>`` (``default``
is ``model.tflite``) fails: ``raise`` raises VariantFaultError (a delegate error: the
variant is switched away from at once), ``error`` raises a plain RuntimeError (a transient
runtime error: counted, the N-th in the window switches), ``hang`` sleeps until the file is
removed (a hung delegate: the invoke watchdog of :mod:`edge_agent.invoke_watchdog` gives
up on it; see :mod:`edge_agent.variant_rules`). Removing the file clears the fault.
``seen@<runtime>:<name>=<version>`` makes the requirement checks
(:func:`edge_agent.variants.unmet`) see the installed ``<runtime>`` as ``<name> <version>``
(an older runtime, e.g. ``seen@ai-edge-litert:tflite-runtime=2.14.0``) while it still runs
the models. Read once at import; unset in production (setting it needs control of the agent's
environment). A real Edge TPU is not available to tests; this is where it would fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.errors import VariantFaultError

ENV = "EDGE_RUNTIME_FAULT"
HANG_POLL_S = 0.05
ACTIONS = ("raise", "error", "hang")
MAX_HANG_S = 600.0  # a hang ends by itself after this (a test that forgets the file)


def _parse(spec: str) -> dict[str, tuple[str, Path]]:
    out: dict[str, tuple[str, Path]] = {}
    for item in filter(None, (i.strip() for i in spec.split(","))):
        action, _, where = item.partition("@")
        variant, _, file = where.partition(":")
        if action in ACTIONS and variant and file:
            out[variant] = (action, Path(file))
    return out




def _parse_seen(spec: str) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for item in filter(None, (i.strip() for i in spec.split(","))):
        action, _, where = item.partition("@")
        runtime, _, seen = where.partition(":")
        name, _, version = seen.partition("=")
        if action == "seen" and runtime and name and version:
            out[runtime] = (name, version)
    return out


_SPECS = _parse(os.environ.get(ENV, ""))
_SEEN = _parse_seen(os.environ.get(ENV, ""))


def seen(name: str, version: str) -> tuple[str, str]:
    """The runtime ``name`` ``version`` as the requirement checks see it (``seen@``)."""
    return _SEEN.get(name, (name, version))


def hook(variant: str) -> Callable[[], None] | None:
    """What an interpreter of ``variant`` calls before each invoke (None: no fault set)."""
    spec = _SPECS.get(variant)
    if spec is None:
        return None
    action, file = spec

    def fault() -> None:
        if not file.exists():
            return
        if action == "raise":
            raise VariantFaultError(f"delegate error in variant {variant!r} (injected: "
                                    f"{file} exists)")
        if action == "error":
            raise RuntimeError(f"invoke failed in variant {variant!r} (injected: {file} "
                               "exists)")
        end = time.monotonic() + MAX_HANG_S
        while file.exists() and time.monotonic() < end:
            time.sleep(HANG_POLL_S)

    return fault
