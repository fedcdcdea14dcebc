"""Issue 16 part 1: the device dashboard at ``/ui/`` (docs/dashboard.md).

Real agents on real sockets with real LiteRT; the page in a real headless Chromium
(ui_browser.py). The signed rollback itself is in tests/update/test_ui_rollback.py.
"""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import AgentFactory, DigitsEval
from ui_browser import open_browser

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.hooks import PredictionRecord
from edge_agent.ui import Dashboard

DATA, ADMIN = "data-token-1", "admin-token-1"


@pytest.fixture
def ui_agent(start_agent: AgentFactory, digits: Any) -> Any:
    return start_agent(digits.bundle, components=("dashboard",),
                  **{"http.token": DATA, "http.admin_token": ADMIN})


def _dashboard(agent: Any) -> Dashboard:
    (d,) = [c for c in agent.components if isinstance(c, Dashboard)]
    return d


def test_the_page_shows_the_models_and_a_rest_prediction_appears_live(
        ui_agent: Any, start_agent: AgentFactory, digits_eval: DigitsEval, tmp_path: Path) -> None:
    rest = start_agent.client(ui_agent, DATA)
    with open_browser(tmp_path / "shots") as b:
        b.open(ui_agent.http.url + "/ui/")
        b.login(DATA)
        assert "?" not in b.driver.current_url  # the token is never in the URL
        assert b.driver.execute_script("return sessionStorage.getItem('edge-agent-token')") \
            == DATA
        b.wait(lambda: "digits" in b.text("#models"), what="the models table")
        row = b.text("#models tbody tr")
        assert row.startswith("digits v1 v1 (AVAILABLE) v1"), row
        assert b.finds("#predictions li") == []
        r = rest.post("/v1/models/digits:predict", {"instances": digits_eval.x[:1].tolist()})
        assert r.status == 200
        want = str(int(digits_eval.y[0]))
        li = b.wait(lambda: b.finds("#predictions li"), what="the live prediction")
        assert len(li) == 1
        assert li[0].text.splitlines()[0].startswith(want + " ")  # top-1 label and score
        assert "digits v1 · rest" in li[0].text
        assert b.finds("#predictions li canvas")  # the input thumbnail
        assert "Read-only" in b.text("#admin-note")
        b.wait(lambda: "RSS" in b.text("#system"), what="the system panel")
        b.shot("dashboard")
        assert not b.console_errors()
    assert ui_agent.registry.active_version("digits") == 1


def test_the_page_files_are_public_but_every_figure_needs_the_token(
        ui_agent: Any, start_agent: AgentFactory) -> None:
    anon = start_agent.client(ui_agent)
    page = anon.get("/ui/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"dev1" not in page.body and b"digits" not in page.body  # no data in the page
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for f in ("app.js", "app.css"):
        assert anon.get("/ui/" + f).status == 200
    assert anon.get("/ui/other.js").status == 401  # unknown paths reveal nothing
    r = anon.get("/ui/api/state")
    assert r.status == 401 and "bearer token" in r.json()["error"]
    s = start_agent.client(ui_agent, DATA).get("/ui/api/state")
    assert s.status == 200 and s.json()["admin"] is False
    assert s.json()["models"][0]["installed"] == [1]
    assert start_agent.client(ui_agent, ADMIN).get("/ui/api/state").json()["admin"] is True
    assert start_agent.client(ui_agent, ADMIN).get("/v1/models").status == 200  # admin reads too


def test_an_admin_action_without_the_admin_token_is_403_and_moves_nothing(
        ui_agent: Any, start_agent: AgentFactory) -> None:
    body = {"model": "digits", "to_version": 1, "announcement": "{}"}
    before = (ui_agent.registry.active_version("digits"), ui_agent.store.versions("digits"))
    for token in (None, "wrong"):
        assert start_agent.client(ui_agent, token).post("/ui/api/rollback", body).status == 401
    r = start_agent.client(ui_agent, DATA).post("/ui/api/rollback", body)
    assert r.status == 403
    assert r.json()["error"].startswith("admin action: send the admin token")
    r = start_agent.client(ui_agent, ADMIN).post("/ui/api/rollback", {**body, "to_version": 3})
    assert (r.status, r.json()["error"]) == (
        409, "digits v3 is not installed here (installed: [1]); nothing was changed")
    r = start_agent.client(ui_agent, ADMIN).post("/ui/api/rollback", body)
    assert r.status == 409 and "signed updates are off" in r.json()["error"]
    r = start_agent.client(ui_agent, ADMIN).post("/ui/api/rollback", {**body, "to_version": "1"})
    assert r.status == 400 and "'to_version' must be a positive int" in r.json()["error"]
    assert (ui_agent.registry.active_version("digits"), ui_agent.store.versions("digits")) \
        == before


def test_without_an_admin_token_configured_admin_actions_are_off_for_everyone(
        start_agent: AgentFactory, digits: Any) -> None:
    a = start_agent(digits.bundle, components=("dashboard",), **{"http.token": DATA})
    r = start_agent.client(a, DATA).post("/ui/api/rollback", {"model": "digits", "to_version": 1})
    assert r.status == 403 and "set [http] admin_token" in r.json()["error"]


def test_the_admin_token_must_differ_from_the_data_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"admin_token.*must differ from http\.token"):
        load_config(None, {"agent.store_dir": str(tmp_path), "http.token": "same",
                           "http.admin_token": "same"}, env={})


def test_a_page_left_open_for_a_day_costs_bounded_memory(ui_agent: Any,
                                                         start_agent: AgentFactory) -> None:
    """A day of predictions (one per 2 s) with a page polling: rings stay at their
    capacity, and the state document and the Python heap stop growing after two hours."""
    dash = _dashboard(ui_agent)
    client = start_agent.client(ui_agent, DATA)
    t0 = time.time() - 86_400
    sm = ui_agent.registry.get("digits")
    probs = [[0.1] * 10]

    def feed(hours: float, start: float) -> None:
        for i in range(int(hours * 1800)):  # one prediction per 2 s of simulated time
            dash._viewed_at = time.monotonic()  # a page is polling
            dash._on_prediction(PredictionRecord(
                "digits", sm.version, "rest", True, 0.002, 1, request_id=str(i),
                probabilities=np.asarray(probs),
                inputs_raw=np.zeros((1, 8, 8, 1), "float32"),
                at=start + 2 * i))

    feed(1, t0)
    tracemalloc.start()
    try:
        feed(1, t0 + 3600)
        base = tracemalloc.take_snapshot()
        feed(22, t0 + 7200)
        for _ in range(200):
            assert client.get("/ui/api/state?since=0").status == 200
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    finally:
        tracemalloc.stop()
    size_day = len(client.get("/ui/api/state?since=0").body)
    assert len(dash.predictions) == 20 and dash.predictions.seq == 24 * 1800
    assert all(len(r) == 360 for r in dash.series._rings.values())
    assert size_day < 48 * 1024, size_day  # 20 predictions + 360 buckets, whatever the uptime
    assert grown < 512 * 1024, f"heap grew {grown} bytes over 22 simulated hours"
    doc = json.loads(client.get("/ui/api/state").body)
    rows = doc["series"]["models"]["digits"]
    assert len(rows) <= 360 and math.isclose(rows[len(rows) // 2][1], 0.5)  # 1 per 2 s
