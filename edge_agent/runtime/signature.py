"""Which tensor is which: a LiteRT interpreter's inputs and outputs, bound by name.

A converted model carries a TFLite ``signature_def`` (``serving_default``) that maps the
model's own names (``image``, ``meta``; ``class``, ``score``) to tensor indices; the
tensors themselves are named after graph nodes (``serving_default_image:0``,
``StatefulPartitionedCall:0`` and ``:1``), which say nothing about which output is which.
So tensors are bound by signature name (``get_signature_runner``'s details, read once at
load), and only files without a usable signature (MediaPipe and many vendor ``.tflite``
files: tensor names like ``input_1`` / ``Identity_1``) fall back to the tensor names.
Never by position guesses: every tensor is found by its name.

:func:`tflite_specs` is the public door: the named input and output specs of a
``.tflite`` as the agent's runtime sees them (what a bundle's manifest must list).

Raises ModelLoadError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import ModelLoadError
from edge_agent.manifest import TensorSpec

SIGNATURE = "serving_default"
_NP_TO_NAME = {np.int8: "int8", np.uint8: "uint8", np.int16: "int16", np.int32: "int32",
               np.float32: "float32", np.float16: "float16"}


@dataclass(frozen=True)
class BoundTensor:
    """One input or output: its spec (``spec.name`` the signature name, or the tensor name
    without a signature), the interpreter's tensor index and the tensor's own name."""

    spec: TensorSpec
    index: int
    tensor_name: str


@dataclass(frozen=True)
class Binding:
    inputs: tuple[BoundTensor, ...]
    outputs: tuple[BoundTensor, ...]
    signature: str | None  # None: bound by tensor names (no usable signature_def)


def spec_from_detail(d: dict[str, Any], name: str | None = None) -> TensorSpec:
    """TensorSpec from an interpreter's tensor detail (``get_input_details()`` entry)."""
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorSpec(name=str(d["name"]) if name is None else name,
                      shape=tuple(int(x) for x in d["shape"]),
                      dtype=_NP_TO_NAME.get(np.dtype(d["dtype"]).type, str(np.dtype(d["dtype"]))),
                      scale=float(scale), zero_point=int(zp))


def _signature_details(interp: Any) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """``serving_default`` (or the only signature): its input and output details by name;
    None when the runtime or the file has none."""
    lister = getattr(interp, "get_signature_list", None)
    if lister is None:
        return None
    try:
        sigs = dict(lister())
    except (ValueError, RuntimeError):
        return None
    key = SIGNATURE if SIGNATURE in sigs else (next(iter(sigs)) if len(sigs) == 1 else None)
    if key is None:
        return None
    try:
        runner = interp.get_signature_runner(key)
        return key, dict(runner.get_input_details()), dict(runner.get_output_details())
    except (ValueError, RuntimeError, AttributeError):
        return None


def _unique(names: Sequence[str]) -> list[str]:
    """Names as given; a name given twice gets ``#2``, ``#3`` … so no tensor is dropped."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _by_tensor_names(details: Sequence[dict[str, Any]]) -> tuple[BoundTensor, ...]:
    names = _unique([str(d["name"]) for d in details])
    return tuple(BoundTensor(spec_from_detail(d, n), int(d["index"]), str(d["name"]))
                 for d, n in zip(details, names, strict=True))


def _by_signature(details: Sequence[dict[str, Any]], sig: dict[str, Any]
                  ) -> tuple[BoundTensor, ...] | None:
    """The graph's tensors (in the graph's order) named by the signature; None when the
    signature does not name exactly the graph's tensors (a signature of another subgraph)."""
    name_of = {int(d["index"]): str(k) for k, d in sig.items()}
    if sorted(name_of) != sorted(int(d["index"]) for d in details) or len(name_of) != len(sig):
        return None
    return tuple(BoundTensor(spec_from_detail(d, name_of[int(d["index"])]), int(d["index"]),
                             str(d["name"])) for d in details)


def bind(interp: Any) -> Binding:
    """Name every input and output of ``interp``. Raises ModelLoadError (no inputs or
    outputs)."""
    ins, outs = list(interp.get_input_details()), list(interp.get_output_details())
    if not ins or not outs:
        raise ModelLoadError(f"the model has {len(ins)} input and {len(outs)} output tensors; "
                             "it needs at least one of each")
    found = _signature_details(interp)
    if found is not None:
        key, sig_in, sig_out = found
        bi, bo = _by_signature(ins, sig_in), _by_signature(outs, sig_out)
        if bi is not None and bo is not None:
            return Binding(bi, bo, key)
    return Binding(_by_tensor_names(ins), _by_tensor_names(outs), None)


def tflite_specs(model_content: bytes, runtime: Any | None = None
                 ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The named input and output specs of a ``.tflite`` file (names, shapes, dtypes,
    quantization) as the agent's runtime binds them: what a manifest lists for it.

    ``runtime``: a :class:`~edge_agent.runtime.backends.Runtime` (default: the selected
    one). Raises ModelLoadError (not a model this runtime loads) and
    RuntimeUnavailableError.
    """
    from edge_agent.runtime.backends import select_runtime

    rt = runtime or select_runtime()
    b = bind(rt.make_interpreter(model_content))
    return tuple(t.spec for t in b.inputs), tuple(t.spec for t in b.outputs)
