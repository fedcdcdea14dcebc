"""The update component: announcements in, the :class:`UpdateFlow` on one worker thread.

Built by :mod:`edge_agent.wiring` (typed :class:`~edge_agent.update.flow.FlowDeps`) when
``[update]`` is configured and enabled. It subscribes to ``edge/<device>/update/announce`` and
``edge/group/<g>/update/announce`` on the agent's shared MQTT client; handlers only
queue the payload (latest per topic wins). The worker first resumes whatever
``state.json`` says was interrupted, then processes announcements one at a time and
retries transient failures with a backoff per announcement (``retry_backoff_s``,
doubling up to ``retry_backoff_max_s``; :mod:`edge_agent.update.retry`), remembered
across restarts: the retained copy of an announcement that just failed (a dripping
mirror) waits out its backoff instead of taking the worker again at once, while an
announcement with other bytes (a new release) runs as soon as the worker is free.
``GET /v1/agent/update`` shows the status (``backoff`` lists the announcements waiting);
``POST /v1/agent/update/announce`` accepts an announcement body from a local
operator (USB stick, air-gapped site): it is verified exactly like one from MQTT. When
``[http] admin_token`` is set it needs that token (403 with the data token).

:func:`check_root` raises ConfigError for a missing or non-root trust anchor (at start).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.topics import FleetTopics, Topics
from edge_agent.protocol.kinds import UPDATE_STOPPED, EventKind, UpdateResult
from edge_agent.serving.http import HttpServer, Request
from edge_agent.threadname import NamedThread
from edge_agent.update.config import UpdateConfig
from edge_agent.update.retry import RetryBook
from edge_agent.update.state import Outcome

if TYPE_CHECKING:  # the flow pulls in tuf + cryptography (~11 MB): only when [update] is on
    from edge_agent.serving.http import HttpServer, Request
    from edge_agent.update.flow import FlowDeps, UpdateFlow

log = logging.getLogger(__name__)

LOCAL_TOPIC = "local"


def check_root(cfg: UpdateConfig) -> None:
    """Refuse to start with a trust anchor that is missing or not TUF root metadata."""
    from tuf.api.metadata import Metadata, Root

    try:
        md = Metadata.from_bytes(cfg.root_file.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read the provisioned TUF root: {e.strerror}",
                          source=cfg.source, key="update.root_file") from e
    except Exception as e:  # tuf's DeserializationError
        raise ConfigError(f"{cfg.root_file} is not TUF metadata ({e})", source=cfg.source,
                          key="update.root_file") from e
    if not isinstance(md.signed, Root):
        raise ConfigError(f"{cfg.root_file} holds {md.signed.type} metadata, not root",
                          source=cfg.source, key="update.root_file")


class UpdateService:
    """Start/stop, announcement intake, retry scheduling (see the module docstring)."""

    def __init__(self, deps: FlowDeps, *, client: MqttClient | None = None,
                 http: HttpServer | None = None) -> None:
        self.deps = deps
        self.client = client
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, bytes] = OrderedDict()  # topic → latest payload
        self._announced: dict[str, bytes] = {}  # topic → its latest announcement (kept)
        self._retry: dict[str, tuple[bytes, float]] = {}  # topic → payload, monotonic due
        cfg = deps.config
        self._book = RetryBook(deps.update_dir / "retry.json", cfg.retry_backoff_s,
                               cfg.retry_backoff_max_s)
        self._unsubs: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self.flow: UpdateFlow | None = None
        self.outcomes: list[Outcome] = []
        self._busy = False
        self._subscribed = False
        if http is not None:
            self.register_routes(http)

    @property
    def topics(self) -> list[str]:
        d = self.deps
        fleet = FleetTopics(d.topic_prefix)
        return [Topics(d.identity.device, d.topic_prefix).announce,
                *(fleet.group_announce(g) for g in d.identity.groups)]

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        from edge_agent.update.flow import UpdateFlow

        self._book.load()

        self.flow = UpdateFlow(self.deps, self._stop)
        self._thread = NamedThread(target=self._worker, name="edge-update", daemon=True)
        self._thread.start()
        client = self.client
        if client is not None:
            # subscribe once connected (the client renews it after every reconnect):
            # a subscription made while a connection is being set up can be lost
            self._unsubs.append(client.add_listener(on_connect=self._subscribe))
            client.start()  # idempotent; normally the telemetry component started it already

    def _subscribe(self) -> None:
        client = self.deps.client
        with self._cond:
            if self._subscribed or client is None:
                return
            self._subscribed = True
        for t in self.topics:
            self._unsubs.append(client.subscribe(
                t, self.submit, qos=1, max_bytes=self.deps.config.max_announcement_bytes))

    def stop(self, timeout_s: float = 10.0) -> None:
        for u in self._unsubs:
            u()
        self._unsubs.clear()
        self._subscribed = False
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.flow is not None:
            self.flow.close()

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue an announcement (MQTT handler thread or HTTP): quick, never blocks."""
        with self._cond:
            self._pending.pop(topic, None)
            self._pending[topic] = payload
            self._retry.pop(topic, None)
            if payload:
                self._announced[topic] = payload
            else:  # an empty retained message: the announcement was withdrawn
                self._announced.pop(topic, None)
            self._cond.notify_all()

    def install_announced(self) -> int:
        """Run again, now, the latest announcement of each topic (an operator's "install"
        press, e.g. Home Assistant's): each is verified like any other, so nothing but
        what the fleet signed for this device can install; one that failed lately skips
        its backoff. Returns how many were queued (0: nothing was announced)."""
        with self._cond:
            items = list(self._announced.items())
            for topic, payload in items:
                self._book.settled(_digest(payload))
                self._pending.pop(topic, None)
                self._pending[topic] = payload
                self._retry.pop(topic, None)
            self._cond.notify_all()
        return len(items)

    def idle(self) -> bool:
        """Nothing queued and nothing running (tests, demos)."""
        with self._cond:
            return not self._pending and not self._busy

    def _next(self) -> tuple[str, bytes] | None:
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._pending:
                    topic, payload = self._pending.popitem(last=False)
                    wait = self._book.wait_s(_digest(payload))
                    if wait > 0:  # failed lately (e.g. its retained copy after a restart)
                        log.info("update: announcement on %s failed lately; retried in "
                                 "%.0f s", topic, wait)
                        self._retry[topic] = (payload, now + wait)
                        continue
                    self._busy = True
                    return topic, payload
                due = [(t, p) for t, (p, at) in self._retry.items() if at <= now]
                if due:
                    topic, payload = due[0]
                    del self._retry[topic]
                    self._busy = True
                    return topic, payload
                if self._retry:  # asleep until the next retry is due, a submit() or stop()
                    self._cond.wait(max(0.05, min(at for _, at in self._retry.values()) - now))
                else:  # nothing to retry: asleep until submit() or stop() notifies
                    self._cond.wait()
        return None

    def _worker(self) -> None:
        flow = self.flow
        assert flow is not None
        try:
            digest = flow.state.announce_digest
            out = flow.resume()
            if out is not None:
                self.outcomes.append(out)
                if digest:
                    with self._cond:
                        self._record(digest, out)
        except Exception:
            log.exception("update: resuming the interrupted update failed")
        while not self._stop.is_set():
            item = self._next()
            if item is None:
                break
            topic, payload = item
            try:
                out = flow.handle(payload, topic)
            except Exception as e:  # a bug, not an attack: say so, keep the agent serving
                log.exception("update: internal error")
                self.deps.hooks.emit_event("error", EventKind.UPDATE_FAILED, f"internal error: {e}",
                                           code="internal", reason=str(e))
                out = None
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if out is None:
                continue
            self.outcomes = [*self.outcomes[-31:], out]
            with self._cond:
                delay = self._record(_digest(payload), out)
                if delay is not None and not self._stop.is_set() \
                        and topic not in self._pending:
                    self._retry[topic] = (payload, time.monotonic() + delay)

    def _record(self, digest: str, out: Outcome) -> float | None:
        """Book ``out`` of announcement ``digest``; its backoff when it failed in transport."""
        if out.result == UpdateResult.FAILED:
            return self._book.failed(digest)
        if out.result != UpdateResult.INTERRUPTED:
            self._book.settled(digest)
        return None

    # --- status and routes ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        d: dict[str, Any] = self.flow.status() if self.flow else {"phase": UPDATE_STOPPED}
        d["topics"] = self.topics
        d["queued"] = len(self._pending)
        with self._cond:
            d["retry_pending"] = len(self._retry)
            d["backoff"] = self._book.status()
        return d

    def register_routes(self, http: HttpServer) -> None:
        http.add_route("GET", "/v1/agent/update", lambda r: (200, self.status()),
                       name="update_status")

        def announce(req: Request) -> tuple[int, dict[str, Any]]:
            if http.admin_enabled and not http.is_admin(req.headers):  # control, not data
                return 403, {"error": "admin action: send the admin token ('Authorization: "
                                      "Bearer <http.admin_token>'); the data token only reads"}
            body = req.body
            if len(body) > self.deps.config.max_announcement_bytes:
                return 413, {"error": "announcement too large"}
            self.submit(LOCAL_TOPIC, body)
            return 202, {"queued": True}
        http.add_route("POST", "/v1/agent/update/announce", announce, name="update_announce")


def _digest(payload: bytes) -> str:
    """An announcement's identity: the sha256 of its payload (as ``Announcement.digest``)."""
    return hashlib.sha256(payload).hexdigest()
