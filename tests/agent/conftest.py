"""Agent test fixtures: real agents on real sockets, real bundles, a real MQTT client.

Everything is real (LiteRT interpreters, the agent's HTTP event loop on 127.0.0.1, Mosquitto from
tests/conftest.py); fakes appear only where a test injects a fault. Helpers live in
agent_helpers.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import AgentFactory, DigitsEval, MqttRequester
from build_lock import build_lock


@pytest.fixture(scope="session")
def digits_eval(digits: Any) -> DigitsEval:
    ev = np.load(digits.eval_npz)
    return DigitsEval(ev["x"].astype(np.float32), ev["y"])


@pytest.fixture(scope="session")
def digits_tar(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v1 bundle as a .tar (the other on-disk form of a bundle)."""
    from edge_agent.bundle import read_bundle, write_bundle

    out = tmp_path_factory.mktemp("tar") / "digits-v1.tar"
    return write_bundle(read_bundle(digits.bundle), out)


@pytest.fixture(scope="session")
def digits_float(digits: Any) -> Path:
    """A second, different model: the CNN with float I/O and activations ("digits-float").

    Converted in ``dynamic`` mode (int8 weights, float32 activations and tensors).
    """
    out = digits.dir / "agent-digits-float-v1"
    with build_lock(out):
        if not (out / "manifest.json").exists():
            from converter.build import ConvertOptions, convert_to_bundle

            tmp = digits.dir / "agent-digits-float-v1.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            convert_to_bundle(ConvertOptions(
                model=digits.keras, representative=digits.calib_npz, eval_data=digits.eval_npz,
                profile="generic-x86_64", name="digits-float", version=1, mode="dynamic",
                output=tmp, latency_runs=5))
            os.replace(tmp, out)
    return out


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[AgentFactory]:
    f = AgentFactory(tmp_path)
    yield f
    f.close()


@pytest.fixture
def mqtt_link(mosquitto: Any) -> Iterator[Any]:
    """The agent's own MQTT client (edge_agent.mqtt.MqttClient) connected to Mosquitto."""
    from edge_agent.mqtt import MqttClient, MqttConfig

    client = MqttClient(config=MqttConfig.from_section({"url": mosquitto.url}, "test"),
                        client_id="dev1")
    client.start()
    client.wait_connected(10, raise_error=True)
    yield client
    client.stop()


@pytest.fixture
def requester(mosquitto: Any) -> Iterator[MqttRequester]:
    r = MqttRequester(mosquitto.host, mosquitto.port)
    yield r
    r.close()
