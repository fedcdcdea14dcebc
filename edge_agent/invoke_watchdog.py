"""A watchdog on invoke time: a variant's invokes run on threads of their own, so a request
can give up on a hung delegate.

A native ``invoke()`` cannot be interrupted or cancelled from Python. So each interpreter
of a watched :class:`~edge_agent.registry.ServedModel` (a bundle with variants) gets one
invoker thread, started on its first use; a request hands its batch over and waits at
most the limit (:func:`edge_agent.variant_rules.watchdog_limit_s`). Past it the
interpreter is **abandoned**: it is never given back to the pool (not even if its invoke
returns later), its thread is left to the runtime, and the request gets
:class:`~edge_agent.errors.InvokeHangError`, on which :mod:`edge_agent.variants` fails over
and retries the request on the next variant. :meth:`Watchdog.give_up_all` does the same at
once for every other request in flight on the variant, and :attr:`Watchdog.tripped` tells
requests still waiting for one of its interpreters to go elsewhere.

Bounds: every abandoned interpreter is counted (:attr:`Watchdog.abandoned`); one is
replaced by a fresh interpreter (:meth:`Watchdog.take_lost`) only while the count is below
``max_abandoned``; past it the variant is :attr:`retired` and stays failed until the agent
restarts, so hung interpreters hold at most ``max_abandoned`` threads and models' memory.
The cost when nothing hangs: one thread hand-over per invoke (docs/agent.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

from edge_agent.errors import InvokeHangError
from edge_agent.runtime.model import Inputs, LoadedModel, batch_of
from edge_agent.threadname import NamedThread
from edge_agent.variant_rules import FailoverRules, watchdog_limit_s

__all__ = ["IDLE_S", "Watchdog"]

IDLE_S = 30.0  # an invoker thread idle this long ends (started again by the next invoke)


class _Job:
    __slots__ = ("abandoned", "done", "error", "finished", "m", "outs", "timed_out", "x")

    def __init__(self, m: LoadedModel, x: Inputs) -> None:
        self.m, self.x = m, x
        self.timed_out = False
        # released when the invoke returns or is given up: a C lock's timed acquire is the
        # cheapest hand-back there is (an Event is a Python Condition)
        self.done = threading.Lock()
        self.done.acquire()
        self.outs: list[np.ndarray] | None = None
        self.error: BaseException | None = None
        self.finished = False  # the invoke returned (under the watchdog's lock)
        self.abandoned = False  # the request gave up on it (under the watchdog's lock)


class Watchdog:
    """The invoke watchdog of one variant's interpreters (thread-safe)."""

    def __init__(self, *, label: str, latency_s: float, fixed_batch: int,
                 rules: FailoverRules, idle_s: float = IDLE_S) -> None:
        self.label = label  # "name vN variant 'x'", for messages
        self.latency_s = latency_s  # measured per invoke at load
        self.fixed_batch = max(1, fixed_batch)
        self.rules = rules
        self.idle_s = idle_s  # an invoker thread without a job this long ends
        self.abandoned = 0  # interpreters given up on, since start
        self.tripped = False  # given up on: waiting requests go to the serving variant
        self._lost = 0  # abandoned and not yet replaced
        self._lock = threading.Lock()
        self._pending: set[_Job] = set()
        self._queues: dict[int, queue.SimpleQueue[_Job]] = {}  # id(LoadedModel) → its invoker

    @property
    def retired(self) -> bool:
        """Too many interpreters abandoned: this variant stays failed until restart."""
        return self.abandoned >= self.rules.max_abandoned

    def limit_s(self, x: Inputs) -> float:
        slices = -(-batch_of(x) // self.fixed_batch)
        return watchdog_limit_s(self.latency_s, slices, self.rules)

    def invoke(self, m: LoadedModel, x: Inputs, give: Callable[[LoadedModel], None]
               ) -> list[np.ndarray]:
        """``m.invoke_raw(x)`` within the limit; ``m`` goes back through ``give`` unless it is
        abandoned. Raises what the invoke raises, or InvokeHangError."""
        job = _Job(m, x)
        with self._lock:  # with the idle exit of the invoker under the same lock: no job is
            q = self._queues.get(id(m)) or self._start(m)  # put where nobody reads
            self._pending.add(job)
            q.put(job)
        limit = self.limit_s(x)
        job.done.acquire(timeout=limit)
        with self._lock:
            self._pending.discard(job)
            if job.finished and not job.abandoned:
                ok = True
            else:
                ok = False
                if not job.abandoned:
                    job.timed_out = True
                    self._abandon(job)
        if ok:
            give(m)
            if job.error is not None:
                raise job.error
            assert job.outs is not None
            return job.outs
        why = (f"did not return within {limit:.3g} s" if job.timed_out
               else "was given up: another invoke of this variant hung")
        raise InvokeHangError(f"{self.label}: invoke {why} (watchdog; interpreter abandoned, "
                              f"{self.abandoned} so far)")

    def _start(self, m: LoadedModel) -> queue.SimpleQueue[_Job]:
        """The invoker thread of ``m`` (caller holds the lock). It ends after ``idle_s``
        without a job, so the interpreters of an unloaded version are not kept alive."""
        q: queue.SimpleQueue[_Job] = queue.SimpleQueue()

        def run() -> None:
            while True:
                try:
                    job = q.get(timeout=self.idle_s)
                except queue.Empty:
                    with self._lock:
                        if q.empty():
                            if self._queues.get(id(m)) is q:
                                del self._queues[id(m)]
                            return
                    continue
                try:
                    job.outs = m.invoke_raw(job.x)
                except BaseException as e:  # handed to the waiting request
                    job.error = e
                with self._lock:
                    job.finished = True
                    given_up = job.abandoned
                if given_up:
                    return  # the interpreter is never used again
                job.done.release()

        self._queues[id(m)] = q
        NamedThread(target=run, name=f"invoke-{self.label}", daemon=True).start()
        return q

    def _abandon(self, job: _Job) -> None:
        """Caller holds the lock."""
        job.abandoned = True
        self.abandoned += 1
        self._lost += 1
        self._queues.pop(id(job.m), None)

    def abandon_one(self) -> None:
        """An interpreter borrowed outside :meth:`invoke` (a golden-vector retry) hung."""
        with self._lock:
            self.abandoned += 1
            self._lost += 1

    def give_up_all(self) -> int:
        """The variant failed by hanging: every request in flight on it stops waiting
        (InvokeHangError, so it is retried elsewhere) and requests waiting for one of its
        interpreters go elsewhere. Returns how many were given up."""
        with self._lock:
            self.tripped = True
            jobs = [j for j in self._pending if not j.finished and not j.abandoned]
            for j in jobs:
                self._abandon(j)
        for j in jobs:
            j.done.release()
        return len(jobs)

    def take_lost(self) -> int:
        """How many fresh interpreters to build for abandoned ones (0 once retired), and
        un-trip: the variant is about to be tried again."""
        with self._lock:
            if self.retired:
                return 0
            n, self._lost, self.tripped = self._lost, 0, False
            return n
