"""Quantization modes, in one place (light: the CLI imports it before TensorFlow).

``BUNDLE_MODES`` are what a bundle can ship (``edge-convert convert --mode``); ``MODES``
adds the float32 reference that the quantized model is compared with.
"""

from __future__ import annotations

BUNDLE_MODES = ("int8", "int16x8", "float16", "dynamic")
REFERENCE_MODE = "float32"
MODES = (*BUNDLE_MODES, REFERENCE_MODE)
