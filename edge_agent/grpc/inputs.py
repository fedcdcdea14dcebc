"""Decoded wire tensors by signature key → the model's input batch (pure, both protocols).

The gRPC twin of :func:`edge_agent.serving.codec.decode_predict`: the same signature keys
(:func:`~edge_agent.serving.codec.input_specs`), the same image path for byte-string
tensors (:func:`~edge_agent.serving.codec.image_batch`: bundle preprocessing, pixel limit,
memory budget), the same ``max_batch``. Numbers are model units (floats, quantized by the
agent) or the tensor's own integer dtype, exactly as over REST.

Raises InvalidRequestError naming the input: unknown or missing keys, byte strings for an
input that takes numbers, a scalar, batch sizes that differ, a batch over the limit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.registry import ServedModel
from edge_agent.runtime.model import Inputs
from edge_agent.serving import codec

Wire = np.ndarray | list[bytes]


def element_limits(served: ServedModel, tensors: Mapping[str, object], *,
                   max_batch: int) -> dict[str, int]:
    """Per input key sent, the most elements a valid request can carry (``max_batch``
    instances), checked before a wire tensor is decoded: a tiny message whose one typed
    value would fill a huge shape never allocates it. Raises InvalidRequestError for a key
    that is not in the signature."""
    limits = {ns.name: max_batch * max(1, int(np.prod(ns.spec.shape[1:])))
              for ns in codec.input_specs(served)}
    for k in tensors:
        if k not in limits:
            raise InvalidRequestError(f"input {k[:100]!r} is not in the signature of "
                                      f"{served.name} (inputs: {', '.join(limits)})")
    return limits


def model_inputs(served: ServedModel, tensors: Mapping[str, Wire], *, max_batch: int,
                 max_image_pixels: int) -> Inputs:
    """One array for a one-input model (the hot path), else arrays by tensor name."""
    specs = codec.input_specs(served)
    keys = [ns.name for ns in specs]
    unknown = [k for k in tensors if k not in keys]
    if unknown:
        raise InvalidRequestError(f"input {unknown[0][:100]!r} is not in the signature of "
                                  f"{served.name} (inputs: {', '.join(keys)})")
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise InvalidRequestError(f"input {missing[0]!r} is missing (inputs of "
                                  f"{served.name}: {', '.join(keys)})")
    out: dict[str, np.ndarray] = {}
    batches: dict[str, int] = {}
    for ns in specs:
        x = tensors[ns.name]
        if isinstance(x, list):
            if not ns.binary:
                raise InvalidRequestError(
                    f"input {ns.name!r} takes numbers of shape {list(ns.spec.shape)}, got "
                    f"{len(x)} byte strings (only an image input takes encoded images)")
            if not x or len(x) > max_batch:
                raise InvalidRequestError(f"input {ns.name!r}: {len(x)} images; send 1 to "
                                          f"{max_batch}")
            arr = codec.image_batch(served, x, max_image_pixels, spec=ns.spec)
        else:
            if x.ndim == 0:
                dims = ", ".join(map(str, ns.spec.shape[1:]))
                raise InvalidRequestError(f"input {ns.name!r} is a scalar; the model takes "
                                          f"shape [batch, {dims}]")
            if x.dtype.kind not in "fiub":
                raise InvalidRequestError(f"input {ns.name!r}: dtype {x.dtype} is not a number")
            arr = x
        batches[ns.name] = int(arr.shape[0])
        out[ns.spec.name] = arr
    sizes = set(batches.values())
    if len(sizes) > 1:
        raise InvalidRequestError("inputs have different batch sizes: " + ", ".join(
            f"{k}={v}" for k, v in batches.items()))
    n = sizes.pop()
    if n > max_batch:
        raise InvalidRequestError(f"{n} instances, over the limit of {max_batch} per request")
    if len(specs) == 1:
        return out[specs[0].spec.name]
    return out
