"""``edge-fleet dashboard`` in a real headless browser, against a real Mosquitto and real
(simulated) agents; a real staged rollout's waves advance on the page."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_browser import browser  # noqa: F401 (the fixture)
from fleet_helpers import SimFactory, Workstation
from waiting import wait_for

from edge_agent.errors import ConfigError
from edge_agent.mqtt.topics import FleetTopics, Topics
from fleet.dashboard import EVENTS_PER_DEVICE, MAX_ROLLOUTS, FleetBoard
from fleet.rollout import Rollout, RolloutRequest
from fleet.rollout_core import Policy, RolloutState

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CMD = [sys.executable, "-m", "fleet.cli", "dashboard"]


def _dashboard(broker: str) -> Iterator[str]:
    p = subprocess.Popen([*CMD, "--broker", broker, "--port", "0"], cwd=ROOT, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.search(r"(http://[\d.]+:\d+/)", line)
        assert m, f"no URL in {line!r} (stderr: {p.stderr.read() if p.poll() else ''})"
        yield m.group(1)
    finally:
        p.terminate()
        p.wait(10)


@pytest.fixture
def dashboard_url(mosquitto: Any) -> Iterator[str]:
    yield from _dashboard(mosquitto.url)


# The page redraws every second: read what it shows in one script call, never through
# element handles that a redraw makes stale.
def _page_waves(drv: Any) -> list[str]:
    return list(drv.execute_script(
        "return [...document.querySelectorAll('.rollout .wave')].map(w => w.dataset.status)"))


def _rows(drv: Any) -> dict[str, list[str]]:
    return dict(drv.execute_script(
        "const o = {}; document.querySelectorAll('#devices tbody tr').forEach(r => "
        "{o[r.dataset.device] = [...r.cells].map(c => c.textContent)}); return o"))


def _row_text(drv: Any) -> dict[str, str]:
    return {d: " ".join(cells) for d, cells in _rows(drv).items()}


def test_dashboard_shows_devices_and_a_rollouts_waves_advancing_in_a_browser(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any,
        dashboard_url: str, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    devices = [f"sim-{i:02d}" for i in range(4)]
    sim = start_sim(devices, telemetry_interval_s=1.0)
    browser.get(dashboard_url)
    rows = wait_for(lambda: (r := _row_text(browser)) and len(r) == 4 and all(
        "online" in t and "digits v1" in t for t in r.values()) and r, 20,
        "the 4 simulated devices online with digits v1 on the page")
    assert set(rows) == set(devices)
    assert browser.execute_script("return document.getElementById('summary').textContent") \
        == "4 devices, 4 online"
    # telemetry figures arrive live: every row gets a p50 latency and a request rate
    wait_for(lambda: all(c[7] != "–" and c[6] != "–" for c in _rows(browser).values()), 20,
             "p50 and req/s of every device on the page")
    # the agents' events (model.loaded at start) appear per device
    wait_for(lambda: sorted(browser.execute_script(
        "return [...document.querySelectorAll('#events .device-events')]"
        ".filter(d => d.querySelector('li')).map(d => d.dataset.device)")) == devices, 20,
        "each device's recent events")
    browser.save_screenshot(str(tmp_path / "fleet-devices.png"))

    req = RolloutRequest(bundle=digits.bundle_v2, repo=workstation.repo.path,
                         broker=mosquitto.url, group="sim",
                         policy=Policy("1", "2", 0.10, 60.0),
                         state_path=tmp_path / "rollout.json", chunk_size=16384)
    done: list[RolloutState] = []
    t = threading.Thread(target=lambda: done.append(
        Rollout(req, workstation.signers(), say=lambda _m: None).run()))
    t.start()
    seen: list[list[str]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        waves = _page_waves(browser)
        if waves and (not seen or seen[-1] != waves):
            seen.append(waves)
            if waves[0] == "passed" and waves[-1] in ("pending", "waiting"):
                browser.save_screenshot(str(tmp_path / "fleet-rollout-mid.png"))
        if waves and all(w == "passed" for w in waves):
            break
        time.sleep(0.1)
    t.join(60)
    assert done and done[0].status == "completed"
    # Three waves (1, 2, 1 devices), seen advancing one after the other on the page.
    assert seen[-1] == ["passed"] * 3, seen
    assert any(s[0] == "passed" and s[2] != "passed" for s in seen), seen
    assert browser.execute_script(
        "return document.querySelector('.rollout strong').textContent").endswith("completed")
    wait_for(lambda: all("digits v2" in t for t in _row_text(browser).values()), 20,
             "every row showing digits v2")
    assert all(v == 2 for v in sim.active_versions("digits").values())
    browser.save_screenshot(str(tmp_path / "fleet-rollout-done.png"))
    # read-only: the page has nothing that could send a command
    assert browser.find_elements("css selector", "form, button, input") == []


def test_dashboard_with_an_unreachable_broker_exits_2_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    p = subprocess.run([*CMD, "--broker", f"mqtt://127.0.0.1:{port}", "--port", "0"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-fleet: error:"), p.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert p.stdout == ""  # no URL printed: nothing was served


def test_dashboard_memory_is_bounded_per_device_and_per_rollout() -> None:
    board = FleetBoard()
    for i in range(EVENTS_PER_DEVICE * 5):
        board.ingest("edge/pi-1/events", json.dumps(
            {"level": "info", "kind": "model.loaded", "message": "x" * 10_000, "at": i,
             "seq": i}).encode())
    for i in range(MAX_ROLLOUTS * 3):
        board.ingest(f"edge/rollouts/r{i}/progress",
                     json.dumps({"rollout": f"r{i}", "waves": []}).encode())
    board.ingest("edge/rollouts/r59/progress", b"")  # deleted progress is dropped
    snap = board.snapshot()
    evs = snap["events"]["pi-1"]
    assert len(evs) == EVENTS_PER_DEVICE and evs[-1]["at"] == EVENTS_PER_DEVICE * 5 - 1
    assert all(len(e["message"]) <= 300 for e in evs)
    assert [r["rollout"] for r in snap["rollouts"]][:2] == ["r58", "r57"]
    assert len(snap["rollouts"]) == MAX_ROLLOUTS - 1
    # not a device: no row for the reserved "rollouts" level
    assert [d["device"] for d in snap["devices"]] == ["pi-1"]


def test_dashboard_serves_only_its_files_and_the_snapshot(mosquitto: Any,
                                                            dashboard_url: str) -> None:
    for path, ctype in (("", "text/html"), ("dashboard.js", "text/javascript"),
                        ("dashboard.css", "text/css"), ("api/fleet", "application/json")):
        with urllib.request.urlopen(dashboard_url + path, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith(ctype)
            assert r.headers["Content-Security-Policy"] == "default-src 'self'"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(dashboard_url + "../pyproject.toml", timeout=10)
    assert e.value.code == 404


def test_reserved_fleet_levels_are_not_device_ids() -> None:
    for name in ("rollouts", "group", "blobs"):
        with pytest.raises(ConfigError, match="reserved for fleet topics"):
            Topics(name)
        assert Topics.device_of(f"edge/{name}/x/progress") is None
    assert FleetTopics().rollout_progress("digits-v2-group-sim") \
        == "edge/rollouts/digits-v2-group-sim/progress"
