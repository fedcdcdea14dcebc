"""Incoming messages: subscriptions, and the thread that runs their handlers.

Handlers never run on the network thread (a slow one would stall keepalives): the
network thread only matches the topic (:class:`Subscriptions`) and queues a call;
:class:`Dispatcher` runs the calls one at a time, in arrival order. Payloads over a
subscription's own ``max_bytes`` are refused here, unparsed (its ``on_oversize`` may still
answer them, e.g. a 413 reply), and handler exceptions are reported through ``on_error`` —
never raised into paho.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.errors import InvalidRequestError
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

ErrorHook = Callable[[str, BaseException], None]
Listener = Callable[[], None]


@dataclass(frozen=True)
class Message:
    """An incoming message with the MQTT 5 request/response fields when present."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(eq=False)
class Subscription:
    topic_filter: str
    handler: Callable[[Message], None]
    qos: int
    max_bytes: int  # this subscription's payload limit (a larger one is not handed over)
    on_oversize: Callable[[Message], None] | None = None  # answer the refused payload


def check_filter(topic_filter: str) -> str:
    """Validate a subscription filter (MQTT 3.1.1 §4.7). Raises ValueError."""
    if not topic_filter or len(topic_filter.encode()) > 65535:
        raise ValueError(f"bad topic filter {topic_filter!r}")
    levels = topic_filter.split("/")
    for i, lvl in enumerate(levels):
        if ("#" in lvl and (lvl != "#" or i != len(levels) - 1)) or ("+" in lvl and lvl != "+"):
            raise ValueError(f"bad topic filter {topic_filter!r}: wildcards must fill a level "
                             "and # must be last")
    return topic_filter


class Dispatcher:
    """A bounded queue of calls and the one thread that runs them (restartable)."""

    def __init__(self, name: str, maxsize: int = 1000,
                 on_error: ErrorHook | None = None) -> None:
        self.name = name
        self.maxsize = maxsize
        self.on_error = on_error
        self.dropped = 0  # calls lost because the queue was full
        self.rejected = 0  # messages refused: over the size limit, or their handler raised
        self._q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = NamedThread(target=self._loop, daemon=True, name=self.name)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Run what is queued, then stop (waits at most ``timeout_s``)."""
        if self._thread is None:
            return
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        self._thread = None
        self._q = queue.Queue(self.maxsize)

    def call(self, fn: Callable[[], None]) -> None:
        """Queue ``fn``; never blocks (a full queue drops it and counts)."""
        try:
            self._q.put_nowait(fn)
        except queue.Full:
            self.dropped += 1
            log.warning("mqtt: dispatch queue full, dropped a message (%d so far)", self.dropped)

    def deliver(self, sub: Subscription, msg: Message) -> None:
        self.call(lambda: self._deliver(sub, msg))

    def _loop(self) -> None:
        q = self._q
        while True:
            fn = q.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:
                log.exception("mqtt listener failed")

    def _deliver(self, s: Subscription, m: Message) -> None:
        if len(m.payload) > s.max_bytes:
            if s.on_oversize is not None:
                try:
                    s.on_oversize(m)
                except Exception:
                    log.exception("mqtt: on_oversize for %s failed", m.topic)
            self._error(m.topic, InvalidRequestError(
                f"payload of {len(m.payload)} bytes on {m.topic} exceeds the {s.max_bytes}-byte "
                "limit; ignored"))
            return
        try:
            s.handler(m)
        except Exception as e:
            self._error(m.topic, e)

    def _error(self, topic: str, e: BaseException) -> None:
        self.rejected += 1
        log.warning("mqtt: message on %s rejected: %s", topic, e)
        if self.on_error is not None:
            try:
                self.on_error(topic, e)
            except Exception:
                log.exception("on_handler_error failed")


class Subscriptions:
    """Who hears what: the subscriptions and connection listeners of one client.

    It survives reconnects (the client renews :meth:`filters` on every CONNACK) and hands
    every call to ``dispatcher``. It shares the client's ``lock`` so that adding a
    subscription or listener and reading the connection state are one atomic step.
    """

    def __init__(self, dispatcher: Dispatcher, lock: threading.RLock) -> None:
        self._dispatch = dispatcher
        self._lock = lock
        self._subs: list[Subscription] = []
        self._listeners: list[tuple[Listener | None, Listener | None]] = []

    def add(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.append(sub)

    def remove(self, sub: Subscription) -> bool:
        """Forget ``sub``; True if no other subscription uses its filter (unsubscribe it)."""
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
            return not any(s.topic_filter == sub.topic_filter for s in self._subs)

    def filters(self) -> dict[str, int]:
        """Each subscribed filter with the highest QoS asked for it (to renew on connect)."""
        with self._lock:
            subs: dict[str, int] = {}
            for s in self._subs:
                subs[s.topic_filter] = max(subs.get(s.topic_filter, 0), s.qos)
        return subs

    def route(self, m: Message) -> None:
        """Queue ``m`` for every subscription whose filter matches its topic."""
        from paho.mqtt.client import topic_matches_sub  # paho only once a message comes

        with self._lock:
            subs = [s for s in self._subs if topic_matches_sub(s.topic_filter, m.topic)]
        for s in subs:
            self._dispatch.deliver(s, m)

    def add_listener(self, on_connect: Listener | None, on_disconnect: Listener | None
                     ) -> tuple[Listener | None, Listener | None]:
        item = (on_connect, on_disconnect)
        with self._lock:
            self._listeners.append(item)
        return item

    def remove_listener(self, item: tuple[Listener | None, Listener | None]) -> None:
        with self._lock:
            if item in self._listeners:
                self._listeners.remove(item)

    def notify(self, *, connected: bool) -> None:
        """Queue every listener's ``on_connect`` (or ``on_disconnect``)."""
        with self._lock:
            cbs = [on if connected else off for on, off in self._listeners]
        for cb in cbs:
            if cb is not None:
                self._dispatch.call(cb)

