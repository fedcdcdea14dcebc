"""Drains the outbox into the live connection: in order, resent after reconnect, deleted
only after PUBACK.

One thread. On every new connection (a new :attr:`MqttClient.epoch`) the cursor goes
back to the oldest row, so whatever was on the wire without a PUBACK when the link broke
is sent again first; QoS 1 makes that *at least once*, and the per-device sequence
number in every payload lets consumers drop the rare duplicate (``edge-fleet watch``
does). At most ``window`` messages are unacknowledged at a time.

Event-driven: the thread sleeps until something can change what it would do — a row put
into the outbox, a (re)connection, a PUBACK, ``stop`` — each of which sets a flag under
the condition before notifying it, so a wake-up is never lost between two steps. An idle
forwarder does not wake at all (``IDLE_CHECK_S`` is only a safety net).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edge_agent.errors import TransportError
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.outbox import Outbox
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

IDLE_CHECK_S = 300.0  # a safety net only: every cause of work wakes the thread itself


class Forwarder:
    """Moves outbox rows to the broker; see module docstring."""

    def __init__(self, outbox: Outbox, client: MqttClient, *, window: int = 50,
                 on_refused: Callable[[int, str, int], None] | None = None) -> None:
        self.outbox = outbox
        self.client = client
        self.window = max(1, window)
        self.on_refused = on_refused  # (seq, topic, reason code)
        self._cond = threading.Condition()
        self._acked: list[int] = []
        self._refused: list[tuple[int, str, int]] = []
        self._inflight: dict[int, str] = {}
        self._cursor = 0
        self._epoch = -1
        self._poked = True  # something may have changed since the last step (see wake)
        self._wait_s = IDLE_CHECK_S  # 1 s after a publish refused on a live connection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0  # publishes handed to the connection (including resends)
        self.delivered = 0  # PUBACKs received
        outbox.on_put = self.wake
        self._remove_listener = client.add_listener(on_connect=self.wake)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = NamedThread(target=self._run, daemon=True, name="mqtt-outbox")
            self._thread.start()

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop; with ``drain_s`` first wait that long for the outbox to empty."""
        if drain_s > 0:
            self.wait_empty(drain_s)
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._remove_listener()

    def wait_empty(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: self.outbox.stats().depth == 0 and not self._acked, timeout_s)

    def wake(self) -> None:
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def _on_ack(self, seq: int, topic: str, rc: int) -> None:
        # network thread: just record it
        with self._cond:
            if rc < 0x80:
                self._acked.append(seq)
            else:
                self._refused.append((seq, topic, rc))
            self._cond.notify_all()

    def _ack_for(self, seq: int, topic: str) -> Callable[[int], None]:
        return lambda rc: self._on_ack(seq, topic, rc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except TransportError as e:
                log.error("outbox: %s", e)
                self._stop.wait(1.0)
                self._poked = True  # retry the step
            except Exception:
                log.exception("outbox forwarder failed; retrying")
                self._stop.wait(1.0)
                self._poked = True  # retry the step

    def _step(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._poked or self._acked or self._refused
                                or self._stop.is_set(), self._wait_s)
            self._poked = False
            acked, self._acked = self._acked, []
            refused, self._refused = self._refused, []
        if acked or refused:
            self.outbox.remove(acked + [s for s, _, _ in refused], refused=len(refused))
            self.delivered += len(acked)
            with self._cond:
                for s in acked:
                    self._inflight.pop(s, None)
                for s, _, _ in refused:
                    self._inflight.pop(s, None)
                self._cond.notify_all()  # wait_empty
            for s, topic, rc in refused:
                log.error("broker refused outbox message %d on %s (reason %#x); dropped",
                          s, topic, rc)
                if self.on_refused is not None:
                    self.on_refused(s, topic, rc)
        self._send()

    def _send(self) -> None:
        self._wait_s = IDLE_CHECK_S
        while not self._stop.is_set() and self.client.is_connected:
            epoch = self.client.epoch
            if epoch != self._epoch:  # new connection: resend everything not acknowledged
                self._epoch, self._cursor = epoch, 0
                self._inflight.clear()
            room = self.window - len(self._inflight)
            if room <= 0:
                return
            rows = self.outbox.peek(self._cursor, room)
            if not rows:
                return
            for r in rows:
                ok = self.client.publish(r.topic, r.payload, r.qos, r.retain, epoch=epoch,
                                         on_ack=self._ack_for(r.seq, r.topic))
                if not ok:  # connection gone or replaced: the next step starts over
                    if self.client.is_connected and self.client.epoch == epoch:
                        self._wait_s = 1.0  # refused on a live link: retry, not at once
                    return
                self._inflight[r.seq] = r.topic
                self._cursor = r.seq
                self.sent += 1
