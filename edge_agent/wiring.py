"""Typed composition: the validated config and the agent's shared parts → its components.

The agent builds one :class:`Services` (config, a read-only :class:`AgentView`, hooks,
registry, store, HTTP server and the one MQTT client, which this module creates), and
:class:`Wiring` turns it into each built-in component with that component's own typed
dependencies (:class:`~edge_agent.telemetry.service.TelemetryDeps`,
:class:`~edge_agent.update.flow.FlowDeps`, the notifier's callables). Components are
imported directly; none receives the agent, none probes for attributes::

    Services ──► Wiring.telemetry()  → TelemetryService(TelemetryDeps)   needs [mqtt] url
             ├─► Wiring.capture()    → CaptureService(CaptureDeps)        needs [capture] enabled
             ├─► Wiring.update()     → UpdateService(FlowDeps)            needs [update]
             ├─► Wiring.homeassistant() → HomeAssistantService            [homeassistant] on
             ├─► Wiring.systemd()    → SystemdNotifier(health, status)    needs $NOTIFY_SOCKET
             └─► Wiring.dashboard()  → Dashboard(DashboardDeps)           needs [http] ui

The update flow pulls in tuf and cryptography (~11 MB): it is imported only when
``[update]`` is configured; the telemetry component (psutil, the monitors) only with
``[mqtt] url``.

Raises ConfigError (a trust anchor that is missing or is not TUF root metadata).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge_agent.agent_view import AgentView
from edge_agent.config import COMPONENTS, AgentConfig
from edge_agent.hooks import Hooks
from edge_agent.protocol.kinds import DeviceState, EventKind
from edge_agent.registry import ModelRegistry
from edge_agent.serving.http import HttpServer
from edge_agent.store import ModelStore

if TYPE_CHECKING:  # imported where built: an agent without [mqtt] / [update] / ui never loads them
    from edge_agent.capture.service import CaptureService
    from edge_agent.homeassistant.service import HomeAssistantService
    from edge_agent.mqtt.client import MqttClient
    from edge_agent.mqtt.config import MqttConfig
    from edge_agent.mqtt.publisher import Publisher
    from edge_agent.systemd import SystemdNotifier
    from edge_agent.telemetry.service import TelemetryService
    from edge_agent.ui import Dashboard
    from edge_agent.update.service import UpdateService


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Services:
    """The agent's shared parts, by name and type (what component builders receive)."""

    config: AgentConfig
    view: AgentView
    hooks: Hooks
    registry: ModelRegistry
    store: ModelStore
    http: HttpServer | None
    mqtt: MqttClient | None  # None without [mqtt] url (or when a test link replaces it)


ComponentFactory = Callable[[Services], "Component | None"]


def device_groups(config: AgentConfig) -> tuple[str, ...]:
    """``[agent] groups`` then ``[update] groups``: the group topics this device reads."""
    upd = config.update.groups if config.update is not None else ()
    return tuple(dict.fromkeys((*config.agent.groups, *upd)))


def mqtt_client(cfg: MqttConfig, device_id: str, hooks: Hooks) -> MqttClient:
    """The agent's one MQTT connection (a broker allows one per client id = device id).

    Handler exceptions and oversized payloads on any subscribed topic become
    ``mqtt.bad_message`` error events, rate-limited per device and kind and emitted off the
    dispatch thread (:mod:`edge_agent.mqtt.error_events`). The telemetry component replaces
    the default Last Will (a bare offline status) with its enveloped one.
    """
    from edge_agent.mqtt.client import MqttClient, Will
    from edge_agent.mqtt.error_events import hook_events
    from edge_agent.mqtt.topics import Topics

    topics = Topics(device_id, cfg.topic_prefix)
    events = hook_events(device_id, hooks)

    def on_error(topic: str, exc: BaseException) -> None:
        events.report(EventKind.MQTT_BAD_MESSAGE, f"message on {topic} rejected: {exc}",
                      topic=topic, error=type(exc).__name__)

    return MqttClient(config=cfg, client_id=device_id,
                      will=Will(topics.status, json.dumps({"state": DeviceState.OFFLINE.value},
                                                          separators=(",", ":")).encode(),
                                qos=1, retain=True),
                      on_handler_error=on_error)


