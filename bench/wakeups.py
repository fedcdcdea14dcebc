"""How often an idle agent wakes up (issue 17 part 4: goal ≤ 3 wake-ups/s).

    .venv/bin/python bench/wakeups.py [--seconds 60] [--interval 10] [--burst N] [--src DIR]
                                      [--json OUT]

A real ``edge-agent run`` process (digits bundle, HTTP on, MQTT connected to a real
Mosquitto, telemetry every ``--interval`` s) is started, given 5 s to settle (with
``--burst N``: then sent N ``:predict`` requests, each on its own connection, and given 5 s
more), then left alone for ``--seconds``; the figure is the rise of every thread's
voluntary + involuntary context switches (``/proc/PID/task/*/status``) over that window ÷
its length, with the per-thread breakdown (which thread wakes up). ``--src DIR`` runs the
agent from another checkout (e.g. a worktree of main) for a before/after. Also reported:
the process CPU time over the window (utime + stime) as % of one core, and the load
average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.telemetry.system import context_switches  # noqa: E402


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, seconds: float) -> dict[str, Any]:
    c0, t0, cpu0 = context_switches(pid), time.monotonic(), cpu_s(pid)
    time.sleep(seconds)
    c1, t1, cpu1 = context_switches(pid), time.monotonic(), cpu_s(pid)
    dt = t1 - t0
    per = {tid: (c1[tid] - c0.get(tid, 0)) / dt for tid in c1}
    return {"wakeups_per_s": sum(per.values()), "seconds": dt, "threads": len(c1),
            "per_thread": dict(sorted(per.items(), key=lambda kv: -kv[1])),
            "cpu_pct": 100.0 * (cpu1 - cpu0) / dt}


def burst(bundle: Path, log: str, n: int) -> None:
    """``n`` ``:predict`` requests of zeros to the agent ``log`` says is ready, each on a
    connection of its own that the client closes (as urllib does)."""
    import re
    import urllib.request

    import numpy as np

    from edge_agent.bundle import read_bundle

    m = re.search(r"ready: .* on (http://[\d.:]+)", log)
    if m is None:
        sys.exit(f"no HTTP address in the agent's log:\n{log[-2000:]}")
    man = read_bundle(bundle).manifest
    x = np.zeros([1, *(max(1, d) for d in man.inputs[0].shape[1:])]).tolist()
    body = json.dumps({"instances": x}).encode()
    for _ in range(n):
        req = urllib.request.Request(f"{m.group(1)}/v1/models/{man.name}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()


def main() -> int:
    import importlib.util

    # bench/fleet.py's broker and bundle finder (its name clashes with the fleet package)
    spec = importlib.util.spec_from_file_location("bench_fleet", ROOT / "bench" / "fleet.py")
    assert spec is not None and spec.loader is not None
    bench_fleet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_fleet)
    find_digits, start_broker = bench_fleet.find_digits, bench_fleet.start_broker

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=10.0, help="telemetry interval_s")
    p.add_argument("--src", type=Path, default=ROOT, help="checkout to run the agent from")
    p.add_argument("--no-mqtt", action="store_true")
    p.add_argument("--burst", type=int, default=0, metavar="N",
                   help="N :predict requests (one connection each) before the idle window")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    bundle = find_digits()
    tmp = Path(tempfile.mkdtemp(prefix="bench-wakeups-"))
    broker, url = (None, "") if a.no_mqtt else start_broker(tmp)
    mqtt = "" if broker is None else (f'[mqtt]\nurl = "{url}"\n'
                                      f'[telemetry]\ninterval_s = {a.interval}\n')
    conf = tmp / "agent.toml"
    conf.write_text(f'[agent]\ndevice_id = "wake"\nstore_dir = "{tmp / "store"}"\n'
                    'profile = "generic-x86_64"\nprobe_runtime = false\n[http]\nport = 0\n'
                    f'{mqtt}[[models]]\nbundle = "{bundle}"\n')
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(a.src.resolve()))
    log = open(tmp / "agent.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                             str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp)  # not this checkout: -m would import from the cwd
    try:
        deadline = time.monotonic() + 30
        while b"ready:" not in (tmp / "agent.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"agent did not start:\n{(tmp / 'agent.log').read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(5.0)  # settle: birth, first telemetry, connections
        if a.burst:
            burst(bundle, (tmp / "agent.log").read_text(), a.burst)
            time.sleep(5.0)  # the records folded, the answers' sockets closed
        load0 = os.getloadavg()[0]
        r = measure(proc.pid, a.seconds)
        r.update({"src": str(a.src), "mqtt": broker is not None, "interval_s": a.interval,
                  "burst": a.burst,
                  "loadavg": [load0, os.getloadavg()[0]]})
        t0 = time.monotonic()
        proc.terminate()
        r["exit_code"] = proc.wait(30)
        r["sigterm_to_exit_s"] = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    top = ", ".join(f"{tid}: {v:.2f}" for tid, v in list(r["per_thread"].items())[:6])
    print(f"src {a.src}: {r['wakeups_per_s']:.2f} wake-ups/s over {r['seconds']:.0f} s "
          f"({r['threads']} threads; busiest {top}), CPU {r['cpu_pct']:.3f} % of a core, "
          f"MQTT {'on' if r['mqtt'] else 'off'}, telemetry {a.interval:g} s, burst {a.burst}, "
          "SIGTERM → exit "
          f"{r['sigterm_to_exit_s']:.2f} s (rc {r['exit_code']}), load {load0:.2f}")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
