"""When a model variant has failed: the failover rules, pure (no threads, no clock, no IO).

:mod:`edge_agent.variants` calls in with each invoke failure and the time it saw it
(``now``, monotonic seconds); this module decides (docs/agent.md, *Variants and failover*):

* :attr:`Failure.CLIENT` — the client's bad input (:class:`~edge_agent.errors.BadInputError`):
  never held against the variant.
* :attr:`Failure.DELEGATE` — the delegate or the device failed (the fault seam's
  :class:`~edge_agent.errors.VariantFaultError`, or a runtime error whose message names a
  delegate, an Edge TPU, a GPU or USB): the variant is switched away from at once; the
  request that saw it fails.
* :attr:`Failure.HANG` — the invoke exceeded its watchdog limit
  (:class:`~edge_agent.errors.InvokeHangError`): switched away from at once; the request
  that detected it is retried on the next variant (it has no answer, not a wrong one).
* :attr:`Failure.TRANSIENT` — any other runtime error at invoke: the request fails, and the
  error is counted; the ``errors``-th within ``window_s`` seconds switches (one error is
  not yet a broken accelerator).

The watchdog limit of one invoke is :func:`watchdog_limit_s`: the variant's measured
latency per invoke × ``factor`` × the slices the batch runs as, never below ``floor_s``.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from edge_agent.errors import BadInputError, InvokeHangError, VariantFaultError

__all__ = ["DELEGATE_WORDS", "Decision", "ErrorWindow", "FailoverRules", "Failure",
           "classify", "decide", "watchdog_limit_s"]

# a runtime error naming one of these is the accelerator's, not a one-off (lower case)
DELEGATE_WORDS = ("delegate", "edgetpu", "edge tpu", "gpu", "usb")


class Failure(str, enum.Enum):
    CLIENT = "client"
    DELEGATE = "delegate"
    HANG = "hang"
    TRANSIENT = "transient"


class Decision(str, enum.Enum):
    """What to do with the request that saw a failure on the serving variant."""

    FAIL = "fail"  # the request fails; the variant keeps serving
    SWITCH_AND_FAIL = "switch_and_fail"  # the next variant serves; this request fails
    SWITCH_AND_RETRY = "switch_and_retry"  # the next variant serves and answers this request


@dataclass(frozen=True)
class FailoverRules:
    """The ``[agent] variant_*`` keys of the failover rules (docs/config.md)."""

    fail_errors: int = 3  # transient errors ...
    fail_window_s: float = 10.0  # ... within this many seconds switch the variant
    watchdog_factor: float = 20.0  # an invoke may take this × its measured latency; 0: off
    watchdog_floor_s: float = 1.0  # ... but never less than this (the profile's default)
    max_abandoned: int = 8  # hung interpreters given up per variant; past it: failed till restart

    def __post_init__(self) -> None:
        if self.fail_errors < 1 or self.fail_window_s <= 0 or self.watchdog_factor < 0 \
                or self.watchdog_floor_s <= 0 or self.max_abandoned < 1:
            raise ValueError(f"inconsistent failover rules: {self}")

    @property
    def watchdog(self) -> bool:
        return self.watchdog_factor > 0


def classify(error: BaseException) -> Failure:
    """Which kind of failure ``error`` (raised by an invoke) is."""
    if isinstance(error, BadInputError):
        return Failure.CLIENT
    if isinstance(error, InvokeHangError):
        return Failure.HANG
    if isinstance(error, VariantFaultError):
        return Failure.DELEGATE
    text = str(error).lower()
    if any(w in text for w in DELEGATE_WORDS):
        return Failure.DELEGATE
    return Failure.TRANSIENT


class ErrorWindow:
    """Transient errors of one variant in a sliding window of ``window_s`` seconds."""

    def __init__(self, rules: FailoverRules) -> None:
        self.rules = rules
        self._times: deque[float] = deque(maxlen=rules.fail_errors)

    def __len__(self) -> int:
        return len(self._times)

    def record(self, now: float) -> bool:
        """One more error at ``now``: whether the window now holds ``fail_errors`` of them."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.rules.fail_window_s:
            self._times.popleft()
        return len(self._times) >= self.rules.fail_errors

    def clear(self) -> None:
        self._times.clear()


def decide(failure: Failure, window: ErrorWindow, now: float, *, has_next: bool) -> Decision:
    """The failover decision for a failure seen on the serving variant. A counted error is
    recorded in ``window`` (cleared when it switches)."""
    if failure is Failure.CLIENT:
        return Decision.FAIL
    if failure is Failure.TRANSIENT and not window.record(now):
        return Decision.FAIL
    if not has_next:  # the last variant: nothing to switch to
        return Decision.FAIL
    window.clear()
    return Decision.SWITCH_AND_RETRY if failure is Failure.HANG else Decision.SWITCH_AND_FAIL


def watchdog_limit_s(latency_s: float, slices: int, rules: FailoverRules) -> float:
    """How long one invoke of ``slices`` model batches may take before it is a hang."""
    return max(rules.watchdog_floor_s, rules.watchdog_factor * latency_s * max(1, slices))
