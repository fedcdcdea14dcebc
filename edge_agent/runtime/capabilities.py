"""What a LiteRT runtime lacks, so the agent can say so at start and in its status.

Two sources, combined by :func:`capabilities`:

* **Known limits** per runtime and version range (``KNOWN_LIMITS``), each one measured by
  this project's runtime matrix (``tests/matrix``) or its aarch64 emulation check
  (``scripts/aarch64_smoke.sh``) — see ``docs/install.md`` for the table.
* **One observation made here**: whether XNNPACK takes over an int8 graph. A 952-byte
  full-int8 FULLY_CONNECTED model (``PROBE_MODEL``, converted by TensorFlow 2.21) is loaded
  with the runtime's default resolver and its execution plan inspected for a ``DELEGATE``
  node. tflite-runtime 2.14 leaves int8 graphs on the reference kernels; ai-edge-litert
  delegates them. Observing rather than trusting the table keeps the report true for a
  runtime someone built differently.

The same tiny model, with its expected output, is what :mod:`edge_agent.runtime.probe`
runs when it has no bundle to probe with.

Nothing here raises for a runtime that misbehaves: an observation that fails is reported as
unknown (``None``). Call :func:`capabilities` only for a runtime the probe trusted — it
creates an interpreter in this process.
"""

from __future__ import annotations

import base64
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import EdgeError
from edge_agent.runtime.backends import Runtime, parse_version

# int8 in [1, 8] → FULLY_CONNECTED (8→4) + RELU → int8 [1, 4]; input scale 0.0078, output
# scale 0.00727 / zero point -128. Loads on tflite-runtime 2.14 and every ai-edge-litert.
PROBE_MODEL = base64.b64decode(
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAHAAAAHQAAABcAQAAbAEAAGADAAADAAAAAAAAAAIA"
    "AAA0AAAABAAAANz///8FAAAABAAAABMAAABDT05WRVJTSU9OX01FVEFEQVRBAAgADAAIAAQACAAAAAQAAAAEAAAA"
    "EwAAAG1pbl9ydW50aW1lX3ZlcnNpb24ABgAAAOQAAADYAAAAqAAAAJgAAAB0AAAABAAAAG7///8EAAAAYAAAAAwA"
    "AAAIAA4ACAAEAAgAAAAQAAAAKAAAAAAABgAIAAQABgAAAAQAAAABAAAA6wMAAAwAGAAUABAADAAEAAwAAAAxK5+I"
    "rJyNKAMAAAACAAAABAAAAAYAAAAyLjIxLjAAANr///8EAAAAEAAAADEuMTQuMAAAAAAAAAAAAAAEAAYABAAAAAAA"
    "BgAIAAQABgAAAAQAAAAgAAAAgaLD4wQlRmaBpMfqDTBTdoqt0PMWOVx/mrrb/B09Xn/8////BAAEAAQAAAAPAAAA"
    "TUxJUiBDb252ZXJ0ZWQuAAEAAAAUAAAAAAAOABgAFAAQAAwACAAEAA4AAAAUAAAAHAAAAGwAAABwAAAAdAAAAAQA"
    "AABtYWluAAAAAAEAAAAUAAAAAAAOABYAAAAQAAwACwAEAA4AAAAYAAAAAAAACBgAAAAcAAAAAAAGAAgABwAGAAAA"
    "AAAAAQEAAAACAAAAAwAAAAAAAAABAAAA/////wEAAAACAAAAAQAAAAAAAAADAAAA+AAAAGAAAAAEAAAAKv///wAA"
    "AAEUAAAAMAAAAAMAAAAAAAAJNAAAABT///8IAAAAEAAAAAEAAACA/////////wEAAAApFO47CAAAAElkZW50aXR5"
    "AAAAAAIAAAABAAAABAAAAIL///8AAAABFAAAAFgAAAACAAAAAAAACVgAAABs////CAAAACwAAAAEAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAQCATycXvE7nF7xOwQCATwGAAAATWF0TXVsAAACAAAA"
    "BAAAAAgAAAAAABYAHAAYABcAEAAMAAgAAAAAAAAABwAWAAAAAAAAASAAAAA8AAAAAQAAAAAAAAk4AAAADAAMAAAA"
    "AAAIAAQADAAAAAgAAAAQAAAAAQAAAAAAAAAAAAAAAQAAAEOV/zsBAAAAeAAAAAIAAAABAAAACAAAAAEAAAAQAAAA"
    "DAAQAA8AAAAIAAQADAAAAAkAAAAEAAAAAAAACQ=="
)
PROBE_INPUT = np.array([[-4, 1, 30, 54, -56, -43, 38, 53]], dtype=np.int8)
PROBE_OUTPUT = np.array([[-100, -95, -90, -85]], dtype=np.int8)  # same on all runtimes
PROBE_ATOL = 1  # quantized steps


