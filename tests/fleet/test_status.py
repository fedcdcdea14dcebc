"""``edge-fleet status``: the fleet table from retained statuses (real broker and agents)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import SimFactory, Workstation
from waiting import wait_for

from edge_agent.update.wire import Audience
from fleet.cli import main
from fleet.publish import publish
from fleet.status import StatusRow, describe_update, render, status_rows
from fleet.watch import DeviceRow


@pytest.mark.parametrize(("doc", "text"), [
    (None, ""),
    ({"phase": "idle"}, "idle"),
    ({"phase": "probation", "name": "digits", "version": 2}, "probation digits v2"),
    ({"phase": "idle", "last": {"result": "committed", "name": "digits", "version": 2,
                                "code": "ok"}}, "committed digits v2"),
    ({"phase": "idle", "last": {"result": "rolled_back", "name": "digits", "version": 3,
                                "code": "probation"}}, "rolled_back digits v3 (probation)"),
])
def test_update_state_is_described_in_one_cell(doc: Any, text: str) -> None:
    assert describe_update(doc) == text


def test_rows_join_status_documents_and_filter_by_group() -> None:
    rows = [DeviceRow("a", online=True, profile="rpi4", models="digits v2", drift=True),
            DeviceRow("b", online=False)]
    docs = {"a": {"groups": ["line-1"], "update": {"phase": "idle"}},
            "b": {"state": "offline", "groups": ["line-2"]}}
    out = status_rows(rows, docs)
    assert out[0] == StatusRow("a", True, "rpi4", ["line-1"], "digits v2", "idle", True)
    assert [r.device for r in status_rows(rows, docs, group="line-2")] == ["b"]
    table = render(out, now=0.0)
    assert table.splitlines()[0] == "2 devices, 1 online"
    assert "DRIFT" in table and "offline" in table


def test_status_shows_groups_versions_update_outcomes_and_offline_devices(
        start_sim: SimFactory, workstation: Workstation, digits: Any, mosquitto: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    line1 = start_sim(["st-a", "st-b"], groups=("line-1",))
    line2 = start_sim(["st-c"], groups=("line-2",))
    publish(workstation.repo, Path(digits.bundle_v2), workstation.signers(),
            audience=Audience(groups=("line-1",)), broker=mosquitto.url, chunk_size=16384)
    wait_for(lambda: set(line1.active_versions("digits").values()) == {2}, 30, "v2 on line-1")
    line2.devices["st-c"].agent.stop()

    def rows() -> list[dict[str, Any]]:
        assert main(["status", "--broker", mosquitto.url, "--duration", "0.5", "--json"]) == 0
        return list(json.loads(capsys.readouterr().out))

    def settled() -> list[dict[str, Any]] | None:
        r = rows()
        ok = len(r) == 3 and all(x["update"].startswith("committed") for x in r[:2]) \
            and r[2]["online"] is False
        return r if ok else None
    r = wait_for(settled, 20, "committed updates in the retained statuses")
    by = {x["device"]: x for x in r}
    assert by["st-a"]["groups"] == ["line-1"] and by["st-a"]["models"] == "digits v2"
    assert by["st-a"]["update"] == "committed digits v2" and by["st-a"]["online"] is True
    assert by["st-a"]["profile"] == "generic-x86_64"
    assert by["st-c"]["groups"] == ["line-2"] and by["st-c"]["online"] is False
    assert main(["status", "--broker", mosquitto.url, "--duration", "0.3",
                 "--group", "line-2"]) == 0
    table = capsys.readouterr().out
    assert "1 devices, 0 online" in table and "st-c" in table and "st-a" not in table
