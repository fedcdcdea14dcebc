"""The device↔fleet contract (edge_agent.protocol): builders and parsers agree, parsers
refuse malformed messages naming the field, and docs/mqtt.md lists exactly the enums."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import InvalidRequestError
from edge_agent.mqtt.payloads import envelope
from edge_agent.mqtt.topics import FleetTopics, Topics
from edge_agent.protocol import (
    SCHEMA_VERSION,
    CommandReply,
    CommandRequest,
    DeviceState,
    ErrorInfo,
    Event,
    EventKind,
    Level,
    ModelSummary,
    ModelVersion,
    ProtocolError,
    RuntimeInfo,
    RuntimeName,
    Status,
    Telemetry,
    UpdateOutcome,
    UpdatePhase,
    UpdateResult,
    UpdateSummary,
    probe_event_kind,
)
from edge_agent.protocol import doc as protocol_doc
from edge_agent.protocol.announce import Announcement, parse_announcement
from edge_agent.update.errors import BadAnnouncementError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"

ONLINE = Status(
    DeviceState.ONLINE, agent_version="0.1.0", groups=("line-3",), profile="generic-x86_64",
    runtime=RuntimeInfo("ai-edge-litert", "2.3.0"),
    models=(ModelSummary("digits", 1, (ModelVersion(1, "AVAILABLE", "2ac6", 1.5),)),),
    capabilities=("events", "telemetry"), started_at=1.0, boot_id="3cb5",
    telemetry_interval_s=15.0, mqtt_protocol="5",
    update=UpdateSummary("idle", last=UpdateOutcome(UpdateResult.COMMITTED, "ok", "fine",
                                                    "digits", 2, 3.0)))
OFFLINE = Status(DeviceState.OFFLINE, agent_version="0.1.0", groups=("line-3",),
                 reason="connection lost")
TELEMETRY = Telemetry(15.0, 81.2, {"cpu_percent": 3.5},
                      {"digits": {"requests_per_s": 2.0, "latency_ms": {"p50": 1.0}}},
                      {"outbox": 0}, {"connects": 1})
EVENT = Event(Level.WARNING, EventKind.DRIFT_DETECTED, "drifted", {"model": "digits"}, 9.5)
REPLY_OK = CommandReply("ping", "op-42", True, {"pong": True})
REPLY_ERR = CommandReply("nope", 7, False, error=ErrorInfo("InvalidRequestError", "unknown"))


def _wire(body: dict[str, Any], device: str = "pi-17", seq: int = 4) -> bytes:
    return envelope(device, seq, body, ts=100.0)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [ONLINE, OFFLINE], ids=["online", "offline"])
def test_a_status_survives_the_wire(msg: Status) -> None:
    back = Status.parse(_wire(msg.to_dict()))
    assert back == msg
    assert back.header is not None and back.header.device == "pi-17" and back.header.seq == 4


def test_the_offline_status_carries_only_the_will_fields() -> None:
    assert list(OFFLINE.to_dict()) == ["state", "reason", "agent_version", "groups",
                                       "boot_id", "session"]  # the ordering rule's fields


def test_the_birth_keeps_its_field_names_and_order() -> None:
    assert list(ONLINE.to_dict()) == [
        "state", "agent_version", "profile", "runtime", "models", "capabilities",
        "started_at", "boot_id", "telemetry_interval_s", "mqtt_protocol", "groups", "update",
        "session"]


def test_telemetry_survives_the_wire() -> None:
    assert Telemetry.parse(_wire(TELEMETRY.to_dict())) == TELEMETRY
    assert "capture" not in TELEMETRY.to_dict()  # capture off: no object
    cap = replace(TELEMETRY, capture={"stored": 3, "limited": 1})
    assert Telemetry.parse(_wire(cap.to_dict())) == cap


def test_an_event_survives_the_wire() -> None:
    back = Event.parse(_wire(EVENT.to_dict()))
    assert back == EVENT and back.kind == "drift.detected"


@pytest.mark.parametrize("msg", [REPLY_OK, REPLY_ERR], ids=["ok", "error"])
def test_a_command_reply_survives_the_wire(msg: CommandReply) -> None:
    assert CommandReply.parse(_wire(msg.to_dict())) == msg


def test_a_command_request_survives_the_wire() -> None:
    req = CommandRequest("op-1", {"x": 1})
    assert CommandRequest.parse(json.dumps(req.to_dict()).encode(), "ping") == req


def test_an_empty_command_payload_is_a_request_without_id_or_args() -> None:
    assert CommandRequest.parse(b"", "ping") == CommandRequest()


def test_an_announcement_survives_the_wire() -> None:
    ann = Announcement("digits/2.tar", {"metadata/1.root.json": b"{}"}, chunks=True,
                       mirrors=("https://m/",), published_at=5.0)
    assert parse_announcement(ann.to_bytes(), 1 << 20) == ann


def test_every_message_carries_the_schema_version() -> None:
    for body in (ONLINE.to_dict(), TELEMETRY.to_dict(), EVENT.to_dict(), REPLY_OK.to_dict()):
        doc = json.loads(_wire(body))
        assert doc["schema"] == SCHEMA_VERSION == 1
    assert json.loads(Announcement("t", {}, chunks=False).to_bytes())["schema"] == 1


def test_unknown_fields_are_ignored_by_readers() -> None:
    body = {**EVENT.to_dict(), "added_later": {"x": 1}}
    assert Event.parse(_wire(body)) == EVENT


# --- malformed messages: each refusal names the field ---------------------------------------


def _status_with(**changes: Any) -> bytes:
    return _wire({**ONLINE.to_dict(), **changes})


@pytest.mark.parametrize(("payload", "parser", "field"), [
    (b"\xff", Status.parse, "(payload)"),
    (b"{not json", Status.parse, "(payload)"),
    (b"[1, 2]", Status.parse, "(document)"),
    (json.dumps({**ONLINE.to_dict(), "device": "d", "seq": 1, "ts": 1}).encode(),
     Status.parse, "schema"),
    (_wire(ONLINE.to_dict(), seq=-1), Status.parse, "seq"),
    (_status_with(state="sleeping"), Status.parse, "state"),
    (_status_with(state=None), Status.parse, "state"),
    (_status_with(groups="line-3"), Status.parse, "groups"),
    (_status_with(models=[{"active": 1}]), Status.parse, "models[0].name"),
    (_status_with(update={"phase": "dancing"}), Status.parse, "update.phase"),
    (_status_with(update={"phase": "idle", "last": {"result": "won"}}), Status.parse,
     "update.last.result"),
    (_status_with(update={"phase": "idle", "last": {"result": "noop", "version": "2"}}),
     Status.parse, "update.last.version"),
    (_wire({**TELEMETRY.to_dict(), "interval_s": 0}), Telemetry.parse, "interval_s"),
    (_wire({**TELEMETRY.to_dict(), "interval_s": True}), Telemetry.parse, "interval_s"),
    (_wire({**TELEMETRY.to_dict(), "models": {"digits": 3}}), Telemetry.parse,
     "models.digits"),
    (_wire({**TELEMETRY.to_dict(), "capture": [1]}), Telemetry.parse, "capture"),
    (_wire({**EVENT.to_dict(), "level": "panic"}), Event.parse, "level"),
    (_wire({**EVENT.to_dict(), "kind": "nodot"}), Event.parse, "kind"),
    (_wire({**EVENT.to_dict(), "kind": 5}), Event.parse, "kind"),
    (_wire({**EVENT.to_dict(), "data": [1]}), Event.parse, "data"),
    (_wire({**REPLY_OK.to_dict(), "ok": "yes"}), CommandReply.parse, "ok"),
    (_wire({"command": "x", "id": None, "ok": False}), CommandReply.parse, "error"),
])
def test_a_malformed_message_is_refused_naming_the_field(payload: bytes, parser: Any,
                                                        field: str) -> None:
    with pytest.raises(ProtocolError) as e:
        parser(payload)
    assert e.value.field == field and f": {field}: " in str(e.value)
    assert isinstance(e.value, InvalidRequestError)


@pytest.mark.parametrize(("payload", "field"), [
    (b'{"id": [1]}', "id"), (b'{"id": true}', "id"), (b'{"args": []}', "args"),
    (b'"ping"', "(document)"),
])
def test_a_malformed_command_is_refused_naming_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(ProtocolError, match=rf"command 'ping': {re.escape(field)}: "):
        CommandRequest.parse(payload, "ping")


def test_a_malformed_announcement_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match="type must be"):
        parse_announcement(b'{"type": "other"}', 1 << 20)


def test_a_protocol_error_reports_as_invalid_request_on_the_wire() -> None:
    err = ProtocolError("command 'x'", "id", "bad")
    assert ErrorInfo.of(err).type == "InvalidRequestError"


# --- enums --------------------------------------------------------------------------------


def test_event_kinds_are_dotted_and_unique() -> None:
    values = [k.value for k in EventKind]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", v) for v in values)


def test_members_are_strings_on_the_wire() -> None:
    assert json.dumps({"k": EventKind.UPDATE_COMMITTED}) == '{"k": "update.committed"}'
    assert f"{UpdateResult.ROLLED_BACK}" == "rolled_back" and str(DeviceState.ONLINE) == "online"


def test_every_runtime_probe_outcome_has_an_event_kind() -> None:
    from edge_agent.runtime.probe import OUTCOMES

    assert {probe_event_kind(o) for o in OUTCOMES} == {
        k for k in EventKind if k.value.startswith("runtime.probe_")}


def test_the_update_machine_uses_the_protocol_phases_and_results() -> None:
    from edge_agent.update.state import TRANSITIONS, Outcome, Phase

    assert Phase is UpdatePhase and set(TRANSITIONS) == set(UpdatePhase)
    assert Outcome is UpdateOutcome


def test_runtime_names_have_one_definition() -> None:
    from edge_agent.config import RUNTIMES
    from edge_agent.runtime.backends import DEFAULT_ORDER

    assert tuple(DEFAULT_ORDER) == tuple(RuntimeName) and ("auto", *RuntimeName) == RUNTIMES


# --- topics -------------------------------------------------------------------------------


def test_device_topics_split_back_into_device_and_rest() -> None:
    t = Topics("pi-17")
    assert Topics.split(t.results("digits")) == ("pi-17", "results/digits")
    assert Topics.device_of(t.status) == "pi-17"
    assert Topics.device_of(FleetTopics().group_announce("g")) is None
    assert Topics.device_of(FleetTopics().chunk("ab", 0)) is None
    assert Topics.device_of("other/pi-17/status") is None


def test_fleet_filters_and_announce_topics() -> None:
    f = FleetTopics("edge")
    assert f.filter("status") == "edge/+/status"
    assert f.announce("pi-17") == Topics("pi-17").announce == "edge/pi-17/update/announce"
    assert f.group_announce("line-1") == "edge/group/line-1/update/announce"
    assert f.chunk("ab", 3) == "edge/blobs/ab/3"


# --- docs ---------------------------------------------------------------------------------


def test_docs_list_exactly_the_enums() -> None:
    section = protocol_doc.section(DOCS.read_text())
    assert section is not None, f"{DOCS} lacks the {protocol_doc.BEGIN} block"
    assert section == protocol_doc.render(), \
        "docs/mqtt.md is stale: paste `python -m edge_agent.protocol.doc` between the markers"
    for enum in (EventKind, UpdateResult, UpdatePhase, DeviceState, RuntimeName):
        assert all(f"`{m.value}`" in section for m in enum)
