"""What one connection attempt of :class:`~edge_agent.mqtt.client.MqttClient` is made of.

Every attempt gets a fresh paho client (:func:`new_paho`), so nothing paho queued for a dead
connection is re-sent behind the outbox's back, and the attempt's PUBACK bookkeeping
(:class:`AckTable`) is cleared when it ends. The Last Will (:class:`Will`) is built per
attempt too, so that it carries fresh state.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.mqtt.config import MqttConfig

log = logging.getLogger(__name__)

AckCallback = Callable[[int], None]  # MQTT reason code of the PUBACK (0 = accepted)


@dataclass(frozen=True)
class Will:
    """A message the broker publishes for us (Last Will) or we publish on clean stop."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def resolve(w: Will | Callable[[], Will] | None, what: str) -> Will | None:
    """A Will, or the one a callable builds now; a failing callable means none."""
    if not callable(w):
        return w
    try:
        return w()
    except Exception:
        log.exception("mqtt: building the %s message failed; sending none", what)
        return None


def _no_op_register(_client: paho.Client, _userdata: Any, _sock: Any) -> None:
    """See new_paho: the network thread's loop() writes whenever it is woken."""


def new_paho(config: MqttConfig, client_id: str, protocol: MQTTProtocolVersion,
             ssl_context: ssl.SSLContext | None, will: Will | None) -> paho.Client:
    """A paho client for one attempt: limits, TLS, credentials, Will; no callbacks yet."""
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=protocol, clean_session=None if v5 else True)
    c.connect_timeout = config.connect_timeout_s
    c.max_inflight_messages_set(config.max_inflight)
    c.max_queued_messages_set(0)
    if ssl_context is not None and config.tls:  # a list may mix mqtt:// and mqtts://
        c.tls_set_context(ssl_context)
    if config.username is not None:
        c.username_pw_set(config.username, config.password)
    if will is not None:
        c.will_set(will.topic, will.payload, will.qos, will.retain)
    # Only the network thread may write to the socket. Without loop_start() paho would
    # write from the publishing thread too, interleaving partial packets of large
    # payloads on the wire; registering a (no-op) write callback makes publish() just
    # queue the packet and wake our loop() through paho's socket pair.
    c.on_socket_register_write = _no_op_register
    return c


def loop_timeout_s(c: paho.Client, *, cap_s: float = 60.0) -> float:
    """How long the network thread may block in ``c.loop()``: until paho's next keepalive
    check is due (a PINGREQ to send, or a PINGRESP overdue), at most ``cap_s``.

    ``loop()`` returns early on anything else: a packet from the broker, and every local
    publish / disconnect (paho's socket pair wakes the select). So an idle connection
    wakes once per keepalive instead of every fixed poll interval. Reads paho 2.x's
    keepalive bookkeeping (``_keepalive``, ``_last_msg_out``, ``_last_bytes_received``);
    with another paho, 1 s (its own ``loop_forever`` default).
    """
    try:
        keepalive = float(c._keepalive)
        last = min(float(c._last_msg_out), float(c._last_bytes_received))
    except (AttributeError, TypeError, ValueError):
        return 1.0
    if keepalive <= 0:
        return cap_s
    # 10 ms late, so the check finds the interval elapsed (paho compares with >=)
    return max(0.0, min(cap_s, last + keepalive - time.monotonic() + 0.01))


class AckTable:
    """Message id → ``on_ack`` callback for the current connection.

    publish() cannot hold the client's lock while calling into paho (paho runs our
    callbacks, which take it, while holding its own locks), so a PUBACK may arrive before
    publish() knows the message id: :meth:`acked` keeps such reason codes while any
    registration is pending (:meth:`begin` … :meth:`end`), and the last :meth:`end` drops
    what is left. Shares the client's ``lock``.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._acks: dict[int, AckCallback] = {}
        self._early: dict[int, int] = {}  # mid → reason code of a PUBACK ahead of end()
        self._registering = 0

    def begin(self) -> None:
        with self._lock:
            self._registering += 1

    def end(self, mid: int | None, on_ack: AckCallback) -> int | None:
        """Register ``on_ack`` for ``mid`` (None: nothing was sent). Returns the reason code
        if the PUBACK already came (the caller then runs ``on_ack`` itself)."""
        with self._lock:
            self._registering -= 1
            early = None
            if mid is not None:
                early = self._early.pop(mid, None)
                if early is None:
                    self._acks[mid] = on_ack
            if self._registering == 0:
                self._early.clear()
            return early

    def acked(self, mid: int, rc: int) -> AckCallback | None:
        """The callback registered for ``mid``, if any (removed)."""
        with self._lock:
            cb = self._acks.pop(mid, None)
            if cb is None and self._registering:  # maybe not registered yet: keep it
                self._early[mid] = rc
            return cb

    def clear(self) -> None:
        """The connection is gone: its acks will never come."""
        with self._lock:
            self._acks.clear()
            self._early.clear()
