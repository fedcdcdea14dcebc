"""Which subscriptions the broker granted, refused, or has not answered yet.

A SUBSCRIBE is fire-and-forget in paho: without this table a device whose broker ACL
refuses ``edge/<device>/infer/+`` or ``cmd/#`` would look healthy and hear nothing, and a
client of the device could not tell when a new subscription is live. The table maps each
SUBSCRIBE's message id to its filters; the SUBACK resolves them to *granted* (with the QoS)
or *refused* (with the broker's reason).

It is per connection: every attempt has a fresh paho client whose message ids start over,
so :meth:`reset` forgets everything (the client re-subscribes every filter on CONNACK).
paho may deliver the SUBACK before ``subscribe()`` has returned the message id to us, so
:meth:`acked` keeps an unknown id's answer until :meth:`sent` claims it. Its own lock is
never held while calling into paho, so it cannot take part in a lock-order deadlock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_EARLY_LIMIT = 256  # unclaimed SUBACKs kept (a bound: ids never claimed are dropped)


@dataclass(frozen=True)
class Refusal:
    topic_filter: str
    reason: str


class SubAckTable:
    """Message id → filters of the SUBSCRIBEs of the current connection (see module doc)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending: dict[int, tuple[str, ...]] = {}
        self._early: dict[int, tuple[tuple[bool, str], ...]] = {}
        self._granted: set[str] = set()
        self._refused: dict[str, str] = {}

    def reset(self) -> None:
        """A new connection: nothing of the old one's subscriptions is known to hold."""
        with self._cond:
            self._pending.clear()
            self._early.clear()
            self._granted.clear()
            self._cond.notify_all()

    def sent(self, mid: int, filters: Sequence[str]) -> list[Refusal]:
        """``subscribe()`` returned ``mid`` for ``filters``. Returns the refusals if the
        SUBACK already came (the caller reports them)."""
        with self._cond:
            early = self._early.pop(mid, None)
            if early is None:
                self._pending[mid] = tuple(filters)
                for f in filters:  # asked again: the old answer no longer holds
                    self._refused.pop(f, None)
                return []
            return self._resolve(tuple(filters), early)

    def acked(self, mid: int, answers: Sequence[tuple[bool, str]]) -> list[Refusal]:
        """The SUBACK for ``mid``: one (granted, reason) per filter, in order. Returns the
        refusals among them (empty if ``mid`` is not claimed yet: :meth:`sent` reports)."""
        with self._cond:
            filters = self._pending.pop(mid, None)
            if filters is None:
                if len(self._early) >= _EARLY_LIMIT:
                    self._early.pop(next(iter(self._early)))
                self._early[mid] = tuple(answers)
                return []
            return self._resolve(filters, tuple(answers))

    def _resolve(self, filters: tuple[str, ...], answers: tuple[tuple[bool, str], ...]
                 ) -> list[Refusal]:
        refused = []
        for f, (ok, reason) in zip(filters, answers, strict=False):
            if ok:
                self._granted.add(f)
                self._refused.pop(f, None)
            else:
                self._granted.discard(f)
                self._refused[f] = reason
                refused.append(Refusal(f, reason))
        self._cond.notify_all()
        return refused

    def wait(self, filters: Iterable[str], timeout_s: float) -> bool:
        """Block until the broker granted every filter on this connection (True), or one
        was refused or ``timeout_s`` passed (False)."""
        want = set(filters)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not want <= self._granted:
                left = deadline - time.monotonic()
                if left <= 0 or want & self._refused.keys():
                    return False
                self._cond.wait(left)
        return True

    @property
    def refused(self) -> dict[str, str]:
        """Filter → the broker's reason, for the filters whose last SUBACK refused them."""
        with self._cond:
            return dict(self._refused)
