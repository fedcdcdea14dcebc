"""An idle agent sleeps (issue 17 part 4): a real ``edge-agent run`` with MQTT connected to
a real Mosquitto and telemetry every 10 s wakes up at most a few times a second, counted
from ``/proc/PID/task/*/status`` context switches; it still answers, still reports, and
still stops promptly on SIGTERM. (Before: 21.6 wake-ups/s — fixed poll intervals in the
telemetry drain, the outbox forwarder, the MQTT loop, HTTP and the main thread.)

The window is measured once the 20 requests before it are really done with, and holds
exactly one telemetry tick. It used to start 2 s after them and last 10 s, so it caught the
HTTP loop waking once per closed connection 10 s on (~20 wake-ups, since fixed: tests/agent/
test_http_loop.py) and, when the first tick after the requests fell in it, that tick's
one-off ``numpy.ma`` import (~30 more; tests/telemetry/test_stats.py): 7.7/s once under load.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telemetry_helpers import AgentProcess, Recorder, start_mosquitto
from waiting import wait_for

from edge_agent.telemetry.system import context_switches

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc"),
              pytest.mark.serial]  # a wake-up rate: CPU contention would blur it

IDLE_BOUND_PER_S = 6.0  # goal 3/s (bench/wakeups.py measures it over 60 s); loose for CI
TELEMETRY_S = 10.0  # the agent's telemetry interval
SETTLE_AFTER_TICK_S = 0.5  # the tick's outbox round trip (PUBACK, delete) is over by then
WINDOW_MARGIN_S = 1.0  # window = one telemetry period + this: one tick, even a late one


@pytest.fixture
def broker(tmp_path: Path):
    b = start_mosquitto(tmp_path / "broker")
    yield b
    b.stop()


def _predict(url: str, x: Any) -> int:
    req = urllib.request.Request(f"{url}/v1/models/digits:predict", method="POST",
                                 data=json.dumps({"instances": x.tolist()}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(np.argmax(json.loads(r.read())["predictions"][0]))


def test_idle_agent_with_mqtt_and_telemetry_wakes_at_most_a_few_times_a_second(
        tmp_path: Path, broker, digits) -> None:
    rec = Recorder(broker.url, "edge/idle-1/#")
    agent = AgentProcess(tmp_path / "agent", broker.url, "idle-1", interval_s=TELEMETRY_S,
                         bundles=(digits.bundle,))
    try:
        agent.start()
        rec.wait("/status", lambda d: d["state"] == "online", 60)
        wait_for(lambda: re.search(r"ready: .* on (http://[\d.:]+)", agent.tail()), 30,
                 "the agent's HTTP address")
        url = re.search(r"ready: .* on (http://[\d.:]+)", agent.tail()).group(1)  # type: ignore[union-attr]
        ev = np.load(digits.eval_npz)
        before = [_predict(url, ev["x"][i:i + 1]) for i in range(20)]  # wakes every thread
        # Settle until the burst's work is over: the drain folds the records 0.1 s after
        # the first one, the HTTP loop keeps no deadline for the closed connections, and
        # the first telemetry after the burst reports it. The window then starts just
        # after that tick and spans one telemetry period plus a margin: exactly one tick.
        rec.wait("/telemetry", lambda d: d["models"].get("digits", {})
                 .get("total_requests", 0) >= 20, TELEMETRY_S + 15)
        time.sleep(SETTLE_AFTER_TICK_S)
        assert agent.proc is not None
        pid = agent.proc.pid
        c0, t0 = context_switches(pid), time.monotonic()
        time.sleep(TELEMETRY_S + WINDOW_MARGIN_S)
        c1, t1 = context_switches(pid), time.monotonic()
        assert c1, "no /proc/PID/task entries"
        rate = sum(c1[t] - c0.get(t, 0) for t in c1) / (t1 - t0)
        print(f"idle agent: {rate:.2f} wake-ups/s over {t1 - t0:.1f} s")
        assert rate <= IDLE_BOUND_PER_S, f"{rate:.1f} wake-ups/s idle: {c0} → {c1}"
        # asleep, not dead: it still answers the same, and the telemetry after the window
        # counts the predictions made since
        assert [_predict(url, ev["x"][i:i + 1]) for i in range(20)] == before
        t = rec.wait("/telemetry", lambda d: d["models"].get("digits", {})
                     .get("total_requests", 0) >= 40, TELEMETRY_S + 15)
        assert t["models"]["digits"]["total_requests"] >= 40
        # and SIGTERM still stops it promptly and cleanly (offline "shutdown" status)
        s0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(10) == 0, agent.tail()
        assert time.monotonic() - s0 < 5.0
        bye = rec.wait("/status", lambda d: d["state"] == "offline", 15)
        assert bye["reason"] == "shutdown"
    finally:
        agent.stop()
        rec.close()
