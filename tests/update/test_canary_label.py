"""Issue 12 part 2: the update flow names the version on probation ``canary`` — REST
``/v1/models/digits/labels/canary:predict`` reaches it — and removes the label on commit
and on rollback.
The real agent (real HTTP server, real Mosquitto, the real update flow)."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from update_helpers import Bundles, DeviceFactory, Fleet
from waiting import wait_for

from edge_agent.errors import InvalidRequestError
from edge_agent.protocol.kinds import UpdatePhase


def _post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_canary_label_reaches_the_version_on_probation_and_is_gone_after_commit(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory,
        x_digits: np.ndarray) -> None:
    dev = start_device(probation_s=3.0, probation_min_requests=1)
    assert dev.agent.http is not None and dev.svc.flow is not None
    port, flow = dev.agent.http.address[1], dev.svc.flow
    body = json.dumps({"instances": x_digits[:1].tolist()}).encode()
    code, err = _post(port, "/v1/models/digits/labels/canary:predict", body)
    assert code == 400 and "Unrecognized servable version label: canary" in err["error"]
    seen: list[int] = []
    dev.agent.hooks.on_prediction(
        lambda r: seen.append(r.version) if r.source == "rest" else None)
    n = dev.mark()
    fleet.publish(bundles.v2)
    wait_for(lambda: flow.state.phase == UpdatePhase.PROBATION, 20, "v2 on probation")
    assert dev.agent.registry.labels("digits")["canary"] == 2
    code, out = _post(port, "/v1/models/digits/labels/canary:predict", body)
    assert code == 200 and len(out["predictions"]) == 1, out
    assert seen == [2]  # served by the version on probation
    res = dev.outcome(n, timeout_s=30)
    assert (res.result, res.version) == ("committed", 2), res
    assert "canary" not in dev.agent.registry.labels("digits")
    code, err = _post(port, "/v1/models/digits/labels/canary:predict", body)
    assert code == 400 and "Unrecognized servable version label" in err["error"]
    assert dev.serving() == 2 and dev.on_disk() == 2  # nothing else moved
    assert _post(port, "/v1/models/digits:predict", body)[0] == 200




def test_canary_label_is_removed_when_probation_rolls_back(
        fleet: Fleet, wide_v3: Path, start_device: DeviceFactory,
        x_digits: np.ndarray) -> None:
    """v3 takes 16x16 inputs: 8x8 traffic fails on it, probation rolls back to v1."""
    dev = start_device(probation_s=20.0, probation_min_requests=10)
    assert dev.svc.flow is not None
    flow = dev.svc.flow
    labels: list[dict[str, int]] = []
    n = dev.mark()
    fleet.publish(wide_v3)
    wait_for(lambda: flow.state.phase == UpdatePhase.PROBATION, 20, "v3 on probation")
    labels.append(dev.agent.registry.labels("digits"))
    deadline = time.monotonic() + 30
    while not dev.events_of("update.rolled_back") and time.monotonic() < deadline:
        with contextlib.suppress(InvalidRequestError):
            dev.predict_version(x_digits[:1])  # fails on v3: the model's input changed
        time.sleep(0.005)
    out = dev.outcome(n, timeout_s=30)
    assert (out.result, out.code) == ("rolled_back", "probation"), out
    assert labels[0]["canary"] == 3
    assert "canary" not in dev.agent.registry.labels("digits")
    assert dev.agent.registry.labels("digits")["stable"] == 1
    assert dev.serving() == 1 and dev.on_disk() == 1  # nothing else moved
