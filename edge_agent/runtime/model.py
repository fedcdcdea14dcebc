"""A loaded model: one interpreter, its tensor specs, and golden-vector verification.

An interpreter is not thread-safe: every ``LoadedModel`` owns exactly one and guards
it with a lock, so it is never used by two threads at once. Serve with one
``LoadedModel`` per worker for parallelism.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle, TensorSpec
from edge_agent.errors import GoldenMismatchError, InvalidRequestError, ModelLoadError
from edge_agent.runtime.backends import Runtime
from edge_agent.runtime.quant import coerce_input, dequantize

_NP_TO_NAME = {np.int8: "int8", np.uint8: "uint8", np.int16: "int16", np.int32: "int32",
               np.float32: "float32", np.float16: "float16"}


def spec_from_detail(d: dict[str, Any]) -> TensorSpec:
    """TensorSpec from an interpreter's ``get_input_details()`` entry."""
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorSpec(name=str(d["name"]), shape=tuple(int(x) for x in d["shape"]),
                      dtype=_NP_TO_NAME.get(np.dtype(d["dtype"]).type, str(np.dtype(d["dtype"]))),
                      scale=float(scale), zero_point=int(zp))


class LoadedModel:
    """One interpreter for one model, safe to call from many threads (serialised)."""

    def __init__(self, runtime: Runtime, model_content: bytes, *, num_threads: int | None = None,
                 delegates: Sequence[Any] = ()) -> None:
        self.runtime = runtime
        self.num_threads = num_threads
        self._interp = runtime.make_interpreter(model_content, num_threads, delegates)
        self._lock = threading.Lock()
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        if len(self._in) != 1:
            raise ModelLoadError(f"expected a model with one input tensor, got {len(self._in)}")
        self.input_spec = spec_from_detail(self._in[0])
        self.output_specs = tuple(spec_from_detail(d) for d in self._out)
        self._batch_fixed = int(self._in[0]["shape"][0])

    @property
    def interpreter(self) -> Any:
        return self._interp

    def invoke_raw(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one batch already in the input tensor's dtype; outputs in their raw dtype.

        Batches larger than the model's fixed batch run one slice at a time.
        """
        if x.dtype != np.dtype(self.input_spec.dtype):
            raise InvalidRequestError(
                f"input dtype {x.dtype} does not match tensor dtype {self.input_spec.dtype}")
        n = x.shape[0]
        b = self._batch_fixed if self._batch_fixed > 0 else n
        outs: list[list[np.ndarray]] = [[] for _ in self._out]
        with self._lock:
            for i in range(0, n, b):
                part = x[i:i + b]
                if part.shape[0] != b:  # last partial batch: pad, then drop the padding
                    pad = np.zeros((b - part.shape[0], *part.shape[1:]), dtype=part.dtype)
                    part = np.concatenate([part, pad])
                self._interp.set_tensor(self._in[0]["index"], part)
                self._interp.invoke()
                keep = min(b, n - i)
                for j, od in enumerate(self._out):
                    outs[j].append(self._interp.get_tensor(od["index"])[:keep].copy())
        return [np.concatenate(o) if len(o) > 1 else o[0] for o in outs]

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Float (model units) or raw input → dequantized float outputs."""
        raw = self.invoke_raw(coerce_input(x, self.input_spec))
        return [dequantize(o, s) for o, s in zip(raw, self.output_specs, strict=True)]


@dataclass(frozen=True)
class GoldenResult:
    runtime: str
    vectors: int
    max_abs_diff: float
    ok: bool


def verify_golden(bundle: Bundle, runtime: Runtime, *, num_threads: int | None = None,
                  model: LoadedModel | None = None) -> GoldenResult:
    """Run the bundle's golden vectors on ``runtime``.

    Raises ModelLoadError if the model does not load and GoldenMismatchError (naming the
    vector and the difference) if any output differs by more than its tolerance.
    """
    m = model or LoadedModel(runtime, bundle.model_bytes, num_threads=num_threads)
    worst = 0.0
    if not bundle.manifest.golden:
        raise GoldenMismatchError(f"{bundle.source}: manifest has no golden vectors to check")
    spec = m.input_spec
    for i, g in enumerate(bundle.manifest.golden):
        x = g.input.decode()
        want = g.output.decode()
        if x.shape[1:] != spec.shape[1:] or x.dtype != np.dtype(spec.dtype):
            # the manifest validated, but its tensors are not this model's
            raise GoldenMismatchError(
                f"golden vector {i}: input {x.dtype} {list(x.shape)} does not fit the "
                f"model's input {spec.dtype} {list(spec.shape)}")
        got = m.invoke_raw(x)[0]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise GoldenMismatchError(
                f"golden vector {i}: output {got.dtype} {list(got.shape)}, expected "
                f"{want.dtype} {list(want.shape)}")
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        worst = max(worst, diff)
        if not diff <= g.atol:  # NaN (a model computing NaN) fails too
            raise GoldenMismatchError(
                f"golden vector {i}: output differs by {diff:g} (tolerance {g.atol:g}) on "
                f"{runtime}; the model is not the one that was converted or the runtime "
                "computes differently")
    return GoldenResult(str(runtime), len(bundle.manifest.golden), worst, True)
