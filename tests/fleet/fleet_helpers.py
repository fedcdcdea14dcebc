"""Helpers for the fleet tests: a signed repository with its key files, and waiting."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.mqtt import MqttClient, MqttConfig
from fleet import keys as fleet_keys
from fleet.repo import FleetRepo
from fleet.sim_agents import SimFleet

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE = ("targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Workstation:
    """A repository (one key per role) and the private key files the CLI takes."""

    repo: FleetRepo
    key_dir: Path

    @property
    def root_file(self) -> Path:
        return self.repo.meta_dir / "1.root.json"

    def key_files(self) -> list[Path]:
        return [self.key_dir / f"{r}.key" for r in ONLINE]

    def signers(self) -> list[Any]:
        return fleet_keys.load_signers(self.key_files(), None)

    def key_args(self) -> list[str]:
        out: list[str] = []
        for k in self.key_files():
            out += ["--key", str(k)]
        return out


def make_workstation(tmp: Path, key_dir: Path) -> Workstation:
    pubs = {r: fleet_keys.load_public(key_dir / f"{r}.pub") for r in ROLES}
    repo = FleetRepo.create(tmp / "repo", keys={r: [pubs[r]] for r in ROLES},
                            thresholds={},
                            signers=[fleet_keys.load_signer(key_dir / "root.key")])
    return Workstation(repo, key_dir)


def make_keys(d: Path) -> Path:
    for r in ROLES:
        fleet_keys.generate(d, r)
    return d


class Recorder:
    """Records every (topic, payload bytes, retain flag) below a filter, in arrival order."""

    def __init__(self, url: str, topic_filter: str, client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = MqttClient(config=MqttConfig.from_url(url), client_id=client_id)
        self.client.subscribe(topic_filter, self._on)
        self.client.connect(10)

    def _on(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def docs(self, suffix: str) -> list[tuple[str, Any]]:
        out = []
        with self._lock:
            msgs = list(self.messages)
        for t, p in msgs:
            if t.endswith(suffix) and p:
                try:
                    out.append((t, json.loads(p)))
                except ValueError:
                    pass
        return out

    def close(self) -> None:
        self.client.stop()


# What the ``sim_fleet`` fixture returns: start a simulated fleet (kept in fleet_helpers, not
# conftest, so that `from fleet_helpers import SimFactory` cannot pick up another conftest).
SimFactory = Callable[..., SimFleet]
