"""bench/fleet: N simulated agents through one Mosquitto, updated to a new model version.

    .venv/bin/python bench/fleet.py [--devices 500] [--processes 4] [--probation 2]
                                    [--rps 0.2] [--chunk-size 65536] [--rollout]
                                    [--cluster] [--idle S [--idle-only]] [--json out.json]

``--idle S`` first measures the simulator's idle cost for S seconds once every agent is
online (worker processes' CPU as % of one core per 125 agents, and thread wake-ups per
second per agent from ``/proc/PID/task/*/status``); use ``--rps 0`` for a fleet with no
traffic at all.

What it does, all real: starts a private Mosquitto (``sys_interval 1`` for ``$SYS``
counters), creates a signed TUF repository, starts N agents with ``edge-fleet
simulate``'s engine (worker processes, each agent with its own MQTT client, store,
outbox and update state machine; one shared interpreter pool per process) on the digits
v1 bundle, waits until all are online, then:

* **push**: ``edge-fleet publish`` of v2 to the group topic; measures the time from the
  start of the publish to every device's ``update.committed`` event;
* **rollout** (``--rollout``): ``edge-fleet rollout`` of v3 with ``--canary 5% --step 25%``.
* **cluster** (``--cluster``, instead of the above): the same rollout of v2 on one
  Mosquitto, then on a two-node ejabberd cluster (tests/ejabberd_cluster.py): devices list
  ``[A, B]`` and connect to A, the rollout tool is on B, and node A is SIGKILLed when the
  second wave is announced. Columns side by side: devices, time to all decided, broker CPU
  (both nodes; A until it died), failover time (kill → every device's new online status).
  ejabberd has no ``$SYS``: its traffic rows count only what devices published.

Broker traffic per device comes from ``$SYS/broker/{publish/messages,bytes}/{received,
sent}`` deltas (minus what this bench's own subscriber received), and a per-topic count
of what devices published. Prints one table; ``--json`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.bundle import read_bundle, write_bundle  # noqa: E402
from edge_agent.mqtt import MqttClient, MqttConfig  # noqa: E402
from edge_agent.update.wire import Audience  # noqa: E402
from fleet import keys as fleet_keys  # noqa: E402
from fleet.publish import publish  # noqa: E402
from fleet.repo import FleetRepo  # noqa: E402
from fleet.rollout import Rollout, RolloutRequest  # noqa: E402
from fleet.rollout_core import Policy  # noqa: E402
from fleet.sim_agents import SimSpec, assign_faults  # noqa: E402
from fleet.simulate import SimProcesses, device_ids, fault_summary, split  # noqa: E402

SYS_KEYS = ("publish/messages/received", "publish/messages/sent", "bytes/received",
            "bytes/sent", "messages/received", "messages/sent")


# --- environment ----------------------------------------------------------------------------


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nsys_interval 1\nlog_type error\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "mosquitto.log", "ab"))  # noqa: SIM115
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"mqtt://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def find_digits() -> Path:
    cached = sorted((ROOT / ".cache" / "test-artifacts").glob("digits-*/digits-v1/manifest.json"),
                    key=lambda p: p.stat().st_mtime)
    if cached:
        return cached[-1].parent
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_bundles.py"), "--only",
                          "digits"], check=True, capture_output=True, text=True).stdout
    return Path(json.loads(out)["digits"])


def derive(src: Path, out: Path, version: int) -> Path:
    b = read_bundle(src)
    write_bundle(replace(b, manifest=replace(b.manifest, version=version)), out)
    return out


def make_repo(tmp: Path) -> tuple[FleetRepo, list[Any]]:
    roles = ("root", "targets", "snapshot", "timestamp")
    pubs = {r: fleet_keys.generate(tmp / "keys", r) for r in roles}
    repo = FleetRepo.create(tmp / "repo", keys={r: [pubs[r]] for r in roles}, thresholds={},
                            signers=[fleet_keys.load_signer(tmp / "keys" / "root.key")])
    return repo, fleet_keys.load_signers([tmp / "keys" / f"{r}.key" for r in roles[1:]], None)


# --- measuring ------------------------------------------------------------------------------


class Meter:
    """$SYS counters, device statuses and events, and what this subscriber itself received."""

    def __init__(self, url: str, *, sys_topics: bool = True) -> None:
        self.has_sys = sys_topics  # ejabberd has no $SYS: only this meter's own counts
        self.birth_at: dict[str, float] = {}  # device → when its latest online status came
        self.sys: dict[str, float] = {}
        self.sys_at: dict[str, float] = {}
        self.online: set[str] = set()
        self.committed: dict[int, dict[str, float]] = {}  # version → device → receive time
        self.failed: dict[int, set[str]] = {}
        self.by_kind: dict[str, list[int]] = {}  # events/status → [messages, bytes]
        self.own = [0, 0]  # messages, bytes this meter received on edge/#
        self._lock = threading.Lock()
        self.client = MqttClient(config=MqttConfig.from_url(url, max_incoming_bytes=1 << 24),
                                 client_id=f"bench-meter-{os.getpid()}",
                                 dispatch_queue=500_000)
        for key in (*SYS_KEYS, "uptime") if sys_topics else ():  # uptime: every interval
            self.client.subscribe(f"$SYS/broker/{key}", self._on_sys, qos=0)
        self.client.subscribe("edge/+/status", self._on_device, qos=1)
        self.client.subscribe("edge/+/events", self._on_device, qos=1)
        self.client.connect(10)

    def _on_sys(self, topic: str, payload: bytes) -> None:
        key = topic[len("$SYS/broker/"):]
        with self._lock:
            self.own[0] += 1
            self.own[1] += len(payload) + len(topic) + 4
            self.sys_at[key] = time.monotonic()
            if key in SYS_KEYS:
                self.sys[key] = float(payload)

    def _on_device(self, topic: str, payload: bytes) -> None:
        _, device, kind = topic.split("/")
        now = time.monotonic()
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        with self._lock:
            self.own[0] += 1
            self.own[1] += len(payload) + len(topic) + 4  # PUBLISH header ≈ 4 bytes
            c = self.by_kind.setdefault(kind, [0, 0])
            c[0] += 1
            c[1] += len(payload)
            if kind == "status":
                if doc.get("state") == "online":
                    self.online.add(device)
                    self.birth_at[device] = now
                else:
                    self.online.discard(device)
            elif doc.get("kind") == "update.committed":
                v = (doc.get("data") or {}).get("version")
                self.committed.setdefault(v, {}).setdefault(device, now)
            elif doc.get("kind") in ("update.rolled_back", "update.rejected"):
                v = (doc.get("data") or {}).get("version")
                self.failed.setdefault(v, set()).add(device)

    def snapshot(self) -> dict[str, float]:
        """$SYS values of the next interval after now (Mosquitto sends a counter only when it
        changed; ``uptime`` marks each interval), plus what this meter received."""
        t = time.monotonic()
        while self.has_sys:
            with self._lock:
                tick = self.sys_at.get("uptime", 0.0)
            if tick > t + 0.05 and time.monotonic() > tick + 0.3:
                with self._lock:
                    return {**{k: 0.0 for k in SYS_KEYS}, **self.sys,
                            "own_messages": self.own[0], "own_bytes": self.own[1],
                            **{f"{k}_messages": v[0] for k, v in self.by_kind.items()},
                            **{f"{k}_bytes": v[1] for k, v in self.by_kind.items()}}
            time.sleep(0.05)
        with self._lock:
            return {**{f"{k}_messages": v[0] for k, v in self.by_kind.items()},
                    **{f"{k}_bytes": v[1] for k, v in self.by_kind.items()}}

    @property
    def dropped(self) -> int:
        return self.client.dropped_incoming

    def wait(self, pred: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if pred():
                    return True
            time.sleep(0.05)
        return False


def diagnose(meter: Meter, version: int, n: int, pids: list[int]) -> None:
    """Name the devices that did not finish, with their update state (stderr)."""
    with meter._lock:
        done = set(meter.committed.get(version, {})) | meter.failed.get(version, set())
    missing = [d for d in device_ids(n, "sim") if d not in done]
    print(f"not finished: {len(missing)}: {missing[:20]}", file=sys.stderr)
    workdir = Path(tempfile.gettempdir())
    for d in missing[:5]:
        for st in workdir.glob(f"bench-fleet-*/fleet/{d}/store/update/state.json"):
            print(f"--- {st}\n{st.read_text()[:1500]}", file=sys.stderr)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def switches(pids: list[int]) -> int:
    """Context switches (voluntary + not) of every thread of ``pids`` so far."""
    n = 0
    for pid in pids:
        for st in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                text = st.read_text()
            except OSError:  # the thread ended
                continue
            n += sum(int(v) for v in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)",
                                                   text, re.M))
    return n


def idle_cost(pids: list[int], n: int, seconds: float) -> dict[str, float]:
    """The simulator processes' CPU and wake-ups over ``seconds`` with the fleet idle:
    % of one core per 125 agents, wake-ups per second per agent; printed and returned."""
    c0, s0, t0 = cpu_seconds(pids), switches(pids), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    cpu, sw = cpu_seconds(pids) - c0, switches(pids) - s0
    r = {"seconds": round(wall, 1), "agents": n,
         "cpu_pct_per_125": round(cpu / wall * 100 * 125 / n, 2),
         "wakeups_per_s_per_agent": round(sw / wall / n, 2), "load": os.getloadavg()[0]}
    print(f"idle {wall:.0f} s, {n} agents: {r['cpu_pct_per_125']:.2f} % of a core per 125 "
          f"agents, {r['wakeups_per_s_per_agent']:.2f} wake-ups/s per agent "
          f"(load {r['load']:.2f})", flush=True)
    return r


def traffic(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Per-device broker traffic between two snapshots, without this meter's own share.

    Mosquitto's ``publish/messages/received`` leaves out retained PUBLISHes (statuses,
    announcements, chunks), so device-published messages are counted by the meter.
    """
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    own_m, own_b = d.get("own_messages", 0.0), d.get("own_bytes", 0.0)
    dev_msgs = d.get("events_messages", 0.0) + d.get("status_messages", 0.0)
    mine = {
        "device_publishes_per_device": dev_msgs / n,
        "device_events_per_device": d.get("events_messages", 0.0) / n,
        "device_status_per_device": d.get("status_messages", 0.0) / n,
        "device_bytes_published_per_device": (d.get("events_bytes", 0.0)
                                              + d.get("status_bytes", 0.0)) / n,
    }
    if "bytes/sent" not in d:  # no $SYS counters (ejabberd)
        return mine
    return {
        **mine,
        "publishes_out_per_device": (d["publish/messages/sent"] - own_m) / n,
        "packets_per_device": (d["messages/received"] + d["messages/sent"] - own_m) / n,
        "bytes_in_per_device": d["bytes/received"] / n,
        "bytes_out_per_device": (d["bytes/sent"] - own_b) / n,
    }


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else float("nan")


