"""Many real agents in one process, sharing one loaded model: the simulated fleet's engine.

Each simulated device is a real :class:`edge_agent.app.Agent` with the real telemetry
and update components: its own MQTT client (client id = device id, Last Will, outbox),
its own store and update state directory, its own TUF trust store and update state
machine. What is shared, to fit hundreds of devices on a small machine:

* the runtime (one import) and, per model file (sha256), one pool of interpreters:
  :class:`SharedRegistry` builds :class:`SharedServedModel` s that borrow from that
  pool. A bundle's golden vectors are still checked on every device, and a model that
  does not load still fails on every device (failures are not cached);
* one traffic thread per process giving every device a trickle of predictions
  (``rps`` each) and, when an update enters probation on a device, a burst of
  ``probation_min_requests`` predictions spread over the first half of the window, so
  that probation always has requests to judge (a device with no traffic would pass it
  unjudged).

Faults (chosen per device by :func:`assign_faults`):

``fail_probation``  every prediction on a version newer than the one the device started
                    with fails, and the device gets its probation requests at once:
                    probation sees errors and rolls the update back;
``drop_link``       the device reaches the broker through a :class:`~fleet.sim_net.LinkProxy`
                    that cuts the connection when an update starts downloading and keeps
                    it down ``drop_for_s`` (the Last Will fires; the download resumes);
``slow``            the same proxy adds latency and a bandwidth cap to every read.

Raises ConfigError (bad settings) and OSError (work directory) from :meth:`SimFleet.start`.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.errors import ModelError
from edge_agent.hooks import AgentEvent, Hooks
from edge_agent.protocol import EventKind
from edge_agent.registry import ModelRegistry, ModelState, Prediction, ServedModel
from edge_agent.runtime.backends import Runtime, select_runtime
from edge_agent.runtime.model import Inputs, LoadedModel, batch_of
from fleet.sim_net import LinkProxy

if TYPE_CHECKING:
    from edge_agent.app import Agent

log = logging.getLogger(__name__)

FAULTS = ("fail_probation", "drop_link", "slow")
COMPONENTS = ("telemetry", "update")


def assign_faults(devices: Sequence[str], fractions: Mapping[str, float],
                  seed: int = 7) -> dict[str, str]:
    """Pick ``round(fraction × N)`` distinct devices per fault, reproducibly (pure)."""
    order = sorted(devices)
    random.Random(seed).shuffle(order)
    out: dict[str, str] = {}
    i = 0
    for fault in FAULTS:
        n = round(fractions.get(fault, 0.0) * len(order))
        for d in order[i:i + n]:
            out[d] = fault
        i += n
    return out


# --- one model, many devices ------------------------------------------------------------------


class ModelCache:
    """Per model sha256, one loaded :class:`ServedModel` whose interpreters all devices share."""

    def __init__(self, runtime: Runtime, *, workers: int = 2) -> None:
        self.runtime = runtime
        self.workers = workers
        self._lock = threading.Lock()
        self._models: dict[str, ServedModel] = {}

    def template(self, bundle: Bundle) -> ServedModel:
        """The shared model for ``bundle``'s model file; raises ModelLoadError (not cached)."""
        key = bundle.manifest.model_sha256
        with self._lock:
            sm = self._models.get(key)
            if sm is None:
                sm = ServedModel(bundle, self.runtime, workers=self.workers, num_threads=1)
                self._models[key] = sm
            return sm


FaultCheck = Callable[["SharedServedModel"], bool]


class SharedServedModel(ServedModel):
    """A device's view of a shared model: its own manifest and hooks, shared interpreters."""

    def __init__(self, bundle: Bundle, template: ServedModel, hooks: Hooks,
                 fault: FaultCheck | None = None) -> None:
        # Deliberately not ServedModel.__init__: that would load another interpreter pool.
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.runtime = template.runtime
        self.hooks = hooks
        self.borrow_timeout_s = template.borrow_timeout_s
        self.workers = template.workers
        with template.borrow() as m:
            self._describe(m)
        self.load_time_s = 0.0
        self.loaded_at = time.time()
        self.state = ModelState.AVAILABLE
        self._template = template
        self._fault = fault

    def _take(self) -> LoadedModel:  # the template's interpreters (borrow and predict)
        return self._template._take()

    def _give(self, m: LoadedModel) -> None:
        self._template._give(m)

    def predict(self, x: Inputs, *, source: str = "api", request_id: str | None = None,
                client: str | None = None) -> Prediction:
        if self._fault is not None and self._fault(self):
            self._record(source, request_id, False, 0.0, batch_of(x), error="injected fault",
                         fault="model", client=client)
            raise ModelError(f"{self.name} v{self.version}: injected fault (simulated device "
                             "that fails probation)")
        return super().predict(x, source=source, request_id=request_id, client=client)


