"""``edge-fleet simulate N``: N real agents against a broker, many per process.

::

    edge-fleet simulate N --broker URL[,URL…] --root ROOT.json --bundle BUNDLE
        [--protocol 5|3.1.1|auto]
        [--workdir DIR] [--processes P] [--group G …] [--id-prefix sim]
        [--fail-probation 5%] [--drop-link 5%] [--slow 5%] [--seed 7]
        [--probation 2s] [--rps 1] [--telemetry 30s] [--duration 10m]

Every simulated device is a real :class:`edge_agent.app.Agent` with its telemetry and
update components: its own MQTT client (client id = device id, Last Will), its own store,
outbox and update state directory under ``WORKDIR/<device>/``, its own TUF trust store
(provisioned with ``--root``) and update state machine. Agents in one process share the
runtime and one interpreter pool per model file (see :mod:`fleet.sim_agents`); the
devices are split over ``--processes`` worker processes (default: one per 125 devices),
so the GIL of one process is not the bottleneck. At most 150 agents fit in one process:
paho-mqtt waits with ``select()``, which only takes file descriptors below 1024, and
each agent holds about six (its socket, paho's wake-up socket pair, its SQLite outbox).
Device state goes to a temporary directory on tmpfs (``/dev/shm``) unless ``--workdir``
is given: a real fleet has one disk per device, a simulated one would measure how many
fsyncs per second one shared disk does (docs/scale.md).

Faults are given as fractions of N and assigned reproducibly from ``--seed``
(:func:`fleet.sim_agents.assign_faults`): ``--fail-probation`` devices fail every new
version's probation, ``--drop-link`` devices lose the broker connection for
``--drop-for`` seconds when an update starts downloading, ``--slow`` devices sit
behind a high-latency, low-bandwidth link.

The command runs until Ctrl-C / SIGTERM (or ``--duration``), then stops every agent
cleanly (each publishes its offline status). Exit codes: 0 ok, 1 a worker failed, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from edge_agent.errors import BadInputError, TransportError
from edge_agent.mqtt.config import PROTOCOLS
from fleet.rollout_core import parse_duration, parse_rate
from fleet.sim_agents import SimSpec, assign_faults

DEVICES_PER_PROCESS = 125
MAX_PER_PROCESS = 150  # select() in paho-mqtt: fds < 1024, ~6 per agent (socket, pair, SQLite)


@dataclass(frozen=True)
class WorkerReport:
    pid: int
    devices: int
    connected: int
    start_s: float
    error: str = ""


def device_ids(n: int, prefix: str = "sim") -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def split(spec: SimSpec, processes: int) -> list[SimSpec]:
    """One spec per process, devices dealt in contiguous blocks (pure)."""
    devs = list(spec.devices)
    per = math.ceil(len(devs) / max(1, processes))
    return [replace(spec, devices=tuple(devs[i:i + per]),
                    faults={d: f for d, f in spec.faults.items() if d in devs[i:i + per]})
            for i in range(0, len(devs), per)]


def default_processes(n: int) -> int:
    """One per 125 devices (the per-process limit is MAX_PER_PROCESS), at least one per CPU
    when there are that many devices."""
    return max(1, min(max(os.cpu_count() or 1, math.ceil(n / MAX_PER_PROCESS)),
                      math.ceil(n / DEVICES_PER_PROCESS)))


def _raise_fd_limit() -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _worker(spec: SimSpec, reports: mp.Queue[WorkerReport], stop: MpEvent) -> None:
    import logging

    from fleet.sim_agents import SimFleet

    logging.basicConfig(level=logging.ERROR, format=f"[{os.getpid()}] %(levelname)s "
                                                    "%(name)s: %(message)s")
    _raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    t0 = time.monotonic()
    sim = SimFleet(spec)
    try:
        sim.start()
        sim.wait_connected(60)
        gc.freeze()  # hundreds of agents' long-lived objects: keep them out of GC passes
        gc.set_threshold(50_000, 20, 20)  # ... and collect young garbage less often
        # Hundreds of mostly idle threads: let a busy one keep the GIL a little longer
        # before the others' wake-ups force a switch (fewer futile context switches).
        sys.setswitchinterval(0.02)
        reports.put(WorkerReport(os.getpid(), len(spec.devices), sim.connected(),
                                 time.monotonic() - t0))
    except Exception as e:
        reports.put(WorkerReport(os.getpid(), len(spec.devices), 0, time.monotonic() - t0,
                                 f"{type(e).__name__}: {e}"))
        sim.stop()
        return
    stop.wait()
    sim.stop()


class SimProcesses:
    """Worker processes running :class:`fleet.sim_agents.SimFleet` s (spawned, not forked)."""

    def __init__(self, specs: Sequence[SimSpec]) -> None:
        self.specs = list(specs)
        self._ctx = mp.get_context("spawn")
        self._stop = self._ctx.Event()
        self._reports: mp.Queue[WorkerReport] = self._ctx.Queue()
        self.procs: list[Any] = []
        self.reports: list[WorkerReport] = []

    def start(self, timeout_s: float = 300.0) -> list[WorkerReport]:
        """Start every worker; return when all reported. Raises TransportError on failure."""
        # One BLAS thread per worker: numpy's default (a spinning thread per CPU per
        # process) only steals CPU from the agents.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        for s in self.specs:
            p = self._ctx.Process(target=_worker, args=(s, self._reports, self._stop),
                                  name=f"sim-{s.devices[0]}", daemon=True)
            p.start()
            self.procs.append(p)
        deadline = time.monotonic() + timeout_s
        while len(self.reports) < len(self.procs):
            try:
                self.reports.append(self._reports.get(timeout=0.5))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TransportError(f"simulated agents not started within {timeout_s:g} s"
                                         ) from None
                dead = [p for p in self.procs if p.exitcode is not None]
                if dead:
                    raise TransportError(f"simulator worker {dead[0].name} exited with code "
                                         f"{dead[0].exitcode}") from None
        bad = [r for r in self.reports if r.error]
        if bad:
            raise TransportError(f"simulator worker {bad[0].pid} failed: {bad[0].error}")
        return self.reports

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)


def default_workdir() -> Path:
    """A fresh directory on tmpfs when there is one: N simulated devices share one disk,
    and N devices' fsyncs on one disk measure the disk, not the fleet (docs/scale.md)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="edge-fleet-sim-", dir=base))


