"""The Home Assistant component (opt-in ``[homeassistant] enabled = true``): the IO shell
around :mod:`edge_agent.homeassistant.discovery`.

On every (re)connect it retains the device's discovery document; it keeps
``edge/<device>/ha/state`` (retained) current — at most every ``state_interval_s``, when
something changed: the served versions, the newest version an update event named, whether
an update is in progress, the last top-1 label and confidence per model. An install press
on ``edge/<device>/ha/install`` (``{"model": "<name>"}``, at most ``MAX_PRESS_BYTES``)
asks the update component to run again, now, the announcements the fleet retained for this
device (:meth:`~edge_agent.update.service.UpdateService.install_announced`): verified like
any announcement, so a press can never install anything unsigned. A press with nothing
announced (or without ``[update]``) gets an ``update.rejected`` event with code
``nothing_announced`` / ``updates_disabled`` and changes nothing.

:meth:`remove` publishes the empty retained payloads that remove the device from Home
Assistant (``edge-agent install-service --remove`` calls it: :func:`remove_discovery`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edge_agent.errors import ModelError
from edge_agent.homeassistant.config import HomeAssistantConfig
from edge_agent.homeassistant.discovery import (
    ModelEntityState,
    discovery,
    discovery_topic,
    removal,
    state,
)
from edge_agent.hooks import AgentEvent, Hooks, PredictionRecord
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import ModelRegistry
from edge_agent.threadname import NamedThread

if TYPE_CHECKING:
    from edge_agent.update.service import UpdateService

log = logging.getLogger(__name__)

MAX_PRESS_BYTES = 256
# update events that start / end an update of a model (the update entity's in_progress)
_STARTS = {EventKind.UPDATE_NOTIFIED, EventKind.UPDATE_DOWNLOADING}
_ENDS = {EventKind.UPDATE_COMMITTED, EventKind.UPDATE_ROLLED_BACK, EventKind.UPDATE_REJECTED,
         EventKind.UPDATE_FAILED, EventKind.UPDATE_IGNORED}


@dataclass(frozen=True)
class HomeAssistantDeps:
    config: HomeAssistantConfig
    topics: Topics
    profile: str
    client: MqttClient
    registry: ModelRegistry
    hooks: Hooks
    update: Callable[[], UpdateService | None]  # the update component, once built


class HomeAssistantService:
    def __init__(self, deps: HomeAssistantDeps) -> None:
        self.d = deps
        self._lock = threading.Lock()
        self._models: dict[str, ModelEntityState] = {}
        self._labels: dict[tuple[str, int], tuple[str, ...]] = {}
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._undo: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self.presses = 0

    # --- lifecycle ---

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._refresh_models()
        h, c = self.d.hooks, self.d.client
        self._undo += [h.on_prediction(self._on_prediction), h.on_event(self._on_event),
                       h.on_models_changed(self._on_models_changed),
                       c.subscribe(self.d.topics.ha_install, self._on_press, qos=1,
                                   max_bytes=MAX_PRESS_BYTES),
                       c.add_listener(on_connect=self._on_connect)]
        self._thread = NamedThread(target=self._loop, name="edge-homeassistant",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        for u in self._undo:
            u()
        self._undo.clear()
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    # --- what is published ---

    @property
    def discovery_topic(self) -> str:
        return discovery_topic(self.d.config.prefix, self.d.topics.device)

    def discovery_payload(self) -> bytes:
        with self._lock:
            names = sorted(self._models)
        doc = discovery(self.d.topics, profile=self.d.profile, models=names)
        return json.dumps(doc, separators=(",", ":")).encode()

    def state_payload(self) -> bytes:
        with self._lock:
            models = dict(self._models)
        return json.dumps(state(models), separators=(",", ":")).encode()

    def _on_connect(self) -> None:
        self.d.client.publish(self.discovery_topic, self.discovery_payload(), 1, True)
        self._dirty.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            if not self.d.client.publish(self.d.topics.ha_state, self.state_payload(), 1, True):
                self._dirty.set()  # disconnected: again after the next connect
            self._stop.wait(self.d.config.state_interval_s)

    def remove(self) -> None:
        """Remove this device from Home Assistant (empty retained discovery and state)."""
        remove_discovery(self.d.client, self.d.config, self.d.topics, wait_s=5.0)

    # --- inputs ---

    def _refresh_models(self) -> None:
        active = {m["name"]: m.get("active") for m in self.d.registry.snapshot()}
        with self._lock:
            for name in list(self._models):
                if name not in active:
                    del self._models[name]
            for name, v in active.items():
                cur = self._models.get(name, ModelEntityState(None))
                self._models[name] = replace(cur, installed=v if isinstance(v, int) else None)

    def _on_models_changed(self) -> None:
        before = set(self._models)
        self._refresh_models()
        if set(self._models) != before and self.d.client.is_connected:
            self._on_connect()  # new entities
        self._dirty.set()

    def _on_prediction(self, rec: PredictionRecord) -> None:
        if not rec.ok or rec.top1 is None or rec.confidence is None or not len(rec.top1):
            return
        idx, conf = int(rec.top1[-1]), float(rec.confidence[-1])
        label = self._label(rec.model, rec.version, idx)
        with self._lock:
            cur = self._models.get(rec.model)
            if cur is None:
                return
            self._models[rec.model] = replace(cur, label=label, confidence=round(conf, 4))
        self._dirty.set()

    def _label(self, model: str, version: int, idx: int) -> str:
        key = (model, version)
        labels = self._labels.get(key)
        if labels is None:
            try:
                labels = tuple(self.d.registry.get(model, version).manifest.labels)
            except ModelError:
                labels = ()
            self._labels = {**dict(list(self._labels.items())[-15:]), key: labels}
        return labels[idx] if 0 <= idx < len(labels) else str(idx)

    def _on_event(self, ev: AgentEvent) -> None:
        if not ev.kind.startswith("update."):
            return
        name, version = ev.data.get("name"), ev.data.get("version")
        with self._lock:
            cur = self._models.get(name) if isinstance(name, str) else None
            if cur is None:
                return
            latest = cur.latest
            if isinstance(version, int) and not isinstance(version, bool) \
                    and ev.kind != EventKind.UPDATE_ROLLED_BACK:
                latest = max(version, latest or 0)
            busy = True if ev.kind in _STARTS else False if ev.kind in _ENDS else cur.in_progress
            self._models[str(name)] = replace(cur, latest=latest, in_progress=busy)
        if ev.kind in _ENDS or ev.kind == EventKind.UPDATE_ACTIVATED:
            self._refresh_models()
        self._dirty.set()

    def _on_press(self, _topic: str, payload: bytes) -> None:
        """An install press: run the announced signed update again, now; never more."""
        self.presses += 1
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        model = doc.get("model") if isinstance(doc, dict) else None
        if not isinstance(model, str) or model not in self._models:
            self.d.hooks.emit_event(
                "warning", EventKind.UPDATE_REJECTED,
                f"Home Assistant install press refused: payload must be "
                f"{{\"model\": <one of {sorted(self._models)}>}}, got {payload[:80]!r}",
                code="bad_press", source="homeassistant")
            return
        upd = self.d.update()
        n = upd.install_announced() if upd is not None else 0
        if n == 0:
            code = "nothing_announced" if upd is not None else "updates_disabled"
            why = ("the fleet has announced no update to this device" if upd is not None
                   else "signed updates ([update]) are not enabled on this device")
            self.d.hooks.emit_event("warning", EventKind.UPDATE_REJECTED,
                                    f"Home Assistant install of {model}: nothing to install: "
                                    f"{why}", code=code, name=model, source="homeassistant")
            return
        log.info("homeassistant: install press for %s: %d announcement(s) queued", model, n)
        self.d.hooks.emit_event("info", EventKind.UPDATE_NOTIFIED,
                                f"Home Assistant install press: running the {n} signed "
                                f"announcement(s) the fleet sent", name=model,
                                source="homeassistant")


def _setter(ev: threading.Event) -> Callable[[int], None]:
    return lambda _rc: ev.set()


def remove_discovery(client: MqttClient, config: HomeAssistantConfig, topics: Topics, *,
                     wait_s: float = 0.0) -> bool:
    """Publish the empty retained messages that remove ``topics.device`` from Home
    Assistant: its discovery document and its entities' state. With ``wait_s``, wait that
    long for the broker's acknowledgements; True when both were acknowledged."""
    acks = [threading.Event(), threading.Event()]
    for t, ev in zip((discovery_topic(config.prefix, topics.device), topics.ha_state), acks,
                     strict=True):
        client.publish(t, removal(), 1, True, on_ack=_setter(ev))
    return all(ev.wait(wait_s) for ev in acks) if wait_s > 0 else False
