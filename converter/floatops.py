"""Which ops of a converted int8 graph run in float, and which of them are the cause.

Pure functions over :class:`~converter.quantize.Graph`; nothing here converts or loads.

TensorFlow's MLIR quantizer leaves an op in float when it cannot quantize it (the op's
TFLite definition has no ``QuantizableResult``: SIN, NEG, SQUARE, CUMSUM, …) and wraps it
in DEQUANTIZE/QUANTIZE. Ops whose quantized form must share its neighbours' scale and zero
point (``SameOperandsAndResultsScale`` in ``tensorflow/compiler/mlir/lite/ir/tfl_ops.td``:
RESHAPE, TRANSPOSE, CONCATENATION, PAD, …) then stay float too when they sit next to such
an op: they have int8 kernels and are float only because their neighbours are. Naming
them would send the user after the wrong layer, so they are reported apart, as *glue*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converter.graph import BOUNDARY_OPS, Graph, OpInfo

# TFLite builtins marked SameOperandsAndResultsScale in tfl_ops.td (and quantizable).
SAME_SCALE_OPS = frozenset({
    "AVERAGE_POOL_2D", "BATCH_TO_SPACE_ND", "CONCATENATION", "DEPTH_TO_SPACE", "EXPAND_DIMS",
    "FILL", "GATHER", "GATHER_ND", "MAX_POOL_2D", "MAXIMUM", "MINIMUM", "MIRROR_PAD", "PACK",
    "PAD", "PADV2", "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "SCATTER_ND", "SELECT", "SELECT_V2", "SLICE",
    "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQUEEZE", "STRIDED_SLICE",
    "TILE", "TOPK_V2", "TRANSPOSE", "UNPACK",
})


@dataclass(frozen=True)
class OpCount:
    """One op type: how many instances, and the execution index of the first one."""

    op: str
    count: int
    first_index: int

    def label(self) -> str:
        return self.op if self.count == 1 else f"{self.op} (×{self.count})"


@dataclass(frozen=True)
class FloatOps:
    """The float part of a graph that was asked to be int8."""

    lacking: tuple[OpCount, ...]  # float because no int8 kernel: the cause, in graph order
    glue: tuple[OpCount, ...]  # same-scale ops that are float only because of neighbours
    boundary_ops: int  # QUANTIZE/DEQUANTIZE ops (IO conversion included)
    float_ops: int  # float compute ops, lacking + glue
    total_ops: int
    float_weight_bytes: int  # float32 constants that the float ops read (int8: a quarter)

    @property
    def culprits(self) -> tuple[OpCount, ...]:
        """What to name: the ops lacking int8 kernels; all float ops if there are none."""
        return self.lacking or self.glue

    def as_dict(self) -> dict[str, Any]:
        def rows(ops: tuple[OpCount, ...]) -> list[dict[str, Any]]:
            return [{"op": o.op, "count": o.count, "first_index": o.first_index} for o in ops]

        return {"no_int8_kernel": rows(self.lacking), "float_glue": rows(self.glue),
                "float_ops": self.float_ops, "total_ops": self.total_ops,
                "boundary_ops": self.boundary_ops,
                "float_weight_bytes": self.float_weight_bytes}


def _counts(ops: list[OpInfo]) -> tuple[OpCount, ...]:
    first: dict[str, OpCount] = {}
    for o in ops:
        c = first.get(o.name)
        first[o.name] = (OpCount(o.name, 1, o.index) if c is None
                         else OpCount(o.name, c.count + 1, c.first_index))
    return tuple(sorted(first.values(), key=lambda c: c.first_index))


def explain(graph: Graph) -> FloatOps:
    """Split the float compute ops of ``graph`` into the cause and the glue around it."""
    floats = [o for o in graph.ops if o.name not in BOUNDARY_OPS and o.is_float]
    produced = {t for o in graph.ops for t in o.outputs} | set(graph.inputs)
    weights = {t for o in floats for t in o.inputs
               if t not in produced and graph.tensors[t].dtype == "float32"}
    return FloatOps(
        lacking=_counts([o for o in floats if o.name not in SAME_SCALE_OPS]),
        glue=_counts([o for o in floats if o.name in SAME_SCALE_OPS]),
        boundary_ops=sum(1 for o in graph.ops if o.name in BOUNDARY_OPS),
        float_ops=len(floats), total_ops=len(graph.ops),
        float_weight_bytes=sum(graph.tensors[t].nbytes for t in weights))
