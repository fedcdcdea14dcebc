"""Data capture (docs/capture.md) through a real ``edge-agent run``, real Mosquitto, the
real ``edge-fleet capture pull`` and the real ``edge-convert convert --eval``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telemetry_helpers import AgentProcess, Recorder, start_mosquitto
from waiting import wait_for

from edge_agent.capture.store import CaptureStore, encode_item
from edge_agent.config import load_config
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = start_mosquitto(tmp_path / "broker")
    yield b
    b.stop()


def capture_agent(tmp: Path, broker: Any, digits: Any, device: str, capture: str
                  ) -> AgentProcess:
    return AgentProcess(tmp / device, broker.url, device, interval_s=0.5,
                        bundles=(digits.bundle,), extra=f"[capture]\n{capture}\n")


def http_url(agent: AgentProcess) -> str:
    pat = r"ready: .* on (http://[\d.:]+)"
    wait_for(lambda: re.search(pat, agent.tail()), 60, "the agent's HTTP address")
    m = re.search(pat, agent.tail())
    assert m is not None
    return m.group(1)


def predict(url: str, x: np.ndarray) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/v1/models/digits:predict", method="POST",
                                 data=json.dumps({"instances": x.tolist()}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        doc: dict[str, Any] = json.loads(r.read())
        return doc


def edge_fleet(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fleet.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def items(store: Path) -> list[Path]:
    return sorted(store.glob("*.npz")) if store.is_dir() else []


def used_bytes(store: Path) -> int:
    """Bytes of the store's files now (one may vanish, evicted, while we look)."""
    total = 0
    for p in store.iterdir() if store.is_dir() else ():
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_captured_inputs_pull_into_a_folder_convert_eval_reads(tmp_path: Path, broker: Any,
                                                               digits: Any) -> None:
    agent = capture_agent(tmp_path, broker, digits, "cap-1",
                          'enabled = true\nmodels = ["digits"]\nconfidence_below = 1.0\n'
                          'mode = "thumbnail"\nmax_per_s = 1000000\nmin_free_bytes = 0')
    agent.start()
    try:
        url = http_url(agent)
        ev = np.load(digits.eval_npz)
        # only answers under confidence 1.0 are captured, and how many of the inputs the
        # freshly trained model scores exactly 1.0 varies: count them from the answers
        n_stored = 0
        for i in range(len(ev["x"])):
            scores = predict(url, ev["x"][i:i + 1])["predictions"][0]
            n_stored += max(scores) < 1.0
            if n_stored == 20:
                break
        assert n_stored == 20, f"only {n_stored} of {len(ev['x'])} inputs scored under 1.0"
        store = agent.dir / "store" / "capture"
        wait_for(lambda: len(items(store)) >= n_stored, 20, "captured items")
        time.sleep(0.5)  # nothing more arrives: exactly the low-confidence answers
        assert len(items(store)) == n_stored
        out = tmp_path / "pulled"
        r = edge_fleet("capture", "pull", "--device", "cap-1", "-o", out, "--broker",
                       broker.url)
        assert r.returncode == 0, r.stderr
        assert f"{n_stored} captured items" in r.stdout, r.stdout
        pngs = sorted(out.glob("*/*.png"))
        assert len(pngs) == n_stored
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [str(i) for i in
                                                                       range(10)]
        index = [json.loads(ln) for ln in (out / "index.jsonl").read_text().splitlines()]
        assert {(d["model"], d["version"], d["mode"]) for d in index} == {
            ("digits", 1, "thumbnail")}
        assert all(d["reason"] == "low_confidence" and d["confidence"] < 1.0 for d in index)
        assert all(Path(out / d["file"]).parent.name == d["label"] for d in index)
        # the round trip: the real converter evaluates on the pulled folder as it is
        bundle = tmp_path / "bundle"
        c = subprocess.run(
            [sys.executable, "-m", "converter.cli", "convert", str(digits.keras),
             "--representative", str(digits.calib_npz), "--profile", "generic-x86_64",
             "--latency-runs", "2", "--eval", str(out), "-o", str(bundle)],
            capture_output=True, text=True, timeout=400, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert c.returncode == 0, c.stderr[-2000:]
        e = json.loads((bundle / "report.json").read_text())["evaluation"]
        assert e["labelled"] and e["samples"] == n_stored, e
        # the folders hold the served predictions: the source model agrees with them on
        # the pulled pixels, so the thumbnails are the inputs the agent saw
        assert e["float_top1"] >= 0.9, e
        # and nothing else moved: the agent still serves, the store is as it was
        assert len(predict(url, ev["x"][:1])["predictions"]) == 1
        assert len(items(store)) >= n_stored
    finally:
        agent.stop()


@pytest.mark.serial
def test_capture_pull_for_an_unknown_device_fails_in_bounded_time(tmp_path: Path,
                                                                  broker: Any) -> None:
    out = tmp_path / "pulled"
    t0 = time.monotonic()
    r = edge_fleet("capture", "pull", "--device", "no-such-device", "-o", out, "--broker",
                   broker.url, "--timeout", "1.5")
    took = time.monotonic() - t0
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "unknown device 'no-such-device'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert took < 15, took
    assert not out.exists(), "a failed pull left an output folder"


def test_a_flood_of_low_confidence_inputs_stays_under_the_store_cap(
        tmp_path: Path, broker: Any, digits: Any) -> None:
    cap = 16 * 1024
    rec = Recorder(broker.url, "edge/cap-2/#")
    agent = capture_agent(tmp_path, broker, digits, "cap-2",
                          f'enabled = true\nmodels = ["digits"]\nconfidence_below = 1.0\n'
                          f'mode = "input"\nmax_per_s = 1000\nmax_bytes = {cap}\n'
                          'max_files = 1000\nmin_free_bytes = 0')
    agent.start()
    try:
        url = http_url(agent)
        x = np.load(digits.eval_npz)["x"]
        store = agent.dir / "store" / "capture"
        peak = 0
        t0 = time.monotonic()
        for i in range(150):
            predict(url, x[i % len(x):i % len(x) + 1])
            peak = max(peak, used_bytes(store))
        took = time.monotonic() - t0
        ev = rec.wait("/events", lambda d: d["kind"] == "capture.store_full", 20)
        assert ev["data"]["evicted"] > 0
        used = used_bytes(store)
        assert peak <= cap and used <= cap, (peak, used, cap)
        names = [p.name for p in items(store)]
        assert names and names[0] != "000000000001.npz", "the oldest were not evicted first"
        wait_for(lambda: not list(store.glob(".*")), 10, "the writer to finish (temp files)")
        assert len(predict(url, x[:1])["predictions"]) == 1  # still serving
        assert took < 60, took
        # every one of the 151 low-confidence answers (int8 scores top out at 255/256) is
        # accounted for in telemetry: stored, limited by max_per_s, dropped or skipped
        def picks(d: dict[str, Any]) -> int:
            c = d.get("capture", {})
            return sum(c.get(k, 0) for k in ("stored", "limited", "dropped", "skipped"))
        c = rec.wait("/telemetry", lambda d: picks(d) >= 151, 20)["capture"]
        assert picks({"capture": c}) == 151, c
        assert c["evicted"] >= ev["data"]["evicted"] and c["bytes"] <= cap, c
        assert c["items"] == c["stored"] - c["evicted"], c
    finally:
        agent.stop()
        rec.close()


def test_capture_is_off_by_default_and_needs_a_model_switched_on(tmp_path: Path) -> None:
    cfg = load_config(None, {"agent.store_dir": str(tmp_path)}, env={})
    assert cfg.capture.enabled is False and cfg.capture.models == ()
    with pytest.raises(ConfigError, match=r"capture\.models"):
        load_config(None, {"agent.store_dir": str(tmp_path), "capture.enabled": True}, env={})
    with pytest.raises(ConfigError, match=r"capture\.mode"):
        load_config(None, {"agent.store_dir": str(tmp_path), "capture.mode": "raw"}, env={})


def test_capture_store_keeps_a_free_space_reserve(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path / "c", max_bytes=1 << 20, max_files=10,
                         max_item_bytes=1 << 16, min_free_bytes=1 << 62)  # more than any disk
    res = store.put(encode_item(np.zeros(8, np.float32), {"model": "m"}))
    assert res.item_id is None and res.skipped == "disk_low"
    assert items(tmp_path / "c") == [] and len(store) == 0
    big = CaptureStore(tmp_path / "d", max_bytes=1 << 20, max_files=10, max_item_bytes=300,
                       min_free_bytes=0)
    assert big.put(encode_item(np.zeros(4096, np.uint8), {})).skipped == "too_big"
    assert items(tmp_path / "d") == []


def test_feedback_that_disagrees_captures_the_input_under_the_given_label(
        tmp_path: Path, broker: Any, digits: Any) -> None:
    agent = capture_agent(tmp_path, broker, digits, "cap-3",
                          'enabled = true\nmodels = ["digits"]\nconfidence_below = 0.0\n'
                          'on_drift = false\nmode = "thumbnail"\nmax_per_s = 1000\n'
                          'min_free_bytes = 0')
    agent.start()
    try:
        url = http_url(agent)
        x = np.load(digits.eval_npz)["x"]
        preds = []
        for i in range(6):
            req = urllib.request.Request(
                f"{url}/v1/models/digits:predict", method="POST",
                data=json.dumps({"instances": x[i:i + 1].tolist()}).encode(),
                headers={"Content-Type": "application/json", "X-Request-Id": f"fb-{i}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                p = json.loads(r.read())["predictions"][0]
            preds.append(int(np.argmax(p)) if isinstance(p, list) else int(p))
        store = agent.dir / "store" / "capture"
        time.sleep(0.5)
        assert items(store) == [], "confidence_below = 0 captured without feedback"
        wrong = {0: (preds[0] + 1) % 10, 3: (preds[3] + 2) % 10}
        fb = [{"request_id": f"fb-{i}", "label": wrong.get(i, preds[i])} for i in range(6)]
        req = urllib.request.Request(f"{url}/v1/models/digits:feedback", method="POST",
                                     data=json.dumps(fb).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["accepted"] == 6
        wait_for(lambda: len(items(store)) == 2, 30, "the two disagreeing inputs")
        out = tmp_path / "pulled"
        r2 = edge_fleet("capture", "pull", "--device", "cap-3", "-o", out, "--broker",
                        broker.url)
        assert r2.returncode == 0, r2.stderr
        index = [json.loads(ln) for ln in (out / "index.jsonl").read_text().splitlines()]
        assert sorted((d["request_id"], d["reason"], d["label"]) for d in index) == [
            ("fb-0", "feedback", str(wrong[0])), ("fb-3", "feedback", str(wrong[3]))]
        assert all(Path(out / d["file"]).parent.name == d["label"] for d in index)
        time.sleep(0.3)
        assert len(items(store)) == 2  # agreeing feedback captured nothing
    finally:
        agent.stop()


def test_drifting_bins_select_the_inputs_that_moved() -> None:
    from edge_agent.capture.select import choose, drifting_bins
    ref = [0.1] * 10
    cur = [5, 5, 5, 60, 5, 5, 5, 5, 5, 0]  # class 3 floods in
    bins = drifting_bins(cur, ref)
    assert bins == frozenset({3})
    picks = choose(np.array([0.9, 0.95, 0.3]), np.array([3, 1, 1]), confidence_below=0.5,
                   drift_bins=bins)
    assert picks == [(0, "drift"), (2, "low_confidence")]
    assert drifting_bins(ref, ref) == frozenset()
    assert choose(np.array([0.9]), np.array([1]), confidence_below=0.5,
                  drift_bins=frozenset()) == []
