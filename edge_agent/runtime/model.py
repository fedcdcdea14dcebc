"""A loaded model: one interpreter, its named tensor specs, and golden-vector verification.

Tensors are bound by name once, at load (:mod:`edge_agent.runtime.signature`); a request
names its inputs (a dict by name), or passes one array for a one-input model, and gets
every output back in the model's order (:attr:`LoadedModel.output_specs`). A name from a
manifest may be the signature name (``image``), the tensor's own name
(``serving_default_image:0``, what schema-1 manifests list) or its TF Serving key
(``image``); :meth:`LoadedModel.input_position` resolves all three.

An interpreter is not thread-safe: every ``LoadedModel`` owns exactly one and guards
it with a lock, so it is never used by two threads at once. Serve with one
``LoadedModel`` per worker for parallelism.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle, TensorSpec
from edge_agent.errors import GoldenMismatchError, InvalidRequestError
from edge_agent.runtime.backends import Runtime
from edge_agent.runtime.quant import TensorCodec
from edge_agent.runtime.signature import BoundTensor, bind
from edge_agent.runtime.signature import spec_from_detail as spec_from_detail

Inputs = np.ndarray | Mapping[str, np.ndarray]


def batch_of(x: Inputs) -> int:
    """The batch size of one input array or of arrays by name (their first's)."""
    if isinstance(x, np.ndarray):
        return int(x.shape[0]) if x.ndim else 1
    return next((int(a.shape[0]) if np.ndim(a) else 1 for a in x.values()), 0)


def _aliases(tensors: Sequence[BoundTensor]) -> dict[str, int]:
    """Every name a tensor may be asked by → its position (signature name first)."""
    out: dict[str, int] = {}
    for names in ([t.spec.name for t in tensors], [t.tensor_name for t in tensors],
                  [_key(t.tensor_name) for t in tensors]):
        for i, n in enumerate(names):
            out.setdefault(n, i)
    return out


def _key(tensor_name: str) -> str:
    """TF Serving's key of a tensor name: ``serving_default_x:0`` → ``x``."""
    n = tensor_name.rsplit(":", 1)[0] if tensor_name.rpartition(":")[2].isdigit() else \
        tensor_name
    return n[len("serving_default_"):] if n.startswith("serving_default_") else n


class LoadedModel:
    """One interpreter for one model, safe to call from many threads (serialised)."""

    def __init__(self, runtime: Runtime, model_content: bytes, *, num_threads: int | None = None,
                 delegates: Sequence[Any] = ()) -> None:
        self.runtime = runtime
        self.num_threads = num_threads
        self._interp = runtime.make_interpreter(model_content, num_threads, delegates)
        self._lock = threading.Lock()
        self.fault: Callable[[], None] | None = None  # runtime.fault_seam, tests only
        binding = bind(self._interp)
        self.signature = binding.signature
        self._in = binding.inputs
        self._out = binding.outputs
        self.input_specs = tuple(t.spec for t in self._in)
        self.output_specs = tuple(t.spec for t in self._out)
        self.input_spec = self.input_specs[0]
        self._in_names = _aliases(self._in)
        self._out_names = _aliases(self._out)
        self._in_index = [t.index for t in self._in]
        self._out_index = [t.index for t in self._out]
        self._in_dtypes = [np.dtype(s.dtype) for s in self.input_specs]
        self._batch_fixed = int(self.input_spec.shape[0])
        self.input_codecs = tuple(TensorCodec(s) for s in self.input_specs)
        self.output_codecs = tuple(TensorCodec(s) for s in self.output_specs)
        # the common call, one array in one model's input at its fixed batch: no slicing
        self._single = (self._in_index[0], self._in_dtypes[0]) if len(self._in) == 1 else None

    @property
    def interpreter(self) -> Any:
        return self._interp

    def _position(self, name: str, names: dict[str, int], specs: Sequence[TensorSpec],
                  what: str) -> int:
        pos = names.get(name)
        if pos is None:
            raise InvalidRequestError(f"the model has no {what} named {name!r} (its {what}s: "
                                      f"{', '.join(s.name for s in specs)})")
        return pos

    def input_position(self, name: str) -> int:
        """Where the input ``name`` (signature, tensor or TF Serving name) is. Raises
        InvalidRequestError naming the model's inputs."""
        return self._position(name, self._in_names, self.input_specs, "input")

    def output_position(self, name: str) -> int:
        """Where the output ``name`` is. Raises InvalidRequestError naming the outputs."""
        return self._position(name, self._out_names, self.output_specs, "output")

    def _ordered(self, x: Inputs) -> list[np.ndarray]:
        """The inputs in the model's order. A bare array feeds a one-input model."""
        if isinstance(x, np.ndarray):
            if len(self._in) != 1:
                raise InvalidRequestError(
                    f"the model takes {len(self._in)} inputs "
                    f"({', '.join(s.name for s in self.input_specs)}); send them by name")
            return [x]
        got: list[np.ndarray | None] = [None] * len(self._in)
        for name, arr in x.items():
            pos = self.input_position(name)
            if got[pos] is not None:
                raise InvalidRequestError(f"input {self.input_specs[pos].name!r} given twice")
            got[pos] = arr
        missing = [s.name for s, a in zip(self.input_specs, got, strict=True) if a is None]
        if missing:
            raise InvalidRequestError(
                f"missing input(s) {', '.join(missing)}: the model takes "
                f"{', '.join(s.name for s in self.input_specs)}, got {', '.join(x) or 'none'}")
        return [a for a in got if a is not None]

    def invoke_raw(self, x: Inputs) -> list[np.ndarray]:
        """Run one batch already in the input tensors' dtypes; outputs in their raw dtype,
        in the order of :attr:`output_specs`.

        ``x``: one array (a one-input model) or arrays by input name. Batches larger
        than the model's fixed batch run one slice at a time.
        Raises InvalidRequestError.
        """
        if self.fault is not None:
            self.fault()
        if self._single is not None and type(x) is np.ndarray and x.dtype == self._single[1] \
                and x.ndim and x.shape[0] == self._batch_fixed:
            interp = self._interp
            with self._lock:
                interp.set_tensor(self._single[0], x)
                interp.invoke()
                # get_tensor returns a copy: the arrays outlive the next invoke
                return [interp.get_tensor(idx) for idx in self._out_index]
        arrays = self._ordered(x)
        n = arrays[0].shape[0]
        for a, s, dt in zip(arrays, self.input_specs, self._in_dtypes, strict=True):
            if a.dtype != dt:
                raise InvalidRequestError(
                    f"input {s.name!r}: dtype {a.dtype} does not match tensor dtype {s.dtype}")
            if a.shape[0] != n:
                raise InvalidRequestError(
                    f"input {s.name!r}: batch {a.shape[0]}, expected {n} (the batch of "
                    f"{self.input_specs[0].name!r})")
        b = self._batch_fixed if self._batch_fixed > 0 else n
        outs: list[list[np.ndarray]] = [[] for _ in self._out_index]
        with self._lock:
            for i in range(0, n, b):
                for idx, a in zip(self._in_index, arrays, strict=True):
                    part = a[i:i + b]
                    if part.shape[0] != b:  # last partial batch: pad, then drop the padding
                        pad = np.zeros((b - part.shape[0], *part.shape[1:]), dtype=part.dtype)
                        part = np.concatenate([part, pad])
                    self._interp.set_tensor(idx, part)
                self._interp.invoke()
                keep = min(b, n - i)
                for j, idx in enumerate(self._out_index):
                    o = self._interp.get_tensor(idx)  # a copy already
                    outs[j].append(o if keep == b else o[:keep].copy())
        return [np.concatenate(o) if len(o) > 1 else o[0] for o in outs]

    def coerce(self, x: Inputs) -> Inputs:
        """Float (model units) or raw input(s) → each input tensor's dtype (by name)."""
        if isinstance(x, np.ndarray):
            return self.input_codecs[0].coerce(x)
        return {self.input_specs[pos].name: self.input_codecs[pos].coerce(v)
                for pos, v in ((self.input_position(k), v) for k, v in x.items())}

    def predict(self, x: Inputs) -> list[np.ndarray]:
        """Float (model units) or raw input(s) → dequantized float outputs (model order)."""
        raw = self.invoke_raw(self.coerce(x))
        return [c.dequantize(o) for o, c in zip(raw, self.output_codecs, strict=True)]


@dataclass(frozen=True)
class GoldenResult:
    runtime: str
    vectors: int
    max_abs_diff: float
    ok: bool


def _fits(arr: np.ndarray, spec: TensorSpec) -> bool:
    return arr.shape[1:] == spec.shape[1:] and arr.dtype == np.dtype(spec.dtype)


def verify_golden(bundle: Bundle, runtime: Runtime, *, num_threads: int | None = None,
                  model: LoadedModel | None = None) -> GoldenResult:
    """Run the bundle's golden vectors on ``runtime``: every input fed by name, every
    output compared by name within its own tolerance.

    Raises ModelLoadError if the model does not load and GoldenMismatchError (naming the
    vector, the tensor and the difference) if any output differs by more than its
    tolerance, or the vectors name tensors the model does not have.
    """
    m = model or LoadedModel(runtime, bundle.model_bytes, num_threads=num_threads)
    worst = 0.0
    if not bundle.manifest.golden:
        raise GoldenMismatchError(f"{bundle.source}: manifest has no golden vectors to check")
    for i, g in enumerate(bundle.manifest.golden):
        feed: dict[str, np.ndarray] = {}
        try:
            for name, enc in g.inputs.items():
                spec = m.input_specs[m.input_position(name)]
                x = enc.decode()
                if not _fits(x, spec):
                    # the manifest validated, but its tensors are not this model's
                    raise GoldenMismatchError(
                        f"golden vector {i}: input {x.dtype} {list(x.shape)} does not fit the "
                        f"model's input {spec.name!r} {spec.dtype} {list(spec.shape)}")
                feed[spec.name] = x
            got = m.invoke_raw(feed)
            wanted = [(name, m.output_position(name), enc.decode(), g.atols[name])
                      for name, enc in g.outputs.items()]
        except InvalidRequestError as e:  # a tensor name the model does not have
            raise GoldenMismatchError(f"golden vector {i}: {e}") from e
        for name, pos, want, atol in wanted:
            have = got[pos]
            if have.shape != want.shape or have.dtype != want.dtype:
                raise GoldenMismatchError(
                    f"golden vector {i}: output {name!r} {have.dtype} {list(have.shape)}, "
                    f"expected {want.dtype} {list(want.shape)}")
            diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
            worst = max(worst, diff)
            if not diff <= atol:  # NaN (a model computing NaN) fails too
                raise GoldenMismatchError(
                    f"golden vector {i}: output {name!r} differs by {diff:g} (tolerance "
                    f"{atol:g}) on {runtime}; the model is not the one that was converted or "
                    "the runtime computes differently")
    return GoldenResult(str(runtime), len(bundle.manifest.golden), worst, True)
