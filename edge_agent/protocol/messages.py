"""Typed builders and parsers for the JSON messages a device publishes and reads.

Every device message is an envelope::

    {"schema": 1, "device": "pi-17", "seq": 4211, "ts": 1718000000.123, ...body}

(:class:`Header` + a body). The bodies are :class:`Status` (retained birth / Last Will),
:class:`Telemetry`, :class:`Event`, :class:`CommandReply`; the device reads
:class:`CommandRequest`. Each is a frozen dataclass whose ``to_dict()`` gives the body
exactly as it goes on the wire (field names and order) and whose ``from_dict()`` checks
it, raising :class:`ProtocolError` naming the message and the field. ``parse(payload)``
reads a whole envelope. Readers ignore fields they do not know (fields are only ever
added), so an older fleet tool reads a newer device.

Pure: no IO; ``json`` only.

Size: about 400 lines: one builder/parser pair per message type of the device↔fleet
contract, kept in one file so the whole schema reads in one place; field readers are in
:mod:`edge_agent.protocol.fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.protocol.fields import Fields, ProtocolError, decode_object, tname
from edge_agent.protocol.kinds import UPDATE_STOPPED, DeviceState, Level, UpdatePhase, UpdateResult

SCHEMA_VERSION = 1  # of the envelope and the bodies below; bumped only for breaking changes

__all__ = ["SCHEMA_VERSION", "CommandReply", "CommandRequest", "ErrorInfo", "Event", "Header",
           "ModelSummary", "ModelVersion", "ProtocolError", "RuntimeInfo", "Status", "Telemetry",
           "UpdateOutcome", "UpdateSummary", "VariantState", "decode_object"]


# --- the envelope ----------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The envelope's fields: who sent it, its durable sequence number, its wall-clock time."""

    device: str
    seq: int
    ts: float
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "device": self.device, "seq": self.seq,
                "ts": round(self.ts, 3)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "message") -> Header:
        f = Fields(d, what)
        schema = f.integer("schema", required=True)
        if schema < 1:
            raise f.fail("schema", f"expected a version ≥ 1, got {schema}")
        seq = f.integer("seq", required=True)
        if seq < 0:
            raise f.fail("seq", f"expected a sequence number ≥ 0, got {seq}")
        device = f.text("device", required=True)
        if not device:
            raise f.fail("device", "empty")
        ts = f.number("ts", required=True)
        assert ts is not None
        return cls(device, seq, ts, schema)


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeInfo:
    name: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class VariantState:
    """Which variant of a bundle with variants serves (edge_agent.variants), and why not a
    better one: ``reasons`` (variant → why it failed while serving), ``skipped`` (variant →
    why it was never loaded here)."""

    variant: str
    index: int
    degraded: bool
    reasons: tuple[tuple[str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "variant_index": self.index,
                "degraded": self.degraded, "variant_reasons": dict(self.reasons),
                "variants_skipped": dict(self.skipped)}

    @classmethod
    def read(cls, f: Fields) -> VariantState | None:
        """The variant keys of a version in the status (None: a single-model bundle)."""
        name = f.text("variant")
        if name is None:
            return None
        return cls(name, f.integer("variant_index") or 0, bool(f.flag("degraded")),
                   _str_map(f, "variant_reasons"), _str_map(f, "variants_skipped"))


def _str_map(f: Fields, k: str) -> tuple[tuple[str, str], ...]:
    d = f.obj(k) or {}
    if not all(isinstance(v, str) for v in d.values()):
        raise f.fail(k, "expected an object of strings")
    return tuple(sorted(d.items()))


@dataclass(frozen=True)
class ModelVersion:
    version: int
    state: str
    sha256: str | None = None
    loaded_at: float | None = None
    variant: VariantState | None = None  # a bundle with variants

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state, "sha256": self.sha256,
                "loaded_at": self.loaded_at,
                **({} if self.variant is None else self.variant.to_dict())}


@dataclass(frozen=True)
class ModelSummary:
    """One model in the status (``ModelRegistry.snapshot()``)."""

    name: str
    active: int | None = None
    versions: tuple[ModelVersion, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "active": self.active,
                "versions": [v.to_dict() for v in self.versions]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "model") -> ModelSummary:
        return cls._read(Fields(d, what))

    @classmethod
    def _read(cls, f: Fields) -> ModelSummary:
        vs = tuple(ModelVersion(v.integer("version", required=True), v.text("state") or "",
                                v.text("sha256"), v.number("loaded_at"), VariantState.read(v))
                   for v in f.objs("versions"))
        return cls(f.text("name", required=True), f.integer("active"), vs)


