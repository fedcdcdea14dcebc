"""The Agent's life cycle: loading from the store, failures, components, reload, delegates."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import DigitsEval, MqttRequester, make_config
from waiting import wait_for

from edge_agent.app import Agent
from edge_agent.bundle import EncodedArray, read_bundle, write_bundle
from edge_agent.errors import ConfigError, RuntimeUnavailableError
from edge_agent.hooks import AgentEvent
from edge_agent.store import ModelStore
from edge_agent.wiring import Services


def _events(agent: Agent, kind: str) -> list[AgentEvent]:
    return [e for e in agent.events if e.kind == kind]


def test_a_broken_serving_version_falls_back_and_is_reported(start_agent: Any, digits: Any,
                                                             tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    store.install(read_bundle(digits.bundle))
    store.install(read_bundle(digits.bundle_v2))
    store.set_active("digits", 1)
    store.set_active("digits", 2)
    (store.version_dir("digits", 2) / "model.tflite").write_bytes(b"corrupt")
    agent = start_agent()
    assert agent.registry.active_version("digits") == 1
    (failed,) = _events(agent, "model.load_failed")
    assert failed.level == "error" and failed.data["version"] == 2
    assert "model.tflite is 7 bytes, manifest says" in failed.message, failed.message
    assert _events(agent, "model.fallback")[0].data["version"] == 1
    r = start_agent.client(agent).get("/v1/models/digits/versions/2").json()
    (row,) = r["model_version_status"]
    assert row["state"] == "END" and row["status"]["error_code"] == "UNKNOWN"
    assert "model.tflite" in row["status"]["error_message"]


def test_golden_mismatch_is_skipped_and_the_other_models_serve(start_agent: Any, digits: Any,
                                                               digits_float: Path,
                                                               tmp_path: Path) -> None:
    b = read_bundle(digits_float)
    g = b.manifest.golden[0]
    wrong = EncodedArray.encode(g.output.decode() + 5.0)
    bad = dataclasses.replace(b, manifest=dataclasses.replace(
        b.manifest, golden=(g.with_output(wrong), *b.manifest.golden[1:])))
    write_bundle(bad, tmp_path / "bad")
    agent = start_agent(digits.bundle, tmp_path / "bad")
    assert agent.registry.names() == ["digits"]
    (failed,) = _events(agent, "model.load_failed")
    assert "golden vector 0" in failed.data["reason"] and failed.data["model"] == "digits-float"
    assert start_agent.client(agent).get("/readyz").status == 200


def test_components_start_after_models_and_stop_in_reverse_before_unload(
        start_agent: Any, digits: Any) -> None:
    log: list[str] = []

    class Comp:
        def __init__(self, services: Services, name: str) -> None:
            self.services, self.name = services, name
            log.append(f"create {name} models={services.registry.names()}")

        def start(self) -> None:
            log.append(f"start {self.name}")

        def stop(self) -> None:
            log.append(f"stop {self.name} models={self.services.registry.names()}")

    agent = start_agent(digits.bundle, components=[
        lambda s: Comp(s, "telemetry"), "systemd",  # systemd: none without $NOTIFY_SOCKET
        lambda s: None, lambda s: Comp(s, "update")])
    assert [type(c).__name__ for c in agent.components] == ["Comp", "Comp"]
    agent.stop()
    assert log == ["create telemetry models=['digits']", "start telemetry",
                   "create update models=['digits']", "start update",
                   "stop update models=['digits']", "stop telemetry models=['digits']"]
    assert agent.registry.names() == []


def test_a_component_config_error_fails_the_start(tmp_path: Path, digits: Any) -> None:
    def bad(services: Services) -> None:
        raise ConfigError("bad value", source="agent.toml", key="telemetry.interval_s")

    agent = Agent(make_config(tmp_path), components=[bad])
    with pytest.raises(ConfigError, match=r"telemetry\.interval_s"):
        agent.start()
    agent.stop()


def test_a_component_that_fails_to_start_is_an_event(start_agent: Any, digits: Any) -> None:
    class Broken:
        def start(self) -> None:
            raise OSError("no disk")

        def stop(self) -> None:
            raise AssertionError("never started, never stopped")

    agent = start_agent(digits.bundle, components=[lambda a: Broken()])
    assert agent.components == [] and "no disk" in _events(agent, "component.failed")[0].message
    assert start_agent.client(agent).get("/readyz").status == 200


def test_reload_loads_a_new_version_and_keeps_serving_when_one_fails(
        start_agent: Any, digits: Any, tmp_path: Path) -> None:
    agent = start_agent(digits.bundle)
    store = agent.store
    store.install(read_bundle(digits.bundle_v2))
    store.set_active("digits", 2)
    assert agent.reload() == ["digits: loaded v2"]
    assert agent.registry.active_version("digits") == 2
    store.set_active("digits", 1)
    assert agent.reload() == ["digits: activated v1"]
    b3 = read_bundle(digits.bundle_v2)
    b3 = dataclasses.replace(b3, manifest=dataclasses.replace(b3.manifest, version=3))
    store.install(b3)
    (store.version_dir("digits", 3) / "model.tflite").write_bytes(b"garbage")
    store.set_active("digits", 3)
    assert agent.reload() == []
    assert agent.registry.active_version("digits") == 1  # still serving
    assert _events(agent, "model.load_failed")[-1].data["version"] == 3


def test_install_bundle_serves_it_and_survives_a_restart(start_agent: Any, digits: Any,
                                                         digits_eval: DigitsEval,
                                                         tmp_path: Path) -> None:
    agent = start_agent(digits.bundle)
    served = agent.install_bundle(digits.bundle_v2)
    assert served.version == 2 and agent.registry.active_version("digits") == 2
    assert agent.store.active_version("digits") == 2
    agent.stop()
    again = start_agent(store=agent.store.root)
    assert again.registry.active_version("digits") == 2
    assert [sm.version for sm in again.registry.versions("digits")] == [1, 2]
    r = start_agent.client(again).post("/v1/models/digits/versions/1:classify",
                                       body=digits_eval.png(3), content_type="image/png")
    assert r.json()["results"][0][0][0] == str(digits_eval.y[3])


def _edgetpu_bundle(digits: Any, out: Path) -> Path:
    b = read_bundle(digits.bundle)
    model = b.model_bytes + b"edgetpu-custom-op"  # what edgetpu_compiler leaves in a model
    from edge_agent.bundle import sha256_bytes

    m = dataclasses.replace(b.manifest, name="tpu", model_sha256=sha256_bytes(model),
                            model_size=len(model))
    return write_bundle(dataclasses.replace(b, manifest=m, model_bytes=model), out)


LITERT_DELEGATE_DEL = pytest.mark.filterwarnings(  # ai-edge-litert's Delegate.__del__ after a
    "ignore::pytest.PytestUnraisableExceptionWarning")  # failed load_delegate: harmless


@LITERT_DELEGATE_DEL
def test_missing_edgetpu_delegate_falls_back_to_cpu_and_refuses_tpu_bundles(
        start_agent: Any, digits: Any, tmp_path: Path) -> None:
    tpu = _edgetpu_bundle(digits, tmp_path / "tpu")
    agent = start_agent(digits.bundle, tpu, **{"agent.profile": "coral-usb"})
    (ev,) = _events(agent, "delegate.unavailable")
    assert "libedgetpu.so.1" in ev.message and "running on the CPU" in ev.message
    assert agent.registry.names() == ["digits"]  # the CPU model serves
    (failed,) = _events(agent, "model.load_failed")
    assert "compiled for the Edge TPU" in failed.message
    assert "delegate:cpu" in agent.capabilities


@LITERT_DELEGATE_DEL
def test_missing_delegate_with_fallback_fail_refuses_to_start(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, **{"agent.profile": "coral-usb",
                                   "agent.delegate_fallback": "fail"})
    with pytest.raises(RuntimeUnavailableError, match=r"libedgetpu\.so\.1"):
        Agent(cfg, components=())


def test_unusable_store_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"agent\.store_dir: cannot use store directory"):
        Agent(make_config(blocker / "store"), components=())


def test_status_reports_the_contract_fields(start_agent: Any, digits: Any) -> None:
    agent = start_agent(digits.bundle, **{"agent.groups": ["lab"]})
    st = agent.status()
    assert st["device_id"] == "dev1" and st["groups"] == ["lab"]
    assert st["profile"] == "generic-x86_64"
    assert st["runtime"]["name"] == "ai-edge-litert" and st["runtime"]["threads"] == 1
    assert st["models"] == agent.registry.snapshot()
    assert isinstance(st["capabilities"], list) and "predict" in st["capabilities"]
    assert st["uptime_s"] >= 0 and st["queue_depth"] == 0
    assert st["agent_version"]
    json.dumps(st)


def test_runtime_is_probed_in_a_child_process_first(start_agent: Any, digits: Any) -> None:
    agent = start_agent(digits.bundle, **{"agent.probe_runtime": True})
    probes = agent.runtime_probes
    assert probes is not None and probes["runtime"] == "ai-edge-litert"
    assert probes["probes"][0]["outcome"] == "ok"
    assert (agent.store.root / "state" / "runtime-probes.json").exists()


def test_telemetry_component_shares_its_mqtt_client_with_mqtt_requests(
        start_agent: Any, digits: Any, mosquitto: Any, requester: MqttRequester,
        digits_eval: DigitsEval) -> None:
    """The real component factories: [mqtt] url → telemetry owns the shared client, and the
    MQTT request source answers through it."""
    agent = start_agent(digits.bundle, components=None,
                        **{"mqtt.url": mosquitto.url})
    assert "TelemetryService" in [type(c).__name__ for c in agent.components]
    assert "mqtt_requests" in [s.name for s in agent.sources]
    requester.subscribe("edge/dev1/results/digits")
    wait_for(lambda: agent.message_link().is_connected, what="agent MQTT connection")
    x = digits_eval.x[:3]
    for _ in range(50):  # the agent's subscription is made on connect: retry until answered
        requester.publish("edge/dev1/infer/digits", {"id": "t", "instances": x.tolist()})
        try:
            _, reply = requester.next(timeout_s=0.2)
            break
        except Exception:
            continue
    else:
        pytest.fail("no reply through the shared MQTT client")
    assert reply["id"] == "t"
    assert list(np.argmax(reply["predictions"], axis=1)) == list(digits_eval.y[:3])


def test_an_update_stays_active_across_restarts_unless_models_forces_a_version(
        start_agent: Any, digits: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = start_agent(digits.bundle, store=store)
    first.install_bundle(digits.bundle_v2)  # what a signed update does
    first.stop()
    again = start_agent(digits.bundle, store=store)  # [[models]] still lists v1
    assert again.registry.active_version("digits") == 2
    again.stop()
    forced = start_agent(store=store, models=[{"bundle": str(digits.bundle), "activate": True}])
    assert forced.registry.active_version("digits") == 1
