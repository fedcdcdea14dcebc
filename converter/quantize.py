"""TFLite conversion in four modes, and the full-integer check that names offending ops.

TensorFlow ≥ 2.16 does not fail when an op has no int8 kernel: it silently wraps the op
in DEQUANTIZE/QUANTIZE and runs it in float. We inspect the converted graph and refuse
such a model in ``int8`` mode, naming the ops (:class:`UnsupportedOpsError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import UnsupportedOpsError
from converter.tfload import SourceModel, import_tf, quiet

MODES = ("int8", "int16x8", "float16", "dynamic", "float32")
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
FLOAT_DTYPES = {"float32", "float16"}


@dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]

    @property
    def is_float(self) -> bool:
        return any(d in FLOAT_DTYPES for d in self.input_dtypes + self.output_dtypes)


def list_ops(model_content: bytes) -> list[OpInfo]:
    """Ops of a TFLite model, with the dtypes of their tensors (no delegates applied)."""
    from edge_agent.runtime.backends import select_runtime

    rt = select_runtime(["ai-edge-litert", "tflite-runtime", "tensorflow"])
    kwargs: dict[str, Any] = {"model_content": model_content}
    resolver = getattr(rt.module, "OpResolverType", None)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = rt.interpreter_cls(**kwargs)
    tensors = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = []
    for op in interp._get_ops_details():
        ins = tuple(tensors[i] for i in op["inputs"] if i >= 0 and i in tensors)
        outs = tuple(tensors[i] for i in op["outputs"] if i >= 0 and i in tensors)
        ops.append(OpInfo(int(op["index"]), str(op["op_name"]), ins, outs))
    return ops


def float_ops(ops: list[OpInfo]) -> list[str]:
    """Names of compute ops that run in float inside a supposedly integer model."""
    return sorted({o.name for o in ops if o.name not in BOUNDARY_OPS and o.is_float})


def convert(src: SourceModel, mode: str, io_dtype: str,
            representative: np.ndarray | None) -> bytes:
    """Convert ``src``; ``representative`` is required for int8 / int16x8.

    Raises UnsupportedOpsError when full-integer conversion is impossible.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tf = import_tf()
    conv = src.make_converter()
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in ("int8", "int16x8"):
        assert representative is not None

        def rep() -> Iterator[list[np.ndarray]]:
            for i in range(len(representative)):
                yield [representative[i:i + 1].astype(np.float32)]

        conv.representative_dataset = rep
    if mode == "int8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
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
        ops = sorted(set(re.findall(r"op(?::|\s+is)?\s*'?([A-Za-z_.]+[A-Za-z0-9_]*)'", str(e))))
        raise UnsupportedOpsError(
            f"{mode} conversion failed: {_first_line(e)}; try --mode dynamic or --mode int16x8",
            ops) from e
    if mode == "int8":
        bad = float_ops(list_ops(content))
        if bad:
            raise UnsupportedOpsError(
                f"full-int8 quantization impossible: op(s) {', '.join(bad)} have no int8 kernel "
                "and would run in float; use --mode dynamic (int8 weights, float activations) or "
                "--mode int16x8, or replace those layers", bad)
    return content


def _first_line(e: BaseException) -> str:
    for ln in str(e).splitlines():
        ln = ln.strip()
        if ln and not ln.startswith("<unknown>"):
            return ln[:300]
    return type(e).__name__
