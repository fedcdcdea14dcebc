"""Per-op support check against a device profile's runtime and delegate."""

from __future__ import annotations

from typing import Any

from converter.quantize import BOUNDARY_OPS, OpInfo
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


def op_support(ops: list[OpInfo], profile: DeviceProfile) -> list[dict[str, Any]]:
    """One row per distinct op: count, dtypes, and whether the delegate runs it.

    ``runtime``: the op loaded in LiteRT here (built-in kernel exists). ``delegate``: the
    profile's accelerator runs it (EdgeTPU: known op with int8/uint8 tensors only).
    """
    rows: dict[str, dict[str, Any]] = {}
    for op in ops:
        r = rows.setdefault(op.name, {"op": op.name, "count": 0, "dtypes": set(),
                                      "runtime": True, "delegate": True})
        r["count"] += 1
        r["dtypes"].update(op.input_dtypes + op.output_dtypes)
        if profile.delegate == "edgetpu":
            ok = op.name in profile.supported_ops and (op.name in BOUNDARY_OPS or not op.is_float)
        elif profile.delegate == "xnnpack":
            ok = op.name in XNNPACK_OPS
        elif profile.delegate == "gpu":
            ok = not (op.input_dtypes and all(d in ("int8", "uint8") for d in op.input_dtypes))
        else:
            ok = True
        r["delegate"] = r["delegate"] and ok
    out = []
    for r in rows.values():
        r["dtypes"] = sorted(r["dtypes"])
        out.append(r)
    return sorted(out, key=lambda r: r["op"])
