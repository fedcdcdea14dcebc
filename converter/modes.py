"""Quantization modes, in one place (light: the CLI imports it before TensorFlow).

``BUNDLE_MODES`` are what ``edge-convert convert --mode`` accepts. ``--mode int8
--allow-float-ops`` is :data:`INT8_FLOAT_FALLBACK`: TFLite's "integer with float
fallback", every op that has an int8 kernel in int8 and the rest in float. ``MODES`` adds
it and the float32 reference that the quantized model is compared with.
``LOWBIT_MODES`` are weight-only quantization by ``ai-edge-quantizer`` in its own venv
(:mod:`converter.lowbit`): int4 or int8 weights, float activations.
"""

from __future__ import annotations

LOWBIT_MODES = ("int4-weights", "int8-weights")  # converter.lowbit (ai-edge-quantizer)
BUNDLE_MODES = ("int8", "int16x8", "float16", "dynamic", *LOWBIT_MODES)
INT8_FLOAT_FALLBACK = "int8-fallback"  # --mode int8 --allow-float-ops
REFERENCE_MODE = "float32"
MODES = (*BUNDLE_MODES, INT8_FLOAT_FALLBACK, REFERENCE_MODE)
CALIBRATED_MODES = ("int8", INT8_FLOAT_FALLBACK, "int16x8")  # need representative samples
INT8_MODES = ("int8", INT8_FLOAT_FALLBACK)  # int8 activations, profile IO dtype


def resolve(mode: str, allow_float_ops: bool) -> str:
    """The conversion mode for ``--mode MODE [--allow-float-ops]`` (validated by the caller)."""
    return INT8_FLOAT_FALLBACK if allow_float_ops and mode == "int8" else mode
