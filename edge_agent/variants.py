"""Model variants: pick the best one a device runs, and fail over while serving.

A bundle may carry other models of the same version (``manifest.variants``, most preferred
first, all before ``model.tflite``, named ``default``; docs/bundle.md). At load,
:func:`build_variants` skips each variant whose requirements this device does not meet
(a delegate that is not loaded, a runtime older than asked), loads the others and checks
each one's golden vectors; the first that passes serves, the rest stand by loaded. None:
:class:`~edge_agent.errors.NoRunnableVariantError` naming every variant's reason.

Each loaded variant's invoke latency is measured at load, and its invokes run under a
watchdog (:mod:`edge_agent.invoke_watchdog`) whose limit is that latency × a factor, with
a floor (:func:`~edge_agent.variant_rules.watchdog_limit_s`).

While serving, :class:`Failover` is told of each runtime failure of an invoke (not a
client's bad input) and asks the pure rules (:mod:`edge_agent.variant_rules`) what to do:
a delegate error switches at once (the request that saw it fails), a hang switches at once
(that request is retried on the next variant, and so is every other one in flight on the
hung variant), other errors switch at the N-th within a window. A switch replaces the
model with the next variant in place (same name and version: :meth:`ModelRegistry.replace`)
and emits ``model.degraded``; requests in flight on the failed variant are retried on the
new one. The better variant is retried after a backoff that doubles up to a cap: fresh
interpreters replace the abandoned ones (unless too many were: then it stays failed until
restart), its golden vectors run on its own interpreter (with a deadline, so a hung
delegate cannot hold the retry) and, if they pass, it serves again (``model.recovered``).
Status and ``/metrics`` show the variant, the degraded state and why.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.errors import EdgeError, NoRunnableVariantError, RuntimeRequirementError
from edge_agent.invoke_watchdog import Watchdog
from edge_agent.manifest import Requires
from edge_agent.protocol.kinds import EventKind
from edge_agent.runtime import fault_seam
from edge_agent.runtime.backends import Runtime, parse_version
from edge_agent.runtime.model import verify_golden
from edge_agent.threadname import NamedThread, NamedTimer
from edge_agent.variant_rules import Decision, ErrorWindow, FailoverRules, classify, decide

if TYPE_CHECKING:
    from edge_agent.config import AgentSettings
    from edge_agent.profiles import DeviceProfile
    from edge_agent.registry import ModelRegistry, ServedModel

DEFAULT = "default"  # model.tflite's name as a variant
BUILTIN_DELEGATES = ("xnnpack",)  # in every CPU runtime: always available


@dataclass(frozen=True)
class FailoverPolicy:
    """How a degraded model retries its better variant (docs/agent.md, *Variants*)."""

    backoff_s: float = 1.0  # first retry after this
    backoff_max_s: float = 300.0  # the doubling stops here
    check_timeout_s: float = 10.0  # a retry's golden vectors must finish within this
    rules: FailoverRules = field(default_factory=FailoverRules)  # when a variant has failed
    latency_runs: int = 5  # invokes timed at load: the watchdog's measured latency (median)


def failover_rules(a: AgentSettings, profile: DeviceProfile) -> FailoverRules:
    """The ``[agent] variant_*`` keys, the watchdog floor defaulting to the profile's."""
    return FailoverRules(
        fail_errors=a.variant_fail_errors, fail_window_s=a.variant_fail_window_s,
        watchdog_factor=a.variant_watchdog_factor,
        watchdog_floor_s=a.variant_watchdog_floor_s or profile.invoke_watchdog_floor_s,
        max_abandoned=a.variant_max_abandoned)


