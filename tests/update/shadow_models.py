"""Candidates for the shadow tests, derived from the real digits bundle (no TensorFlow).

:func:`disagreeing` raises the final dense layer's bias of one class in the real TFLite
flatbuffer, so the candidate answers that class for most inputs (a model that loads,
passes its own golden vectors, and disagrees with the active version on most requests),
and recomputes its golden vectors on the real interpreter.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_agent.bundle import Bundle, EncodedArray, read_bundle, sha256_bytes, write_bundle
from edge_agent.runtime.backends import get_runtime
from edge_agent.runtime.model import LoadedModel


def disagreeing(src: Path, out: Path, *, version: int, favour: int = 2) -> Path:
    b = read_bundle(src)
    rt = get_runtime("ai-edge-litert") or get_runtime("tflite-runtime")
    assert rt is not None
    it = rt.make_interpreter(model_content=b.model_bytes)
    it.allocate_tensors()
    bias = next(it.get_tensor(d["index"]) for d in it.get_tensor_details()
                if d["dtype"] == np.int32 and tuple(d["shape"]) == (10,))
    at = b.model_bytes.find(bias.tobytes())
    assert at > 0 and b.model_bytes.count(bias.tobytes()) == 1, "final bias not found once"
    new = bias.copy()
    new[favour] += 1 << 20  # far above any logit: (nearly) every input now answers `favour`
    data = b.model_bytes[:at] + new.tobytes() + b.model_bytes[at + len(new.tobytes()):]
    model = LoadedModel(rt, data, num_threads=1)
    golden = []
    for g in b.manifest.golden:
        raw = model.invoke_raw({k: v.decode() for k, v in g.inputs.items()})
        golden.append(g.with_output(EncodedArray.encode(raw[0]), atol=0.0))
    m = replace(b.manifest, version=version, model_sha256=sha256_bytes(data),
                model_size=len(data), golden=tuple(golden))
    write_bundle(Bundle(m, data, b.report, str(out)), out)
    return out