def build_spec(a: argparse.Namespace, workdir: Path) -> SimSpec:
    if a.count < 1:
        raise BadInputError(f"N: expected at least 1 device, got {a.count}")
    for path, what in ((a.root, "--root"), (a.bundle, "--bundle")):
        if not Path(path).exists():
            raise BadInputError(f"{what}: no such file or directory: {path}")
    devices = device_ids(a.count, a.id_prefix)
    fractions = {"fail_probation": parse_rate(a.fail_probation, "--fail-probation"),
                 "drop_link": parse_rate(a.drop_link, "--drop-link"),
                 "slow": parse_rate(a.slow, "--slow")}
    if sum(fractions.values()) > 1:
        raise BadInputError("the fault fractions add up to more than 100%")
    return SimSpec(broker_url=a.broker, protocol=a.protocol, root_file=Path(a.root).resolve(),
                   bundle=Path(a.bundle).resolve(), workdir=Path(workdir).resolve(),
                   devices=tuple(devices), groups=tuple(a.group or ["sim"]),
                   faults=assign_faults(devices, fractions, a.seed),
                   probation_s=parse_duration(a.probation, "--probation"), rps=a.rps,
                   telemetry_interval_s=parse_duration(a.telemetry, "--telemetry"),
                   drop_for_s=parse_duration(a.drop_for, "--drop-for"))


def fault_summary(faults: Mapping[str, str]) -> str:
    by: dict[str, list[str]] = {}
    for d, f in sorted(faults.items()):
        by.setdefault(f, []).append(d)
    return "; ".join(f"{f}: {len(ds)} ({', '.join(ds[:5])}{'…' if len(ds) > 5 else ''})"
                     for f, ds in by.items()) or "none"


def cmd_simulate(a: argparse.Namespace) -> int:
    workdir = a.workdir or default_workdir()
    try:
        return _simulate(a, build_spec(a, workdir))
    finally:
        if a.workdir is None:  # ours: a temporary directory
            shutil.rmtree(workdir, ignore_errors=True)


def _simulate(a: argparse.Namespace, spec: SimSpec) -> int:
    procs = a.processes or default_processes(a.count)
    if procs and math.ceil(a.count / procs) > MAX_PER_PROCESS:
        raise BadInputError(f"--processes {procs}: {math.ceil(a.count / procs)} agents per "
                            f"process; at most {MAX_PER_PROCESS} fit (paho-mqtt uses select(), "
                            "which takes file descriptors below 1024; each agent holds ~6)")
    sims = SimProcesses(split(spec, procs))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    print(f"starting {a.count} agents in {len(sims.specs)} process(es) against {a.broker}; "
          f"groups {', '.join(spec.groups)}; faults: {fault_summary(spec.faults)}", flush=True)
    try:
        reports = sims.start()
        up = sum(r.connected for r in reports)
        print(f"{up} of {a.count} agents connected after {time.monotonic() - t0:.1f} s "
              f"(state under {spec.workdir}); Ctrl-C stops them", flush=True)
        stop.wait(parse_duration(a.duration, "--duration") if a.duration else None)
    except TransportError as e:
        print(f"edge-fleet simulate: {e}", file=sys.stderr)
        return 1
    finally:
        sims.stop()
    print("stopped", flush=True)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("simulate", help="run N simulated agents against a broker",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("count", type=int, metavar="N")
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://host:port; several, comma separated, are tried in order")
    p.add_argument("--protocol", default="5", choices=PROTOCOLS,
                   help="MQTT version of every agent (default 5: 'auto' waits only 3 s for "
                        "an MQTT 5 CONNACK, which a busy simulator may miss)")
    p.add_argument("--root", required=True, type=Path,
                   help="the repository's provisioned root.json (trust anchor)")
    p.add_argument("--bundle", required=True, type=Path, help="model every device starts with")
    p.add_argument("--workdir", type=Path,
                   help="per-device state directories, kept (default: a temporary "
                        "directory on /dev/shm, removed at exit)")
    p.add_argument("--processes", type=int, help=f"default: N/{DEVICES_PER_PROCESS}, ≤ CPUs")
    p.add_argument("--group", action="append", help="group of every device (repeat; sim)")
    p.add_argument("--id-prefix", default="sim", help="device ids <prefix>-000…")
    p.add_argument("--fail-probation", default="0%", help="fraction failing probation")
    p.add_argument("--drop-link", default="0%", help="fraction losing the link mid-update")
    p.add_argument("--drop-for", default="3s", help="how long a dropped link stays down")
    p.add_argument("--slow", default="0%", help="fraction behind a slow link")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--probation", default="2s", help="update probation window")
    p.add_argument("--rps", type=float, default=1.0, help="predictions/s per device")
    p.add_argument("--telemetry", default="30s", help="telemetry interval")
    p.add_argument("--duration", help="stop after this long (default: until Ctrl-C)")
    p.set_defaults(func=cmd_simulate)
