"""The device dashboard shows which variant of a bundle with variants serves, and when it is
degraded (issue 15 part 2): a real in-process agent, real LiteRT, the page in a real
headless Chromium; the failover is injected by the runtime fault seam's spec table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentFactory
from model_fixtures import TwoHeads
from ui_browser import open_browser
from variant_helpers import variant_bundle as variant_bundle

from edge_agent.runtime import fault_seam

DATA = "data-token-1"


def test_the_models_table_shows_the_serving_variant_and_degraded(
        start_agent: AgentFactory, variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fault = tmp_path / "delegate-broken"
    monkeypatch.setattr(fault_seam, "_SPECS", {"fast": ("raise", fault)})
    agent: Any = start_agent(variant_bundle, components=("dashboard",),
                             **{"http.token": DATA, "agent.variant_backoff_s": 60})
    rest = start_agent.client(agent, DATA)
    with open_browser(tmp_path / "shots") as b:
        b.open(agent.http.url + "/ui/")
        b.login(DATA)
        b.wait(lambda: "two" in b.text("#models"), what="the models table")
        assert "v1 (AVAILABLE, variant fast)" in b.text("#models tbody tr")
        fault.touch()
        r = rest.post("/v1/models/two:predict", {"instances": two_heads.x[:1].tolist()})
        assert r.status == 500  # the request that detected the delegate error
        b.wait(lambda: "v1 (AVAILABLE, variant default, degraded)" in b.text("#models tbody tr"),
               what="the degraded variant in the models table", timeout_s=15)