@dataclass(frozen=True)
class UpdateOutcome:
    """How the last update attempt ended (``Outcome`` in edge_agent.update.state)."""

    result: UpdateResult
    code: str
    reason: str
    name: str | None = None
    version: int | None = None
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "code": self.code, "reason": self.reason,
                "name": self.name, "version": self.version, "at": self.at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "update outcome") -> UpdateOutcome:
        return cls._read(Fields(d, what))

    @classmethod
    def _read(cls, f: Fields) -> UpdateOutcome:
        result = f.choice("result", UpdateResult, required=True)
        assert result is not None
        return cls(result, f.text("code") or "", f.text("reason") or "", f.text("name"),
                   f.integer("version"), f.number("at") or 0.0)


@dataclass(frozen=True)
class UpdateSummary:
    """``update`` in the status: the update machine's phase, its target, the last outcome.

    ``phase`` is an :class:`UpdatePhase` value, or ``"stopped"`` (UPDATE_STOPPED).
    """

    phase: str
    name: str | None = None
    version: int | None = None
    last: UpdateOutcome | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "name": self.name, "version": self.version,
                "last": None if self.last is None else self.last.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "update summary") -> UpdateSummary:
        return cls._read(Fields(d, what))

    @classmethod
    def _read(cls, f: Fields) -> UpdateSummary:
        phase = f.text("phase", required=True)
        if phase != UPDATE_STOPPED and phase not in {p.value for p in UpdatePhase}:
            raise f.fail("phase", f"{phase!r} is not an update phase")
        last = f.sub("last")
        return cls(phase, f.text("name"), f.integer("version"),
                   None if last is None else UpdateOutcome._read(last))


@dataclass(frozen=True)
class Status:
    """The retained ``edge/<device>/status``: the birth (online) or the Last Will (offline).

    An offline status carries only ``state``, ``reason``, ``agent_version``, ``groups``
    (offline group members stay known to rollouts), ``boot_id`` and ``session``. Which of
    two statuses is newer: :func:`edge_agent.protocol.order.newer_status` (not seq or ts
    alone: a Will is fixed at CONNECT, before the births of its connection).
    """

    state: DeviceState
    agent_version: str | None = None
    groups: tuple[str, ...] = ()
    reason: str | None = None  # offline: "connection lost" | "shutdown"
    profile: str | None = None
    runtime: RuntimeInfo = RuntimeInfo()
    models: tuple[ModelSummary, ...] = ()
    capabilities: tuple[str, ...] = ()
    started_at: float | None = None
    boot_id: str | None = None
    telemetry_interval_s: float | None = None
    mqtt_protocol: str | None = None
    update: UpdateSummary | None = None
    header: Header | None = field(default=None, compare=False)
    session: int | None = None  # the connection (1, 2, … within one boot_id)

    @property
    def online(self) -> bool:
        return self.state == DeviceState.ONLINE

    def active_version(self, model: str) -> int | None:
        return next((m.active for m in self.models if m.name == model), None)

    def to_dict(self) -> dict[str, Any]:
        if self.state == DeviceState.OFFLINE:
            return {"state": self.state, "reason": self.reason,
                    "agent_version": self.agent_version, "groups": list(self.groups),
                    "boot_id": self.boot_id, "session": self.session}
        return {
            "state": self.state, "agent_version": self.agent_version, "profile": self.profile,
            "runtime": self.runtime.to_dict(), "models": [m.to_dict() for m in self.models],
            "capabilities": list(self.capabilities), "started_at": self.started_at,
            "boot_id": self.boot_id, "telemetry_interval_s": self.telemetry_interval_s,
            "mqtt_protocol": self.mqtt_protocol, "groups": list(self.groups),
            "update": None if self.update is None else self.update.to_dict(),
            "session": self.session,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], header: Header | None = None) -> Status:
        f = Fields(d, "status")
        state = f.choice("state", DeviceState, required=True)
        assert state is not None
        rt, upd = f.sub("runtime"), f.sub("update")
        return cls(state, f.text("agent_version"), f.strs("groups"), f.text("reason"),
                   f.text("profile"),
                   RuntimeInfo(rt.text("name"), rt.text("version")) if rt else RuntimeInfo(),
                   tuple(ModelSummary._read(m) for m in f.objs("models")),
                   f.strs("capabilities"), f.number("started_at"), f.text("boot_id"),
                   f.number("telemetry_interval_s"), f.text("mqtt_protocol"),
                   None if upd is None else UpdateSummary._read(upd), header,
                   f.integer("session"))

    @classmethod
    def parse(cls, payload: bytes) -> Status:
        """A whole status message. Raises ProtocolError."""
        doc = decode_object(payload, "status")
        return cls.from_dict(doc, Header.from_dict(doc, "status"))


