"""Work that must not run in the agent's process: a child, its limits, its one-line verdict.

Importing a native runtime for the first time, or running a model nobody has run on this
device yet, can crash the process (SIGSEGV in native code), never return (a model whose
WHILE loop does not terminate) or exhaust memory. The runtime probe
(:mod:`edge_agent.runtime.probe`) and the update's candidate check
(:mod:`edge_agent.update.check`) therefore do it in a ``python -m <module>`` child, and
this module is the one place for how:

* **Protocol** (child → parent, stdout): ``EDGE-CHILD-STAGE <stage>`` as the child enters
  each stage, so that a crash or a hang can be placed, and one ``EDGE-CHILD-RESULT <json>``
  line at the end (:func:`stage`, :func:`report`; :func:`parse_output` reads them).
* **Limits** (:class:`ChildLimits`): a wall-clock deadline enforced by the parent (SIGKILL);
  in the child, set by the child on itself before it reads any input
  (:func:`apply_limits`, from ``$EDGE_CHILD_LIMITS``), ``RLIMIT_DATA`` for memory (private
  writable memory: heap and anonymous maps — unlike ``RLIMIT_AS`` it does not count address
  space merely reserved, which numpy's BLAS and accelerator drivers reserve in hundreds of
  MB), ``RLIMIT_CPU`` as a backstop, and a parent-death signal (Linux), so that a child
  orphaned by a SIGKILLed agent does not spin forever. Not ``preexec_fn``: it is unsafe in
  the multi-threaded agent.
* **Parent** (:func:`run_child`): starts the child with the agent's own import path, reads
  both pipes with a byte cap, honours a stop event, and returns a :class:`ChildRun` —
  ``finished`` (a verdict was printed), ``timeout``, ``crashed`` (killed by a signal, named),
  ``stopped``, ``no-verdict`` (exited without one) or ``spawn-failed``. It never raises for
  what the child does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LIMITS_ENV", "RESULT_TAG", "STAGE_TAG", "ChildLimits", "ChildRun",
           "apply_limits", "child_environment", "parse_output", "peak_rss_mb", "report",
           "run_child", "signal_name", "stage"]

RESULT_TAG = "EDGE-CHILD-RESULT "
STAGE_TAG = "EDGE-CHILD-STAGE "
LIMITS_ENV = "EDGE_CHILD_LIMITS"
MAX_STDOUT_BYTES = 256 << 10  # stage lines and one verdict; anything past this is dropped
MAX_STDERR_BYTES = 8 << 10  # the tail is kept, for "why did it end without a verdict"
_PR_SET_PDEATHSIG = 1
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no BLAS threads/buffers


@dataclass(frozen=True)
class ChildLimits:
    """What one child may use. ``memory_bytes=None``: no memory limit (the probe)."""

    timeout_s: float  # wall clock, from the start of the child
    memory_bytes: int | None = None  # RLIMIT_DATA
    threads: int = 1  # CPU backstop = timeout_s x threads (+2 s): never before the deadline

    @property
    def cpu_s(self) -> int:
        return math.ceil(self.timeout_s * max(1, self.threads)) + 2

    def to_env(self) -> str:
        return json.dumps({"memory_bytes": self.memory_bytes, "cpu_s": self.cpu_s})


@dataclass(frozen=True)
class ChildRun:
    """How one child ended (see the module docstring for ``status``)."""

    status: str  # finished | timeout | crashed | stopped | no-verdict | spawn-failed
    result: dict[str, Any] | None  # the verdict document, when one was printed
    stage: str | None  # the last stage the child reported
    duration_s: float
    returncode: int | None = None
    signal: str | None = None  # "SIGSEGV" when status is "crashed"
    detail: str = ""  # spawn error, or the last line of stderr


# --- the child's side ------------------------------------------------------------------------


def apply_limits() -> None:
    """First thing in a child: limit this process as ``$EDGE_CHILD_LIMITS`` says."""
    raw = os.environ.get(LIMITS_ENV)
    if not raw:
        return
    import resource

    doc = json.loads(raw)
    mem, cpu = doc.get("memory_bytes"), int(doc["cpu_s"])
    if mem:
        resource.setrlimit(resource.RLIMIT_DATA, (int(mem), int(mem)))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stage(name: str) -> None:
    """Tell the parent which stage the child is in (a crash or hang is placed by it)."""
    print(STAGE_TAG + name, flush=True)


def report(doc: dict[str, Any]) -> None:
    """The child's one verdict line."""
    print(RESULT_TAG + json.dumps(doc), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB.

    ``VmHWM`` where there is ``/proc`` (Linux): ``getrusage``'s ``ru_maxrss`` carries the
    parent's peak across ``fork``/``vfork`` + ``exec``, so it would report the agent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


# --- the parent's side -----------------------------------------------------------------------


def parse_output(stdout: str) -> tuple[dict[str, Any] | None, str | None]:
    """The child's verdict document (None if it printed none) and the last stage it reached."""
    result, last = None, None
    for line in stdout.splitlines():
        if line.startswith(STAGE_TAG):
            last = line[len(STAGE_TAG):].strip()
        elif line.startswith(RESULT_TAG):
            with contextlib.suppress(ValueError):
                doc = json.loads(line[len(RESULT_TAG):])
                result = doc if isinstance(doc, dict) else None
    return result, last


def signal_name(rc: int) -> str:
    """``-11`` → ``"SIGSEGV"``."""
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


class _Pipes:
    """Both pipes of a child, read without blocking and without growing past the caps."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout, selectors.EVENT_READ, "out")
        self.sel.register(proc.stderr, selectors.EVENT_READ, "err")
        self.out = bytearray()
        self.err = bytearray()

    @property
    def open(self) -> bool:
        return bool(self.sel.get_map())

    def pump(self, wait_s: float) -> None:
        for key, _ in self.sel.select(max(0.0, wait_s)):
            data = os.read(key.fd, 65536)
            if not data:
                self.sel.unregister(key.fileobj)
                continue
            if key.data == "out":
                self.out += data[:max(0, MAX_STDOUT_BYTES - len(self.out))]
            else:
                self.err = (self.err + data)[-MAX_STDERR_BYTES:]

    def close(self) -> None:
        self.sel.close()


def child_environment(limits: ChildLimits, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: its limits, no BLAS threads, this agent importable."""
    child_env = {**_CHILD_ENV, **os.environ, **(env or {}), LIMITS_ENV: limits.to_env()}
    # The child must import this agent, wherever the parent found it (venv or source tree).
    pkg_root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pkg_root, child_env.get("PYTHONPATH", "")) if p)
    return child_env


