"""Can the target board run this graph? Per-op delegate support, Edge TPU mapping, memory.

Pure functions over :class:`~converter.quantize.Graph` and a
:class:`~edge_agent.profiles.DeviceProfile`; nothing here loads a model.
"""

from __future__ import annotations

from typing import Any

from converter.graph import BOUNDARY_OPS, Graph, OpInfo
from edge_agent.profiles import DeviceProfile

# Ops the XNNPACK delegate takes for quantized/float graphs (tensorflow/lite/delegates/
# xnnpack/README.md); others still run, on LiteRT's built-in CPU kernels.
XNNPACK_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D",
    "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "FLOOR",
    "FULLY_CONNECTED", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN",
    "MINIMUM", "MUL", "NEG", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
    "RESHAPE", "RESIZE_BILINEAR", "ROUND", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV",
})
INTEGER_DTYPES = ("int8", "uint8")


def edgetpu_reason(op: OpInfo, graph: Graph, profile: DeviceProfile) -> str | None:
    """Why the Edge TPU compiler would not map ``op`` (None: it maps).

    The rules of coral.ai/docs/edgetpu/models-intro "Model requirements": a supported op,
    8-bit quantized tensors (int32 only for biases), sizes fixed at compile time, and at
    most 3 dimensions larger than 1, all innermost.
    """
    if op.name not in profile.supported_ops:
        return f"{op.name} is not an Edge TPU op"
    if op.name not in BOUNDARY_OPS and op.is_float:
        return "float tensors (the Edge TPU runs 8-bit quantized tensors only)"
    acts = activations(graph)
    for i in op.inputs + op.outputs:
        t = graph.tensors[i]
        if t.dynamic:
            return f"tensor {i} has a dynamic shape"
        # The dimension rule is about activations; weights (OHWI filters) are 4-D anyway.
        if i in acts and any(d > 1 for d in t.shape[:-3]):
            return f"tensor {i} has shape {list(t.shape)} (> 3 non-unit dimensions)"
    return None


def activations(graph: Graph) -> set[int]:
    """Tensors computed at run time: graph inputs and op outputs (the rest are constants)."""
    return {t for op in graph.ops for t in op.outputs} | set(graph.inputs)


def op_support(ops: list[OpInfo] | tuple[OpInfo, ...], profile: DeviceProfile,
               graph: Graph | None = None) -> list[dict[str, Any]]:
    """One row per distinct op: count, dtypes, and whether the profile's delegate runs it.

    ``runtime``: the op loaded in LiteRT here (a built-in kernel exists). ``delegate``: the
    profile's accelerator runs every instance of it (EdgeTPU: known op, 8-bit tensors,
    static shapes).
    """
    rows: dict[str, dict[str, Any]] = {}
    for op in ops:
        r = rows.setdefault(op.name, {"op": op.name, "count": 0, "dtypes": set(),
                                      "runtime": True, "delegate": True})
        r["count"] += 1
        r["dtypes"].update(op.input_dtypes + op.output_dtypes)
        if profile.delegate == "edgetpu":
            if graph is not None:
                ok = edgetpu_reason(op, graph, profile) is None
            else:
                ok = op.name in profile.supported_ops and (
                    op.name in BOUNDARY_OPS or not op.is_float)
        elif profile.delegate == "xnnpack":
            ok = op.name in XNNPACK_OPS
        elif profile.delegate == "gpu":
            ok = not (op.input_dtypes and all(d in INTEGER_DTYPES for d in op.input_dtypes))
        else:
            ok = True
        r["delegate"] = r["delegate"] and ok
    out = []
    for r in rows.values():
        r["dtypes"] = sorted(r["dtypes"])
        out.append(r)
    return sorted(out, key=lambda r: r["op"])


def delegate_summary(graph: Graph, profile: DeviceProfile) -> dict[str, Any]:
    """How much of the graph the profile's delegate would run.

    Edge TPU: the compiler maps ops in execution order and stops at the first op it
    cannot map; that op *and every op after it* run on the CPU, even supported ones.
    """
    n = len(graph.ops)
    if profile.delegate != "edgetpu":
        ok = sum(1 for r in op_support(graph.ops, profile) for _ in range(r["count"])
                 if r["delegate"])
        return {"delegate": profile.delegate, "total_ops": n, "delegated_ops": ok,
                "first_unmapped": None, "cpu_ops": []}
    for pos, op in enumerate(graph.ops):
        reason = edgetpu_reason(op, graph, profile)
        if reason is not None:
            return {"delegate": "edgetpu", "total_ops": n, "delegated_ops": pos,
                    "first_unmapped": {"index": op.index, "op": op.name, "reason": reason},
                    "cpu_ops": [o.name for o in graph.ops[pos:]]}
    return {"delegate": "edgetpu", "total_ops": n, "delegated_ops": n, "first_unmapped": None,
            "cpu_ops": []}


def peak_activation_bytes(graph: Graph) -> int:
    """Largest total size of activation tensors alive at once, in execution order.

    An activation is a graph input or an op output; it lives from the op that writes it
    to the last op that reads it (graph outputs: to the end). This is what LiteRT's
    arena planner must hold at the worst step; constants live in the model buffer.
    """
    n = len(graph.ops)
    first: dict[int, int] = {t: 0 for t in graph.inputs}
    last: dict[int, int] = dict(first)
    for pos, op in enumerate(graph.ops):
        for t in op.outputs:
            first.setdefault(t, pos)
            last[t] = max(last.get(t, pos), pos)
        for t in op.inputs:
            if t in first:
                last[t] = max(last[t], pos)
    for t in graph.outputs:
        if t in first:
            last[t] = max(n - 1, 0)
    peak = 0
    for pos in range(max(n, 1)):
        live = sum(graph.tensors[t].nbytes for t in first if first[t] <= pos <= last[t])
        peak = max(peak, live)
    return peak


def memory_check(graph: Graph, model_bytes: int, profile: DeviceProfile) -> dict[str, Any]:
    """Estimated resident memory of the model on the board vs the profile's budget.

    estimate = model buffer + peak activations (+ a repacked copy of the weights when
    XNNPACK runs it, which packs weights into its own layout).
    """
    acts = activations(graph)
    weights = sum(t.nbytes for i, t in graph.tensors.items() if i not in acts)
    peak = peak_activation_bytes(graph)
    repack = weights if profile.delegate == "xnnpack" else 0
    total = model_bytes + peak + repack
    mb = 2**20
    return {"budget_mb": profile.memory_budget_mb, "model_mb": round(model_bytes / mb, 3),
            "weights_mb": round(weights / mb, 3), "activations_peak_mb": round(peak / mb, 3),
            "delegate_copy_mb": round(repack / mb, 3), "estimate_mb": round(total / mb, 3),
            "fits": total <= profile.memory_budget_mb * mb}
