"""Issue 16 part 1: the dashboard's admin rollback goes through the signed update path.

A real agent (update component, real Mosquitto, real LiteRT) and a real headless Chromium:
with the data token the rollback button is refused (403) and nothing moves; with the admin
token, the signed command that ``edge-fleet rollback --out`` saved is verified by the update
flow like one from MQTT and rolls v2 back to v1; a version that is not installed is a clear
409 before anything reaches the flow.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from update_helpers import DEVICE, ONLINE, Bundles, DeviceFactory, Fleet, assert_nothing_moved

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))  # tests/agent helpers
from ui_browser import Browser, open_browser

from fleet.cli import main as fleet_main

DATA, ADMIN = "data-token-1", "admin-token-1"


def _signed_rollback(fleet: Fleet, out: Path, to_version: int) -> str:
    """The real CLI: ``edge-fleet rollback --out FILE`` (signed, not published)."""
    keys = [a for n in ONLINE for a in ("--key", str(fleet.keys[n].path))]
    rc = fleet_main(["rollback", "--repo", str(fleet.repo.path), *keys, "--device", DEVICE,
                     "--model", "digits", "--to-version", str(to_version), "--out", str(out)])
    assert rc == 0
    return out.read_text()


def _post(url: str, token: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + "/ui/api/rollback", data=json.dumps(doc).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _press_rollback(b: Browser, announcement: str, version: str) -> str:
    from selenium.webdriver.support.ui import Select

    b.wait(lambda: [o.get_attribute("value") for o in b.finds("#rb-version option")] == [version],
           what=f"v{version} offered for rollback")
    Select(b.find("#rb-version")).select_by_value(version)
    b.driver.execute_script("document.getElementById('rb-announcement').value = arguments[0];"
                            "document.getElementById('admin-msg').textContent = '';",
                            announcement)
    b.find("#rollback-btn").click()
    return str(b.wait(lambda: b.text("#admin-msg") if b.text("#admin-msg") not in ("", "sending…")
                      else "", 60, "the rollback's answer"))


def test_dashboard_rollback_needs_the_admin_token_and_goes_through_the_signed_path(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory, tmp_path: Path) -> None:
    dev = start_device(http={"token": DATA, "admin_token": ADMIN})
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.outcome(n).result == "committed" and dev.serving() == 2
    signed = _signed_rollback(fleet, tmp_path / "rollback.json", 1)
    assert dev.serving() == 2  # --out saved the command: nothing was published
    url = dev.agent.http.url
    with open_browser(tmp_path / "shots") as b:
        b.open(url + "/ui/")
        b.login(DATA)
        assert "Read-only" in b.text("#admin-note")
        before = dev.snapshot()
        msg = _press_rollback(b, signed, "1")
        assert msg.startswith("403: admin action"), msg
        b.shot("rollback-refused")
        assert_nothing_moved(dev, before)  # refused before the update flow saw it

        b.find("#logout").click()
        b.login(ADMIN)
        b.wait(lambda: "admin token" in b.text("#admin-note"), what="the admin note")
        msg = _press_rollback(b, signed, "1")
        assert msg == "200: rolled_back, now serving v1", msg
        b.wait(lambda: "update.rollback_command" in b.text("#updates"), what="the history row")
        b.shot("rollback-done")
        assert not b.console_errors()
    assert dev.serving() == 1 and dev.on_disk() == 1
    assert [e.data.get("code") for e in dev.events_of("update.rolled_back")] == ["command"]


def test_dashboard_rollback_to_a_version_not_installed_is_a_clear_409_and_moves_nothing(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory, tmp_path: Path) -> None:
    dev = start_device(http={"token": DATA, "admin_token": ADMIN})
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.outcome(n).result == "committed"
    signed = _signed_rollback(fleet, tmp_path / "rollback.json", 1)
    before = dev.snapshot()
    status, body = _post(dev.agent.http.url, ADMIN,
                         {"model": "digits", "to_version": 7, "announcement": signed})
    assert status == 409, body
    assert body["error"] == "digits v7 is not installed here (installed: [1, 2]); nothing " \
                            "was changed"
    assert_nothing_moved(dev, before)  # no outcome: the flow never saw the command
    status, body = _post(dev.agent.http.url, DATA,
                         {"model": "digits", "to_version": 1, "announcement": signed})
    assert status == 403, body
    assert_nothing_moved(dev, before)


def test_with_an_admin_token_the_local_announce_route_is_admin_only(
        fleet: Fleet, bundles: Bundles, start_device: DeviceFactory, tmp_path: Path) -> None:
    dev = start_device(http={"token": DATA, "admin_token": ADMIN})
    n = dev.mark()
    fleet.publish(bundles.v2)
    assert dev.outcome(n).result == "committed"
    signed = _signed_rollback(fleet, tmp_path / "rollback.json", 1).encode()
    url = dev.agent.http.url + "/v1/agent/update/announce"
    before = dev.snapshot()

    def post(token: str) -> int:
        req = urllib.request.Request(url, data=signed, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert post(DATA) == 403  # a data-plane client cannot reach the update intake
    assert_nothing_moved(dev, before)
    n = dev.mark()
    assert post(ADMIN) == 202
    assert dev.outcome(n).result == "rolled_back" and dev.serving() == 1


def test_rollback_without_broker_or_out_is_refused_and_signs_nothing(
        fleet: Fleet, capsys: Any) -> None:
    before = fleet.repo.latest_version("targets")
    keys = [a for n in ONLINE for a in ("--key", str(fleet.keys[n].path))]
    rc = fleet_main(["rollback", "--repo", str(fleet.repo.path), *keys, "--device", DEVICE,
                     "--model", "digits", "--to-version", "1"])
    assert rc != 0
    assert "--broker URL (publish the command) or --out FILE" in capsys.readouterr().err
    assert fleet.repo.latest_version("targets") == before
