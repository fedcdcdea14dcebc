"""Per-variant candidate checks (issue 15 part 2): an update whose bundle carries variants is
proven one variant per check child, each with its own golden vectors, before the swap. A
variant that crashes its child is skipped with the reason and never loaded into the agent,
while another passes; none passing is ``no_runnable_variant`` with every reason, over MQTT
``update.rejected``, and the active version keeps serving. Real ``edge-agent run``, real
Mosquitto, signed releases, real LiteRT; the crash is a real SIGSEGV inside the child
(``EDGE_UPDATE_FAULT=segv@check:fast``)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from update_agentproc import AgentProcess, settled, start
from update_helpers import (
    DEVICE,
    ME,
    Bundles,
    Fleet,
    PinnedDigits,
    assert_nothing_moved,
    signed_release,
)

from converter.variants import add_variants
from edge_agent.bundle import read_bundle, write_bundle
from edge_agent.manifest import Requires


@pytest.fixture(scope="session")
def v2_variants(bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits v2 with a preferred variant ``fast`` (the same int8 model: the fault seam,
    not the model, is what makes it crash) before ``model.tflite``."""
    b = add_variants(read_bundle(bundles.v2), [("fast", bundles.v2, Requires())])
    return write_bundle(b, tmp_path_factory.mktemp("v2var") / "v2-variants")


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    made: list[AgentProcess] = []
    yield made
    for a in made:
        a.stop()


@pytest.fixture
def x(update_digits: PinnedDigits) -> np.ndarray:
    return np.load(update_digits.eval_npz)["x"][:1].astype(np.float32)


class Events:
    """The device's MQTT events, as the fleet sees them."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("mqtt://").partition(":")
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="events-reader",
                             protocol=paho.MQTTv5)
        self.c.on_message = lambda _c, _u, m: self.q.put(json.loads(m.payload))
        self.c.connect(host, int(port))
        self.c.subscribe(f"edge/{DEVICE}/events", qos=1)
        self.c.loop_start()

    def wait(self, kind: str, timeout_s: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                e = self.q.get(timeout=max(0.05, end - time.monotonic()))
            except queue.Empty:
                break
            if e.get("kind") == kind:
                return e
        raise AssertionError(f"no {kind} event within {timeout_s} s")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_a_variant_that_crashes_its_check_is_skipped_and_the_other_is_served(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any, v2_variants: Path,
        x: np.ndarray, agents: list[AgentProcess]) -> None:
    a = start(agents, tmp_path, fleet, bundles, mosquitto, fault="segv@check:fast")
    pid = a.pid
    t0 = time.time()
    fleet.publish(v2_variants, audience=ME)
    st = settled(a, t0, 90)
    assert (st["last"]["result"], st["last"]["version"]) == ("committed", 2), st["last"]
    assert a.pid == pid and a.proc is not None and a.proc.poll() is None  # never crashed
    (m,) = [m for m in a.get("/v1/models")["models"] if m["name"] == "digits"]
    (v,) = [v for v in m["versions"] if v["version"] == 2]
    assert v["variant"] == "default" and v["variants"] == ["default"], v
    skipped = v["variants_skipped"]["fast"]
    assert "check check_crashed" in skipped and "SIGSEGV" in skipped, skipped
    assert a.serving() == 2 and len(a.predict(x)["predictions"]) == 1
    loaded = [e for e in a.get("/v1/agent/status")["recent_events"]
              if e["kind"] == "update.test_loaded"]
    assert "SIGSEGV" in json.dumps(loaded[-1]), loaded[-1]


def test_no_variant_passing_its_check_is_no_runnable_variant_and_v1_keeps_serving(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, mosquitto: Any, v2_variants: Path,
        x: np.ndarray, agents: list[AgentProcess]) -> None:
    events = Events(mosquitto.url)
    a = start(agents, tmp_path, fleet, bundles, mosquitto, fault="segv@check")
    before = a.snapshot()
    t0 = time.time()
    fleet.publish(v2_variants, audience=ME)
    st = settled(a, t0, 90)
    last = st["last"]
    assert (last["result"], last["code"]) == ("rejected", "no_runnable_variant"), last
    for name in ("fast", "default"):  # each variant's own reason
        assert f"{name}: check check_crashed" in last["reason"], last["reason"]
    rejected = events.wait("update.rejected")
    assert rejected["data"]["code"] == "no_runnable_variant", rejected
    assert "fast: check check_crashed" in rejected["message"], rejected
    assert "digits@2" in st["blocked"], st  # every variant crashed: blocked like a crash
    assert a.serving() == 1 and len(a.predict(x)["predictions"]) == 1
    assert_nothing_moved(a, before, accepted=signed_release(fleet.repo))
    events.close()