def variant_bundles(bundle: Bundle) -> list[tuple[str, Requires, Bundle]]:
    """Each model of ``bundle`` as a bundle of its own, in preference order."""
    m = bundle.manifest
    out = [(v.name, v.requires, replace(
        bundle, model_bytes=bundle.variant_bytes[v.name], variant_bytes={},
        manifest=replace(m, model_sha256=v.sha256, model_size=v.size_bytes,
                         quantization_mode=v.quantization_mode, inputs=v.inputs,
                         outputs=v.outputs, golden=v.golden, variants=())))
        for v in m.variants]
    return [*out, (DEFAULT, m.requires, replace(bundle, variant_bytes={},
                                                manifest=replace(m, variants=())))]


def unmet(req: Requires, *, delegate: str | None, runtime: Runtime) -> str | None:
    """Why this device cannot run a model requiring ``req`` (None: it can). Pure (but for
    the test seam :func:`edge_agent.runtime.fault_seam.seen`)."""
    name, version = fault_seam.seen(runtime.name, runtime.version)
    runtime = replace(runtime, name=name, version=version)
    if req.delegate and req.delegate not in (*BUILTIN_DELEGATES, delegate):
        return (f"needs the {req.delegate} delegate (loaded here: "
                f"{delegate or 'none'}{'' if delegate else ', CPU only'})")
    if req.min_runtime and parse_version(runtime.version) < parse_version(req.min_runtime):
        return f"needs runtime >= {req.min_runtime} (here {runtime})"
    if req.runtimes:
        floor = req.runtimes.get(runtime.name)
        if floor is None or parse_version(runtime.version) < parse_version(floor):
            return ("needs " + " or ".join(f"{n} >= {v}" for n, v in req.runtimes.items())
                    + f" (here {runtime})")
    return None


def check_requires(bundle: Bundle, *, delegate: str | None, runtime: Runtime) -> None:
    """Before any load: some model of ``bundle`` (a variant, or ``model.tflite``) must be
    one this device can run by its manifest's requirements. Pure.

    Raises RuntimeRequirementError naming each model's reason."""
    reasons = {}
    for v in bundle.manifest.variants:
        why = unmet(v.requires, delegate=delegate, runtime=runtime)
        if why is None:
            return
        reasons[v.name] = why
    why = unmet(bundle.manifest.requires, delegate=delegate, runtime=runtime)
    if why is None:
        return
    m = bundle.manifest
    if not reasons:
        raise RuntimeRequirementError(f"{m.name} v{m.version} ({m.quantization_mode}) {why}")
    reasons[DEFAULT] = why
    raise RuntimeRequirementError(
        f"{m.name} v{m.version}: no model this device can run ("
        + "; ".join(f"{n}: {w}" for n, w in reasons.items()) + ")")


def servable(registry: ModelRegistry, bundle: Bundle) -> tuple[list[str], dict[str, str]]:
    """The variants this device would serve, in order, and why not the others."""
    names: list[str] = []
    reasons: dict[str, str] = {}
    for name, req, _ in variant_bundles(bundle):
        why = unmet(req, delegate=registry.delegate, runtime=registry.runtime)
        if why is None:
            names.append(name)
        else:
            reasons[name] = why
    return names, reasons


def build_variants(registry: ModelRegistry, bundle: Bundle, *, verify: bool,
                   exclude: Mapping[str, str] | None = None) -> ServedModel:
    """Load every variant this device can run (golden vectors checked if ``verify``); the
    best serves, the others stand by behind a :class:`Failover`. ``exclude``: variants
    that failed their isolated check (name → why), never loaded here. Nothing is added
    to the registry here. Raises NoRunnableVariantError."""
    chain: list[ServedModel] = []
    reasons: dict[str, str] = {}
    for name, req, vb in variant_bundles(bundle):
        why = (exclude or {}).get(name) or unmet(req, delegate=registry.delegate,
                                                 runtime=registry.runtime)
        if why is None:
            try:
                sm = registry.build(vb, variant=name)
                if verify and vb.manifest.golden:
                    sm.verify_golden()
                _watch(sm, registry.failover_policy)
                chain.append(sm)
                continue
            except EdgeError as e:
                why = str(e)
        reasons[name] = why
    if not chain:
        raise NoRunnableVariantError(
            f"{bundle.name} v{bundle.version}: no variant this device can run ("
            + "; ".join(f"{n}: {w}" for n, w in reasons.items()) + ")")
    Failover(registry, chain, skipped=reasons)
    return chain[0]


