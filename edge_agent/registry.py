"""Served models: versions loaded in memory, the active one per name, and atomic swaps.

Concurrency model: a :class:`ServedModel` owns a fixed pool of interpreters (one per
worker); a request borrows one for the duration of an invoke, so no interpreter is ever
used by two threads at once. Swapping the active version replaces a dict entry under a
lock; requests already holding the old ``ServedModel`` finish on it (nothing is closed
under them), so a swap fails no request. Old versions are dropped once unreferenced.

Raises NotFoundError (unknown model/version), InvalidRequestError (bad input),
ModelLoadError / GoldenMismatchError (a bundle that does not load or verify).
"""

from __future__ import annotations

import enum
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.bundle import Bundle, Manifest
from edge_agent.config import LABEL_RE
from edge_agent.errors import (
    BadInputError,
    EdgeError,
    InvalidRequestError,
    InvokeHangError,
    NotFoundError,
    ShapeMismatchError,
    TransportError,
)
from edge_agent.fifo import FifoPool
from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.nowait import WouldBlock, waiting_forbidden
from edge_agent.runtime import fault_seam
from edge_agent.runtime.backends import Runtime
from edge_agent.runtime.model import GoldenResult, Inputs, LoadedModel, batch_of, verify_golden
from edge_agent.runtime.quant import TensorCodec

if TYPE_CHECKING:
    from edge_agent.invoke_watchdog import Watchdog
    from edge_agent.variants import Failover

DelegateFactory = Callable[[], Sequence[Any]]
TRIP_POLL_S = 0.02  # a request waiting on a watched variant's pool checks this often


