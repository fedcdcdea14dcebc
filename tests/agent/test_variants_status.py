"""Variant fields in the retained MQTT status (issue 15 part 2): a real ``edge-agent run``
with real LiteRT and a real Mosquitto; the serving variant, its index, the degraded flag
and why the better variant is not serving, as the status publishes them and as
``edge_agent.protocol`` reads them back; a single-model bundle's status has none."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Client, MqttRequester
from attack_helpers import agent_process
from model_fixtures import TwoHeads
from variant_helpers import variant_bundle as variant_bundle

from edge_agent.protocol import ModelSummary


def _mqtt(url: str) -> str:
    return f'[mqtt]\nurl = "{url}"\nreconnect_min_s = 0.1\n[telemetry]\ninterval_s = 1.0\n'


def _status(r: MqttRequester, pred: Any, timeout_s: float = 20) -> dict[str, Any]:
    """The next status of device ``attacked`` for which ``pred`` holds."""
    end = time.monotonic() + timeout_s
    seen: list[Any] = []
    while time.monotonic() < end:
        try:
            topic, doc = r.next(max(0.05, end - time.monotonic()))
        except queue.Empty:
            break
        if topic == "edge/attacked/status" and doc.get("state") == "online":
            seen.append(doc.get("models"))
            if pred(doc):
                return doc  # type: ignore[no-any-return]
    raise AssertionError(f"no matching status within {timeout_s} s; saw {seen[-3:]}")


def _version(doc: dict[str, Any]) -> dict[str, Any]:
    (m,) = doc["models"]
    v: dict[str, Any] = m["versions"][0]
    return v


def test_status_carries_the_serving_variant_and_why_a_better_one_is_not_serving(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path, mosquitto: Any,
        requester: MqttRequester, monkeypatch: pytest.MonkeyPatch) -> None:
    fault = tmp_path / "delegate-broken"
    monkeypatch.setenv("EDGE_RUNTIME_FAULT", f"raise@fast:{fault}")
    requester.subscribe("edge/+/status")
    with agent_process(tmp_path, variant_bundle, timeout_s=120,
                       toml="variant_backoff_s = 60\n" + _mqtt(mosquitto.url)) as proc:
        birth = _status(requester, lambda d: bool(d.get("models")))
        v = _version(birth)
        assert (v["variant"], v["variant_index"], v["degraded"]) == ("fast", 0, False)
        assert v["variant_reasons"] == {} and v["variants_skipped"] == {}
        fault.touch()
        c = Client(proc.host, proc.port)
        r = c.post("/v1/models/two:predict", {"instances": two_heads.x[:1].tolist()})
        assert r.status == 500  # the request that detected the delegate error
        doc = _status(requester, lambda d: _version(d).get("degraded") is True)
        v = _version(doc)
        assert (v["variant"], v["variant_index"]) == ("default", 1)
        assert v["variant_reasons"]["fast"].startswith("delegate: delegate error"), v
        (summary,) = (ModelSummary.from_dict(m) for m in doc["models"])
        state = summary.versions[0].variant
        assert state is not None and state.degraded and state.variant == "default"
        assert dict(state.reasons)["fast"] == v["variant_reasons"]["fast"]
        assert ModelSummary.from_dict(summary.to_dict()) == summary  # round trip
        c.close()


def test_a_single_model_bundle_has_no_variant_fields_in_status(
        two_heads: TwoHeads, tmp_path: Path, mosquitto: Any,
        requester: MqttRequester) -> None:
    requester.subscribe("edge/+/status")
    with agent_process(tmp_path, two_heads.bundle, timeout_s=120, toml=_mqtt(mosquitto.url)):
        v = _version(_status(requester, lambda d: bool(d.get("models"))))
        assert set(v) == {"version", "state", "sha256", "loaded_at"}
