"""The agent: profile → runtime → model store → registry → HTTP, sources and components.

Start order (``stop()`` is the reverse)::

    install [[models]] bundles → load each model's serving version from the store
    → HTTP → components (telemetry, updates: ``create(agent) -> Component | None``)
    → input sources (MQTT requests, watch folder, camera)

A bundle that fails to load or verify is skipped with an ``error`` event of kind
``model.load_failed`` (the model's previous version is tried next); everything else keeps
serving. Components are optional modules imported by path; one that is not installed in
this checkout is skipped. Component ``create()`` raising ConfigError fails the start (bad
configuration is refused at start); any other failure becomes a ``component.failed`` event.

Raises ConfigError / ProfileError (bad config, unknown profile, unusable store directory),
RuntimeUnavailableError (no runtime, or a missing delegate with ``delegate_fallback =
"fail"``), TransportError (cannot bind the HTTP port).
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import edge_agent
from edge_agent.bundle import Bundle, read_bundle
from edge_agent.config import AgentConfig
from edge_agent.errors import ConfigError, EdgeError, ModelLoadError
from edge_agent.hooks import AgentEvent, Hooks
from edge_agent.profiles import DeviceProfile, load_profile
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import DelegateFactory, ModelRegistry, ServedModel
from edge_agent.runtime.backends import Runtime, select_runtime
from edge_agent.serving import Admission, HttpServer, Metrics, ServingApi
from edge_agent.sources import MessageLink, MqttRequestSource, Source
from edge_agent.sources.wiring import source_factories, wants_link
from edge_agent.store import ModelStore

log = logging.getLogger(__name__)

# In start order; the systemd notifier last, so READY=1 means everything else is up.
COMPONENT_FACTORIES = ("edge_agent.telemetry.service:create", "edge_agent.update.service:create",
                       "edge_agent.service:create")
EDGETPU_OP = b"edgetpu-custom-op"
# /proc/device-tree/model prefix → profile (boards without a device tree: x86_64 only)
BOARD_MODELS = (("Raspberry Pi 5", "rpi5"), ("Raspberry Pi 4", "rpi4"),
                ("Raspberry Pi 3", "rpi3"), ("Raspberry Pi Zero 2", "rpi-zero2w"),
                ("NVIDIA Jetson Nano", "jetson-nano"), ("NVIDIA Jetson Orin Nano",
                                                         "jetson-orin-nano"),
                ("Freescale i.MX8MQ Phanbell", "coral-devboard"))


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


ComponentFactory = Callable[["Agent"], "Component | None"]


def detect_profile() -> str:
    """The profile for this machine: device-tree model on boards, generic on x86_64."""
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        model = ""
    for prefix, name in BOARD_MODELS:
        if model.startswith(prefix):
            return name
    if platform.machine() in ("x86_64", "AMD64"):
        return "generic-x86_64"
    raise ConfigError(f"cannot pick a device profile for this {platform.machine()} board "
                      f"({model or 'no device-tree model'}); set agent.profile",
                      key="agent.profile")


def _import_factory(spec: str) -> ComponentFactory | None:
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None  # not built in this checkout
        raise
    factory: ComponentFactory = getattr(mod, attr or "create")
    return factory


class Agent:
    """One device's serving process. See the module docstring for the life cycle."""

    def __init__(self, config: AgentConfig, *, link: MessageLink | None = None,
                 runtime: Runtime | None = None,
                 components: Sequence[str | ComponentFactory] | None = None) -> None:
        a = config.agent
        self.config = config
        self.device_id = a.device_id
        self.profile: DeviceProfile = load_profile(detect_profile() if a.profile == "auto"
                                                   else a.profile)
        self.hooks = Hooks()
        self.events: collections.deque[AgentEvent] = collections.deque(maxlen=50)
        self.hooks.on_event(self.events.append)
        self.store = ModelStore(a.store_dir)
        try:
            self.store.ensure()
        except OSError as e:
            raise ConfigError(f"cannot use store directory {a.store_dir} ({e.strerror or e}); "
                              "set agent.store_dir or --store", source=config.source,
                              key="agent.store_dir") from e
        self.runtime_probes: dict[str, Any] | None = None
        self.runtime = runtime or self._select_runtime()
        self.threads = a.threads or max(1, min(self.profile.default_threads, os.cpu_count() or 1))
        self.delegate_error: str | None = None
        self.registry = ModelRegistry(self.runtime, self.hooks, workers=a.workers,
                                      num_threads=self.threads, delegates=self._delegates(),
                                      max_loaded_versions=a.max_loaded_versions)
        self.metrics = Metrics()
        self.metrics.attach(self.hooks)
        h = config.http
        self.admission = Admission(a.workers, h.queue_size, retry_after_s=h.retry_after_s)
        self.metrics.queue_source = self.admission.snapshot
        self.http: HttpServer | None = None
        if h.enabled:
            self.http = HttpServer(h.host, h.port, token=h.token, max_body_bytes=h.max_body_bytes,
                                   max_connections=h.max_connections,
                                   idle_timeout_s=h.idle_timeout_s,
                                   on_response=self.metrics.observe_http)
            ServingApi(self.registry, self.admission, self.metrics, max_batch=h.max_batch,
                       max_image_pixels=a.max_image_pixels, ready=self._ready,
                       status=self.status, failures=self.failures).register(self.http)
        self.load_failures: dict[str, dict[int, str]] = {}
        self.components: list[Component] = []
        self.sources: list[Source] = []
        self.started_at: float | None = None
        self._factories: Sequence[str | ComponentFactory] = (
            components if components is not None
            else a.components if a.components is not None else COMPONENT_FACTORIES)
        self._link = link
        self._capabilities: dict[str, Any] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ runtime

    def _select_runtime(self) -> Runtime:
        a, p = self.config.agent, self.profile
        names = [a.runtime] if a.runtime != "auto" else [c.name for c in p.runtimes]
        mins = {c.name: c.min_version for c in p.runtimes}
        if a.probe_runtime:
            try:
                from edge_agent.runtime.probe import select_probed_runtime
            except ModuleNotFoundError:
                pass
            else:
                sel = select_probed_runtime(names, state_dir=self.store.root / "state",
                                            min_versions=mins)
                for v in sel.verdicts:
                    level, kind, message, data = v.event()
                    if not v.ok or not v.cached:
                        self.hooks.emit_event(level, kind, message, **data)
                self.runtime_probes = sel.as_dict()
                return sel.runtime
        return select_runtime(names, mins)

    def _delegates(self) -> DelegateFactory | None:
        """Delegates for each interpreter: XNNPACK is built in; external ones are loaded."""
        p = self.profile
        lib = p.delegate_library
        if p.delegate in ("xnnpack", "none") or not lib:
            return None
        try:
            self.runtime.load_delegate(lib)
        except EdgeError as e:
            self.delegate_error = str(e)
            if self.config.agent.delegate_fallback == "fail":
                raise
            self.hooks.emit_event("warning", EventKind.DELEGATE_UNAVAILABLE,
                                  f"{e}; running on the CPU (agent.delegate_fallback = cpu); "
                                  f"bundles compiled for {p.delegate} are refused",
                                  delegate=p.delegate, library=lib)
            return None
        runtime = self.runtime
        return lambda: [runtime.load_delegate(lib)]

    # ------------------------------------------------------------------ models

    def _load(self, bundle: Bundle, *, activate: bool = True) -> ServedModel:
        if self.delegate_error and EDGETPU_OP in bundle.model_bytes:
            raise ModelLoadError(f"{bundle.name} v{bundle.version} is compiled for the Edge TPU "
                                 f"but its delegate is unavailable: {self.delegate_error}")
        served = self.registry.load(bundle, activate=activate,
                                    verify=self.config.agent.verify_golden)
        self.load_failures.get(bundle.name, {}).pop(bundle.version, None)
        self.hooks.emit_event("info", EventKind.MODEL_LOADED,
                              f"{bundle.name} v{bundle.version} loaded in "
                              f"{served.load_time_s * 1000:.0f} ms ({self.runtime}, "
                              f"{self.threads} threads, {self.registry.workers} workers)",
                              model=bundle.name, version=bundle.version,
                              sha256=bundle.manifest.model_sha256, active=activate)
        return served

    def _failed(self, name: str, version: int | None, e: BaseException) -> None:
        if version is not None:
            self.load_failures.setdefault(name, {})[version] = str(e)
        self.hooks.emit_event("error", EventKind.MODEL_LOAD_FAILED,
                              f"{name} v{version} not loaded: {e}", model=name,
                              version=version, error=type(e).__name__, reason=str(e))

    def failures(self, name: str) -> dict[int, str]:
        return dict(self.load_failures.get(name, {}))

    def _load_from_store(self, name: str, versions: Sequence[int | None]) -> ServedModel | None:
        """Try versions in order (serving, then previous); the first that loads is active."""
        for i, v in enumerate(versions):
            if v is None:
                continue
            try:
                served = self._load(self.store.load(name, v), activate=True)
            except EdgeError as e:
                self._failed(name, v, e)
                continue
            if i > 0:
                self.hooks.emit_event("warning", EventKind.MODEL_FALLBACK,
                                      f"{name}: serving v{v} because v{versions[0]} failed",
                                      model=name, version=v, failed=versions[0])
            return served
        return None

    def _load_extra_versions(self, name: str) -> None:
        """Also load older versions (previous first) up to ``max_loaded_versions``, inactive.

        They answer ``/versions/{v}`` requests and make a rollback instant.
        """
        limit = self.config.agent.max_loaded_versions
        prev = self.store.previous_version(name)
        others = sorted(self.store.versions(name), reverse=True)
        for v in list(dict.fromkeys([prev, *others])):
            if len(self.registry.versions(name)) >= limit:
                return
            if v is None or v in self.load_failures.get(name, {}) or v in {
                    sm.version for sm in self.registry.versions(name)}:
                continue
            try:
                self._load(self.store.load(name, v), activate=False)
            except EdgeError as e:
                self._failed(name, v, e)

    def install_bundle(self, bundle: Bundle | str | Path, activate: bool = True) -> ServedModel:
        """Install into the store and load (serving it if ``activate``). Raises on failure."""
        b = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        with self._lock:
            self.store.install(b)
            try:
                served = self._load(b, activate=activate)
            except EdgeError as e:
                self._failed(b.name, b.version, e)
                raise
            if activate:
                self.store.set_active(b.name, b.version)
            return served

    def reload(self) -> list[str]:
        """Rescan the store: load new or changed serving versions, drop removed models.

        A version that fails keeps the current one serving (``model.load_failed`` event).
        Returns one line per change.
        """
        changes: list[str] = []
        with self._lock:
            names = self.store.names()
            for name in names:
                v = None
                try:
                    v = self.store.serving_version(name)
                    if v is None:
                        continue
                    want = self.store.load(name, v)
                except EdgeError as e:
                    self._failed(name, v, e)
                    continue
                loaded = {sm.version: sm for sm in self.registry.versions(name)}
                cur = loaded.get(v)
                if cur is not None and cur.manifest.model_sha256 == want.manifest.model_sha256:
                    if self.registry.active_version(name) != v:
                        self.registry.activate(name, v)
                        changes.append(f"{name}: activated v{v}")
                    continue
                try:
                    self._load(want, activate=True)
                    changes.append(f"{name}: loaded v{v}")
                except EdgeError as e:
                    self._failed(name, v, e)
            for name in self.registry.names():
                if name not in names:
                    self.registry.unload(name)
                    changes.append(f"{name}: unloaded (no longer in the store)")
        for c in changes:
            self.hooks.emit_event("info", EventKind.AGENT_RELOADED, c)
        return changes

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Load models, then serve. Idempotent. See the module docstring for the order.

        If a step fails (a component's ConfigError, a busy port), everything already
        started is stopped again before the error propagates.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        with self._lock:
            if self.started_at is not None:
                return
            for spec in self.config.models:
                try:
                    b = read_bundle(spec.bundle)
                    self.store.install(b)
                    if spec.activate:
                        self.store.set_active(b.name, b.version)
                except (EdgeError, OSError) as e:
                    self._failed(str(spec.bundle), None, e)
            for name in self.store.names():
                try:
                    versions = [self.store.serving_version(name), self.store.previous_version(name)]
                except EdgeError as e:
                    self._failed(name, None, e)
                    continue
                if self._load_from_store(name, list(dict.fromkeys(versions))) is not None:
                    self._load_extra_versions(name)
            if self.http is not None:
                self.http.start()
            self._start_components()
            self._start_sources()
            self.started_at = time.time()
            self.metrics.started_at = self.started_at
            _release_free_memory()
        served = ", ".join(self.registry.names()) or "no models"
        where = f" on {self.http.url}" if self.http else ""
        self.hooks.emit_event("info", EventKind.AGENT_STARTED,
                              f"{self.device_id}: serving {served}{where}",
                              device_id=self.device_id, profile=self.profile.name,
                              runtime=str(self.runtime))

    def _start_components(self) -> None:
        for spec in self._factories:
            factory = _import_factory(spec) if isinstance(spec, str) else spec
            if factory is None:
                continue
            comp = factory(self)  # ConfigError here fails the start, by design
            if comp is None:
                continue
            try:
                comp.start()
            except ConfigError:
                raise
            except Exception as e:
                log.exception("component %r failed to start", comp)
                self.hooks.emit_event("error", EventKind.COMPONENT_FAILED,
                                      f"{type(comp).__name__} did not start: {e}",
                                      component=type(comp).__name__)
                continue
            self.components.append(comp)

    def message_link(self) -> MessageLink | None:
        """The MQTT connection sources use: the one given, else the agent's shared client."""
        if self._link is not None:
            return self._link
        try:
            from edge_agent.mqtt import shared_client
        except ModuleNotFoundError:
            return None
        link: MessageLink | None = shared_client(self)
        return link

    def _durable_publisher(self) -> Any:
        try:
            from edge_agent.mqtt import shared_publisher
        except ModuleNotFoundError:
            return None
        return shared_publisher(self)

    def _start_sources(self) -> None:
        link = self.message_link() if wants_link(self.config) else None
        for make in source_factories(self.config, self.registry, self.hooks, link=link,
                                     durable=self._durable_publisher):
            try:
                src = make()
                src.start()
            except (EdgeError, OSError) as e:
                self.hooks.emit_event("error", EventKind.SOURCE_FAILED,
                                      f"input source not started: {e}")
                continue
            self.sources.append(src)

    def stop(self) -> None:
        """Stop HTTP, sources, components (reverse order), then unload every model."""
        with self._lock:
            if self.http is not None:
                self.http.stop(in_flight=self.admission.in_flight)
            for src in reversed(self.sources):
                _quietly(src.stop, f"source {src.name}")
            self.sources.clear()
            for comp in reversed(self.components):
                _quietly(comp.stop, f"component {type(comp).__name__}")
            self.components.clear()
            for name in self.registry.names():
                self.registry.unload(name)
            was_started, self.started_at = self.started_at is not None, None
        if was_started:
            self.hooks.emit_event("info", EventKind.AGENT_STOPPED, f"{self.device_id}: stopped")

    # ------------------------------------------------------------------ status

    def _ready(self) -> tuple[bool, str]:
        if self.started_at is None:
            return False, "agent is starting"
        if not self.registry.names():
            return False, "no model loaded (see GET /v1/agent/status for load failures)"
        return True, ""

    @property
    def capabilities(self) -> list[str]:
        """What this agent can do, for status and the fleet (a list: telemetry reads it)."""
        c = self.config
        caps = ["predict", "classify", "metadata"]
        caps += ["rest"] if self.http else []
        caps += [f"source:{s.name}" for s in self.sources]
        caps += [f"component:{type(x).__name__}" for x in self.components]
        caps.append(f"delegate:{'cpu' if self.delegate_error else self.profile.delegate}")
        caps += ["token-auth"] if c.http.enabled and c.http.token else []
        return caps

    def runtime_capabilities(self) -> dict[str, Any] | None:
        if self._capabilities is None:
            try:
                from edge_agent.runtime.capabilities import capabilities
            except ModuleNotFoundError:
                return None
            self._capabilities = capabilities(self.runtime).as_dict()
        return self._capabilities

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: identity, runtime, models, capabilities, load, uptime."""
        queue = self.admission.queue_depth() + sum(
            s.queue_depth() for s in self.sources if isinstance(s, MqttRequestSource))
        return {
            "agent_version": edge_agent.__version__,
            "device_id": self.device_id,
            "groups": list(self.config.agent.groups),
            "profile": self.profile.name,
            "runtime": {"name": self.runtime.name, "version": self.runtime.version,
                        "threads": self.threads, "workers": self.registry.workers,
                        "delegate": self.profile.delegate, "delegate_error": self.delegate_error,
                        "probes": self.runtime_probes,
                        "capabilities": self.runtime_capabilities()},
            "models": self.registry.snapshot(),
            "load_failures": {n: {str(v): m for v, m in f.items()}
                              for n, f in self.load_failures.items() if f},
            "capabilities": self.capabilities,
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at else 0.0,
            "queue_depth": queue,
            "in_flight": self.admission.in_flight(),
            "http": {"url": self.http.url, "connections": self.http.open_connections()}
            if self.http else None,
            "recent_events": [{"level": e.level, "kind": e.kind, "message": e.message,
                               "at": e.at} for e in list(self.events)[-10:]],
        }


def _release_free_memory() -> None:
    """Give the heap freed while loading (bundle copies, golden checks) back to the OS.

    glibc keeps freed memory in its arenas; on a 512 MB board the idle RSS matters more than
    the microseconds this takes once at start. No-op elsewhere.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _quietly(fn: Callable[[], None], what: str) -> None:
    try:
        fn()
    except Exception:
        log.exception("%s failed to stop cleanly", what)