class ModelState(str, enum.Enum):
    """TensorFlow Serving's version states."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


class Prediction:
    """The answer to one batch: every output, batch first, one per output tensor (model
    order, named by :attr:`names`).

    Lazy: the interpreter's raw outputs are kept, and the dequantized :attr:`outputs` and
    the class head's :attr:`probabilities` / :attr:`top1` / :attr:`confidence` are computed
    on first access (each once), so a caller that reads only what it answers with pays for
    only that. Read-only after construction; computing a field twice from two threads
    gives the same value, so no lock is needed.
    """

    __slots__ = ("_class_position", "_codecs", "_conf", "_is_probability", "_outputs",
                 "_probs", "_top1", "model", "names", "raw", "version")

    def __init__(self, model: str, version: int, raw: list[np.ndarray],
                 codecs: Sequence[TensorCodec], names: tuple[str, ...],
                 class_position: int | None, is_probability: bool) -> None:
        self.model = model
        self.version = version
        self.names = names
        self.raw = raw  # the interpreter's outputs, in their tensor dtypes
        self._codecs = codecs
        self._class_position = class_position
        self._is_probability = is_probability
        self._outputs: list[np.ndarray] | None = None
        self._probs: np.ndarray | None = None
        self._top1: np.ndarray | None = None
        self._conf: np.ndarray | None = None

    @property
    def outputs(self) -> list[np.ndarray]:
        """Dequantized (float32 model units), batch first, model order."""
        if self._outputs is None:
            self._outputs = [c.dequantize(o) for o, c in zip(self.raw, self._codecs,
                                                               strict=True)]
        return self._outputs

    @property
    def probabilities(self) -> np.ndarray | None:
        """(batch, classes) of the class head, if there is one."""
        if self._probs is None and self._class_position is not None:
            pos = self._class_position
            head = (self._outputs[pos] if self._outputs is not None
                    else self._codecs[pos].dequantize(self.raw[pos]))
            flat = head.reshape(len(head), -1)
            self._probs = flat if self._is_probability else softmax(flat)
        return self._probs

    @property
    def top1(self) -> np.ndarray | None:
        if self._top1 is None and (p := self.probabilities) is not None:
            self._top1 = p.argmax(axis=1)
        return self._top1

    @property
    def confidence(self) -> np.ndarray | None:
        if self._conf is None and (p := self.probabilities) is not None:
            self._conf = p.max(axis=1)
        return self._conf

    def by_name(self) -> dict[str, np.ndarray]:
        """Every output by its name."""
        return dict(zip(self.names, self.outputs, strict=True))


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, else every core)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return p


class ServedModel:
    """One version of one model, ready to serve from ``workers`` interpreters."""

    # class defaults, so a subclass sharing another pool (fleet/sim_agents.py) has them too
    variant: str = "default"  # which model of the bundle (edge_agent.variants)
    failover: Failover | None = None  # set when the bundle has other variants
    watchdog: Watchdog | None = None  # the invoke-time watchdog of a variant (invoke_watchdog)

    def __init__(self, bundle: Bundle, runtime: Runtime, *, workers: int = 1,
                 num_threads: int | None = None, delegates: DelegateFactory | None = None,
                 hooks: Hooks | None = None, borrow_timeout_s: float = 30.0,
                 variant: str = "default") -> None:
        # a sealed bundle's envelope is the store's business, not held by every served version
        self.bundle = bundle if bundle.sealed is None else replace(bundle, sealed=None)
        self.variant = variant  # which model of the bundle (edge_agent.variants)
        self.failover: Failover | None = None  # set when the bundle has other variants
        self.manifest: Manifest = bundle.manifest
        self.runtime = runtime
        self.hooks = hooks or Hooks()
        self.state = ModelState.LOADING
        self.borrow_timeout_s = borrow_timeout_s
        # first come, first served: a released interpreter goes to the longest waiter,
        # not to a request that just arrived (edge_agent/fifo.py: the c=16 p99)
        self._pool: FifoPool[LoadedModel] = FifoPool()
        t0 = time.perf_counter()
        first = None
        self._num_threads, self._delegates = num_threads, delegates
        for _ in range(max(1, workers)):
            m = self._new_interpreter()
            first = first or m
            self._pool.put(m)
        assert first is not None
        self.workers = max(1, workers)
        self._describe(first)
        self.load_time_s = time.perf_counter() - t0
        self.loaded_at = time.time()
        self.state = ModelState.AVAILABLE

    def _new_interpreter(self) -> LoadedModel:
        m = LoadedModel(self.runtime, self.bundle.model_bytes, num_threads=self._num_threads,
                        delegates=self._delegates() if self._delegates else ())
        m.fault = fault_seam.hook(self.variant)
        return m

    def refill(self) -> int:
        """Fresh interpreters for those the watchdog abandoned (none once it is retired).
        Raises ModelLoadError."""
        n = 0 if self.watchdog is None else self.watchdog.take_lost()
        for _ in range(n):
            self._pool.put(self._new_interpreter())
        return n

    def _describe(self, m: LoadedModel) -> None:
        """Specs and bindings of this version, read from one of its interpreters."""
        self.input_spec = m.input_spec
        self.input_specs = m.input_specs
        self.output_specs = m.output_specs
        self.output_names = tuple(s.name for s in m.output_specs)
        head = self.manifest.class_head  # named as the manifest names it: find it by name
        self.class_position = (None if head is None else m.output_position(head.name))
        self._coerce = m.coerce
        self._one_input = len(self.input_specs) == 1  # the common case: no dict per call
        self._in_codec = m.input_codecs[0]
        self._out_codecs = m.output_codecs
        self._name, self._version = self.manifest.name, self.manifest.version
        self._is_probability = self.manifest.output_is_probability

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def _take(self) -> LoadedModel:
        """One free interpreter; give it back with :meth:`_give`. Raises TransportError on
        timeout. (With ``_give``, the seam a subclass overrides to share another pool.)"""
        if waiting_forbidden():  # the HTTP loop: WouldBlock now, it hands the request over
            if self.watchdog is not None:  # its invoke waits on the invoker thread, for up
                raise WouldBlock(f"{self.name} v{self.version}: a watched variant's invoke "
                                 "waits on its invoker thread",  # to the limit if it hangs
                                 lasting=True)
            try:
                return self._pool.get_nowait()
            except queue.Empty:
                raise WouldBlock(f"{self.name} v{self.version}: every interpreter is "
                                 "busy") from None
        try:
            if self.watchdog is None:
                return self._pool.get(timeout=self.borrow_timeout_s)
            end = time.monotonic() + self.borrow_timeout_s
            while True:  # a watched variant: stop waiting once it has been given up on
                if self.watchdog.tripped:
                    raise InvokeHangError(f"{self.name} v{self.version}: variant "
                                          f"{self.variant!r} was given up (hung)")
                try:
                    return self._pool.get(timeout=max(0.0, min(TRIP_POLL_S,
                                                               end - time.monotonic())))
                except queue.Empty:
                    if time.monotonic() >= end:
                        raise
        except queue.Empty as e:
            raise TransportError(f"{self.name} v{self.version}: no interpreter free within "
                                 f"{self.borrow_timeout_s:g} s") from e

    def _give(self, m: LoadedModel) -> None:
        self._pool.put(m)

    def free_interpreters(self) -> int:
        """Interpreters not borrowed right now (one C call: the shadow's load check)."""
        return self._pool.qsize()

    @contextmanager
    def borrow(self) -> Iterator[LoadedModel]:
        """Exclusive use of one interpreter. Raises TransportError on timeout."""
        m = self._take()
        try:
            yield m
        finally:
            self._give(m)

    def verify_golden(self) -> GoldenResult:
        with self.borrow() as m:
            return verify_golden(self.bundle, self.runtime, model=m)

    def predict(self, x: Inputs, *, source: str = "api", request_id: str | None = None,
                client: str | None = None) -> Prediction:
        """Float (model units) or raw-dtype input batch (one array, or arrays by input
        name) → a :class:`Prediction` with every output.

        Every call, failed or not, is reported to the hooks, with who is at fault: a
        :class:`~edge_agent.errors.BadInputError` is the client's (``fault="client"``,
        never held against the model by probation), anything else the model's or the
        runtime's. Raises InvalidRequestError.
        """
        t0 = time.perf_counter()
        raw = None
        coerced: Inputs
        try:
            if self._one_input and type(x) is np.ndarray:
                coerced = raw = self._in_codec.coerce(x)
            else:
                coerced = self._coerce(x)
                raw = (coerced if isinstance(coerced, np.ndarray) else
                       coerced.get(self.input_spec.name))
            if raw is not None and raw.shape[0] == 0:
                raise InvalidRequestError("empty batch: send at least one instance")
            m = self._take()
            if self.watchdog is not None:  # a variant: give up on a hung invoke
                outs = self.watchdog.invoke(m, coerced, self._give)
            else:
                try:
                    outs = m.invoke_raw(coerced)
                finally:
                    self._give(m)
        except Exception as e:  # record every failure (probation sees it), then re-raise
            if isinstance(e, WouldBlock):  # not a failure: the HTTP loop runs it on its pool
                raise
            bad_input = isinstance(e, BadInputError)
            if not bad_input and self.failover is not None:
                nxt = self.failover.failed(self, e)  # a runtime failure: the next variant
                if nxt is not None:  # another request saw it first: retry there
                    return nxt.predict(x, source=source, request_id=request_id, client=client)
            self._record(source, request_id, False, time.perf_counter() - t0,
                         0 if raw is None else len(raw), client=client,
                         fault="client" if bad_input else "model",
                         input_shape=e.shape if isinstance(e, ShapeMismatchError) else None,
                         error=str(e) if isinstance(e, EdgeError) else f"{type(e).__name__}: {e}")
            raise
        pred = Prediction(self._name, self._version, outs, self._out_codecs, self.output_names,
                          self.class_position, self._is_probability)
        if self.hooks.wants_predictions:  # the record is built only for a listener
            self._record(source, request_id, True, time.perf_counter() - t0,
                         raw.shape[0] if coerced is raw and raw is not None
                         else batch_of(coerced),
                         client=client, inputs_raw=raw,
                         inputs=({self.input_spec.name: coerced}
                                 if isinstance(coerced, np.ndarray) else coerced),
                         prediction=pred)
        return pred

    def top_k(self, pred: Prediction, k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k labels and scores per sample (labels from the manifest, else indices)."""
        if pred.probabilities is None:
            raise InvalidRequestError(f"{self.name} has no class head (task "
                                      f"{self.manifest.task!r}); use :predict")
        labels = self.manifest.labels
        out = []
        for row in pred.probabilities:
            idx = np.argsort(-row)[:k]
            out.append([{"label": labels[i] if i < len(labels) else str(int(i)),
                         "index": int(i), "score": round(float(row[i]), 6)} for i in idx])
        return out

    def record_rejected(self, error: InvalidRequestError, *, source: str,
                        request_id: str | None = None, client: str | None = None) -> None:
        """A request for this version refused before invoke because it does not fit the
        model (shape, dtype, image size, values): a failed request for telemetry, and the
        client's fault (probation does not hold it against the model)."""
        self._record(source, request_id, False, 0.0, 0, error=str(error), fault="client",
                     client=client,
                     input_shape=error.shape if isinstance(error, ShapeMismatchError) else None)

    def _record(self, source: str, request_id: str | None, ok: bool, latency: float,
                batch: int, **kw: Any) -> None:
        if not self.hooks.wants_predictions:
            return  # nobody listens: no record
        self.hooks.emit_prediction(PredictionRecord(
            model=self._name, version=self._version, source=source, ok=ok, latency_s=latency,
            batch=batch, request_id=request_id, input_spec=self.input_spec,
            output_names=self.output_names, **kw))


class ModelRegistry:
    """All served models by name → version, and which version is active per name."""

    def __init__(self, runtime: Runtime, hooks: Hooks | None = None, *, workers: int = 1,
                 num_threads: int | None = None, delegates: DelegateFactory | None = None,
                 max_loaded_versions: int = 2) -> None:
        self.runtime = runtime
        self.hooks = hooks or Hooks()
        self.workers = workers
        self.num_threads = num_threads
        self.delegates = delegates
        self.max_loaded_versions = max_loaded_versions
        self.delegate: str | None = None  # the profile's external delegate, when loaded
        from edge_agent.variants import FailoverPolicy

        self.failover_policy = FailoverPolicy()  # a bundle with variants (edge_agent.variants)
        self._lock = threading.RLock()
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._active: dict[str, int] = {}
        self._labels: dict[str, dict[str, int]] = {}

    def invoke_takes_every_core(self) -> bool:
        """One interpreter per model, of as many threads as this process has cores, and
        no delegate: an invoke leaves no core for anything beside it (serving/inline.py)."""
        return (self.workers == 1 and self.delegates is None
                and (self.num_threads or 1) >= usable_cpus())

    def build(self, bundle: Bundle, variant: str = "default") -> ServedModel:
        """Load a bundle into a new ServedModel without serving it (test-load)."""
        return ServedModel(bundle, self.runtime, workers=self.workers,
                           num_threads=self.num_threads, delegates=self.delegates,
                           hooks=self.hooks, variant=variant)

    def build_checked(self, bundle: Bundle, *, verify: bool,
                      exclude: Mapping[str, str] | None = None) -> ServedModel:
        """:meth:`build`, golden vectors checked if ``verify``; of a bundle with variants,
        the best this device runs (not those in ``exclude``: name → why), the others
        standing by (:mod:`edge_agent.variants`).
        Raises ModelLoadError (NoRunnableVariantError, RuntimeRequirementError: the
        manifest's ``requires`` rule this runtime out), GoldenMismatchError."""
        if bundle.manifest.variants:
            from edge_agent.variants import build_variants

            return build_variants(self, bundle, verify=verify, exclude=exclude)
        if bundle.manifest.requires.as_dict():
            from edge_agent.variants import check_requires

            check_requires(bundle, delegate=self.delegate, runtime=self.runtime)
        served = self.build(bundle)
        if verify and bundle.manifest.golden:
            served.verify_golden()
        return served

    def replace(self, old: ServedModel, new: ServedModel) -> bool:
        """Serve ``new`` where ``old`` is (same name and version: another variant), if
        ``old`` is still there. Requests holding ``old`` finish on it."""
        with self._lock:
            versions = self._models.get(old.name, {})
            if versions.get(old.version) is not old:
                return False
            versions[old.version] = new
        self.hooks.emit_models_changed()
        return True

    def serves(self, sm: ServedModel) -> bool:
        """Whether ``sm`` is still loaded (not unloaded or evicted)."""
        with self._lock:
            return self._models.get(sm.name, {}).get(sm.version) is sm

    def add(self, served: ServedModel, *, activate: bool = True) -> None:
        """Make ``served`` reachable; if ``activate``, the default for its name (atomic)."""
        with self._lock:
            versions = self._models.setdefault(served.name, {})
            versions[served.version] = served
            if activate or served.name not in self._active:
                self._active[served.name] = served.version
            self._evict(served.name)
        self.hooks.emit_models_changed()

    def load(self, bundle: Bundle, *, activate: bool = True, verify: bool = True,
             exclude: Mapping[str, str] | None = None) -> ServedModel:
        """Build, optionally check golden vectors, then add. Nothing changes on failure.
        A bundle with variants serves the best one that runs (:mod:`edge_agent.variants`;
        ``exclude``: variants that failed their probe, name → why)."""
        served = self.build_checked(bundle, verify=verify, exclude=exclude)
        self.add(served, activate=activate)
        return served

    def _evict(self, name: str) -> None:
        versions = self._models[name]
        active = self._active.get(name)
        for v in sorted(versions):
            if len(versions) <= self.max_loaded_versions:
                break
            if v != active:
                versions.pop(v).state = ModelState.END

    def activate(self, name: str, version: int) -> None:
        with self._lock:
            if version not in self._models.get(name, {}):
                raise NotFoundError(f"model {name!r} version {version} is not loaded")
            self._active[name] = version
        self.hooks.emit_models_changed()

    def unload(self, name: str, version: int | None = None) -> None:
        with self._lock:
            versions = self._models.get(name, {})
            for v in [version] if version is not None else list(versions):
                sm = versions.pop(v, None)
                if sm:
                    sm.state = ModelState.END
            if not versions:
                self._models.pop(name, None)
                self._active.pop(name, None)
            elif self._active.get(name) not in versions:
                self._active[name] = max(versions)
        self.hooks.emit_models_changed()

    def get(self, name: str, version: int | None = None) -> ServedModel:
        """The requested version, or the active one. Raises NotFoundError."""
        with self._lock:
            versions = self._models.get(name)
            if not versions:
                raise NotFoundError(f"model {name!r} not found (serving: "
                                    f"{', '.join(sorted(self._models)) or 'none'})")
            v = self._active[name] if version is None else version
            sm = versions.get(v)
            if sm is None:
                raise NotFoundError(f"model {name!r} has no version {version} (loaded: "
                                    f"{', '.join(map(str, sorted(versions)))})")
            return sm

    # ------------------------------------------------------- version labels (TF Serving's)

    def set_label(self, name: str, label: str, version: int | None) -> None:
        """Point ``label`` of model ``name`` at ``version``; ``None`` removes the label.

        Config sets labels at start; the update flow may set ``canary`` to the version on
        probation (and ``stable`` to the one it replaces), and remove ``canary`` once the
        update is committed or rolled back. A label may name a version not loaded (yet):
        requests through it then get the usual 404.
        """
        if not LABEL_RE.match(label):
            raise ValueError(f"version label {label!r} must match {LABEL_RE.pattern}")
        with self._lock:
            labels = self._labels.setdefault(name, {})
            if version is None:
                labels.pop(label, None)
            else:
                labels[label] = int(version)
        self.hooks.emit_models_changed()

    def labels(self, name: str) -> dict[str, int]:
        """The labels of ``name``: those set, and ``stable`` → the active version unless set."""
        with self._lock:
            out = dict(self._labels.get(name, {}))
            if "stable" not in out and name in self._active:
                out["stable"] = self._active[name]
            return out

    def label_version(self, name: str, label: str) -> int:
        """The version ``label`` names. Raises NotFoundError (unknown model) and
        InvalidRequestError (unknown label, TF Serving's wording)."""
        with self._lock:
            if name not in self._models:
                self.get(name)  # the standard 404 for an unknown model
            version = self.labels(name).get(label)
        if version is None:
            raise InvalidRequestError(f"Unrecognized servable version label: {label[:100]}")
        return version

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def versions(self, name: str) -> list[ServedModel]:
        with self._lock:
            return [self._models[name][v] for v in sorted(self._models.get(name, {}))]

    def active_version(self, name: str) -> int | None:
        with self._lock:
            return self._active.get(name)

    def snapshot(self) -> list[dict[str, Any]]:
        """What is loaded, for status/birth messages."""
        with self._lock:
            return [{"name": n, "active": self._active.get(n),
                     "versions": [{"version": v, "state": sm.state.value,
                                   "sha256": sm.manifest.model_sha256,
                                   "loaded_at": sm.loaded_at,
                                   **({} if sm.failover is None else sm.failover.status())}
                                  for v, sm in sorted(vs.items())]}
                    for n, vs in sorted(self._models.items())]
