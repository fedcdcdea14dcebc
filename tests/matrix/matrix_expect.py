"""What each runtime of the matrix is expected to refuse (imported by the matrix tests)."""

from __future__ import annotations

from edge_agent.runtime.backends import Runtime, parse_version

# (bundle, runtime name, versions below which the runtime refuses it, op in the message).
# Measured: TF 2.21 emits int8 LOG and SQRT at op version 2; tflite-runtime 2.14 has
# neither, ai-edge-litert 1.4.0 lacks SQRT v2.
REFUSED = (
    ("log_int8", "tflite-runtime", "2.15", "LOG"),
    ("sqrt_int8", "tflite-runtime", "2.15", "SQRT"),
    ("sqrt_int8", "ai-edge-litert", "2.0", "SQRT"),
)


def refusal(bundle: str, rt: Runtime) -> str | None:
    """The op ``rt`` is expected to refuse in ``bundle``, or None if it must load it."""
    for b, name, below, op in REFUSED:
        if b == bundle and rt.name == name and parse_version(rt.version) < parse_version(below):
            return op
    return None


def first_refused(rt: Runtime) -> str | None:
    return next((n for n in ("sqrt_int8", "log_int8") if refusal(n, rt)), None)
