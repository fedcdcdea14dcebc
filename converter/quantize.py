"""TFLite conversion in five modes, the graph inspector, and the full-integer check.

TensorFlow ≥ 2.16 does not fail when an op has no int8 kernel: it silently wraps the op
in DEQUANTIZE/QUANTIZE and runs it in float. We inspect the converted graph and refuse
such a model in ``int8`` mode, naming the ops (:class:`UnsupportedOpsError`).

Raises :class:`~converter.errors.UnsupportedOpsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import UnsupportedOpsError
from converter.modes import MODES as ALL_MODES
from converter.tfload import import_tf, quiet, short_error

MODES = ALL_MODES  # the bundle modes plus the float32 reference (converter.modes)
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
FLOAT_DTYPES = {"float32", "float16"}
HINT = ("use --mode dynamic (int8 weights, float activations) or --mode int16x8, "
        "or replace those layers")


@dataclass(frozen=True)
class TensorInfo:
    index: int
    dtype: str
    shape: tuple[int, ...]
    dynamic: bool  # some dimension is only known at run time (shape_signature has -1)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class OpInfo:
    index: int  # execution order
    name: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    inputs: tuple[int, ...] = ()  # tensor indices
    outputs: tuple[int, ...] = ()

    @property
    def is_float(self) -> bool:
        return any(d in FLOAT_DTYPES for d in self.input_dtypes + self.output_dtypes)


@dataclass(frozen=True)
class Graph:
    """The ops of a TFLite model in execution order, and its tensors."""

    ops: tuple[OpInfo, ...]
    tensors: dict[int, TensorInfo]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def inspect_graph(model_content: bytes) -> Graph:
    """Read ops and tensors of a TFLite model (no delegates applied, nothing allocated)."""
    from edge_agent.runtime.backends import select_runtime

    rt = select_runtime(["ai-edge-litert", "tflite-runtime", "tensorflow"])
    kwargs: dict[str, Any] = {"model_content": model_content}
    resolver = getattr(rt.module, "OpResolverType", None)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = rt.interpreter_cls(**kwargs)
    tensors: dict[int, TensorInfo] = {}
    for t in interp.get_tensor_details():
        sig = t.get("shape_signature", t["shape"])
        tensors[int(t["index"])] = TensorInfo(
            int(t["index"]), np.dtype(t["dtype"]).name, tuple(int(d) for d in t["shape"]),
            bool(np.any(np.asarray(sig) < 0)))
    ops = []
    for op in interp._get_ops_details():
        ins = tuple(int(i) for i in op["inputs"] if i >= 0 and i in tensors)
        outs = tuple(int(i) for i in op["outputs"] if i >= 0 and i in tensors)
        ops.append(OpInfo(int(op["index"]), str(op["op_name"]),
                          tuple(tensors[i].dtype for i in ins),
                          tuple(tensors[i].dtype for i in outs), ins, outs))
    return Graph(tuple(sorted(ops, key=lambda o: o.index)), tensors,
                 tuple(int(d["index"]) for d in interp.get_input_details()),
                 tuple(int(d["index"]) for d in interp.get_output_details()))


def list_ops(model_content: bytes) -> list[OpInfo]:
    """Ops of a TFLite model in execution order, with the dtypes of their tensors."""
    return list(inspect_graph(model_content).ops)


def float_ops(ops: list[OpInfo] | tuple[OpInfo, ...]) -> list[str]:
    """Names of compute ops that run in float inside a supposedly integer model."""
    return sorted({o.name for o in ops if o.name not in BOUNDARY_OPS and o.is_float})


def convert(saved_model: Path, mode: str, io_dtype: str, representative: np.ndarray | None,
            progress: Callable[[int], None] | None = None) -> bytes:
    """Convert a fixed-batch SavedModel (see ``SourceModel.export``).

    ``representative`` (model-unit float samples) is required for int8 and int16x8;
    ``progress`` is called once per calibration sample. Raises UnsupportedOpsError when
    the requested quantization is impossible.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tf = import_tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in ("int8", "int16x8"):
        if representative is None or len(representative) == 0:
            raise ValueError(f"{mode} needs representative samples")
        data = representative

        def rep() -> Iterator[list[np.ndarray]]:
            for i in range(len(data)):
                yield [data[i:i + 1].astype(np.float32)]
                if progress:
                    progress(1)

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
        raise _conversion_error(mode, e) from e
    if mode == "int8":
        bad = float_ops(list_ops(content))
        if bad:
            raise UnsupportedOpsError(
                f"full-int8 quantization impossible: op(s) {', '.join(bad)} have no int8 kernel "
                f"and would run in float; {HINT}", bad)
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
        + ("try --mode dynamic or --mode int16x8" if mode == "int8" else "try --mode dynamic"),
        ops)