@dataclass(frozen=True)
class Limit:
    """Something a runtime lacks, for versions in ``[since, before)`` on ``machines``."""

    runtime: str
    key: str  # int8-xnnpack | numpy2 | python | ops | qemu | maintenance | heavy
    note: str
    since: str | None = None
    before: str | None = None
    machines: tuple[str, ...] = ()  # empty: every machine

    def applies(self, name: str, version: str, machine: str) -> bool:
        if name != self.runtime or (self.machines and machine not in self.machines):
            return False
        v = parse_version(version)
        if not v:  # unknown version: assume the limit holds
            return True
        if self.since and v < parse_version(self.since):
            return False
        return not (self.before and v >= parse_version(self.before))


KNOWN_LIMITS: tuple[Limit, ...] = (
    Limit("tflite-runtime", "int8-xnnpack",
          "no int8 XNNPACK kernels: int8 models run on the reference kernels, several times "
          "slower than on ai-edge-litert (see bench/runtimes.py)"),
    Limit("tflite-runtime", "numpy2", "built against numpy 1.x: needs numpy<2"),
    Limit("tflite-runtime", "python", "no wheels for Python 3.12 or newer"),
    Limit("tflite-runtime", "ops",
          "knows only the ops of TensorFlow 2.14: models converted by a newer TensorFlow may "
          "use op versions it lacks (seen: int8 LOG and SQRT, version 2) and are refused at "
          "load"),
    Limit("tflite-runtime", "maintenance",
          "no longer released (last release 2.14.0): move to ai-edge-litert"),
    Limit("ai-edge-litert", "ops",
          "lacks op versions that newer TensorFlow emits (seen: int8 SQRT version 2 refused "
          "by 1.4.0): upgrade to ai-edge-litert 2.x", before="2.0"),
    Limit("ai-edge-litert", "qemu",
          "2.2.0 and 2.3.0 crash (SIGSEGV) creating the interpreter under qemu-user emulation "
          "while 2.1.6 works; unknown on real boards — the agent probes the runtime in a child "
          "process before trusting it", since="2.2", machines=("aarch64",)),
    Limit("tensorflow", "heavy",
          "full TensorFlow: hundreds of MB and a slow start, and tf.lite.Interpreter is "
          "deprecated: install ai-edge-litert on devices"),
)


@dataclass(frozen=True)
class RuntimeCapabilities:
    """What the agent reports about its runtime (``as_dict`` goes into status/birth)."""

    runtime: str  # "tflite-runtime 2.14.0"
    name: str
    version: str
    machine: str
    int8_xnnpack: bool | None  # observed here; None when the observation failed
    lacks: tuple[str, ...]  # Limit keys that apply
    notes: tuple[str, ...]  # one line each, prefixed with the runtime

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": self.name, "version": self.version, "machine": self.machine,
                "int8_xnnpack": self.int8_xnnpack, "lacks": list(self.lacks),
                "notes": list(self.notes)}


def known_limits(name: str, version: str, machine: str | None = None,
                 table: Sequence[Limit] = KNOWN_LIMITS) -> list[Limit]:
    """The limits of ``table`` that hold for this runtime version on ``machine`` (pure)."""
    m = machine or platform.machine()
    return [lim for lim in table if lim.applies(name, version, m)]


def xnnpack_applied(interpreter: Any) -> bool | None:
    """Whether a delegate took over part of this interpreter's graph (``None``: cannot tell)."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    try:
        return any(op.get("op_name") == "DELEGATE" for op in details())
    except (RuntimeError, ValueError, TypeError):
        return None


def observe_int8_xnnpack(runtime: Runtime) -> bool | None:
    """Load :data:`PROBE_MODEL` with the default resolver: does XNNPACK take the int8 graph?"""
    try:
        interp = runtime.make_interpreter(PROBE_MODEL)
    except EdgeError:
        return None
    return xnnpack_applied(interp)


def capabilities(runtime: Runtime, *, observe: bool = True,
                 machine: str | None = None) -> RuntimeCapabilities:
    """Known limits of ``runtime`` plus (if ``observe``) the int8 XNNPACK observation.

    An observed int8 XNNPACK overrides the table either way: a runtime seen delegating
    int8 is not reported slow, and one seen not delegating is, whatever its name.
    """
    m = machine or platform.machine()
    int8 = observe_int8_xnnpack(runtime) if observe else None
    limits = known_limits(runtime.name, runtime.version, m)
    if int8 is True:
        limits = [lim for lim in limits if lim.key != "int8-xnnpack"]
    elif int8 is False and not any(lim.key == "int8-xnnpack" for lim in limits):
        limits.insert(0, Limit(runtime.name, "int8-xnnpack",
                               "XNNPACK did not take an int8 graph: int8 models run on the "
                               "reference kernels (slower)"))
    notes = tuple(f"{runtime}: {lim.note}" for lim in limits)
    return RuntimeCapabilities(str(runtime), runtime.name, runtime.version, m, int8,
                               tuple(lim.key for lim in limits), notes)


def runtime_notes(runtime: Runtime, *, observe: bool = True) -> list[str]:
    """One line per thing ``runtime`` lacks, for the agent's start log and status."""
    return list(capabilities(runtime, observe=observe).notes)
