"""edge-fleet watch: the table data from real device messages, live over a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from telemetry_helpers import create, make_agent
from waiting import wait_for

from edge_agent.mqtt import MqttConfig
from edge_agent.mqtt.payloads import envelope
from fleet.watch import FleetView, SequenceTracker, collect, render


def _msg(device: str, seq: int, body: dict) -> bytes:
    return envelope(device, seq, body)


def test_view_folds_status_and_telemetry_into_rows() -> None:
    v = FleetView()
    v.ingest("edge/a/status", _msg("a", 3, {
        "state": "online", "profile": "rpi4", "telemetry_interval_s": 15,
        "models": [{"name": "digits", "active": 2}]}), now=100)
    v.ingest("edge/a/telemetry", _msg("a", 4, {
        "interval_s": 15, "system": {"cpu_percent": 37.5, "cpu_temp_c": 61.2},
        "models": {"digits": {"requests_per_s": 12.5, "latency_ms": {"p50": 3.25},
                              "quality": {"drift": True}}}}), now=101)
    v.ingest("edge/b/status", _msg("b", 9, {"state": "offline"}), now=102)
    a, b = v.rows(now=103)
    assert (a.device, a.online, a.profile, a.models) == ("a", True, "rpi4", "digits v2")
    assert (a.cpu_percent, a.temp_c, a.req_per_s, a.p50_ms, a.drift) == (37.5, 61.2, 12.5,
                                                                         3.25, True)
    assert a.last_seen == 101 and not a.stale
    assert b.online is False
    assert v.rows(now=101 + 46)[0].stale  # online, but silent for > 3 intervals


def test_view_ignores_garbage_and_repeats() -> None:
    v = FleetView()
    assert not v.ingest("edge/a/telemetry", b"\xff not json")
    assert not v.ingest("edge/a/telemetry", b"[1]")
    assert not v.ingest("other/a/telemetry", _msg("a", 1, {}))
    assert v.ingest("edge/a/telemetry", _msg("a", 1, {"system": {"cpu_percent": 5}}))
    assert not v.ingest("edge/a/telemetry", _msg("a", 1, {"system": {"cpu_percent": 99}}))
    assert v.rows()[0].cpu_percent == 5 and v.rows()[0].duplicates == 1
    v.ingest("edge/a/telemetry", json.dumps({"seq": 2, "system": "not a dict",
                                             "models": [1]}).encode())


def test_sequence_tracker_counts_gaps_and_duplicates() -> None:
    t = SequenceTracker()
    assert [t.accept("d", s) for s in (1, 2, 2, 5, 3, 6)] == [True, True, False, True, False,
                                                              True]
    assert t.duplicates["d"] == 2 and t.gaps["d"] == 2


def test_render_makes_a_table() -> None:
    from rich.console import Console
    v = FleetView()
    v.ingest("edge/a/status", _msg("a", 1, {"state": "online", "profile": "rpi5"}))
    console = Console(record=True, width=150)
    console.print(render(v.rows()))
    out = console.export_text()
    assert "rpi5" in out and "1 online" in out


def test_collect_sees_a_live_agent(tmp_path: Path, mosquitto) -> None:
    agent = make_agent(tmp_path, mosquitto.url, device="watch-me")
    svc = create(agent)
    assert svc is not None
    svc.start()
    try:
        wait_for(lambda: svc.client.is_connected)
        rows = collect(MqttConfig.from_url(mosquitto.url), 1.0)
        [r] = [r for r in rows if r.device == "watch-me"]
        assert r.online and r.profile == "generic-x86_64" and r.cpu_percent is not None
    finally:
        svc.stop()
    rows = collect(MqttConfig.from_url(mosquitto.url), 0.3)
    assert [r.online for r in rows if r.device == "watch-me"] == [False]  # retained offline


def test_cli_once_json(tmp_path: Path, mosquitto, capsys) -> None:
    import argparse

    from fleet.watch import cmd_watch, register
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    agent = make_agent(tmp_path, mosquitto.url, device="cli-dev")
    svc = create(agent)
    assert svc is not None
    svc.start()
    try:
        wait_for(lambda: svc.client.is_connected)
        args = p.parse_args(["watch", "--broker", mosquitto.url, "--once", "--duration", "0.5",
                             "--json"])
        assert cmd_watch(args) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["device"] for r in rows] == ["cli-dev"] and rows[0]["online"] is True
    finally:
        svc.stop()


def test_cli_refuses_a_bad_broker_url() -> None:
    import argparse

    from edge_agent.errors import ConfigError
    from fleet.watch import cmd_watch, register
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    with pytest.raises(ConfigError, match=r"^command line: --broker: expected mqtt://"):
        cmd_watch(p.parse_args(["watch", "--broker", "http://x", "--once"]))
