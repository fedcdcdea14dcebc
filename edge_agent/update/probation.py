"""Probation: watch the new version's PredictionRecords and decide commit or roll back.

:func:`judge` is pure (window statistics in, verdict out). :class:`ProbationMonitor` is
the hook subscriber: it keeps a baseline of the active version's error rate before the
swap and the new version's figures after it. The subscriber only appends to bounded
deques, as hooks.py asks.

Who is at fault decides what counts. A request the *client* got wrong (bad JSON, wrong
shape, values outside float32, an undecodable image: ``fault="client"``) says nothing
about the model and is never held against it — otherwise any unauthenticated client
could roll a signed release back. Only failures of the model or runtime count, plus one
narrow case that *is* the release's fault: a new version whose input shape changed
refusing an input of the shape its predecessor took (the clients that worked break).

Latency is judged on the same host at the same time, never against figures measured
earlier: the monitor keeps a few inputs of the new version's real requests and the
update worker times each of them on the old and the new version back to back,
alternating which goes first (:func:`time_pair`). Host load slows both sides of a pair
alike, so the ratio of paired timings only moves when the model itself is slower.
"""

from __future__ import annotations

import collections
import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_agent.hooks import Hooks, PredictionRecord

log = logging.getLogger(__name__)

Pair = tuple[float, float]  # (old version seconds, new version seconds) for one input
Sample = Mapping[str, np.ndarray]  # one request's raw input tensors (batch 1), by input name
PairTimer = Callable[[Sample, bool], Pair]  # (raw inputs, new first?) → timings


@dataclass(frozen=True)
class ProbationPolicy:
    window_s: float
    min_requests: int  # judged requests before the error rule may fail the new version
    max_error_rate: float
    max_latency_ratio: float  # median of paired new/old timings
    latency_floor_ms: float  # paired new p95 under this is never "too slow"
    min_clients: int = 1  # distinct clients among the judged requests before it may fail
    min_pairs: int = 20  # interleaved timings before the latency rule may fail it


@dataclass(frozen=True)
class WindowStats:
    requests: int  # judged: successes + failures of the model/runtime (client errors excluded)
    errors: int  # failures of the model/runtime
    p95_s: float | None  # of successful requests (reported, not judged)
    clients: int = 1  # distinct clients among the judged requests
    refused: int = 0  # client-input errors: counted, never judged
    pairs: tuple[Pair, ...] = ()  # interleaved (old, new) timings on this host


@dataclass(frozen=True)
class Verdict:
    decided: bool
    ok: bool
    reason: str


def p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(0.95 * len(s)))]


def _paired_latency(pairs: Sequence[Pair], policy: ProbationPolicy) -> str | None:
    """Why the new version is slower than the old on the same inputs, or None."""
    usable = [(o, n) for o, n in pairs if o > 0]
    if len(usable) < policy.min_pairs:
        return None
    ratio = statistics.median(n / o for o, n in usable)
    new_p95 = p95([n for _, n in usable]) or 0.0
    if ratio > policy.max_latency_ratio and new_p95 * 1000 > policy.latency_floor_ms:
        old_p95 = p95([o for o, _ in usable]) or 0.0
        return (f"latency {ratio:.1f}x the old version's on the same inputs, interleaved "
                f"({len(usable)} pairs, allowed {policy.max_latency_ratio:g}x; new p95 "
                f"{new_p95 * 1000:.1f} ms, old p95 {old_p95 * 1000:.1f} ms)")
    return None


def judge(new: WindowStats, base: WindowStats | None, policy: ProbationPolicy, *,
          window_over: bool) -> Verdict:
    """Fail early on clear evidence; pass only when the window is over.

    Errors: the new version fails when the error rate of the requests it is responsible
    for exceeds ``max_error_rate`` above the old version's own rate, once there are at
    least ``min_requests`` of them from at least ``min_clients`` clients (a handful of
    requests from one client cannot condemn a release). Latency: the median ratio of
    interleaved new/old timings above ``max_latency_ratio`` (and the new p95 above
    ``latency_floor_ms``), once there are ``min_pairs`` pairs.
    """
    base_rate = base.errors / base.requests if base and base.requests else 0.0
    allowed = base_rate + policy.max_error_rate
    n = new.requests
    if n >= policy.min_requests and new.clients >= policy.min_clients:
        rate = new.errors / n
        if rate > allowed:
            return Verdict(True, False, f"error rate {rate:.0%} over {n} requests from "
                           f"{new.clients} client(s) (allowed {allowed:.0%})")
    slow = _paired_latency(new.pairs, policy)
    if slow:
        return Verdict(True, False, slow)
    if window_over:
        return Verdict(True, True, f"{n} requests, {new.errors} errors, {new.refused} client "
                       f"errors not counted, p95 "
                       f"{'-' if new.p95_s is None else f'{new.p95_s * 1000:.1f} ms'}, "
                       f"{len(new.pairs)} interleaved timings")
    return Verdict(False, True, "watching")


def _fits(shape: tuple[int, ...], signature: tuple[int, ...]) -> bool:
    """Does an input of ``shape`` (with or without batch) fit an input ``signature``?"""
    return shape[1:] == signature[1:] or shape == signature[1:]


