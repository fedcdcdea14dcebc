"""The light agent imports only what its configuration uses (issue 17, docs/agent.md#footprint).

A real ``edge-agent run`` subprocess (the CLI's own ``main``) is asked for its ``sys.modules``
after it is ready and has answered a request: a small wrapper installs a SIGUSR1 handler that
writes them to a file, then runs the CLI unchanged. The control cases show the check can
fail: with ``[mqtt] url`` set, paho is there; after an image request, Pillow is.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = """
import signal, sys
def dump(*_):
    with open(sys.argv[1], "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
signal.signal(signal.SIGUSR1, dump)
from edge_agent.cli import main
sys.exit(main(sys.argv[2:]))
"""
HEAVY = ("paho", "grpc", "sqlite3", "PIL", "cryptography", "tuf", "google.protobuf")


class Running:
    def __init__(self, tmp: Path, config: str) -> None:
        self.tmp = tmp
        (tmp / "agent.toml").write_text(config)
        (tmp / "wrap.py").write_text(WRAPPER)
        self.log = tmp / "agent.log"
        self.dump = tmp / "modules.txt"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(tmp / "wrap.py"), str(self.dump), "run", "--config",
                 str(tmp / "agent.toml")], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=tmp)
        deadline = time.monotonic() + 60
        while not (m := re.search(r"ready: .* on http://([\d.]+):(\d+)", self.log.read_text())):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "agent not ready in 60 s"
            time.sleep(0.1)
        self.host, self.port = m.group(1), int(m.group(2))

    def post(self, path: str, body: bytes, ctype: str) -> tuple[int, Any]:
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request("POST", path, body, {"Content-Type": ctype})
        r = c.getresponse()
        out = r.status, json.loads(r.read())
        c.close()
        return out

    def modules(self) -> set[str]:
        self.dump.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.dump.exists() or not self.dump.read_text():
            assert time.monotonic() < deadline, "no module list in 10 s"
            time.sleep(0.05)
        return set(self.dump.read_text().split())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _config(tmp: Path, bundle: Path, extra: str = "") -> str:
    return (f'[agent]\ndevice_id = "light"\nstore_dir = "{tmp / "store"}"\n'
            'profile = "generic-x86_64"\nprobe_runtime = false\n'
            f'[http]\nport = 0\n[[models]]\nbundle = "{bundle}"\n{extra}')


def _loaded(mods: set[str], name: str) -> bool:
    return name in mods or any(m.startswith(name + ".") for m in mods)


@pytest.fixture
def light(tmp_path: Path, digits: Any) -> Iterator[Running]:
    r = Running(tmp_path, _config(tmp_path, digits.bundle))
    yield r
    r.stop()


def _tensor_body() -> bytes:
    return json.dumps({"instances": np.zeros((1, 8, 8, 1)).tolist()}).encode()


def test_an_agent_without_mqtt_or_grpc_never_imports_paho_grpc_sqlite_or_pillow(
        light: Running) -> None:
    status, doc = light.post("/v1/models/digits:predict", _tensor_body(), "application/json")
    assert status == 200 and len(doc["predictions"]) == 1
    mods = light.modules()
    assert "edge_agent.app" in mods and "ai_edge_litert" in str(sorted(mods))  # it is serving
    assert [h for h in HEAVY if _loaded(mods, h)] == []
    assert not _loaded(mods, "edge_agent.mqtt.client")
    assert not _loaded(mods, "edge_agent.mqtt.outbox")


def test_pillow_is_imported_by_the_first_image_not_at_start(light: Running,
                                                            digits_eval: Any) -> None:
    assert not _loaded(light.modules(), "PIL")
    status, doc = light.post("/v1/models/digits:classify?k=1", digits_eval.png(0), "image/png")
    assert status == 200, doc
    assert _loaded(light.modules(), "PIL")


def test_with_an_mqtt_url_paho_is_imported_and_grpc_still_is_not(
        tmp_path: Path, digits: Any, mosquitto: Any) -> None:
    r = Running(tmp_path, _config(tmp_path, digits.bundle, f'[mqtt]\nurl = "{mosquitto.url}"\n'))
    try:
        mods = r.modules()
    finally:
        r.stop()
    assert _loaded(mods, "paho") and _loaded(mods, "edge_agent.mqtt.client")
    assert not _loaded(mods, "grpc")


def test_the_pillow_free_start_still_decodes_images_like_before(light: Running) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, "PNG")
    status, doc = light.post("/v1/models/digits:classify?k=2", buf.getvalue(), "image/png")
    assert status == 200 and len(doc["results"][0]) == 2
    status, doc = light.post("/v1/models/digits:classify", b"not an image", "image/png")
    assert status == 400 and "not a decodable image" in doc["error"]