class SharedRegistry(ModelRegistry):
    """A :class:`ModelRegistry` whose ``build`` (test-load included) uses :class:`ModelCache`."""

    def __init__(self, cache: ModelCache, hooks: Hooks, *, fault: FaultCheck | None = None,
                 max_loaded_versions: int = 2) -> None:
        super().__init__(cache.runtime, hooks, workers=cache.workers, num_threads=1,
                         max_loaded_versions=max_loaded_versions)
        self.cache = cache
        self.fault = fault

    def build(self, bundle: Bundle, variant: str = "default") -> ServedModel:
        return SharedServedModel(bundle, self.cache.template(bundle), self.hooks, self.fault)


# --- the fleet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimSpec:
    """What to simulate in this process (units in the names)."""

    broker_url: str  # one URL, or several comma separated (cluster nodes, failover)
    root_file: Path
    bundle: Path
    workdir: Path
    devices: tuple[str, ...]
    groups: tuple[str, ...] = ("sim",)
    faults: Mapping[str, str] = field(default_factory=dict)
    probation_s: float = 2.0
    probation_min_requests: int = 5
    # Hundreds of agents share a few CPUs, so a prediction's latency measures the
    # simulator's load, not the model: latency-based probation is kept out of the way.
    probation_latency_floor_ms: float = 2000.0
    rps: float = 1.0  # predictions per second per device
    telemetry_interval_s: float = 30.0
    drop_for_s: float = 3.0
    slow_latency_s: float = 0.05
    slow_rate_bytes_per_s: float = 64_000.0
    keepalive_s: int = 10
    # "5" by default: a busy simulator process may answer a CONNACK late, and "auto" waits
    # only 3 s for it before falling back to 3.1.1. "3.1.1" or "auto" for brokers without 5.
    protocol: str = "5"
    start_threads: int = 4
    extra: Mapping[str, Any] = field(default_factory=dict)  # more dotted config overrides


class SimDevice:
    """One agent plus its fault plumbing."""

    def __init__(self, device: str, agent: Agent, fault: str | None,
                 proxy: LinkProxy | None, *, initial: dict[str, int] | None = None) -> None:
        self.device = device
        self.agent = agent
        self.fault = fault
        self.proxy = proxy
        self.initial: dict[str, int] = initial if initial is not None else {}

    def active(self, model: str) -> int | None:
        v: int | None = self.agent.registry.active_version(model)
        return v


