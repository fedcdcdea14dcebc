"""The telemetry component: the agent's presence, figures and quality on MQTT.

Built by :mod:`edge_agent.wiring` from :class:`TelemetryDeps` when ``[mqtt] url`` is set.
It owns the life cycle of the agent's one :class:`~edge_agent.mqtt.client.MqttClient` and:

* publishes a retained birth on ``edge/<device>/status`` after every (re)connect and
  whenever the served models change; the Last Will (and a clean stop) set it offline.
  Every status carries ``boot_id`` and ``session`` (the connection number) so consumers
  order the Will after the births of its connection (:mod:`edge_agent.protocol.order`);
* every ``interval_s`` puts a telemetry message (system, per-model stats, quality and
  feedback metrics, outbox state) in the outbox;
* forwards every :class:`~edge_agent.hooks.AgentEvent` to ``edge/<device>/events``;
* answers commands (:mod:`edge_agent.telemetry.commands`);
* takes label feedback on ``edge/<device>/feedback`` and ``POST /v1/models/<name>:feedback``.

Everything published durably goes through the SQLite outbox
(:mod:`edge_agent.mqtt.outbox`) and survives outages and restarts.

Configuration errors are raised earlier, by :func:`edge_agent.config.load_config`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edge_agent
from edge_agent.agent_view import AgentView
from edge_agent.errors import EdgeError, InvalidRequestError
from edge_agent.hooks import AgentEvent, Hooks, PredictionRecord
from edge_agent.monitor.feedback import FeedbackItem, parse_feedback
from edge_agent.mqtt.client import MqttClient, Will
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.forwarder import Forwarder
from edge_agent.mqtt.outbox import Outbox
from edge_agent.mqtt.payloads import envelope, parse_json
from edge_agent.mqtt.publisher import Publisher
from edge_agent.mqtt.topics import FleetTopics, Topics
from edge_agent.protocol import (
    DeviceState,
    EventKind,
    ModelSummary,
    RuntimeInfo,
    Status,
    Telemetry,
    UpdateSummary,
)
from edge_agent.registry import ModelRegistry
from edge_agent.serving.http import HttpServer, Request
from edge_agent.telemetry.commands import CommandHandler
from edge_agent.telemetry.config import TelemetryConfig
from edge_agent.telemetry.monitoring import ModelMonitor
from edge_agent.telemetry.prom import TelemetryCollector
from edge_agent.telemetry.sample import Sample, sample_of
from edge_agent.telemetry.stats import ModelStats
from edge_agent.telemetry.system import SystemSampler
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

FEEDBACK_ROUTE = r"/v1/models/(?P<name>[^/:]+):feedback"
DRAIN_S = 0.1  # how long queued prediction records wait before they are folded (batching)
INPUT_SAMPLES_PER_S = 20.0  # input tensors whose channel means feed the drift monitor
# events after which the retained status is republished: update outcomes (fleet
# rollouts), and the agent's start (sources and started_at exist only from then on)
BIRTH_EVENTS = frozenset({EventKind.UPDATE_PROBATION, EventKind.UPDATE_COMMITTED,
                          EventKind.UPDATE_ROLLED_BACK, EventKind.UPDATE_REJECTED,
                          EventKind.UPDATE_FAILED, EventKind.AGENT_STARTED})


@dataclass(frozen=True)
class TelemetryDeps:
    """Everything the telemetry component uses, built by :mod:`edge_agent.wiring`."""

    agent: AgentView
    mqtt: MqttConfig
    config: TelemetryConfig
    client: MqttClient  # the agent's one connection; this component owns its life cycle
    registry: ModelRegistry
    hooks: Hooks
    http: HttpServer | None
    store_root: Path  # the outbox lives below it unless [mqtt] outbox_path says otherwise
    groups: tuple[str, ...]  # the group topics this device reads (rollouts need them)
    update_status: Callable[[], dict[str, Any] | None]  # None: no update component
    mqtt_requests: bool = False  # [mqtt_requests] is on (a capability)
    signed_updates: bool = False  # [update] is configured (a capability)
    capture_counters: Callable[[], dict[str, int] | None] = lambda: None  # None: capture off


class TelemetryService:
    """See module docstring. ``start``/``stop`` are idempotent."""

    def __init__(self, deps: TelemetryDeps) -> None:
        self.deps = deps
        self.agent = deps.agent
        self.hooks = deps.hooks
        self.mcfg = mcfg = deps.mqtt
        self.cfg = tcfg = deps.config
        self.interval_s = tcfg.interval_or(deps.agent.profile.telemetry_interval_s)
        self.topics = Topics(deps.agent.device_id, mcfg.topic_prefix)
        self.client = client = deps.client
        client.will = self._will
        client.farewell = lambda: self._status_will("shutdown")
        self.outbox = Outbox(mcfg.outbox_path or deps.store_root / "telemetry" / "outbox.sqlite3",
                             max_messages=mcfg.outbox_max_messages,
                             max_bytes=mcfg.outbox_max_bytes)
        self.publisher = Publisher(self.topics, self.outbox, client)
        self.forwarder = Forwarder(self.outbox, client, window=mcfg.max_inflight,
                                   on_refused=self._refused)
        self.stats = ModelStats(tcfg.latency_samples)
        self.monitor = ModelMonitor(deps.registry, tcfg, deps.hooks.emit_event)
        profile = deps.agent.profile
        self.system = SystemSampler(deps.store_root, thermal_paths=tuple(profile.thermal_paths),
                                    throttling_path=profile.throttling_path)
        self.commands = CommandHandler(deps.agent, deps.registry.snapshot, self.topics.reply,
                                       self._reply)
        self._undo: list[Callable[[], None]] = []
        self._pending: collections.deque[Sample] = collections.deque()
        self._drain_lock = threading.Lock()
        self._next_input_sample = 0.0
        self._drainer: threading.Thread | None = None
        self._stop = threading.Event()
        # set by the first record after a drain: the drainer sleeps while nothing is queued
        self._queued = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._status_wanted_at = -1e9  # monotonic time of the last answered status want
        self._last_dropped = self.outbox.stats().dropped
        self._refused_at: dict[str, float] = {}
        self._dropped_event_at = -1e9
        self._drop_lock = threading.Lock()
        self.started_at = time.time()
        self.boot_id = uuid.uuid4().hex[:16]  # changes with every process start
        self.ticks = 0
        self.last: dict[str, Any] | None = None  # the last body published (dashboard)
        self.tick_cpu_s = 0.0  # CPU time spent building telemetry (bench/telemetry.py)
        self.drain_cpu_s = 0.0  # CPU time spent folding prediction records
        # per model, the last tick's quality report (the /metrics drift gauges read it)
        self.last_quality: dict[str, dict[str, Any]] = {}
        self._feedback_listeners: list[Callable[[list[FeedbackItem]], None]] = []
        if self.outbox.reset_reason:
            deps.hooks.emit_event("error", EventKind.OUTBOX_RESET, self.outbox.reset_reason)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.started_at = time.time()
        self._stop.clear()
        hooks = self.hooks
        self._undo += [hooks.on_prediction(self._on_prediction),
                       hooks.on_event(self._on_event),
                       hooks.on_models_changed(self._publish_birth)]
        c = self.client
        self._undo.append(c.add_listener(on_connect=self._on_connect))
        if self.cfg.commands:
            self.commands.start()
            self._undo.append(c.subscribe_message(self.topics.cmd_filter, self.commands.handle))
        self._undo.append(c.subscribe(self.topics.feedback, self._mqtt_feedback))
        fleet = FleetTopics(self.topics.prefix)
        for g in self._groups():  # a fleet tool on another cluster node asks for our status
            self._undo.append(c.subscribe(fleet.group_status_want(g), self._status_wanted,
                                          max_bytes=1024))
        http = self.deps.http
        if http is not None:
            http.add_route("POST", FEEDBACK_ROUTE, self._http_feedback, name="feedback")
        self.forwarder.start()
        self._drainer = NamedThread(target=self._drain_loop, daemon=True,
                                         name="telemetry-drain")
        self._drainer.start()
        c.start()
        if self.cfg.enabled:
            self._thread = NamedThread(target=self._loop, daemon=True, name="telemetry")
            self._thread.start()
        log.info("telemetry: %s as %s every %g s", self.mcfg.urls, self.topics.device,
                 self.interval_s)

    def stop(self) -> None:
        """Stop the loop, give the outbox a moment to drain, publish offline, disconnect."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._queued.set()  # wake the drainer
        for th in (self._thread, self._drainer):
            if th is not None:
                th.join(5)
        self._thread = self._drainer = None
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.commands.stop()
        self.forwarder.stop(drain_s=1.0 if self.client.is_connected else 0.0)
        self.client.stop()
        self.outbox.close()

    # ---- status ----------------------------------------------------------------------

    def _status_will(self, reason: str, session: int | None = None) -> Will:
        # offline group members stay known (fleet rollouts); boot_id + session let a
        # consumer order it after this connection's births (edge_agent.protocol.order)
        body = Status(DeviceState.OFFLINE, edge_agent.__version__, tuple(self._groups()),
                      reason=reason, boot_id=self.boot_id,
                      session=self.client.connects if session is None else session).to_dict()
        return Will(self.topics.status, envelope(self.topics.device, self.outbox.last_seq(),
                                                 body), qos=1, retain=True)

    def _will(self) -> Will:
        # resolved at CONNECT, before the CONNACK that makes it connection number connects+1
        return self._status_will("connection lost", self.client.connects + 1)

    def birth(self) -> dict[str, Any]:
        a = self.agent
        return Status(
            DeviceState.ONLINE,
            agent_version=edge_agent.__version__,
            profile=a.profile.name,
            runtime=RuntimeInfo(a.runtime_name, a.runtime_version),
            models=tuple(ModelSummary.from_dict(m) for m in self.deps.registry.snapshot()),
            capabilities=tuple(self.capabilities()),
            started_at=a.started_at() or self.started_at,
            boot_id=self.boot_id,
            telemetry_interval_s=self.interval_s if self.cfg.enabled else None,
            mqtt_protocol=self.client.protocol,
            # Added for fleet operations (issue 7): group membership for rollouts and the
            # update machine's phase and last outcome, so a restarted rollout and
            # `edge-fleet status` can read them from the retained status.
            groups=tuple(self._groups()),
            update=self._update_summary(),
            session=self.client.connects,
        ).to_dict()

    def _groups(self) -> list[str]:
        """``[agent] groups`` plus ``[update] groups``: the group topics this device reads."""
        return list(self.deps.groups)

    def _update_summary(self) -> UpdateSummary | None:
        """Phase, target and last outcome of the update component, if it runs."""
        try:
            d = self.deps.update_status()
            return UpdateSummary.from_dict(d) if d is not None else None
        except Exception:
            log.debug("update status failed", exc_info=True)
            return None

    def capabilities(self) -> list[str]:
        """What this device can do, for fleet tools deciding what to send it."""
        caps = {"telemetry", "events", "feedback", "drift", "store-and-forward"}
        if self.cfg.commands:
            caps |= {f"cmd:{name}" for name in self.commands.commands}
        if self.deps.http is not None:
            caps.add("rest")
        if self.deps.mqtt_requests:
            caps.add("mqtt-requests")
        if self.deps.signed_updates:
            caps.add("signed-updates")
        caps |= set(self.agent.capabilities())
        return sorted(caps)

    def _publish_birth(self) -> None:
        if self.client.is_connected:
            self.publisher.live(self.topics.status, self.birth(), retain=True)

    def _status_wanted(self, _topic: str, _payload: bytes) -> None:
        """``edge/group/<g>/status/want``: publish the status again, at most once a second
        (many tools asking at once cost one status; edge_agent.protocol.wants)."""
        now = time.monotonic()
        if now - self._status_wanted_at >= 1.0:
            self._status_wanted_at = now
            self._publish_birth()

    # ---- hooks -----------------------------------------------------------------------

    def _on_prediction(self, rec: PredictionRecord) -> None:
        # The serving path: one tuple and one deque append (thread-safe, ~0.3 µs), plus an
        # input-mean sample at most INPUT_SAMPLES_PER_S times a second. The rest is batched.
        self._pending.append(sample_of(rec))
        if not self._queued.is_set():  # one lock per batch, not per record
            self._queued.set()
        if rec.inputs_raw is not None:
            now = time.monotonic()
            if now >= self._next_input_sample:
                self._next_input_sample = now + 1.0 / INPUT_SAMPLES_PER_S
                self.monitor.sample_inputs(rec)

    def drain(self) -> int:
        """Fold queued prediction records into stats, quality windows and the request-id
        memory; returns how many. Called DRAIN_S after the first record queued since the
        last drain (never while nothing is queued), and before telemetry and feedback."""
        with self._drain_lock:
            q = self._pending
            recs = [q.popleft() for _ in range(len(q))]
            if recs:
                self.stats.record_many(recs)
                self.monitor.add_many(recs)
            return len(recs)

    def _drain_loop(self) -> None:
        # Event-driven: asleep until a record is queued, then DRAIN_S more to batch. A record
        # queued after the clear below sets the event again (drained now or next round).
        while True:
            self._queued.wait()
            if self._stop.wait(DRAIN_S):
                return
            self._queued.clear()
            c0 = time.thread_time()
            try:
                self.drain()
            except Exception:
                log.exception("telemetry: folding prediction records failed")
            self.drain_cpu_s += time.thread_time() - c0

    def _on_event(self, ev: AgentEvent) -> None:
        self.publisher.event(ev)
        if ev.kind in BIRTH_EVENTS:  # the status carries the update phase and outcome
            self._publish_birth()

    def _refused(self, seq: int, topic: str, rc: int) -> None:
        # An event about a refused event would be refused too (and loop): log only. Other
        # topics: one event per topic and minute.
        now = time.monotonic()
        if topic == self.topics.events or now - self._refused_at.get(topic, -1e9) < 60:
            return
        self._refused_at[topic] = now
        self.hooks.emit_event("error", EventKind.MQTT_PUBLISH_REFUSED,
                                    f"broker refused message {seq} on {topic} (reason {rc:#x}); "
                                    "check the broker ACL", seq=seq, topic=topic, reason=rc)

    # ---- telemetry loop --------------------------------------------------------------

    def _loop(self) -> None:
        interval = self.interval_s
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            if next_at < time.monotonic():  # fell behind (suspend, overload): skip ticks
                next_at = time.monotonic() + interval
            c0 = time.thread_time()
            try:
                self.last = body = self.telemetry()  # the dashboard charts it
                self.publisher.durable(self.topics.telemetry, body)
            except EdgeError as e:
                log.error("telemetry: %s", e)
            except Exception:
                log.exception("telemetry tick failed")
            self.tick_cpu_s += time.thread_time() - c0
            self.ticks += 1

    def telemetry(self) -> dict[str, Any]:
        """One telemetry body (also used by tests and the bench)."""
        self.drain()
        models = self.stats.snapshot()
        report = self.monitor.report()
        for name, extra in report.items():
            models.setdefault(name, {}).update(extra)
        self.last_quality = {n: e["quality"] for n, e in report.items() if "quality" in e}
        ob = self.outbox.stats()
        self._report_drops(ob.dropped)
        started = self.agent.started_at() or self.started_at
        return Telemetry(
            interval_s=self.interval_s,
            uptime_s=round(time.time() - started, 3) if started else None,
            system=self.system.sample(),
            models=models,
            queue={"outbox": ob.depth, "outbox_bytes": ob.bytes,
                   "outbox_oldest_age_s": ob.oldest_age_s, "outbox_dropped": ob.dropped,
                   "outbox_refused": ob.refused, "requests": self._request_queue()},
            mqtt={"connects": self.client.connects, "protocol": self.client.protocol,
                  "dropped_incoming": self.client.dropped_incoming,
                  "rejected_incoming": self.client.rejected_incoming,
                  "refused_subscriptions": self.client.refused_subscriptions},
            capture=self.deps.capture_counters(),
        ).to_dict()

    def metrics_collector(self) -> TelemetryCollector:
        """Drift and outbox gauges for ``/metrics`` (:mod:`edge_agent.telemetry.prom`)."""
        return TelemetryCollector(lambda: self.last_quality, self.outbox.stats)

    def _report_drops(self, dropped_total: int, *, force: bool = False) -> None:
        """An ``outbox.dropped`` event: when delivery resumes (``force``), else at most one
        a minute (while the queue is full every event pushes out another message)."""
        now = time.monotonic()
        with self._drop_lock:
            new = dropped_total - self._last_dropped
            if new <= 0 or (not force and now - self._dropped_event_at < 60):
                return
            self._dropped_event_at = now
            self._last_dropped = dropped_total
        self.hooks.emit_event(
            "warning", EventKind.OUTBOX_DROPPED, f"store-and-forward queue full "
            f"({self.mcfg.outbox_max_messages} messages): {new} oldest dropped",
            dropped=new, dropped_total=dropped_total)

    def _on_connect(self) -> None:
        self._publish_birth()
        self._report_drops(self.outbox.stats().dropped, force=True)

    def _request_queue(self) -> int | None:
        """Requests waiting for an interpreter (HTTP admission plus MQTT request queues)."""
        try:
            return self.agent.queue_depth()
        except Exception:
            log.debug("queue depth failed", exc_info=True)
            return None

    # ---- commands and feedback ---------------------------------------------------------

    def _reply(self, topic: str, body: dict[str, Any], corr: bytes | None) -> None:
        self.publisher.live(topic, body, correlation=corr)

    def _mqtt_feedback(self, topic: str, payload: bytes) -> None:
        """``edge/<device>/feedback``; malformed documents raise (→ an error event)."""
        items = parse_feedback(parse_json(payload, "feedback"))
        self.drain()  # predictions made just before the feedback must be joinable
        res = self.monitor.apply_feedback(items)
        self._tell_feedback(items)
        if res.unknown or res.rejected:
            log.info("feedback on %s: %s", topic, res.to_dict())

    def _http_feedback(self, req: Request) -> tuple[int, Any]:
        name = str(req.params["name"])
        self.deps.registry.get(name)  # NotFoundError → 404
        try:
            doc = req.json()
        except EdgeError:
            raise
        except Exception as e:
            raise InvalidRequestError(f"feedback: body is not JSON ({e})") from e
        items = parse_feedback(doc, model=name)
        self.drain()
        res = self.monitor.apply_feedback(items)
        self._tell_feedback(items)
        return 200, res.to_dict()

    def on_feedback(self, cb: Callable[[list[FeedbackItem]], None]) -> None:
        """``cb(items)`` after accepted label feedback (data capture keeps disagreements)."""
        self._feedback_listeners.append(cb)

    def _tell_feedback(self, items: list[FeedbackItem]) -> None:
        for cb in list(self._feedback_listeners):
            try:
                cb(items)
            except Exception:
                log.exception("feedback listener failed")