class Wiring:
    """Builds the built-in components from :class:`Services` and keeps the ones built.

    ``env`` (default ``os.environ``) is read only for ``$NOTIFY_SOCKET``.
    """

    def __init__(self, services: Services, *, env: Mapping[str, str] | None = None) -> None:
        self.s = services
        self.env = os.environ if env is None else env
        self.telemetry_service: TelemetryService | None = None
        self.update_service: UpdateService | None = None
        self.capture_service: CaptureService | None = None

    def factories(self, names: Sequence[str] | None = None) -> list[ComponentFactory]:
        """Builders for ``names`` (default: ``[agent] components``, else all) in start order."""
        table: dict[str, ComponentFactory] = {"telemetry": lambda _s: self.telemetry(),
                                              "capture": lambda _s: self.capture(),
                                              "update": lambda _s: self.update(),
                                              "homeassistant": lambda _s: self.homeassistant(),
                                              "systemd": lambda _s: self.systemd(),
                                              "dashboard": lambda _s: self.dashboard()}
        wanted = set(names) if names is not None else {
            n for n in COMPONENTS if self.s.config.wants(n)}
        return [table[n] for n in COMPONENTS if n in wanted]

    def durable_publisher(self) -> Publisher | None:
        """The telemetry outbox's publisher (results, events); None without telemetry."""
        t = self.telemetry_service
        return t.publisher if t is not None else None

    def update_status(self) -> dict[str, object] | None:
        u = self.update_service
        return u.status() if u is not None else None

    # ---- the components ----------------------------------------------------------------

    def telemetry(self) -> TelemetryService | None:
        """Presence, figures, events, commands, feedback: needs ``[mqtt] url``."""
        s, c = self.s, self.s.config
        if c.mqtt is None or s.mqtt is None:
            return None
        from edge_agent.telemetry.service import TelemetryDeps, TelemetryService

        self.telemetry_service = TelemetryService(TelemetryDeps(
            agent=s.view, mqtt=c.mqtt, config=c.telemetry, client=s.mqtt, registry=s.registry,
            hooks=s.hooks, http=s.http, store_root=Path(s.store.root),
            groups=device_groups(c), update_status=self.update_status,
            mqtt_requests=c.mqtt_requests.enabled, signed_updates=c.update is not None,
            capture_counters=self.capture_counters))
        return self.telemetry_service

    def capture_counters(self) -> dict[str, int] | None:
        cs = self.capture_service
        return cs.counters() if cs is not None else None

    def capture(self) -> CaptureService | None:
        """Data capture: needs ``[capture] enabled``; pulled over telemetry's commands."""
        cfg = self.s.config.capture
        if not cfg.enabled:
            return None
        from edge_agent.capture.service import CaptureDeps, CaptureService

        t = self.telemetry_service
        self.capture_service = CaptureService(CaptureDeps(
            config=cfg, registry=self.s.registry, hooks=self.s.hooks,
            store_root=Path(self.s.store.root),
            quality=(lambda: t.last_quality) if t is not None else dict,
            add_command=t.commands.add if t is not None else None,
            on_feedback=t.on_feedback if t is not None else None))
        return self.capture_service

    def update(self) -> UpdateService | None:
        """Signed updates: needs an enabled ``[update]`` section with a valid TUF root."""
        s, cfg = self.s, self.s.config.update
        if cfg is None or not cfg.enabled:
            return None
        from edge_agent.update.service import UpdateService, check_root

        check_root(cfg)
        from edge_agent.update.check import CheckSetup
        from edge_agent.update.flow import FlowDeps
        from edge_agent.update.policy import DeviceIdentity

        mcfg = s.config.mqtt
        prof, reg = s.view.profile, s.registry
        check = CheckSetup(reg.runtime.name, reg.num_threads,  # build interpreters like `reg`
                           delegate_library=prof.delegate_library if reg.delegates else None,
                           memory_budget_mb=prof.memory_budget_mb, profile=prof.name)
        deps = FlowDeps(registry=s.registry, store=s.store, hooks=s.hooks,
                        identity=DeviceIdentity(s.view.device_id, device_groups(s.config),
                                                s.view.profile.name),
                        config=cfg, update_dir=cfg.dir or Path(s.store.root) / "update",
                        client=s.mqtt, topic_prefix=mcfg.topic_prefix if mcfg else "edge",
                        check_setup=check, busy=lambda: s.view.queue_depth() > 0)
        self.update_service = UpdateService(deps, client=s.mqtt, http=s.http)
        return self.update_service

    def homeassistant(self) -> HomeAssistantService | None:
        """Home Assistant discovery: needs ``[homeassistant] enabled`` and ``[mqtt] url``."""
        s, c = self.s, self.s.config
        if not c.homeassistant.enabled or c.mqtt is None or s.mqtt is None:
            return None
        from edge_agent.homeassistant.service import HomeAssistantDeps, HomeAssistantService
        from edge_agent.mqtt.topics import Topics

        return HomeAssistantService(HomeAssistantDeps(
            config=c.homeassistant, topics=Topics(s.view.device_id, c.mqtt.topic_prefix),
            profile=s.view.profile.name, client=s.mqtt, registry=s.registry, hooks=s.hooks,
            update=lambda: self.update_service))

    def dashboard(self) -> Dashboard | None:
        """The device dashboard at ``/ui/``: needs the HTTP server and ``[http] ui``."""
        s = self.s
        if s.http is None or not s.config.http.ui:
            return None
        from edge_agent.ui import Dashboard, DashboardDeps

        def telemetry() -> dict[str, object] | None:
            t = self.telemetry_service
            return t.last if t is not None else None

        return Dashboard(DashboardDeps(http=s.http, hooks=s.hooks, registry=s.registry,
                                       store=s.store, view=s.view,
                                       store_root=Path(s.store.root), telemetry=telemetry,
                                       update=lambda: self.update_service))

    def systemd(self) -> SystemdNotifier | None:
        """READY=1 and the watchdog: only when started by systemd (``$NOTIFY_SOCKET``)."""
        if not self.env.get("NOTIFY_SOCKET"):
            return None
        from edge_agent.systemd import SystemdNotifier

        view, registry = self.s.view, self.s.registry

        def status() -> str:
            return f"serving {', '.join(registry.names()) or 'no models'}"

        http = self.s.http
        return SystemdNotifier(health=lambda: isinstance(view.status(), dict), status=status,
                               env=self.env, stalled=http.stalled_s if http else None)