# --- scenarios ------------------------------------------------------------------------------


def push(meter: Meter, repo: FleetRepo, signers: list[Any], bundle: Path, url: str, n: int,
         chunk: int, pids: list[int], timeout_s: float) -> dict[str, Any]:
    version = read_bundle(bundle).version
    agents, brk = pids[:-1], pids[-1:]
    before, cpu0, broker_cpu0 = meter.snapshot(), cpu_seconds(agents), cpu_seconds(brk)
    t0 = time.monotonic()
    res = publish(repo, bundle, signers, audience=Audience(groups=("sim",)), broker=url,
                  chunk_size=chunk)
    t_pub = time.monotonic() - t0
    ok = meter.wait(lambda: len(meter.committed.get(version, {})) + len(
        meter.failed.get(version, set())) >= n, timeout_s)
    t_all = time.monotonic() - t0
    if not ok:
        diagnose(meter, version, n, pids)
    after = meter.snapshot()
    times = [t - t0 for t in meter.committed.get(version, {}).values()]
    return {"scenario": f"push v{version} to group", "devices": n, "ok": ok,
            "committed": len(times), "failed": len(meter.failed.get(version, set())),
            "publish_s": round(t_pub, 2), "all_committed_s": round(t_all, 2) if ok else None,
            "p50_s": round(pct(times, 0.5), 2), "p90_s": round(pct(times, 0.9), 2),
            "max_s": round(max(times), 2) if times else None,
            "bundle_bytes": res.length, "chunks": res.chunks,
            "agent_cpu_s_per_device": round((cpu_seconds(agents) - cpu0) / n, 4),
            "broker_cpu_s": round(cpu_seconds(brk) - broker_cpu0, 2),
            **{k: round(v, 1) for k, v in traffic(before, after, n).items()}}


