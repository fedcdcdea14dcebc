"""Helpers for the agent tests: an HTTP client, an agent factory, an MQTT requester, polling.

A plain module, not imported from conftest.py: ``tests`` is not a package, and a
site-packages ``tests`` package (tf2onnx ships one) would shadow ``tests.agent``.
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.app import Agent
from edge_agent.config import AgentConfig, load_config


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A keep-alive HTTP/1.1 client on one connection (reconnects when the server closes)."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host, self.port, self.token = host, port, token
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if self.token and "Authorization" not in h:
            h["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, doc: Any = None, *, body: bytes | None = None,
             content_type: str = "application/json", **kw: Any) -> Reply:
        data = body if body is not None else json.dumps(doc).encode()
        headers = {"Content-Type": content_type, **kw.pop("headers", {})}
        return self.request("POST", path, body=data, headers=headers, **kw)

    def close(self) -> None:
        self.conn.close()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


@dataclass(frozen=True)
class DigitsEval:
    x: np.ndarray  # (N, 8, 8, 1) float in [0, 1]
    y: np.ndarray

    def png(self, i: int) -> bytes:
        from converter.digits import image_bytes

        return image_bytes(self.x[i])


def make_config(store: Path, **overrides: Any) -> AgentConfig:
    """Defaults for tests: private store, any free port, no runtime probe (speed)."""
    o: dict[str, Any] = {"agent.store_dir": str(store), "agent.profile": "generic-x86_64",
                         "agent.device_id": "dev1", "agent.probe_runtime": False,
                         "agent.threads": 1, "http.port": 0, "http.idle_timeout_s": 5.0}
    o.update(overrides)
    return load_config(None, o, env={})


class AgentFactory:
    """Starts agents for one test and stops them all at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.agents: list[Agent] = []
        self.clients: list[Client] = []

    def __call__(self, *bundles: Path, components: Any = (), link: Any = None,
                 store: Path | None = None, **overrides: Any) -> Agent:
        if bundles:
            overrides["models"] = [{"bundle": str(b)} for b in bundles]
        cfg = make_config(store or self.tmp / "store", **overrides)
        agent = Agent(cfg, components=components, link=link)
        self.agents.append(agent)
        agent.start()
        return agent

    def client(self, agent: Agent, token: str | None = None) -> Client:
        assert agent.http is not None
        host, port = agent.http.address
        c = Client(host, port, token)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for a in reversed(self.agents):
            a.stop()


class MqttRequester:
    """The application side of MQTT requests: a paho 2.x MQTT 5 client (VERSION2 callbacks)."""

    def __init__(self, host: str, port: int, client_id: str = "requester") -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv5)
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self._subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.connect(host, port)
        self.c.loop_start()

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self._subscribed.wait(5), f"no SUBACK for {topic}"

    def publish(self, topic: str, doc: Any, *, response_topic: str | None = None) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.c.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)

    def next(self, timeout_s: float = 10.0) -> tuple[str, Any]:
        topic, payload = self.messages.get(timeout=timeout_s)
        return topic, json.loads(payload)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
