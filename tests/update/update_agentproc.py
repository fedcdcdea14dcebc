"""A real ``edge-agent run`` subprocess for the update tests (crashes, hangs, faults).

:class:`AgentProcess` writes an ``agent.toml`` (device ``dev1``, the ``generic-x86_64``
profile, the fleet's root, digits v1 installed), starts ``python -m edge_agent.cli run``
with an optional ``EDGE_UPDATE_FAULT`` and talks to it over REST. It offers the same
read-only views as :class:`update_helpers.Device` (``installed``, ``serving``, ``on_disk``,
``trusted``, ``trusted_files``, ``snapshot``), so :func:`update_helpers.assert_nothing_moved`
works on it unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from update_helpers import DEVICE, GROUP, Bundles, DeviceSnapshot, Fleet
from waiting import wait_for

from edge_agent.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (str, bool)) else repr(v)


class AgentProcess:
    def __init__(self, tmp: Path, fleet: Fleet, bundles: Bundles, broker_url: str,
                 *, mqtt: dict[str, Any] | None = None,
                 telemetry: dict[str, Any] | None = None, **update: Any) -> None:
        """``broker_url`` may list several brokers, comma separated (``[mqtt] brokers``);
        ``mqtt`` / ``telemetry`` add keys to those sections (e.g. ``protocol``)."""
        self.tmp = tmp
        self.fleet = fleet
        self.port = free_port()
        self.store = tmp / "store"
        self.config = tmp / "agent.toml"
        upd = {"root_file": str(fleet.repo.meta_dir / "1.root.json"), "probation_s": 0.5,
               "stall_timeout_s": 10.0, "retry_backoff_s": 0.5, **update}  # overridable
        extra = "".join(f"{k} = {_toml(v)}\n" for k, v in upd.items())
        urls = broker_url.split(",")
        where = f"url = {_toml(urls[0])}" if len(urls) == 1 else f"brokers = {json.dumps(urls)}"
        where += "".join(f"\n{k} = {_toml(v)}" for k, v in (mqtt or {}).items())
        self.config.write_text(f"""
[agent]
device_id = "{DEVICE}"
profile = "generic-x86_64"
store_dir = "{self.store}"
probe_runtime = false
threads = 1
groups = ["{GROUP}"]

[http]
port = {self.port}

[mqtt]
{where}
keepalive_s = 5
reconnect_max_s = 1.0

[telemetry]
{"".join(f"{k} = {_toml(v)}" + chr(10) for k, v in (telemetry or {}).items())}
[update]
{extra}
[[models]]
bundle = "{bundles.v1}"
activate = false
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "agent.log"

    def start(self, fault: str | None = None, runtime_fault: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        if fault:
            env["EDGE_UPDATE_FAULT"] = fault
        if runtime_fault:  # edge_agent.runtime.fault_seam
            env["EDGE_RUNTIME_FAULT"] = runtime_fault
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))  # noqa: SIM115
        wait_for(lambda: self._ready(), 30, "the agent to serve")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"agent exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return bool(self.get("/readyz")["ready"])
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def predict(self, x: np.ndarray, timeout_s: float = 5.0) -> dict[str, Any]:
        """A REST ``:predict`` of the digits model; the response document."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/models/digits:predict",
            json.dumps({"instances": x.tolist()}).encode(),
            {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc

    def wait_killed(self, timeout_s: float = 30.0) -> None:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the fault did not fire: {self.log.read_text()[-3000:]}")
        assert rc == -signal.SIGKILL, rc

    def update_status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.get("/v1/agent/update")
        return st

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # --- the views of update_helpers.Device, read from REST and the disk --------------------

    def installed(self, name: str = "digits") -> tuple[str, ...]:
        d = ModelStore(self.store).models_dir / name
        if not d.is_dir():
            return ()
        return tuple(sorted(p.name for p in d.iterdir() if p.name != "active.json"))

    def serving(self, name: str = "digits") -> int | None:
        models = self.get("/v1/agent/status")["models"]
        active: int | None = {m["name"]: m["active"] for m in models}.get(name)
        return active

    def on_disk(self, name: str = "digits") -> int | None:
        return ModelStore(self.store).serving_version(name)

    def trusted(self) -> dict[str, int]:
        t: dict[str, int] = self.update_status()["trusted"]
        return t

    def trusted_files(self) -> dict[str, bytes]:
        d = self.store / "update" / "metadata"
        anchor = (self.fleet.repo.meta_dir / "1.root.json").read_bytes()
        if not d.is_dir():
            return {}
        files = {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
                 if p.is_file()}
        return {k: v for k, v in files.items() if v != anchor}

    def snapshot(self) -> DeviceSnapshot:
        return DeviceSnapshot(0, self.installed(), self.serving(), self.on_disk(),
                              self.trusted(), self.trusted_files())

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak) of the agent process, in KiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
        return out


def start(agents: list[AgentProcess], tmp_path: Path, fleet: Fleet, bundles: Bundles,
          mosquitto: Any, *, fault: str | None = None, **update: Any) -> AgentProcess:
    """A real ``edge-agent run`` (``update`` keys into ``[update]``), stopped by the test's
    ``agents`` list."""
    a = AgentProcess(tmp_path, fleet, bundles, mosquitto.url, **update)
    agents.append(a)
    a.start(fault=fault)
    return a


def settled(a: AgentProcess, after: float, timeout_s: float = 30.0) -> dict[str, Any]:
    """The update status once idle with an outcome decided after ``after`` (epoch s)."""
    return wait_for(lambda: (s := a.update_status())["phase"] == "idle"
                    and (s.get("last") or {}).get("at", 0) > after and s,
                    timeout_s, "an update outcome")