# --- telemetry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Telemetry:
    """``edge/<device>/telemetry``: figures of the last interval (docs/mqtt.md lists them).

    ``models`` maps a model name to its figures (``requests_per_s``, ``latency_ms``,
    ``quality`` …); ``system``, ``queue`` and ``mqtt`` are objects of named figures;
    ``capture`` (data capture's counters) is there only when capture is on.
    """

    interval_s: float
    uptime_s: float | None = None
    system: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    queue: Mapping[str, Any] = field(default_factory=dict)
    mqtt: Mapping[str, Any] = field(default_factory=dict)
    header: Header | None = field(default=None, compare=False)
    capture: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"interval_s": self.interval_s, "uptime_s": self.uptime_s,
             "system": dict(self.system), "models": {k: dict(v) for k, v in
                                                     self.models.items()},
             "queue": dict(self.queue), "mqtt": dict(self.mqtt)}
        if self.capture is not None:
            d["capture"] = dict(self.capture)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], header: Header | None = None) -> Telemetry:
        f = Fields(d, "telemetry")
        interval = f.number("interval_s", required=True)
        assert interval is not None
        if interval <= 0:
            raise f.fail("interval_s", f"expected a positive number, got {interval:g}")
        models = f.obj("models") or {}
        for name, m in models.items():
            if not isinstance(m, Mapping):
                raise f.fail(f"models.{name}", f"expected a JSON object, got {tname(m)}")
        return cls(interval, f.number("uptime_s"), f.obj("system") or {}, models,
                   f.obj("queue") or {}, f.obj("mqtt") or {}, header, f.obj("capture"))

    @classmethod
    def parse(cls, payload: bytes) -> Telemetry:
        """A whole telemetry message. Raises ProtocolError."""
        doc = decode_object(payload, "telemetry")
        return cls.from_dict(doc, Header.from_dict(doc, "telemetry"))


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """``edge/<device>/events``. ``kind`` is an :class:`EventKind` value for this agent's
    events; a reader keeps kinds it does not know (newer devices) as plain strings."""

    level: Level
    kind: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = 0.0
    header: Header | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "kind": self.kind, "message": self.message,
                "data": dict(self.data), "at": round(self.at, 3)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], header: Header | None = None) -> Event:
        f = Fields(d, "event")
        level = f.choice("level", Level, required=True)
        kind = f.text("kind", required=True)
        room, _, step = kind.partition(".")
        if not (room and step):
            raise f.fail("kind", f"expected a dotted kind like 'model.loaded', got {kind!r}")
        assert level is not None
        return cls(level, kind, f.text("message") or "", f.obj("data") or {},
                   f.number("at") or 0.0, header)

    @classmethod
    def parse(cls, payload: bytes) -> Event:
        """A whole event message. Raises ProtocolError."""
        doc = decode_object(payload, "event")
        return cls.from_dict(doc, Header.from_dict(doc, "event"))


# --- commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRequest:
    """A command on ``edge/<device>/cmd/<name>``: ``{"id": "op-42", "args": {}}``, all
    optional (an empty payload is fine)."""

    id: str | int | None = None
    args: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str = "?") -> CommandRequest:
        f = Fields(d, f"command {name!r}")
        cid = d.get("id")
        if cid is not None and (isinstance(cid, bool) or not isinstance(cid, (str, int))):
            raise f.fail("id", f"expected a string or number, got {tname(cid)}")
        return cls(cid, f.obj("args") or {})

    @classmethod
    def parse(cls, payload: bytes, name: str) -> CommandRequest:
        """The request for command ``name``. Raises ProtocolError."""
        if not payload.strip():
            return cls()
        return cls.from_dict(decode_object(payload, f"command {name!r}"), name)


@dataclass(frozen=True)
class ErrorInfo:
    type: str  # the error class, e.g. "InvalidRequestError"
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorInfo:
        """ProtocolError reports as InvalidRequestError: the wire names the public class."""
        name = "InvalidRequestError" if isinstance(error, ProtocolError) \
            else type(error).__name__
        return cls(name, str(error))


@dataclass(frozen=True)
class CommandReply:
    """The answer on ``edge/<device>/reply/<name>`` (or the MQTT 5 response topic)."""

    command: str
    id: str | int | None
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    header: Header | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"command": self.command, "id": self.id, "ok": self.ok}
        if self.ok:
            d["result"] = self.result
        else:
            err = self.error or ErrorInfo("EdgeError", "")
            d["error"] = {"type": err.type, "message": err.message}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], header: Header | None = None) -> CommandReply:
        f = Fields(d, "command reply")
        ok = f.flag("ok", required=True)
        cid = d.get("id")
        if cid is not None and (isinstance(cid, bool) or not isinstance(cid, (str, int))):
            raise f.fail("id", f"expected a string or number, got {tname(cid)}")
        err = None
        if not ok:
            e = f.sub("error")
            if e is None:
                raise f.fail("error", "missing (expected an object when ok is false)")
            err = ErrorInfo(e.text("type", required=True), e.text("message") or "")
        return cls(f.text("command", required=True), cid, ok, d.get("result"), err, header)

    @classmethod
    def parse(cls, payload: bytes) -> CommandReply:
        """A whole reply message. Raises ProtocolError."""
        doc = decode_object(payload, "command reply")
        return cls.from_dict(doc, Header.from_dict(doc, "command reply"))
