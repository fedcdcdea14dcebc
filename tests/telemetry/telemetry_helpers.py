"""Helpers for the telemetry tests: a minimal agent, a recording subscriber, polling, and
the root conftest's Mosquitto launcher (imported by path: ``tests`` is not a package and a
site-packages ``tests`` package would shadow it)."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from waiting import wait_for

from edge_agent.agent_view import AgentView
from edge_agent.bundle import read_bundle
from edge_agent.config import AgentConfig, load_config
from edge_agent.hooks import Hooks
from edge_agent.mqtt import MqttClient, MqttConfig
from edge_agent.profiles import load_profile
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.backends import select_runtime
from edge_agent.serving.http import HttpServer
from edge_agent.store import ModelStore
from edge_agent.telemetry.service import TelemetryService
from edge_agent.wiring import Services, Wiring, mqtt_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------
# A minimal agent: the real config (from a TOML file), registry, hooks, store and wiring
# behind the typed deps the telemetry component takes. Tests that need the whole agent
# process use the real `edge-agent run` CLI instead.


@dataclass
class MiniAgent:
    config: AgentConfig
    device_id: str
    store: ModelStore
    hooks: Hooks = field(default_factory=Hooks)
    http: HttpServer | None = None
    started_at: float = field(default_factory=time.time)
    reloads: int = 0
    bundles: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.profile = load_profile("generic-x86_64")
        self.runtime = select_runtime()
        self.registry = ModelRegistry(self.runtime, self.hooks, workers=1, num_threads=1)
        for b in self.bundles:
            self.registry.load(read_bundle(b))

    def status(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "models": self.registry.snapshot(),
                "queue_depth": 0}

    def reload(self) -> list[str]:
        self.reloads += 1
        return [f"reload {self.reloads}"]

    def view(self) -> AgentView:
        return AgentView(device_id=self.device_id, profile=self.profile,
                         runtime_name=self.runtime.name, runtime_version=self.runtime.version,
                         status=self.status, reload=self.reload,
                         started_at=lambda: self.started_at, capabilities=lambda: [],
                         queue_depth=lambda: 0, redacted_config=self.config.redacted)


def make_agent(tmp: Path, url: str, *, device: str = "dev-1", bundles: list[Path] | None = None,
               telemetry: dict[str, Any] | None = None, **mqtt: Any) -> MiniAgent:
    """A MiniAgent whose config is read from ``<tmp>/test-agent.toml`` like a real one's.

    Raises ConfigError (naming test-agent.toml and the key) for a bad section.
    """
    doc: dict[str, Any] = {
        "mqtt": {**({"url": url} if url else {}), "reconnect_min_s": 0.05,
                 "reconnect_max_s": 0.5, "keepalive_s": 5,
                 "outbox_path": str(tmp / "outbox.db"), **mqtt},
        "telemetry": {"interval_s": 0.1, **(telemetry or {})}}
    path = tmp / "test-agent.toml"
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                                     for k, v in table.items())
                            for name, table in doc.items()))
    cfg = load_config(path, {"agent.device_id": device}, env={})
    return MiniAgent(cfg, device, ModelStore(tmp / "store"), bundles=list(bundles or []))


def create(agent: MiniAgent) -> TelemetryService | None:
    """The telemetry component exactly as the agent's wiring builds it (None without MQTT)."""
    cfg = agent.config
    client = mqtt_client(cfg.mqtt, agent.device_id, agent.hooks) if cfg.mqtt else None
    return Wiring(Services(config=cfg, view=agent.view(), hooks=agent.hooks,
                           registry=agent.registry, store=agent.store, http=agent.http,
                           mqtt=client)).telemetry()


class Recorder:
    """A subscriber that records (topic, decoded JSON or raw bytes, retain) tuples."""

    def __init__(self, broker: str | MqttConfig, topic_filter: str = "edge/#",
                 client_id: str = "recorder") -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        cfg = broker if isinstance(broker, MqttConfig) else MqttConfig.from_url(
            broker, reconnect_min_s=0.05, reconnect_max_s=0.5, keepalive_s=5)
        self.client = MqttClient(config=cfg, client_id=client_id)
        self.client.subscribe(topic_filter, self._on)
        self.client.connect(10)

    def _on(self, topic: str, payload: bytes) -> None:
        try:
            doc: Any = json.loads(payload)
        except ValueError:
            doc = payload
        with self._lock:
            self.messages.append((topic, doc))

    def on(self, suffix: str) -> list[Any]:
        with self._lock:
            return [d for t, d in self.messages if t.endswith(suffix)]

    def wait(self, suffix: str, pred: Callable[[Any], bool] = lambda _d: True,
             timeout_s: float = 10.0) -> Any:
        found: list[Any] = []

        def check() -> bool:
            found[:] = [d for d in self.on(suffix) if pred(d)]
            return bool(found)
        wait_for(check, timeout_s, f"a message on *{suffix}")
        return found[-1]

    def send(self, topic: str, payload: bytes | str) -> None:
        assert self.client.publish(topic, payload)

    def close(self) -> None:
        self.client.stop()


def _root_conftest() -> Any:
    name = "_edge_root_conftest"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def start_mosquitto(tmp: Path, extra_conf: str = "", port: int | None = None) -> Any:
    """tests/conftest.py's start_mosquitto (a real broker; ``Broker.stop()/start()``; run as
    root it keeps mosquitto as root so persistence and our password file stay readable)."""
    return _root_conftest().start_mosquitto(tmp, extra_conf, port)


# ---------------------------------------------------------------------------------------
# The real agent process (`edge-agent run`), and a subscriber whose session outlives a
# broker restart.


class AgentProcess:
    """``python -m edge_agent.cli run --config <tmp>/agent.toml`` with a device id."""

    def __init__(self, tmp: Path, broker_url: str, device: str, *, interval_s: float = 0.1,
                 bundles: tuple[Path, ...] = (), extra: str = "") -> None:
        self.dir = tmp
        self.device = device
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "agent.toml"
        models = "".join(f'\n[[models]]\nbundle = "{b}"\n' for b in bundles)
        self.config.write_text(
            f'[agent]\ndevice_id = "{device}"\nstore_dir = "{tmp / "store"}"\n'
            'profile = "generic-x86_64"\nprobe_runtime = false\n'
            '[http]\nport = 0\n'
            f'[mqtt]\nurl = "{broker_url}"\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\n'
            f'keepalive_s = 5\n[telemetry]\ninterval_s = {interval_s}\n{extra}{models}')
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no offline message, nothing flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (clean shutdown) and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class PersistentRecorder:
    """A subscriber with a persistent MQTT 5 session (clean_start off, 1 h expiry): the
    broker keeps its subscription and queues its messages across a broker restart, so
    nothing published while it reconnects is missed."""

    def __init__(self, broker: Any, topic_filter: str, client_id: str = "persistent-rec"
                 ) -> None:
        self.received: list[tuple[str, bytes, float]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=paho.MQTTv5)
        c.reconnect_delay_set(0.1, 1)
        c.on_message = self._on
        c.on_subscribe = lambda *_a: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, keepalive=5, clean_start=False, properties=props)
        c.loop_start()
        c.subscribe(topic_filter, qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK")
        self.client = c

    def _on(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((m.topic, bytes(m.payload), time.time()))

    def docs(self, suffixes: tuple[str, ...]) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.received)
        return [json.loads(p) for t, p, _ in rows if t.endswith(suffixes)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
