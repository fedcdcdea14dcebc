"""KServe v2 inference responses: JSON ``data`` or binary tensor data (pure).

The response object of the Open Inference Protocol's HTTP/REST API
(kserve/open-inference-protocol ``specification/protocol/inference_rest.md``, "Inference
Response JSON Object"), with Triton's binary tensor data extension
(``docs/protocol/extension_binary_data.md``): an output asked for as binary data carries
``"parameters": {"binary_data_size": n}`` instead of ``data``, its bytes (little-endian,
row-major) follow the JSON in output order, and the JSON's length is returned for the
``Inference-Header-Content-Length`` header.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.serving.json_encode import NamedSpec, tensor_json
from edge_agent.serving.v2_tensor import DATATYPES


@dataclass(frozen=True)
class OutputTensor:
    """One response output: its values and the v2 datatype they are written as."""

    spec: NamedSpec
    datatype: str
    array: np.ndarray
    binary: bool


def encode_infer(outputs: Sequence[OutputTensor], *, model_name: str, model_version: str,
                 request_id: str | None) -> tuple[bytes, int | None]:
    """The inference response: (body, the JSON header's length if binary data follows).

    JSON outputs are written flat, row-major, floats as the TF Serving REST codec writes
    them (the shortest text that reads back as the same float32).
    """
    head = (f'{{"model_name":{json.dumps(model_name)},'
            f'"model_version":{json.dumps(model_version)}')
    if request_id is not None:
        head += f',"id":{json.dumps(request_id)}'
    parts: list[str] = []
    blobs: list[bytes] = []
    for o in outputs:
        meta = (f'{{"name":{json.dumps(o.spec.name)},"datatype":"{o.datatype}",'
                f'"shape":[{",".join(str(int(d)) for d in o.array.shape)}]')
        if o.binary:
            blob = to_binary(o.array, o.datatype)
            blobs.append(blob)
            parts.append(meta + f',"parameters":{{"binary_data_size":{len(blob)}}}}}')
        else:
            parts.append(meta + f',"data":{tensor_json(o.array.reshape(-1), o.spec)}}}')
    text = (head + ',"outputs":[' + ",".join(parts) + "]}").encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)


def to_binary(a: np.ndarray, datatype: str) -> bytes:
    """An array as the binary tensor extension writes it (little-endian, row-major)."""
    return np.ascontiguousarray(a, dtype=DATATYPES[datatype]).tobytes()