def _zeros(sm: ServedModel) -> dict[str, np.ndarray]:
    return {s.name: np.zeros(s.shape, s.dtype) for s in sm.input_specs}


def measure_latency_s(sm: ServedModel, runs: int) -> float:
    """The median time of ``runs`` invokes of zeros at the model's batch (after one warm-up)."""
    x = _zeros(sm)
    times = []
    with sm.borrow() as m:
        m.invoke_raw(x)
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            m.invoke_raw(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _watch(sm: ServedModel, policy: FailoverPolicy) -> None:
    """Put ``sm``'s invokes under the watchdog (unless ``variant_watchdog_factor = 0``)."""
    if policy.rules.watchdog:
        sm.watchdog = Watchdog(label=f"{sm.name} v{sm.version} variant {sm.variant!r}",
                               latency_s=measure_latency_s(sm, policy.latency_runs),
                               fixed_batch=int(sm.input_spec.shape[0]), rules=policy.rules)


class Failover:
    """The loaded variants of one model version and which one serves (thread-safe)."""

    def __init__(self, registry: ModelRegistry, chain: list[ServedModel], *,
                 skipped: dict[str, str] | None = None,
                 policy: FailoverPolicy | None = None) -> None:
        self.registry, self.chain = registry, chain
        self.skipped = dict(skipped or {})
        self.policy = policy or registry.failover_policy
        self.index = 0
        self.reasons: dict[str, str] = {}  # variant → why it last failed
        self._windows = [ErrorWindow(self.policy.rules) for _ in chain]
        self._delay = self.policy.backoff_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        for sm in chain:
            sm.failover = self

    @property
    def current(self) -> ServedModel:
        return self.chain[self.index]

    def status(self) -> dict[str, Any]:
        """For status and /metrics: the serving variant, its index in the bundle's order,
        the loaded ones, and whether a better one failed."""
        abandoned = {sm.variant: sm.watchdog.abandoned for sm in self.chain
                     if sm.watchdog is not None and sm.watchdog.abandoned}
        return {"variant": self.current.variant, "variant_index": self.index,
                "variants": [sm.variant for sm in self.chain], "degraded": self.index > 0,
                **({"variant_reasons": dict(self.reasons)} if self.reasons else {}),
                **({"variants_abandoned": abandoned} if abandoned else {}),
                **({"variants_skipped": self.skipped} if self.skipped else {})}

    def failed(self, sm: ServedModel, error: BaseException) -> ServedModel | None:
        """An invoke on ``sm`` failed in the runtime. Returns the variant to retry that
        request on, or None when it fails (:func:`~edge_agent.variant_rules.decide`: the
        request that detected a delegate error, a counted error, the last variant)."""
        failure = classify(error)
        with self._lock:
            cur = self.current
            if sm is not cur:
                return cur  # switched already: retry on the serving variant
            has_next = self.index + 1 < len(self.chain)
            d = decide(failure, self._windows[self.index], time.monotonic(),
                       has_next=has_next)
            if d is Decision.FAIL:
                if not has_next and sm.watchdog is not None:
                    sm.refill()  # the last variant hung: keep its pool (up to the cap)
                return None
            self.index += 1
            nxt = self.chain[self.index]
            self.reasons[sm.variant] = f"{failure.value}: {error}"[:300]
            self.registry.replace(sm, nxt)
            self._schedule()
        given_up = sm.watchdog.give_up_all() if (failure.value == "hang"
                                                 and sm.watchdog is not None) else 0
        retired = sm.watchdog is not None and sm.watchdog.retired
        self._emit("warning", EventKind.MODEL_DEGRADED,
                   f"{sm.name} v{sm.version}: variant {sm.variant!r} failed ({error}); "
                   f"serving {nxt.variant!r}, " + (
                       f"not retrying {sm.variant!r} until restart ({sm.watchdog.abandoned}"
                       " interpreters abandoned)" if retired and sm.watchdog else
                       f"retrying {sm.variant!r} in {self._delay:g} s"),
                   failed=sm.variant, error=str(error)[:300], rule=failure.value,
                   given_up=given_up)
        return nxt if d is Decision.SWITCH_AND_RETRY else None

    def _emit(self, level: str, kind: EventKind, message: str, **kw: Any) -> None:
        cur = self.current
        self.registry.hooks.emit_event(level, kind, message, model=cur.name,
                                       version=cur.version, variant=cur.variant,
                                       variant_index=self.index, **kw)

    def _schedule(self) -> None:
        """Retry the better variants after the backoff (caller holds the lock)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = NamedTimer(self._delay, self._retry)
        self._timer.name = "variant-backoff"
        self._timer.daemon = True
        self._timer.start()

    def _passes(self, sm: ServedModel) -> str | None:
        """Run ``sm``'s golden vectors within the deadline: None if they pass, else why.
        An interpreter that does not come back within it is abandoned (counted)."""
        if sm.watchdog is not None and sm.watchdog.retired:
            return (f"retired: {sm.watchdog.abandoned} interpreters abandoned, not retried "
                    "until restart")
        try:
            sm.refill()
            m = sm._take()
        except EdgeError as e:
            return str(e)
        box: list[str | None] = ["did not finish within "
                                 f"{self.policy.check_timeout_s:g} s"]
        gave_up = threading.Event()
        lock = threading.Lock()

        def check() -> None:
            try:
                if sm.manifest.golden:
                    verify_golden(sm.bundle, sm.runtime, model=m)
                else:  # no golden data: one invoke of zeros still exercises the delegate
                    m.invoke_raw(_zeros(sm))
                box[0] = None
            except Exception as e:  # any failure of the retried variant: stay degraded
                box[0] = f"{type(e).__name__}: {e}"
            with lock:
                if not gave_up.is_set():
                    sm._give(m)

        t = NamedThread(target=check, name=f"variant-retry-{sm.name}", daemon=True)
        t.start()
        t.join(self.policy.check_timeout_s)
        with lock:
            if t.is_alive():
                gave_up.set()
                if sm.watchdog is not None:
                    sm.watchdog.abandon_one()
                    if sm.watchdog.retired:
                        return (f"{box[0]}; retired: {sm.watchdog.abandoned} interpreters "
                                "abandoned, not retried until restart")
        return box[0]

    def _retry(self) -> None:
        with self._lock:
            if self.index == 0 or not self.registry.serves(self.current):
                return  # recovered, or this version was unloaded: stop retrying
            candidates = self.chain[:self.index]
        if all(sm.watchdog is not None and sm.watchdog.retired for sm in candidates):
            return  # every better variant stays failed until restart: no more retries
        for i, sm in enumerate(candidates):
            why = self._passes(sm)
            if why is not None:
                with self._lock:
                    self.reasons[sm.variant] = f"retry: {why}"[:300]
            else:
                with self._lock:
                    if i >= self.index:
                        return
                    old, self.index = self.current, i
                    self._delay = self.policy.backoff_s
                    self.reasons.pop(sm.variant, None)
                    self._windows[i].clear()
                    self.registry.replace(old, sm)
                self._emit("info", EventKind.MODEL_RECOVERED,
                           f"{sm.name} v{sm.version}: variant {sm.variant!r} passes its "
                           f"golden vectors again; serving it (was {old.variant!r})",
                           was=old.variant)
                if self.index > 0:
                    with self._lock:
                        self._schedule()
                return
        with self._lock:
            self._delay = min(self._delay * 2, self.policy.backoff_max_s)
            self._schedule()
