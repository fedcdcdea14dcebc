"""The README demo's encrypted-update step (``scripts/demo_sealed.py``, step 7c) as the
demo runs it — the real ``edge-agent keygen`` / ``edge-fleet device-keys`` / ``edge-fleet
publish --encrypt-to`` commands, a real agent, Mosquitto and LiteRT — and what it prints
is what a user should see."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from update_helpers import DEVICE, Bundles, DeviceFactory, Fleet
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def demo_sealed() -> Any:
    spec = importlib.util.spec_from_file_location("demo_sealed",
                                                  ROOT / "scripts" / "demo_sealed.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Tap:
    """What the demo's EventTap does: every message under edge/<device>/#."""

    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.msgs: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-sealed-tap")
        self.c.on_message = self._on
        self.c.connect(host, int(port))
        self.c.subscribe(f"edge/{DEVICE}/#", qos=1)
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            self.msgs.append((msg.topic, doc if isinstance(doc, dict) else {}))

    def find(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for t, p in self.msgs if t.endswith(suffix)]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def tap(mosquitto: Any) -> Iterator[Tap]:
    t = Tap(mosquitto.url)
    yield t
    t.close()


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def run(*args: str | Path, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """The demo's runner: the installed entry points, this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(a) for a in args], text=True, capture_output=True, env=env,
                       check=False, cwd=ROOT)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    if not quiet:
        print(r.stdout, end="")
    return r


def test_the_demo_refuses_v3_sealed_for_another_board_then_commits_it_sealed(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, start_device: DeviceFactory,
        mosquitto: Any, tap: Tap, capsys: pytest.CaptureFixture[str]) -> None:
    dev = start_device()  # its store is tmp_path/store, the demo's <out>/store
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\nstore_dir = "{tmp_path / "store"}"\n')
    base = dev.agent.http.url.rstrip("/")
    signing = [a for k in ("targets-a", "targets-b", "snapshot", "timestamp")
               for a in ("--key", fleet.keys[k].path)]
    demo_sealed().step_encrypted(
        tmp_path, run, Path(sys.executable).parent, fleet.repo.path, bundles.v3, cfg, base,
        tap, mosquitto.url, DEVICE, print, http,
        lambda f, t, what: wait_for(f, t, what), signing)
    out = capsys.readouterr().out
    lines = out.splitlines()
    outcomes = [ln for ln in lines if ln.startswith("outcome: ")]
    assert len(outcomes) == 2, out
    assert outcomes[0].startswith("outcome: update.rejected: digits v3 rejected "
                                  "(not_for_this_device)"), outcomes
    assert outcomes[1].startswith("outcome: update.committed after "), outcomes
    assert any(ln.startswith("serving: v3 AVAILABLE") for ln in lines), out
    assert "['bundle.sealed'] (starts b'EDGESEAL')" in out
    assert lines[-1].endswith("holding a 64-byte window of v3's model: 0"), out
    assert dev.serving() == 3
    assert (tmp_path / "store" / "device.key").stat().st_mode & 0o777 == 0o600
