"""The agent: profile → runtime → model store → registry → HTTP, components and sources.

Start order (``stop()`` is the reverse)::

    install [[models]] bundles → load each model's serving version from the store
    → HTTP → gRPC ([grpc]) → components (telemetry, updates, systemd: built by
    :mod:`edge_agent.wiring`)
    → the MQTT connection → input sources (MQTT requests, watch folder, camera)

A bundle that fails to load or verify is skipped with an ``error`` event of kind
``model.load_failed`` (the model's previous version is tried next); everything else keeps
serving. Configuration is validated by :func:`~edge_agent.config.load_config` before the
agent exists; a component builder raising ConfigError (a trust anchor that is not TUF
root metadata) fails the start; any other failure becomes a ``component.failed`` event.

Raises ConfigError / ProfileError (bad config, unknown profile, unusable store directory),
RuntimeUnavailableError (no runtime, or a missing delegate with ``delegate_fallback =
"fail"``), TransportError (cannot bind the HTTP or gRPC port).
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edge_agent
from edge_agent.agent_view import AgentView
from edge_agent.bundle import Bundle
from edge_agent.config import AgentConfig
from edge_agent.errors import ConfigError, EdgeError
from edge_agent.hooks import AgentEvent, Hooks
from edge_agent.loader import ModelLoader, VariantProbe
from edge_agent.profiles import DeviceProfile, default_split, detect_profile, load_profile
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import DelegateFactory, ModelRegistry, ServedModel
from edge_agent.runtime.backends import Runtime, select_runtime
from edge_agent.runtime.capabilities import capabilities as runtime_capabilities
from edge_agent.runtime.probe import select_probed_runtime
from edge_agent.serving import Admission, HttpServer, Metrics, ServingApi
from edge_agent.serving.dataplane import DataPlane
from edge_agent.serving.images import budget_for, process_budget
from edge_agent.serving.v2_api import V2Api
from edge_agent.shadow.prom import ShadowCollector, current_run
from edge_agent.sources import MessageLink, MqttRequestSource, Source
from edge_agent.sources.wiring import source_factories, wants_link
from edge_agent.store import ModelStore
from edge_agent.telemetry.prom import SystemCollector
from edge_agent.telemetry.system import SystemSampler
from edge_agent.variants import FailoverPolicy, failover_rules
from edge_agent.wiring import Component, ComponentFactory, Services, Wiring, mqtt_client

if TYPE_CHECKING:
    from edge_agent.grpc.server import GrpcServer

log = logging.getLogger(__name__)

class Agent:
    """One device's serving process. See the module docstring for the life cycle."""

    def __init__(self, config: AgentConfig, *, link: MessageLink | None = None,
                 runtime: Runtime | None = None, hooks: Hooks | None = None,
                 registry: ModelRegistry | None = None,
                 components: Sequence[str | ComponentFactory] | None = None) -> None:
        """``link`` replaces the MQTT connection for sources (tests); ``hooks`` and ``registry``
        replace the event hooks and model registry (the fleet simulator shares models
        between agents: its registry emits on the hooks it is given);
        ``components`` are built-in names (``telemetry``, ``update``, ``systemd``) or
        builders taking :class:`~edge_agent.wiring.Services` (default: ``[agent]
        components``, else every built-in one that its configuration turns on)."""
        a = config.agent
        self.config = config
        self.device_id = a.device_id
        self.profile: DeviceProfile = load_profile(detect_profile() if a.profile == "auto"
                                                   else a.profile)
        self.hooks = hooks or Hooks()
        self.events: collections.deque[AgentEvent] = collections.deque(maxlen=50)
        self.hooks.on_event(self.events.append)
        self.store = ModelStore(a.store_dir, max_bundle_bytes=a.max_bundle_bytes,
                                device_key=a.device_key_path)
        try:
            self.store.ensure()
        except OSError as e:
            raise ConfigError(f"cannot use store directory {a.store_dir} ({e.strerror or e}); "
                              "set agent.store_dir or --store", source=config.source,
                              key="agent.store_dir") from e
        self.runtime_probes: dict[str, Any] | None = None
        self.runtime = runtime or self._select_runtime()
        workers, threads = default_split(self.profile, os.cpu_count())
        self.threads = a.threads or threads
        self.delegate_error: str | None = None
        self.registry = registry or ModelRegistry(
            self.runtime, self.hooks, workers=a.workers or workers,
            num_threads=self.threads,
            delegates=self._delegates(), max_loaded_versions=a.max_loaded_versions)
        if self.registry.delegates is not None:  # bundle variants may require it
            self.registry.delegate = self.profile.delegate
        self.registry.failover_policy = FailoverPolicy(
            a.variant_backoff_s, max(a.variant_backoff_s, a.variant_backoff_max_s),
            a.variant_check_timeout_s, failover_rules(a, self.profile))
        self.loader = ModelLoader(self.store, self.registry, self.hooks,
                                  verify_golden=a.verify_golden,
                                  max_loaded_versions=a.max_loaded_versions,
                                  delegate_error=self.delegate_error,
                                  describe=f"{self.runtime}, {self.threads} threads",
                                  variant_probe=self._variant_probe())
        self.metrics = Metrics()
        self.metrics.attach(self.hooks)
        # every image decode in this process (REST, MQTT, watch) shares one memory budget
        process_budget().configure(budget_for(self.profile.memory_budget_mb),
                                   max_image_factor=a.max_image_factor)
        h = config.http
        for model, labels in h.version_labels:  # /labels/{label} URLs (docs/rest.md)
            for label, version in labels:
                self.registry.set_label(model, label, version)
        self.admission = Admission(self.registry.workers, h.queue_size,
                                   retry_after_s=h.retry_after_s)
        self.metrics.queue_source = self.admission.snapshot
        self.metrics.model_names = self.registry.names
        self.metrics.set_build_info(version=edge_agent.__version__, runtime=str(self.runtime),
                                    profile=self.profile.name,
                                    python=platform.python_version())
        self.metrics.add_collector(SystemCollector(SystemSampler(
            None, thermal_paths=tuple(self.profile.thermal_paths),
            throttling_path=self.profile.throttling_path)))
        self._telemetry_metrics = False
        self.http: HttpServer | None = None
        if h.enabled:
            self.http = HttpServer(h.host, h.port, token=h.token, max_body_bytes=h.max_body_bytes,
                                   max_connections=h.max_connections,
                                   max_connections_per_client=h.max_connections_per_client,
                                   idle_timeout_s=h.idle_timeout_s,
                                   head_timeout_s=h.head_timeout_s,
                                   body_timeout_s=h.body_timeout_s,
                                   on_response=self.metrics.observe_http,
                                   admin_token=h.admin_token)
            api = ServingApi(self.registry, self.admission, self.metrics,
                             max_batch=h.max_batch, max_image_pixels=a.max_image_pixels,
                             ready=self._ready, status=self.status,
                             failures=self.loader.failures_of)
            api.register(self.http)
            V2Api(api).register(self.http)  # KServe v2 REST (docs/kserve.md)
        self.grpc: GrpcServer | None = self._grpc_server() if config.grpc.enabled else None
        self.components: list[Component] = []
        self.sources: list[Source] = []
        self.started_at: float | None = None
        self._components = components
        self.mqtt = mqtt_client(config.mqtt, self.device_id, self.hooks) if (
            config.mqtt is not None and link is None) else None
        self._link = link
        self.wiring = Wiring(Services(config=config, view=self.view(), hooks=self.hooks,
                                      registry=self.registry, store=self.store, http=self.http,
                                      mqtt=self.mqtt))
        self.metrics.add_collector(ShadowCollector(  # docs/metrics.md: edge_agent_shadow_*
            lambda: current_run(self.wiring.update_service)))
        self._capabilities: dict[str, Any] | None = None
        self._lock = threading.RLock()

    def _grpc_server(self) -> GrpcServer:
        """TF Serving and KServe v2 over gRPC, on the same data plane as REST (``[grpc]``;
        grpc is imported only then)."""
        from edge_agent.grpc.kserve import KServeService
        from edge_agent.grpc.server import GrpcServer
        from edge_agent.grpc.tfs import Limits, TfServingService

        plane = DataPlane(self.registry, self.admission, self.metrics,
                          failures=self.loader.failures_of)
        limits = Limits(max_batch=self.config.http.max_batch,
                        max_image_pixels=self.config.agent.max_image_pixels)
        return GrpcServer(config=self.config.grpc, tf_serving=TfServingService(plane, limits),
                          kserve=KServeService(plane, limits, self._ready),
                          metrics=self.metrics)

    def view(self) -> AgentView:
        """What components may ask of this agent (see :mod:`edge_agent.agent_view`)."""
        return AgentView(device_id=self.device_id, profile=self.profile,
                         runtime_name=self.runtime.name, runtime_version=self.runtime.version,
                         status=self.status, reload=self.reload,
                         started_at=lambda: self.started_at,
                         capabilities=lambda: self.capabilities, queue_depth=self.queue_depth,
                         redacted_config=self.config.redacted)

    # ------------------------------------------------------------------ runtime

    def _select_runtime(self) -> Runtime:
        a, p = self.config.agent, self.profile
        names = [a.runtime] if a.runtime != "auto" else [c.name for c in p.runtimes]
        mins = {c.name: c.min_version for c in p.runtimes}
        if not a.probe_runtime:
            return select_runtime(names, mins)
        sel = select_probed_runtime(names, state_dir=self.store.root / "state",
                                    min_versions=mins)
        for v in sel.verdicts:
            level, kind, message, data = v.event()
            if not v.ok or not v.cached:
                self.hooks.emit_event(level, kind, message, **data)
        self.runtime_probes = sel.as_dict()
        return sel.runtime

    def _variant_probe(self) -> VariantProbe | None:
        """With ``probe_runtime``: each variant of a bundle probed in a child before it is
        loaded here (edge_agent.runtime.variant_probe)."""
        if not self.config.agent.probe_runtime:
            return None
        from edge_agent.runtime.variant_probe import probe_variants

        return lambda bundle, names: probe_variants(
            bundle, names, runtime=self.runtime, state_dir=self.store.root / "state",
            device_key=self.store.device_key)

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

    @property
    def load_failures(self) -> dict[str, dict[int, str]]:
        return self.loader.failures

    def install_bundle(self, bundle: Bundle | str | Path, activate: bool = True) -> ServedModel:
        """Install into the store and load (serving it if ``activate``). Raises on failure."""
        with self._lock:
            return self.loader.install(bundle, activate=activate)

    def reload(self) -> list[str]:
        """Rescan the store (see :meth:`ModelLoader.reload`); one line per change."""
        with self._lock:
            return self.loader.reload()

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
            self.loader.install_configured(self.config.models)
            self.loader.load_store()
            if self.http is not None:
                self.http.start()
            if self.grpc is not None:
                self.grpc.start()
            self._start_components()
            self._start_sources()
            self.started_at = time.time()
            self.metrics.started_at = self.started_at
            _release_free_memory()
        served = ", ".join(self.registry.names()) or "no models"
        where = f" on {self.http.url}" if self.http else ""
        where += f" and gRPC {self.grpc.address}" if self.grpc else ""
        self.hooks.emit_event("info", EventKind.AGENT_STARTED,
                              f"{self.device_id}: serving {served}{where}",
                              device_id=self.device_id, profile=self.profile.name,
                              runtime=str(self.runtime))

    def _factories(self) -> list[ComponentFactory]:
        chosen = self._components
        if chosen is None:
            return self.wiring.factories()
        out: list[ComponentFactory] = []
        for c in chosen:
            out += self.wiring.factories([c]) if isinstance(c, str) else [c]
        return out

    def _start_components(self) -> None:
        for factory in self._factories():
            comp = factory(self.wiring.s)  # ConfigError here fails the start, by design
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
        t = self.wiring.telemetry_service
        if t is not None and not self._telemetry_metrics:  # drift and outbox on /metrics
            self.metrics.add_collector(t.metrics_collector())
            self._telemetry_metrics = True
        if self.mqtt is not None:
            self.mqtt.start()  # idempotent: telemetry normally started it with its Will

    def message_link(self) -> MessageLink | None:
        """The MQTT connection sources use: the one given, else the agent's own client."""
        return self._link if self._link is not None else self.mqtt

    def _start_sources(self) -> None:
        link = self.message_link() if wants_link(self.config) else None
        for make in source_factories(self.config, self.registry, self.hooks, link=link,
                                     durable=self.wiring.durable_publisher):
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
            if self.grpc is not None:
                self.grpc.stop()
            if self.http is not None:
                self.http.stop(in_flight=self.admission.in_flight)
            for src in reversed(self.sources):
                _quietly(src.stop, f"source {src.name}")
            self.sources.clear()
            for comp in reversed(self.components):
                _quietly(comp.stop, f"component {type(comp).__name__}")
            self.components.clear()
            if self.mqtt is not None:
                _quietly(self.mqtt.stop, "the MQTT connection")
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
        caps += ["grpc"] if self.grpc else []
        caps += [f"source:{s.name}" for s in self.sources]
        caps += [f"component:{type(x).__name__}" for x in self.components]
        caps.append(f"delegate:{'cpu' if self.delegate_error else self.profile.delegate}")
        caps += ["token-auth"] if c.http.enabled and c.http.token else []
        return caps

    def runtime_capabilities(self) -> dict[str, Any]:
        if self._capabilities is None:
            self._capabilities = runtime_capabilities(self.runtime).as_dict()
        return self._capabilities

    def queue_depth(self) -> int:
        """Requests waiting for an interpreter: HTTP admission plus MQTT request queues."""
        return self.admission.queue_depth() + sum(
            s.queue_depth() for s in self.sources if isinstance(s, MqttRequestSource))

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: identity, runtime, models, capabilities, load, uptime."""
        queue = self.queue_depth()
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
            "load_failures": self.loader.failures_json(),
            "capabilities": self.capabilities,
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at else 0.0,
            "queue_depth": queue,
            "in_flight": self.admission.in_flight(),
            "http": {"url": self.http.url, "connections": self.http.open_connections()}
            if self.http else None,
            "recent_events": [{"level": e.level, "kind": e.kind, "message": e.message,
                               "at": e.at} for e in list(self.events)[-10:]],
            "device_key": self._device_key_status(),
        }

    def _device_key_status(self) -> dict[str, Any] | None:
        """Fingerprints of ``[agent] device_key`` (and its ``.previous``): the recipient ids
        sealed bundles must name to open here (docs/security.md, rotation)."""
        path = self.config.agent.device_key_path
        if not path.is_file():
            return None
        from edge_agent.crypto.device_key import DeviceKeys  # cryptography only if keyed

        return {"path": str(path), "fingerprints": DeviceKeys(path).fingerprints()}


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
