"""One MQTT connection per agent, kept alive: the transport every MQTT feature shares.

:class:`MqttClient` wraps paho-mqtt 2.x (``CallbackAPIVersion.VERSION2``) and owns two
threads: the *network* thread (connect, ``loop()``, reconnect with exponential backoff and
jitter) and the *dispatch* thread, on which every subscription handler and connection
listener runs, in arrival order. Handlers therefore never stall keepalives, but a slow
handler delays the handlers behind it: hand long work to your own thread.

Each connection attempt uses a fresh paho client, so nothing paho queued in memory for a
dead connection is ever re-sent behind our back: durable delivery (resend after reconnect,
delete after PUBACK) is the outbox's job (:mod:`edge_agent.mqtt.outbox`), not paho's.

``protocol="auto"`` speaks MQTT 5 and falls back to 3.1.1 when the broker refuses it
(amqtt, old brokers); the working version is kept for later reconnects, per broker.

With several brokers (``[mqtt] brokers``, e.g. the nodes of a cluster) a failed attempt
moves on to the next one in the list, with the same backoff; a lost connection is retried
on the broker it was on first. Subscriptions are renewed on whichever broker answers.

There must be one client per device id (a broker drops the older of two connections with
the same client id): inside the agent get it from :func:`edge_agent.mqtt.shared_client`.

Around it: :class:`~edge_agent.mqtt.dispatch.Subscriptions` (who hears what) and
:mod:`edge_agent.mqtt.session` (one attempt's paho client and PUBACK table). What stays here
(~500 lines) is one class because its network thread, publish path and paho callbacks share
one lock and one connection state.

Raises :class:`~edge_agent.mqtt.errors.MqttConnectError` from :meth:`connect` /
:meth:`wait_connected` (with ``kind`` = tls / auth / socket / protocol / timeout).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.mqtt import diagnose
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.dispatch import (
    Dispatcher,
    ErrorHook,
    Message,
    Subscription,
    Subscriptions,
    check_filter,
)
from edge_agent.mqtt.errors import MqttConnectError
from edge_agent.mqtt.session import (
    AckCallback,
    AckTable,
    Will,
    loop_timeout_s,
    new_paho,
    resolve,
)
from edge_agent.mqtt.suback import Refusal, SubAckTable
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

__all__ = ["AckCallback", "Handler", "Message", "MqttClient", "Will", "check_filter"]

Handler = Callable[[str, bytes], None]

_V5, _V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311
_PUBLISH_OK = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE)


class MqttClient:
    """A self-healing MQTT connection with durable subscriptions (see module docstring)."""

    def __init__(self, *, config: MqttConfig, client_id: str,
                 will: Will | Callable[[], Will] | None = None,
                 farewell: Will | Callable[[], Will] | None = None,
                 on_handler_error: ErrorHook | None = None,
                 dispatch_queue: int = 1000) -> None:
        if not client_id:
            raise ValueError("client_id must not be empty")
        self.config = config
        self.client_id = config.client_id or client_id
        self.will = will  # a callable is re-evaluated at every connect (fresh seq, state)
        self.farewell = farewell
        self.on_handler_error = on_handler_error
        self._ssl = config.ssl_context() if any(b.tls for b in config.broker_list) else None
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._paho: paho.Client | None = None
        self._connected = False
        self._acks = AckTable(self._lock)
        self._subacks = SubAckTable()
        self._stop = threading.Event()
        self._net: threading.Thread | None = None
        self._dispatch = Dispatcher(f"mqtt-dispatch-{self.client_id}", dispatch_queue,
                                    self._on_handler_error)
        self._subs = Subscriptions(self._dispatch, self._lock)
        first = _V311 if config.protocol == "3.1.1" else _V5
        self._protocols = [first] * len(config.broker_list)  # the working version, per broker
        self._broker = 0  # index into config.broker_list of the current (or next) attempt
        self.last_error: MqttConnectError | None = None
        self.connects = 0  # successful CONNACKs so far (tests, telemetry)
        self._attempt_log: list[str] = []
        self._conn_refusal: MqttConnectError | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (idempotent). Never blocks on the network."""
        with self._lock:
            if self._net is not None:
                return
            self._stop.clear()
            self._dispatch.start()
            self._net = NamedThread(target=self._net_loop, daemon=True,
                                         name=f"mqtt-net-{self.client_id}")
            self._net.start()

    def connect(self, timeout_s: float | None = None) -> None:
        """Start and wait for the first CONNACK. Raises MqttConnectError (clear reason)."""
        self.start()
        self.wait_connected(timeout_s if timeout_s is not None else self.config.connect_timeout_s,
                            raise_error=True)

    def wait_connected(self, timeout_s: float, *, raise_error: bool = False) -> bool:
        """Block until connected (True) or ``timeout_s`` passes (False, or raise the reason).

        With ``raise_error`` a TLS or authentication refusal raises at once rather than
        after the timeout: it will not fix itself.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._connected:
                err = self.last_error
                if raise_error and err is not None and err.kind in ("tls", "auth"):
                    raise err
                left = deadline - time.monotonic()
                if left <= 0:
                    if not raise_error:
                        return False
                    if err is not None:
                        raise err
                    raise MqttConnectError(f"no connection to {self.config.urls} within "
                                           f"{timeout_s:g} s", kind="timeout")
                self._cond.wait(min(left, 0.2))
        return True

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def epoch(self) -> int:
        """Changes with every new connection (the number of successful connects)."""
        return self.connects

    @property
    def _protocol(self) -> MQTTProtocolVersion:
        return self._protocols[self._broker]

    @property
    def protocol(self) -> str:
        """``"5"`` or ``"3.1.1"``: what the current (or next) connection speaks."""
        return "5" if self._protocol == _V5 else "3.1.1"

    @property
    def broker_url(self) -> str:
        """The broker of the current (or next) connection attempt."""
        return self.config.broker_list[self._broker].url

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish ``farewell`` (the clean-shutdown offline status) if connected, disconnect
        (so the broker discards the Last Will), and join both threads. Idempotent."""
        with self._lock:
            net = self._net
            if net is None:
                return
        bye = resolve(self.farewell, "farewell")
        if bye is not None and self._connected:
            done = threading.Event()
            if self.publish(bye.topic, bye.payload, bye.qos, bye.retain,
                            on_ack=lambda _rc: done.set()):
                done.wait(min(2.0, timeout_s))
        self._stop.set()
        with self._lock:
            c = self._paho
        if c is not None:
            try:
                c.disconnect()
            except Exception:  # a dying socket: the loop below notices too
                log.debug("disconnect failed", exc_info=True)
        net.join(timeout_s)
        self._dispatch.stop(timeout_s)
        with self._lock:
            self._net = None

    # ---- pub/sub ---------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, *,
                on_ack: AckCallback | None = None, properties: Properties | None = None,
                epoch: int | None = None) -> bool:
        """Hand a message to the live connection; False (nothing sent) when disconnected.

        With ``epoch`` (a value of :attr:`epoch` read earlier) nothing is sent either when
        the connection has been replaced since: the outbox uses this to never send a
        message on a new connection before the ones it must resend first.

        ``on_ack(reason_code)`` runs on the network thread when the broker acknowledged
        it (QoS 1/2) or when it was written (QoS 0); it must be quick. Messages that must
        survive outages go through the outbox instead.
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        # Never call into paho holding self._lock: paho runs our callbacks (which take it)
        # while holding its own locks, so the other order would deadlock (see AckTable).
        with self._lock:
            c = self._paho
            if c is None or not self._connected or (epoch is not None and epoch != self.connects):
                return False
            if on_ack is not None:
                self._acks.begin()
        info = None
        try:
            info = c.publish(topic, data, qos=qos, retain=retain, properties=properties)
        except (ValueError, OSError) as e:
            log.warning("publish to %s failed: %s", topic, e)
        finally:
            early = None
            if on_ack is not None:
                with self._lock:
                    sent = info is not None and info.rc in _PUBLISH_OK and self._paho is c
                    mid = info.mid if sent and info is not None else None
                    early = self._acks.end(mid, on_ack)
        if info is None or info.rc not in _PUBLISH_OK:
            return False
        if early is not None and on_ack is not None:
            on_ack(early)  # the ack raced ahead of our bookkeeping
        return True

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, *,
                  max_bytes: int | None = None) -> Callable[[], None]:
        """Call ``handler(topic, payload)`` for every matching message, on the dispatch thread.

        The subscription is renewed after every reconnect. Payloads over ``max_bytes``
        (this subscription's limit, default ``config.max_incoming_bytes``) are not passed
        on; ``on_handler_error`` hears about them, and about handlers that raise. Returns
        an unsubscribe function.
        """
        return self.subscribe_message(topic_filter, lambda m: handler(m.topic, m.payload), qos,
                                      max_bytes=max_bytes)

    def subscribe_message(self, topic_filter: str, handler: Callable[[Message], None],
                          qos: int = 1, *, max_bytes: int | None = None,
                          on_oversize: Callable[[Message], None] | None = None
                          ) -> Callable[[], None]:
        """Like :meth:`subscribe` but the handler gets a :class:`Message` (MQTT 5 fields).

        ``on_oversize(message)`` runs (on the dispatch thread) for a payload over
        ``max_bytes`` instead of the handler, so a request can still be answered (413).
        """
        check_filter(topic_filter)
        sub = Subscription(topic_filter, handler, qos,
                           max_bytes or self.config.max_incoming_bytes, on_oversize)
        with self._lock:
            self._subs.add(sub)
            c = self._paho if self._connected else None
        if c is not None:
            self._subscribe(c, {topic_filter: qos})

        def remove() -> None:
            with self._lock:
                last = self._subs.remove(sub)
                c = self._paho if self._connected else None
            if c is not None and last:
                c.unsubscribe(topic_filter)
        return remove

    def wait_subscribed(self, topic_filters: str | list[str], timeout_s: float) -> bool:
        """Block until the broker granted every filter on the current connection (True),
        or refused one or ``timeout_s`` passed (False; see :attr:`refused_subscriptions`)."""
        filters = [topic_filters] if isinstance(topic_filters, str) else topic_filters
        return self._subacks.wait(filters, timeout_s)

    @property
    def refused_subscriptions(self) -> dict[str, str]:
        """Filter → the broker's reason, for subscriptions its last SUBACK refused (an ACL
        that does not let this device read the topic, a filter the broker does not take)."""
        return self._subacks.refused

    def _subscribe(self, c: paho.Client, filters: dict[str, int]) -> None:
        """Send one SUBSCRIBE for ``filters`` and track its SUBACK (never holding a lock:
        paho may run the SUBACK callback before this returns)."""
        try:
            rc, mid = c.subscribe(list(filters.items()))
        except (ValueError, OSError) as e:
            log.warning("mqtt: could not subscribe to %s: %s", ", ".join(filters), e)
            return
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._report_refused(self._subacks.sent(mid, list(filters)))

    @staticmethod
    def _report_refused(refusals: list[Refusal]) -> None:
        for r in refusals:
            log.error("mqtt: the broker refused the subscription to %s (%s): this device "
                      "will not receive those messages; check the broker's ACL for it",
                      r.topic_filter, r.reason)

    def add_listener(self, *, on_connect: Callable[[], None] | None = None,
                     on_disconnect: Callable[[], None] | None = None) -> Callable[[], None]:
        """Run ``on_connect`` after every successful (re)connect and subscription renewal,
        ``on_disconnect`` after every loss; both on the dispatch thread."""
        with self._lock:
            item = self._subs.add_listener(on_connect, on_disconnect)
            connected = self._connected
        if connected and on_connect is not None:
            self._dispatch.call(on_connect)
        return lambda: self._subs.remove_listener(item)

    # ---- network thread --------------------------------------------------------------

    def _make_paho(self, cfg: MqttConfig, protocol: MQTTProtocolVersion) -> paho.Client:
        c = new_paho(cfg, self.client_id, protocol, self._ssl,
                     resolve(self.will, "will"))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_log = self._on_log
        return c

    def _net_loop(self) -> None:
        failures = 0
        n = len(self.config.broker_list)
        while not self._stop.is_set():
            i = self._broker
            cfg = self.config.at(i)
            err = self._session(cfg, self._protocols[i])
            if err is not None and err.kind == "protocol" and self.config.protocol == "auto" \
                    and self._protocols[i] == _V5 and not self._stop.is_set():
                log.info("%s refused MQTT 5 (%s); trying MQTT 3.1.1", cfg.url, err)
                self._protocols[i] = _V311
                err = self._session(cfg, _V311)
                if err is not None and err.kind == "protocol":
                    self._protocols[i] = _V5
            if self._stop.is_set():
                break
            if err is None:
                failures = 0  # the connection was up: start backing off from scratch
            else:
                failures += 1
                self._set_error(err)
                if n > 1:
                    self._broker = (i + 1) % n  # fail over: the next broker in the list
                    log.info("mqtt: %s failed; next attempt on %s", cfg.url, self.broker_url)
            delay = min(self.config.reconnect_max_s,
                        self.config.reconnect_min_s * 2 ** min(failures, 30))
            self._stop.wait(random.uniform(delay / 2, delay))  # "equal jitter" backoff

    def _session(self, cfg: MqttConfig, protocol: MQTTProtocolVersion
                 ) -> MqttConnectError | None:
        """One connection attempt to the broker of ``cfg`` and its lifetime. None if it
        got connected at all."""
        c = self._make_paho(cfg, protocol)
        self._attempt_log = []
        self._conn_refusal = None
        props = None
        if protocol == _V5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        try:
            if protocol == _V5:
                c.connect(cfg.host, cfg.port, cfg.keepalive_s, clean_start=True,
                          properties=props)
            else:
                c.connect(cfg.host, cfg.port, cfg.keepalive_s)
        except OSError as e:  # includes ssl.SSLError
            return diagnose.connect_failure(e, cfg)
        with self._lock:
            self._paho = c
        got_connack = False
        stop_deadline: float | None = None
        # A broker that does not speak MQTT 5 may just stay silent (amqtt does): give up
        # on the CONNACK early in auto mode so the 3.1.1 fallback is quick.
        connack_wait = self.config.connect_timeout_s
        if protocol == _V5 and self.config.protocol == "auto":
            connack_wait = min(connack_wait, 3.0)
        connack_deadline = time.monotonic() + connack_wait
        try:
            while True:
                if not got_connack and not self._connected and self._conn_refusal is None \
                        and time.monotonic() > connack_deadline:
                    self._attempt_log.append(f"no CONNACK within {connack_wait:g} s")
                    break
                if self._stop.is_set():
                    # stop() sent DISCONNECT: let the loop flush it, but not forever
                    stop_deadline = stop_deadline or time.monotonic() + 2.0
                    if not self._connected or time.monotonic() > stop_deadline:
                        break
                # sleep until paho's next keepalive check, the CONNACK deadline or the
                # stop deadline; packets, publishes and disconnect() wake it earlier
                wait = loop_timeout_s(c)
                if not got_connack and not self._connected:
                    wait = min(wait, max(0.0, connack_deadline - time.monotonic()) + 0.01)
                if stop_deadline is not None:
                    wait = min(wait, 0.1)
                try:
                    rc = c.loop(timeout=wait)
                except Exception as e:  # paho bug or a callback of ours: drop the link
                    log.exception("mqtt network loop failed")
                    self._attempt_log.append(str(e))
                    rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
                got_connack = got_connack or self._connected
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        finally:
            with self._lock:
                self._paho = None
                self._acks.clear()
                was = self._connected
                self._connected = False
                self._cond.notify_all()
            if was:
                self._subs.notify(connected=False)
        if got_connack:
            return None
        if self._conn_refusal is not None:
            return self._conn_refusal
        return diagnose.closed_before_connack(
            "; ".join(self._attempt_log[-2:]), cfg,
            tried_mqtt5_auto=protocol == _V5 and self.config.protocol == "auto")

    def _set_error(self, err: MqttConnectError) -> None:
        with self._cond:
            if self.last_error is None or str(self.last_error) != str(err):
                log.warning("mqtt: %s (retrying with backoff)", err)
            self.last_error = err
            self._cond.notify_all()

    # ---- paho callbacks (network thread; quick) ---------------------------------------

    def _on_log(self, _c: paho.Client, _u: Any, level: int, buf: str) -> None:
        if level in (paho.MQTT_LOG_ERR, paho.MQTT_LOG_WARNING):
            self._attempt_log.append(buf)

    def _on_connect(self, c: paho.Client, _u: Any, _flags: paho.ConnectFlags, rc: ReasonCode,
                    _props: Properties | None) -> None:
        if rc.is_failure:
            self._conn_refusal = diagnose.connack_refusal(rc.value, str(rc),
                                                          self.config.at(self._broker))
            return
        self._subacks.reset()
        subs = self._subs.filters()
        if subs:
            self._subscribe(c, subs)
        with self._cond:
            self._connected = True
            self.connects += 1
            self.last_error = None
            self._cond.notify_all()
        log.info("mqtt: connected to %s as %s (MQTT %s)", self.broker_url, self.client_id,
                 self.protocol)
        self._subs.notify(connected=True)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _flags: paho.DisconnectFlags,
                       rc: ReasonCode, _props: Properties | None) -> None:
        if self._connected and not self._stop.is_set():
            log.warning("mqtt: lost connection to %s: %s", self.broker_url, rc)
            if rc.value == 0x8E:
                log.error("mqtt: another client connected with client id %r; there must be "
                          "one MqttClient per device", self.client_id)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode,
                    _props: Properties) -> None:
        cb = self._acks.acked(mid, rc.value)
        if cb is not None:
            try:
                cb(rc.value)
            except Exception:
                log.exception("publish ack callback failed")

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, codes: list[ReasonCode],
                      _props: Properties | None) -> None:
        self._report_refused(self._subacks.acked(
            mid, [(not rc.is_failure, str(rc)) for rc in codes]))

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        m = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                    getattr(props, "ResponseTopic", None),
                    getattr(props, "CorrelationData", None))
        self._subs.route(m)

    def _on_handler_error(self, topic: str, e: BaseException) -> None:
        if self.on_handler_error is not None:
            self.on_handler_error(topic, e)

    @property
    def dropped_incoming(self) -> int:
        """Messages lost because the dispatch queue was full."""
        return self._dispatch.dropped

    @property
    def rejected_incoming(self) -> int:
        """Messages refused: over their subscription's size limit, or their handler raised."""
        return self._dispatch.rejected
