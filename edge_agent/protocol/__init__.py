"""The device↔fleet contract, shared by ``edge_agent`` and ``fleet``: one module per side
of MQTT would drift, so both import this one.

Public surface::

    kinds      StrEnums: EventKind, UpdateResult, UpdatePhase, DeviceState, RuntimeName, Level
    messages   SCHEMA_VERSION, Header, Status, Telemetry, Event, CommandRequest, CommandReply,
               UpdateSummary, UpdateOutcome, ProtocolError (typed builders and parsers)
    announce   Announcement, parse_announcement (the untrusted update pointer)

Topics are in :mod:`edge_agent.mqtt.topics`; docs/mqtt.md documents the schema and
tests/test_protocol.py checks that it lists exactly these enums.
"""

from edge_agent.protocol.kinds import (
    RETRIED_CODES,
    UPDATE_STOPPED,
    DeviceState,
    EventKind,
    Level,
    RuntimeName,
    StrEnum,
    UpdatePhase,
    UpdateResult,
    probe_event_kind,
)
from edge_agent.protocol.messages import (
    SCHEMA_VERSION,
    CommandReply,
    CommandRequest,
    ErrorInfo,
    Event,
    Header,
    ModelSummary,
    ModelVersion,
    ProtocolError,
    RuntimeInfo,
    Status,
    Telemetry,
    UpdateOutcome,
    UpdateSummary,
    decode_object,
)

__all__ = [
    "RETRIED_CODES", "SCHEMA_VERSION", "UPDATE_STOPPED", "CommandReply", "CommandRequest",
    "DeviceState", "ErrorInfo", "Event", "EventKind", "Header", "Level", "ModelSummary",
    "ModelVersion", "ProtocolError", "RuntimeInfo", "RuntimeName", "Status", "StrEnum",
    "Telemetry", "UpdateOutcome", "UpdatePhase", "UpdateResult", "UpdateSummary",
    "decode_object", "probe_event_kind",
]
