"""Fixtures for the update tests: a signed repository, derived bundles, a real agent.

Everything is real: Ed25519 keys and TUF metadata (python-tuf), a private Mosquitto per
test, the in-process :class:`edge_agent.app.Agent` with its telemetry and update
components, and LiteRT. Helpers live in ``update_helpers.py``; attacks in ``update_forge.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from build_lock import build_lock
from update_helpers import (
    DEVICE,
    GROUP,
    KEY_NAMES,
    Bundles,
    Device,
    DeviceFactory,
    Fleet,
    KeyPair,
    PinnedDigits,
    derive,
)
from waiting import wait_for

from fleet import keys as fleet_keys
from fleet.repo import FleetRepo


@pytest.fixture(scope="session")
def fleet_keys_(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for n in KEY_NAMES:
        pub = fleet_keys.generate(d, n)
        out[n] = KeyPair(pub, fleet_keys.load_signer(d / f"{n}.key"), d / f"{n}.key")
    return out


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
    with build_lock(pin):
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


@pytest.fixture
def start_device(tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any
                 ) -> Iterator[DeviceFactory]:
    from edge_agent.app import Agent
    from edge_agent.config import load_config

    agents: list[Any] = []

    def make(*, store: Path | None = None, models: tuple[Path, ...] | None = None,
             http: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
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
        o.update({f"http.{k}": v for k, v in (http or {}).items()})
        o.update(config or {})  # other sections' keys, e.g. {"telemetry.interval_s": 0.2}
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
    with build_lock(out):
        if not (out / "manifest.json").exists():
            subprocess.run([sys.executable, str(here / "update_models.py"), "wide", str(out),
                            "--version", "3"], check=True, cwd=root, env={**os.environ},
                           stdout=subprocess.DEVNULL)
    return out