class _Series:
    _MAX_CLIENTS = 10_000  # distinct clients remembered; enough to pass any min_clients

    def __init__(self, maxlen: int, old_shape: tuple[int, ...] | None = None,
                 new_shape: tuple[int, ...] | None = None) -> None:
        self.ok: collections.deque[bool] = collections.deque(maxlen=maxlen)
        self.latency: collections.deque[float] = collections.deque(maxlen=maxlen)
        self.pairs: collections.deque[Pair] = collections.deque(maxlen=1000)
        self.clients: set[str] = set()
        self.refused = 0
        # the signature changed: an input the old version took is the release's fault
        self._old_shape = old_shape if old_shape is not None and old_shape != new_shape \
            else None

    def _model_fault(self, rec: PredictionRecord) -> bool:
        if rec.fault != "client":
            return True
        return (self._old_shape is not None and rec.input_shape is not None
                and _fits(rec.input_shape, self._old_shape))

    def add(self, rec: PredictionRecord) -> None:
        if not rec.ok and not self._model_fault(rec):
            self.refused += 1
            return
        self.ok.append(rec.ok)
        if len(self.clients) < self._MAX_CLIENTS:
            self.clients.add(rec.client or rec.source)
        if rec.ok:
            self.latency.append(rec.latency_s)

    def stats(self) -> WindowStats:
        oks = list(self.ok)
        return WindowStats(len(oks), oks.count(False), p95(list(self.latency)),
                           len(self.clients), self.refused, tuple(self.pairs))


class ProbationMonitor:
    """Per model name: a rolling baseline of the active version; a window for the new one."""

    def __init__(self, hooks: Hooks, baseline_size: int = 500, *, max_pairs: int = 200,
                 sample_every_s: float = 0.05) -> None:
        self._lock = threading.Lock()
        self._baseline: dict[tuple[str, int], _Series] = {}
        self._watch: tuple[str, int] | None = None
        self._window = _Series(100_000)
        self._baseline_size = baseline_size
        self._samples: collections.deque[Sample] = collections.deque(maxlen=2)
        self._last_sample = 0.0
        self._max_pairs = max_pairs
        self._sample_every_s = sample_every_s
        self._remove = hooks.on_prediction(self._on_record)

    def close(self) -> None:
        self._remove()

    def _on_record(self, rec: PredictionRecord) -> None:
        key = (rec.model, rec.version)
        with self._lock:
            if key == self._watch:
                self._window.add(rec)
                self._maybe_sample(rec)
                return
            series = self._baseline.get(key)
            if series is None:
                if len(self._baseline) > 32:
                    self._baseline.clear()
                series = self._baseline[key] = _Series(self._baseline_size)
            series.add(rec)

    def _maybe_sample(self, rec: PredictionRecord) -> None:
        """Keep one instance of a served input now and then, for :func:`time_pair`."""
        if not rec.ok or not rec.inputs or any(not len(a) for a in rec.inputs.values()) \
                or len(self._window.pairs) >= self._max_pairs:
            return
        now = time.monotonic()
        if now - self._last_sample >= self._sample_every_s:
            self._last_sample = now  # every input: a multi-input model needs all of them
            self._samples.append({k: np.array(a[:1], copy=True) for k, a in rec.inputs.items()})

    def start(self, name: str, version: int, *, old_shape: tuple[int, ...] | None = None,
              new_shape: tuple[int, ...] | None = None) -> None:
        """Begin a fresh window for ``name`` v``version`` (``*_shape``: input signatures)."""
        with self._lock:
            self._watch = (name, version)
            self._window = _Series(100_000, old_shape, new_shape)
            self._samples.clear()

    def stop(self) -> None:
        with self._lock:
            self._watch = None
            self._samples.clear()

    def take_sample(self) -> Sample | None:
        with self._lock:
            return self._samples.popleft() if self._samples else None

    def add_pair(self, pair: Pair) -> None:
        with self._lock:
            self._window.pairs.append(pair)

    def window(self) -> WindowStats:
        with self._lock:
            return self._window.stats()

    def baseline(self, name: str, version: int | None) -> WindowStats | None:
        if version is None:
            return None
        with self._lock:
            s = self._baseline.get((name, version))
            return s.stats() if s else None


class Borrowable(Protocol):
    """A served model version: exclusive use of one of its interpreters."""

    def borrow(self) -> AbstractContextManager[Any]: ...


def time_pair(old: Borrowable, new: Borrowable, raw: Sample, new_first: bool) -> Pair:
    """Invoke ``raw`` (every input by name) on both versions back to back; returns
    (old seconds, new seconds)."""
    def once(m: Borrowable) -> float:
        with m.borrow() as interp:
            t0 = time.perf_counter()
            interp.invoke_raw(raw)
            return time.perf_counter() - t0

    if new_first:
        t_new = once(new)
        return once(old), t_new
    t_old = once(old)
    return t_old, once(new)


def wait_verdict(monitor: ProbationMonitor, base: WindowStats | None, policy: ProbationPolicy,
                 until: float, stop: threading.Event, poll_s: float = 0.05,
                 pair: PairTimer | None = None) -> Verdict:
    """Poll :func:`judge` until decided, the window ends, or ``stop`` is set; meanwhile
    time sampled inputs on both versions with ``pair`` (alternating which goes first)."""
    new_first = False
    while True:
        sample = monitor.take_sample() if pair is not None else None
        if sample is not None and pair is not None:
            try:
                monitor.add_pair(pair(sample, new_first))
                new_first = not new_first
            except Exception as e:  # a failing old version must not decide the new one
                log.warning("probation: interleaved timing stopped: %s", e)
                pair = None
        over = time.time() >= until
        v = judge(monitor.window(), base, policy, window_over=over)
        if v.decided:
            return v
        if stop.wait(min(poll_s, max(0.0, until - time.time()))):
            return Verdict(False, True, "stopped")