def rollout(meter: Meter, repo: FleetRepo, signers: list[Any], bundle: Path, url: str, n: int,
            chunk: int, timeout_s: float, brokers: list[int] | None = None,
            kill: Callable[[], list[int]] | None = None, name: str = "") -> dict[str, Any]:
    """A staged rollout; with ``kill``, that is called once the second wave is announced
    (a cluster node dies; it returns the broker pids still alive) and the failover time is
    how long until every device has sent a new online status."""
    version = read_bundle(bundle).version
    before = meter.snapshot()
    pids = list(brokers or [])
    cpu0 = {p: cpu_seconds([p]) for p in pids}
    cpu_dead = 0.0
    killed_at: list[float] = []

    def say(m: str) -> None:
        nonlocal cpu_dead, pids
        print(f"  {m}", flush=True)
        if kill is not None and not killed_at and m.startswith("wave 1:"):
            alive = set(pids)
            before_kill = {p: cpu_seconds([p]) - cpu0[p] for p in pids}
            killed_at.append(time.monotonic())
            pids = kill()
            cpu_dead = sum(v for p, v in before_kill.items() if p not in pids and p in alive)
            print(f"  -- killed a broker node ({len(alive) - len(pids)} of {len(alive)})",
                  flush=True)

    t0 = time.monotonic()
    req = RolloutRequest(bundle=bundle, repo=repo.path, broker=url, group="sim",
                         policy=Policy("5%", "25%", 0.10, timeout_s), chunk_size=chunk,
                         discover_s=5.0)
    st = Rollout(req, signers, say=say).run()
    t_all = time.monotonic() - t0
    after = meter.snapshot()
    waves = [round((w.decided_at or 0) - (w.started_at or 0), 1) for w in st.waves]
    out: dict[str, Any] = {}
    if pids or cpu_dead:
        out["broker_cpu_s"] = round(cpu_dead + sum(cpu_seconds([p]) - cpu0[p] for p in pids), 2)
    if killed_at:
        k = killed_at[0]
        back = meter.wait(lambda: all(meter.birth_at.get(d, 0.0) > k
                                      for d in device_ids(n, "sim")), 60)
        with meter._lock:
            births = [meter.birth_at.get(d, 0.0) - k for d in device_ids(n, "sim")]
        out["failover_s"] = round(max(births), 2) if back else None
        out["failover_p50_s"] = round(pct(births, 0.5), 2) if back else None
    return {"scenario": name or f"rollout v{version} canary 5% step 25%", "devices": n,
            "ok": st.status == "completed", **out,
            "committed": sum(1 for r in st.devices.values() if r.outcome.value == "committed"),
            "failed": sum(1 for r in st.devices.values() if r.outcome.value == "failed"),
            "all_committed_s": round(t_all, 2), "waves": len(st.waves), "wave_s": waves,
            **{k: round(v, 1) for k, v in traffic(before, after, n).items()}}