class SimFleet:
    """Start, drive and stop the agents of one :class:`SimSpec` (see the module docstring)."""

    def __init__(self, spec: SimSpec, runtime: Runtime | None = None) -> None:
        self.spec = spec
        self.runtime = runtime or select_runtime()
        self.cache = ModelCache(self.runtime)
        self.devices: dict[str, SimDevice] = {}
        self._stop = threading.Event()
        self._traffic: threading.Thread | None = None
        self._bursts: list[tuple[float, int, SimDevice]] = []  # heap: (due, seq, device)
        self._burst_cond = threading.Condition()
        self._burst_seq = 0
        self._burster: threading.Thread | None = None
        self._urls = [x.strip() for x in spec.broker_url.split(",") if x.strip()]
        u = urlsplit(self._urls[0])  # a fault proxy fronts the first broker
        self._upstream = (u.hostname or "127.0.0.1", u.port or 1883)

    def _config(self, device: str, url: str) -> Any:
        from edge_agent.config import load_config

        s = self.spec
        o: dict[str, Any] = {
            "agent.device_id": device, "agent.profile": "generic-x86_64",
            "agent.store_dir": str(s.workdir / device / "store"),
            "agent.probe_runtime": False, "agent.threads": 1, "agent.groups": list(s.groups),
            "http.enabled": False, "mqtt_requests.enabled": False,
            "mqtt.brokers": [url, *self._urls[1:]], "mqtt.keepalive_s": s.keepalive_s,
            "mqtt.reconnect_min_s": 0.2, "mqtt.reconnect_max_s": 2.0,
            "mqtt.protocol": s.protocol, "mqtt.connect_timeout_s": 30.0,
            "telemetry.interval_s": s.telemetry_interval_s,
            "update.root_file": str(s.root_file), "update.probation_s": s.probation_s,
            "update.probation_min_requests": s.probation_min_requests,
            "update.probation_latency_floor_ms": s.probation_latency_floor_ms,
            "update.stall_timeout_s": 20.0, "update.retry_backoff_s": 1.0,
            "models": [{"bundle": str(s.bundle)}], **s.extra,
        }
        return load_config(None, o, env={})

    def _make(self, device: str) -> SimDevice:
        from edge_agent.app import Agent

        s = self.spec
        fault = s.faults.get(device)
        proxy = None
        if fault in ("drop_link", "slow"):
            proxy = LinkProxy(self._upstream, name=device,
                              latency_s=s.slow_latency_s if fault == "slow" else 0.0,
                              rate_bytes_per_s=s.slow_rate_bytes_per_s if fault == "slow"
                              else None)
        config = self._config(device, proxy.url if proxy else self._urls[0])
        initial: dict[str, int] = {}
        check: FaultCheck | None = None
        if fault == "fail_probation":
            def check(m: SharedServedModel) -> bool:
                first = initial.get(m.name)
                return first is not None and m.version > first
        # The injection seam: a registry sharing loaded models between agents (and failing
        # on purpose for fail_probation devices), given to the agent with its hooks.
        hooks = Hooks()
        registry = SharedRegistry(self.cache, hooks, fault=check,
                                  max_loaded_versions=config.agent.max_loaded_versions)
        agent = Agent(config, runtime=self.runtime, hooks=hooks, registry=registry,
                      components=COMPONENTS)
        sim = SimDevice(device, agent, fault, proxy, initial=initial)
        def on_probation(ev: AgentEvent, sim: SimDevice = sim) -> None:
            if ev.kind != EventKind.UPDATE_PROBATION:
                return
            if sim.fault == "fail_probation":
                # Deterministic: the device's first requests on the new version fail now,
                # inside the window (a loaded simulator's burst thread could be too late).
                # They fail before reaching the interpreter, so this hook stays quick.
                for _ in range(self.spec.probation_min_requests):
                    self._predict(sim, {})
            else:
                self._schedule_burst(sim)
        agent.hooks.on_event(on_probation)
        if fault == "drop_link" and proxy is not None:
            def on_event(ev: AgentEvent, proxy: LinkProxy = proxy) -> None:
                if ev.kind == EventKind.UPDATE_DOWNLOADING:
                    proxy.cut(s.drop_for_s)
            agent.hooks.on_event(on_event)
        return sim

    def _start_one(self, device: str) -> SimDevice:
        sim = self._make(device)
        sim.agent.start()
        for name in sim.agent.registry.names():
            v = sim.agent.registry.active_version(name)
            if v is not None:
                sim.initial[name] = v
        return sim

    def start(self) -> None:
        """Start every agent (in parallel), then the traffic thread."""
        self.spec.workdir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(self.spec.start_threads) as ex:
            for sim in ex.map(self._start_one, self.spec.devices):
                self.devices[sim.device] = sim
        if self.spec.rps > 0:
            self._traffic = threading.Thread(target=self._drive, daemon=True, name="sim-traffic")
            self._traffic.start()
        self._burster = threading.Thread(target=self._burst_loop, daemon=True, name="sim-burst")
        self._burster.start()

    def connected(self) -> int:
        n = 0
        for sim in self.devices.values():
            client = sim.agent.mqtt
            n += bool(client is not None and client.is_connected)
        return n

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.connected() == len(self.devices):
                return True
            time.sleep(0.1)
        return False

    def _schedule_burst(self, sim: SimDevice) -> None:
        """Probation traffic for ``sim`` (called on its update thread: only queues)."""
        n = self.spec.probation_min_requests
        spread = self.spec.probation_s / 2
        now = time.monotonic()
        with self._burst_cond:
            for i in range(n):
                self._burst_seq += 1
                heapq.heappush(self._bursts, (now + spread * i / max(1, n), self._burst_seq,
                                              sim))
            self._burst_cond.notify()

    def _burst_loop(self) -> None:
        inputs: dict[str, np.ndarray] = {}
        while not self._stop.is_set():
            with self._burst_cond:
                if not self._bursts:  # asleep until a burst is scheduled or stop (notify)
                    if not self._stop.is_set():  # stop() sets it, then notifies under the lock
                        self._burst_cond.wait()
                    continue
                due, _, sim = self._bursts[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._burst_cond.wait(delay)
                    continue
                heapq.heappop(self._bursts)
            self._predict(sim, inputs)

    def _predict(self, sim: SimDevice, inputs: dict[str, np.ndarray]) -> None:
        for name in sim.agent.registry.names():
            try:
                m = sim.agent.registry.get(name)
                x = inputs.get(name)
                if x is None:
                    x = inputs[name] = np.zeros((1, *m.input_spec.shape[1:]), np.float32)
                m.predict(x, source="sim")
            except Exception as e:  # injected faults, models mid-swap
                log.debug("sim predict on %s failed: %s", sim.device, e)

    def _drive(self) -> None:
        """Every device predicts ``rps`` times a second, staggered over the period."""
        sims = list(self.devices.values())
        if not sims:
            return
        period = 1.0 / self.spec.rps
        gap = period / len(sims)
        inputs: dict[str, np.ndarray] = {}
        next_at = time.monotonic()
        while not self._stop.is_set():
            for sim in sims:
                next_at += gap
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if delay < -period:  # fell far behind (overloaded): skip, do not burst
                    next_at = time.monotonic()
                self._predict(sim, inputs)

    def active_versions(self, model: str) -> dict[str, int | None]:
        return {d: s.active(model) for d, s in self.devices.items()}

    def stop(self) -> None:
        """Stop traffic and every agent (each publishes its offline status)."""
        self._stop.set()
        with self._burst_cond:
            self._burst_cond.notify_all()
        for t in (self._traffic, self._burster):
            if t is not None:
                t.join(5)
        with ThreadPoolExecutor(self.spec.start_threads) as ex:
            list(ex.map(lambda s: s.agent.stop(), self.devices.values()))
        for sim in self.devices.values():
            if sim.proxy is not None:
                sim.proxy.close()