def run_child(module: str, args: Sequence[str], *, limits: ChildLimits,
              env: dict[str, str] | None = None, python: str | None = None,
              stop: threading.Event | None = None) -> ChildRun:
    """Run ``python -m module args…`` under ``limits``; never raises for what it does."""
    cmd = [python or sys.executable, "-m", module, *args]
    child_env = child_environment(limits, env)
    t0 = time.monotonic()
    deadline = t0 + limits.timeout_s
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env)
    except OSError as e:
        return ChildRun("spawn-failed", None, None, time.monotonic() - t0,
                        detail=f"could not start the child process: {e}")
    pipes = _Pipes(proc)
    ended: str | None = None
    try:
        while pipes.open or proc.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                ended = "timeout"
                break
            if stop is not None and stop.is_set():
                ended = "stopped"
                break
            if pipes.open:
                pipes.pump(min(0.1, deadline - now))
            else:  # pipes closed, process still exiting
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(min(0.1, deadline - now))
    finally:
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait()
        pipes.close()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    dt = time.monotonic() - t0
    result, last = parse_output(pipes.out.decode(errors="replace"))
    if ended is not None:
        return ChildRun(ended, result, last, dt, rc)
    if rc < 0:
        sig = signal_name(rc)
        if -rc == getattr(signal, "SIGXCPU", -1):  # the CPU backstop: out of time
            return ChildRun("timeout", result, last, dt, rc, sig)
        return ChildRun("crashed", result, last, dt, rc, sig)
    if result is None:
        why = _last_line(pipes.err.decode(errors="replace")) or f"exit status {rc}"
        return ChildRun("no-verdict", None, last, dt, rc, detail=why)
    return ChildRun("finished", result, last, dt, rc)
