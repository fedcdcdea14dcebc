"""Fixtures for the update tests: a signed repository, derived bundles, a real agent.

Everything is real: Ed25519 keys and TUF metadata (python-tuf), a private Mosquitto per
test (tests/conftest.py), the in-process :class:`edge_agent.app.Agent` with its telemetry
and update components and LiteRT. Attacks are built with :mod:`update_forge`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from securesystemslib.signer import CryptoSigner, SSlibKey

from edge_agent.bundle import Bundle, EncodedArray, read_bundle, sha256_bytes, write_bundle
from edge_agent.hooks import AgentEvent
from edge_agent.update.service import UpdateService
from edge_agent.update.state import Outcome
from edge_agent.update.wire import Audience
from fleet import keys as fleet_keys
from fleet.publish import Broker, Published, publish
from fleet.repo import FleetRepo

DEVICE = "dev1"
GROUP = "line-3"
KEY_NAMES = ("root-a", "root-b", "targets-a", "targets-b", "targets-c", "snapshot",
             "timestamp", "timestamp-2", "rogue")
ONLINE = ("targets-a", "targets-b", "snapshot", "timestamp")
ME = Audience((DEVICE,), ())
CHUNK = 16 * 1024  # small chunks so a ~90 KB bundle has several


def wait_for(pred: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class KeyPair:
    public: SSlibKey
    signer: CryptoSigner
    path: Path


@pytest.fixture(scope="session")
def fleet_keys_(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for n in KEY_NAMES:
        pub = fleet_keys.generate(d, n)
        out[n] = KeyPair(pub, fleet_keys.load_signer(d / f"{n}.key"), d / f"{n}.key")
    return out


@dataclass
class Fleet:
    """The workstation: a repository (root 2-of-2, targets 2-of-2) and its keys."""

    repo: FleetRepo
    keys: dict[str, KeyPair]
    broker_url: str

    def signers(self, *names: str) -> list[CryptoSigner]:
        return [self.keys[n].signer for n in (names or ONLINE)]

    def publish(self, bundle: Path, *, signers: list[str] | None = None,
                audience: Audience = ME, **kw: Any) -> Published:
        kw.setdefault("chunk_size", CHUNK)
        return publish(self.repo, bundle, self.signers(*(signers or ONLINE)),
                       audience=audience, broker_url=self.broker_url, **kw)

    def broker(self) -> Broker:
        return Broker(self.broker_url)


@pytest.fixture
def fleet(tmp_path: Path, fleet_keys_: dict[str, KeyPair], mosquitto: Any) -> Fleet:
    k = fleet_keys_
    repo = FleetRepo.create(
        tmp_path / "repo",
        keys={"root": [k["root-a"].public, k["root-b"].public],
              "targets": [k["targets-a"].public, k["targets-b"].public],
              "snapshot": [k["snapshot"].public], "timestamp": [k["timestamp"].public]},
        thresholds={"root": 2, "targets": 2},
        signers=[k["root-a"].signer, k["root-b"].signer])
    return Fleet(repo, k, mosquitto.url)


# --- bundles derived from the real digits bundles (no TensorFlow needed) ---------------------


def derive(src: Path, out: Path, *, version: int, profiles: tuple[str, ...] | None = None,
           golden_bad: bool = False, model_bytes: bytes | None = None) -> Path:
    b = read_bundle(src)
    m = b.manifest
    changes: dict[str, Any] = {"version": version}
    if profiles is not None:
        changes["target_profiles"] = profiles
    if golden_bad:
        def shift(g: Any) -> Any:
            out_arr = g.output.decode()
            bad = (out_arr.astype(np.int16) + 60).clip(-128, 127).astype(out_arr.dtype)
            return replace(g, output=EncodedArray.encode(bad), atol=0.0)
        changes["golden"] = tuple(shift(g) for g in m.golden)
    data = b.model_bytes
    if model_bytes is not None:
        data = model_bytes
        changes.update(model_sha256=sha256_bytes(data), model_size=len(data))
    write_bundle(Bundle(replace(m, **changes), data, b.report, str(out)), out)
    return out


@dataclass(frozen=True)
class Bundles:
    v1: Path
    v2: Path
    v3: Path
    v4: Path
    v3_rpi4: Path
    v3_golden_bad: Path
    v3_broken: Path


@dataclass(frozen=True)
class PinnedDigits:
    bundle: Path
    bundle_v2: Path
    eval_npz: Path


@pytest.fixture(scope="session")
def update_digits(request: pytest.FixtureRequest) -> PinnedDigits:
    """The shared ``digits`` bundles, pinned: a converter edit elsewhere does not make these
    tests retrain (the update path does not depend on how the model was converted)."""
    import hashlib
    import os
    import shutil

    root = Path(__file__).resolve().parents[2]
    key = hashlib.sha256((root / "edge_agent" / "bundle.py").read_bytes()).hexdigest()[:12]
    pin = root / ".cache" / "test-artifacts" / f"update-digits-{key}"
    if not (pin / "digits-v2" / "manifest.json").exists():
        digits = request.getfixturevalue("digits")
        tmp = pin.with_name(pin.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(digits.bundle, tmp / "digits-v1")
        shutil.copytree(digits.bundle_v2, tmp / "digits-v2")
        shutil.copy(digits.eval_npz, tmp / "eval.npz")
        shutil.rmtree(pin, ignore_errors=True)
        os.replace(tmp, pin)
    return PinnedDigits(pin / "digits-v1", pin / "digits-v2", pin / "eval.npz")


@pytest.fixture(scope="session")
def bundles(update_digits: PinnedDigits, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    digits = update_digits
    d = tmp_path_factory.mktemp("bundles")
    rng = np.random.default_rng(3)
    return Bundles(
        v1=digits.bundle, v2=digits.bundle_v2,
        v3=derive(digits.bundle, d / "v3", version=3),
        v4=derive(digits.bundle, d / "v4", version=4),
        v3_rpi4=derive(digits.bundle, d / "v3-rpi4", version=3, profiles=("rpi4",)),
        v3_golden_bad=derive(digits.bundle, d / "v3-golden", version=3, golden_bad=True),
        v3_broken=derive(digits.bundle, d / "v3-broken", version=3,
                         model_bytes=rng.integers(0, 256, 80_000, dtype=np.uint8).tobytes()))


# --- the device: the real agent ---------------------------------------------------------------


class Device:
    """An in-process :class:`edge_agent.app.Agent` with the update component."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.events: list[AgentEvent] = []
        agent.hooks.on_event(self.events.append)
        svc = [c for c in agent.components if isinstance(c, UpdateService)]
        assert svc, f"update component not started: {agent.components}"
        self.svc: UpdateService = svc[0]

    def mark(self) -> int:
        return len(self.svc.outcomes)

    def outcome(self, after: int, timeout_s: float = 30.0) -> Outcome:
        wait_for(lambda: len(self.svc.outcomes) > after and self.svc.idle(), timeout_s,
                 "an update outcome")
        return self.svc.outcomes[after]

    def serving(self, name: str = "digits") -> int | None:
        return self.agent.registry.active_version(name)

    def predict_version(self, x: np.ndarray) -> int:
        return int(self.agent.registry.get("digits").predict(x, source="test").version)

    def on_disk(self, name: str = "digits") -> int | None:
        return self.agent.store.active_version(name)

    def trusted(self) -> dict[str, int]:
        assert self.svc.flow is not None
        return self.svc.flow.trust.versions()

    def events_of(self, kind: str) -> list[AgentEvent]:
        return [e for e in self.events if e.kind == kind]


