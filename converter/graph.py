"""The ops and tensors of a TFLite flatbuffer, read through the LiteRT interpreter.

Nothing is allocated and no delegate is applied: this is what the converter's checks
(:mod:`converter.quantize`, :mod:`converter.floatops`, :mod:`converter.support`) look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
FLOAT_DTYPES = {"float32", "float16"}


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
