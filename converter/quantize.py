"""TFLite conversion in six modes (:mod:`converter.modes`) and the full-integer check.

TensorFlow ≥ 2.16 does not fail when an op has no int8 kernel: it silently wraps the op
in DEQUANTIZE/QUANTIZE and runs it in float. We inspect the converted graph and refuse
such a model in ``int8`` mode, naming the ops that lack int8 kernels, not the
reshapes and transposes that are float only because they sit next to them
(:func:`converter.floatops.explain`, :class:`UnsupportedOpsError`). ``int8-fallback``
(``--allow-float-ops``) keeps that graph: TFLite's builtins are allowed besides the int8
ones, so whatever cannot be int8 runs in float.

Raises :class:`~converter.errors.UnsupportedOpsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from converter.errors import UnsupportedOpsError
from converter.floatops import explain
from converter.graph import inspect_graph
from converter.modes import CALIBRATED_MODES, INT8_FLOAT_FALLBACK, INT8_MODES, MODES
from converter.tfload import import_tf, quiet, short_error

HINT = ("use --mode int8 --allow-float-ops (the rest int8, those ops float), --mode dynamic "
        "(int8 weights, float activations) or --mode int16x8, or replace those layers")


def convert(saved_model: Path, mode: str, io_dtype: str,
            representative: Mapping[str, np.ndarray] | None,
            progress: Callable[[int], None] | None = None) -> bytes:
    """Convert a fixed-batch SavedModel (see ``SourceModel.export``).

    ``representative`` (model-unit samples by input name, the signature's keys) is
    required for the calibrated modes;
    ``progress`` is called once per calibration sample. Raises UnsupportedOpsError when
    the requested quantization is impossible.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tf = import_tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in CALIBRATED_MODES:
        if not representative or len(next(iter(representative.values()))) == 0:
            raise ValueError(f"{mode} needs representative samples")
        data = dict(representative)
        n = len(next(iter(data.values())))

        def rep() -> Iterator[dict[str, np.ndarray]]:
            """One sample of every input by signature key (TFLite matches them by name)."""
            for i in range(n):
                yield {k: v[i:i + 1] for k, v in data.items()}
                if progress:
                    progress(1)

        conv.representative_dataset = rep
    if mode in INT8_MODES:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode == INT8_FLOAT_FALLBACK:
            conv.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
        conv.inference_input_type = io
        conv.inference_output_type = io
    elif mode == "int16x8":
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        io16 = tf.float32 if io_dtype == "float32" else tf.int16
        conv.inference_input_type = io16
        conv.inference_output_type = io16
    elif mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    try:
        with quiet():
            content: bytes = conv.convert()
    except Exception as e:
        raise _conversion_error(mode, e) from e
    if mode == "int8":
        fl = explain(inspect_graph(content))
        if fl.culprits:
            names = ", ".join(c.label() for c in fl.culprits)
            why = ("have no int8 kernel and would run in float" if fl.lacking else
                   "were left in float by the converter (next to a float graph input or output)")
            raise UnsupportedOpsError(f"full-int8 quantization impossible: op(s) {names} {why}; "
                                      f"{HINT}", [c.op for c in fl.culprits])
    return content


def _conversion_error(mode: str, e: Exception) -> UnsupportedOpsError:
    """Name the ops TF complains about (``'tf.Foo' op is neither…``, ``… for op: 'SIN'``)."""
    import re

    text = str(e)
    ops = sorted(set(re.findall(r"'(?:tf|tfl)\.([A-Za-z0-9_]+)' op", text))
                 | set(re.findall(r"\bop:? '([A-Z][A-Z0-9_]*)'", text)))
    what = f" (op(s) {', '.join(ops)})" if ops else ""
    if mode == "float32":
        return UnsupportedOpsError(
            f"TFLite cannot convert this model{what}: {short_error(e)}", ops)
    return UnsupportedOpsError(
        f"{mode} conversion failed{what}: {short_error(e)}; "
        + ("try --mode int8 --allow-float-ops, --mode dynamic or --mode int16x8"
           if mode == "int8" else "try --mode dynamic"),
        ops)
