"""``/metrics`` of a real agent (predictions, drift, a committed signed update) as a
Prometheus user sees it: ``promtool check metrics`` clean, OpenMetrics when asked, no
``*_created`` series, and every name the Grafana dashboard in docs/ queries exists."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from update_helpers import Bundles, Device, DeviceFactory, Fleet, PinnedDigits
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
FAST_TELEMETRY = {"telemetry.interval_s": 0.2, "telemetry.quality_window": 200,
                  "telemetry.drift_min_samples": 100}


def promtool() -> str:
    """The Debian ``prometheus`` package's promtool; CI=true must have it (never skip)."""
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("promtool not installed (apt-get install prometheus): CI must run it")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return exe


def scrape(dev: Device, accept: str | None = None) -> tuple[str, str]:
    assert dev.agent.http is not None
    req = urllib.request.Request(f"{dev.agent.http.url}/metrics",
                                 headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode(), r.headers["Content-Type"]


def sample_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def declared_names(text: str) -> set[str]:
    """Every sample name the families declare (``# TYPE``; the text format names a
    counter with its ``_total``), series or not yet: a counter
    nobody has incremented has no sample, but Prometheus knows the name from the scrape."""
    suffixes = {"counter": ("", "_total"), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", "")}
    out: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out.update(m[1] + s for s in suffixes.get(m[2], ("",)))
    return out


def board_profile(tmp: Path) -> Path:
    """generic-x86_64 with sensor files a test controls (CI machines have no sensors):
    48.5 °C, and a Raspberry Pi throttling mask with under-voltage and throttled set."""
    (tmp / "temp").write_text("48500\n")
    (tmp / "get_throttled").write_text("throttled=0x50005\n")
    text = (ROOT / "device_profiles" / "generic-x86_64.toml").read_text()
    text = text.split("[sensors]")[0] + (f'[sensors]\nthermal = ["{tmp / "temp"}"]\n'
                                         f'throttling = "{tmp / "get_throttled"}"\n')
    (tmp / "profile").mkdir()
    path = tmp / "profile" / "generic-x86_64.toml"
    path.write_text(text)
    return path


def busy_device(start_device: DeviceFactory, fleet: Fleet, bundles: Bundles,
                update_digits: PinnedDigits, tmp: Path) -> Device:
    """A device that served predictions, drifted, and committed a signed update v1 → v2."""
    dev = start_device(config={**FAST_TELEMETRY, "agent.profile": str(board_profile(tmp))})
    x = np.load(update_digits.eval_npz)["x"].astype(np.float32)
    for i in range(0, 200, 20):
        dev.predict_version(x[i:i + 20])
    shifted = np.clip(x[:200] + 0.6 * x.max(), x.min(), x.max())  # a washed-out sensor
    for i in range(0, 200, 20):
        dev.predict_version(shifted[i:i + 20])
    wait_for(lambda: dev.events_of("drift.detected"), 20, "drift.detected")
    n = dev.mark()
    fleet.publish(bundles.v2)
    for i in range(0, 100, 10):  # probation traffic
        dev.predict_version(x[i:i + 10])
    out = dev.outcome(n)
    assert (out.result, out.version) == ("committed", 2), out
    dev.predict_version(x[:4])
    return dev


def test_metrics_of_a_busy_agent_pass_promtool_check(start_device: DeviceFactory,
                                                     fleet: Fleet, bundles: Bundles,
                                                     update_digits: PinnedDigits,
                                                     tmp_path: Path) -> None:
    exe = promtool()
    dev = busy_device(start_device, fleet, bundles, update_digits, tmp_path)
    wait_for(lambda: 'edge_agent_drifting{model="digits",version="2"}' in scrape(dev)[0], 10,
             "drift gauges of v2")
    text, ctype = scrape(dev)
    assert ctype.startswith("text/plain;"), ctype
    res = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True,
                         timeout=30, check=False)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (
        res.stdout.decode() + res.stderr.decode())
    names = sample_names(text)
    assert not [n for n in names if n.endswith("_created")], "duplicate *_created series"
    for want in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds", "edge_agent_build_info",
                 "edge_agent_drift_psi", "edge_agent_drifting", "edge_agent_queue_depth",
                 "edge_agent_outbox_messages", "edge_agent_requests_total"):
        assert want in names, want
    assert re.search(r"^edge_agent_cpu_temperature_celsius 48\.5$", text, re.M)
    assert re.search(r'^edge_agent_throttled\{flag="under_voltage"\} 1\.0$', text, re.M)
    assert re.search(r'^edge_agent_throttled\{flag="freq_capped"\} 0\.0$', text, re.M)
    build = re.search(r"^edge_agent_build_info\{(.*)\} 1\.0$", text, re.M)
    assert build and 'version="' in build[1] and 'runtime="' in build[1], text[:400]
    psi = re.findall(r'^edge_agent_drift_psi\{histogram="class",model="digits",version="1"\} '
                     r'(\S+)$', text, re.M)
    assert not psi, "gauges of the replaced version v1 linger"
    assert dev.serving() == 2  # and the agent still serves what it committed
    assert dev.agent.status()["models"], "agent status lost"


def test_metrics_answer_openmetrics_when_asked(start_device: DeviceFactory,
                                               update_digits: PinnedDigits) -> None:
    dev = start_device()
    dev.predict_version(np.load(update_digits.eval_npz)["x"][:2].astype(np.float32))
    text, ctype = scrape(dev, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert ctype == OPENMETRICS, ctype
    assert text.endswith("# EOF\n"), text[-200:]
    assert "edge_agent_requests_total{" in text and "# TYPE edge_agent_build info" in text
    plain, ctype = scrape(dev)  # and a plain scrape still gets the text format
    assert ctype.startswith("text/plain") and "# EOF" not in plain
    assert dev.serving() == 1


def test_every_metric_the_grafana_dashboard_queries_exists(
        start_device: DeviceFactory, fleet: Fleet, bundles: Bundles,
        update_digits: PinnedDigits, tmp_path: Path) -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8, "the dashboard lost its panels"
    queried = {m for e in exprs for m in re.findall(r"\b((?:edge_agent|process)_\w+)", e)}
    dev = busy_device(start_device, fleet, bundles, update_digits, tmp_path)
    wait_for(lambda: "edge_agent_drift_psi{" in scrape(dev)[0], 10, "drift gauges")
    text = scrape(dev)[0]
    names = sample_names(text) | declared_names(text)
    missing = sorted(queried - names)
    assert not missing, f"the dashboard queries metrics the agent does not expose: {missing}"