ROWS = (("devices", "devices"), ("committed", "committed"), ("failed", "failed (rolled back)"),
        ("all_committed_s", "time to every device decided (s)"), ("publish_s", "sign+publish (s)"),
        ("p50_s", "per-device commit p50 (s)"), ("p90_s", "per-device commit p90 (s)"),
        ("waves", "waves"), ("wave_s", "wave durations (s)"),
        ("bundle_bytes", "bundle (bytes)"), ("chunks", "MQTT chunks"),
        ("device_publishes_per_device", "PUBLISH by the device / device"),
        ("device_events_per_device", "  of which events"),
        ("device_status_per_device", "  of which retained status"),
        ("publishes_out_per_device", "PUBLISH delivered by broker / device"),
        ("packets_per_device", "all MQTT packets in+out / device"),
        ("bytes_in_per_device", "bytes into broker / device"),
        ("bytes_out_per_device", "bytes out of broker / device"),
        ("device_bytes_published_per_device", "payload bytes the device published"),
        ("agent_cpu_s_per_device", "agent CPU s / device update"),
        ("broker_cpu_s", "broker CPU s"),
        ("failover_s", "failover: node killed → every device back online (s)"),
        ("failover_p50_s", "failover, per device p50 (s)"))


def table(results: list[dict[str, Any]]) -> str:
    head = ["figure", *[r["scenario"] for r in results]]
    rows = [head]
    for key, label in ROWS:
        if any(key in r for r in results):
            rows.append([label, *[str(r.get(key, "–")) for r in results]])
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in rows]
    out.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--probation", type=float, default=2.0, help="seconds")
    ap.add_argument("--rps", type=float, default=0.2, help="predictions/s per device")
    ap.add_argument("--chunk-size", type=int, default=65536)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--rollout", action="store_true", help="also a staged rollout of v3")
    ap.add_argument("--bundle", type=Path, help="digits v1 bundle (default: the test cache)")
    ap.add_argument("--fail-probation", type=float, default=0.0, help="fraction, e.g. 0.02")
    ap.add_argument("--drop-link", type=float, default=0.0, help="fraction")
    ap.add_argument("--slow", type=float, default=0.0, help="fraction")
    ap.add_argument("--disk", action="store_true",
                    help="device state on the real disk instead of tmpfs (/dev/shm)")
    ap.add_argument("--cluster", action="store_true",
                    help="a staged rollout on one Mosquitto and on a two-node ejabberd "
                         "cluster (devices on node A, the rollout on node B, node A killed "
                         "when the second wave starts), side by side")
    ap.add_argument("--idle", type=float, default=0.0,
                    help="seconds: measure the simulator's idle CPU and wake-ups first")
    ap.add_argument("--idle-only", action="store_true", help="stop after --idle")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.cluster:
        return main_cluster(a)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    # Device state on tmpfs: 500 real devices have 500 disks, not one shared disk whose
    # fsync queue would be the bottleneck (see docs/scale.md). --disk measures that too.
    shm = Path("/dev/shm")
    fleet_dir = tmp / "fleet" if a.disk or not shm.is_dir() else \
        Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=shm))
    broker, url = start_broker(tmp)
    sims: SimProcesses | None = None
    try:
        v1 = a.bundle or find_digits()
        v2, v3 = derive(v1, tmp / "v2", 2), derive(v1, tmp / "v3", 3)
        repo, signers = make_repo(tmp)
        devices = device_ids(a.devices, "sim")
        spec = SimSpec(broker_url=url, root_file=repo.meta_dir / "1.root.json", bundle=v1,
                       workdir=fleet_dir, devices=tuple(devices), groups=("sim",),
                       probation_s=a.probation, rps=a.rps, telemetry_interval_s=300.0,
                       keepalive_s=30,
                       faults=assign_faults(devices, {"fail_probation": a.fail_probation,
                                                      "drop_link": a.drop_link,
                                                      "slow": a.slow}))
        meter = Meter(url)
        t0 = time.monotonic()
        sims = SimProcesses(split(spec, a.processes))
        sims.start(timeout_s=600)
        if not meter.wait(lambda: len(meter.online) >= a.devices, 120):
            print(f"only {len(meter.online)} of {a.devices} online (meter dropped "
                  f"{meter.dropped} messages)", file=sys.stderr)
            return 1
        start_s = time.monotonic() - t0
        print(f"{a.devices} agents online in {start_s:.1f} s ({a.processes} processes)",
              flush=True)
        time.sleep(2.0)  # let start-up traffic settle out of the counters
        pids = [p.pid for p in sims.procs] + [broker.pid]
        idle = idle_cost([p.pid for p in sims.procs], a.devices, a.idle) if a.idle else None
        if a.idle_only:
            if a.json:
                a.json.write_text(json.dumps({"start_s": start_s, "idle": idle}, indent=1))
            return 0
        results = [push(meter, repo, signers, v2, url, a.devices, a.chunk_size, pids,
                        a.timeout)]
        if a.rollout:
            results.append(rollout(meter, repo, signers, v3, url, a.devices, a.chunk_size,
                                   a.timeout))
        print()
        print(f"bench/fleet — {a.devices} simulated agents, {a.processes} processes, "
              f"{os.cpu_count()} CPUs, probation {a.probation:g} s, {a.rps:g} req/s per "
              f"device, chunk {a.chunk_size} B, device state on "
              f"{'disk' if a.disk else 'tmpfs'}, start-up {start_s:.1f} s, faults: "
              f"{fault_summary(spec.faults)}")
        print(table(results))
        if a.json:
            a.json.write_text(json.dumps({"start_s": start_s, "results": results}, indent=1))
        return 0 if all(r["ok"] for r in results) else 1
    finally:
        if sims is not None:
            sims.stop()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(fleet_dir, ignore_errors=True)