DeviceFactory = Callable[..., Device]


@pytest.fixture
def start_device(tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any
                 ) -> Iterator[DeviceFactory]:
    from edge_agent.app import Agent
    from edge_agent.config import load_config

    agents: list[Any] = []

    def make(*, store: Path | None = None, models: tuple[Path, ...] | None = None,
             **update: Any) -> Device:
        o: dict[str, Any] = {
            "agent.store_dir": str(store or tmp_path / "store"),
            "agent.profile": "generic-x86_64", "agent.device_id": DEVICE,
            "agent.probe_runtime": False, "agent.threads": 1, "agent.groups": [GROUP],
            "http.port": 0, "mqtt.url": mosquitto.url, "mqtt.keepalive_s": 5,
            "mqtt.reconnect_max_s": 1.0,
            "update.root_file": str(fleet.repo.meta_dir / "1.root.json"),
            "update.probation_s": 0.3, "update.probation_min_requests": 5,
            "update.stall_timeout_s": 10.0, "update.download_timeout_s": 60.0,
            "update.retry_backoff_s": 0.5, "update.http_retries": 1,
            "update.http_timeout_s": 5.0,
        }
        o.update({f"update.{k}": v for k, v in update.items()})
        o["models"] = [{"bundle": str(b)} for b in (models if models is not None
                                                    else (bundles.v1,))]
        agent = Agent(load_config(None, o, env={}))
        agents.append(agent)
        agent.start()
        dev = Device(agent)
        wait_for(lambda: dev.svc.deps.client is not None and dev.svc.deps.client.is_connected,
                 10, "the agent's MQTT connection")
        return dev

    yield make
    for a in reversed(agents):
        a.stop()


@pytest.fixture
def x_digits(update_digits: PinnedDigits) -> np.ndarray:
    return np.load(update_digits.eval_npz)["x"][:4].astype(np.float32)


@pytest.fixture(scope="session")
def wide_v3() -> Path:
    """A real digits model taking 16x16 input, as digits v3 (built once, cached)."""
    import hashlib
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    root = here.parents[1]
    h = hashlib.sha256((here / "update_models.py").read_bytes())
    for p in sorted((root / "converter").glob("*.py")):
        h.update(p.read_bytes())
    out = root / ".cache" / "test-artifacts" / f"update-wide-{h.hexdigest()[:12]}"
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, str(here / "update_models.py"), "wide", str(out),
                        "--version", "3"], check=True, cwd=root, env={**os.environ},
                       stdout=subprocess.DEVNULL)
    return out