def start_fleet(a: argparse.Namespace, spec: SimSpec, meter: Meter) -> SimProcesses:
    sims = SimProcesses(split(spec, a.processes))
    sims.start(timeout_s=600)
    if not meter.wait(lambda: len(meter.online) >= a.devices, 120):
        sims.stop()
        raise RuntimeError(f"only {len(meter.online)} of {a.devices} online")
    time.sleep(2.0)  # let start-up traffic settle out of the counters
    return sims


def main_cluster(a: argparse.Namespace) -> int:
    """``--cluster``: the same rollout on one Mosquitto, then on a two-node ejabberd cluster
    with node A killed mid-rollout (tests/ejabberd_cluster.py starts it)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import ejabberd_cluster

    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and not a.disk else tmp
    broker, url = start_broker(tmp)
    cluster = ejabberd_cluster.Cluster(tmp / "cluster")
    results: list[dict[str, Any]] = []
    try:
        v1 = a.bundle or find_digits()
        v2 = derive(v1, tmp / "v2", 2)
        devices = tuple(device_ids(a.devices, "sim"))
        for where in ("mosquitto", "cluster"):
            repo, signers = make_repo(tmp / where)
            if where == "cluster":
                cluster.start()
                dev_url, tool_url = cluster.urls, cluster.b.url
                pids = [p for p in (cluster.a.pid, cluster.b.pid) if p is not None]
            else:
                dev_url = tool_url = url
                pids = [broker.pid]
            spec = SimSpec(broker_url=dev_url, root_file=repo.meta_dir / "1.root.json",
                           bundle=v1, workdir=Path(tempfile.mkdtemp(prefix=f"bench-{where}-",
                                                                    dir=base)),
                           devices=devices, groups=("sim",), probation_s=a.probation,
                           rps=a.rps, telemetry_interval_s=300.0, keepalive_s=30)
            meter = Meter(tool_url, sys_topics=where == "mosquitto")
            sims = start_fleet(a, spec, meter)
            try:
                if where == "cluster":
                    def kill() -> list[int]:
                        cluster.a.kill()
                        return [p for p in (cluster.b.pid,) if p is not None]
                    results.append(rollout(meter, repo, signers, v2, tool_url, a.devices,
                                           a.chunk_size, a.timeout, pids, kill,
                                           "rollout, 2-node ejabberd, node A killed"))
                else:
                    results.append(rollout(meter, repo, signers, v2, tool_url, a.devices,
                                           a.chunk_size, a.timeout, pids,
                                           name="rollout, one Mosquitto"))
            finally:
                sims.stop()
                meter.client.stop()
                shutil.rmtree(spec.workdir, ignore_errors=True)
        print()
        print(f"bench/fleet --cluster — {a.devices} simulated agents, {a.processes} "
              f"processes, {os.cpu_count()} CPUs, probation {a.probation:g} s, chunk "
              f"{a.chunk_size} B; load {os.getloadavg()[0]:.2f}")
        print(table(results))
        if a.json:
            a.json.write_text(json.dumps({"results": results}, indent=1))
        return 0 if all(r["ok"] for r in results) else 1
    finally:
        cluster.stop()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
