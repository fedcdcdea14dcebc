"""``edge-fleet status``: one table of the fleet from retained statuses and last telemetry.

::

    edge-fleet status --broker URL [--duration 2] [--group G] [--json] [broker options]

Broker options (:mod:`fleet.broker`): ``--ca-file F``, ``--cert-file F --key-file F``,
``--username U --password-file F``, ``--client-id ID``, ``--prefix P``.

Columns: device, online, profile, groups, model versions, update state, drift flag, last
seen (the device's own timestamp on its latest status, or when its latest telemetry or
event arrived). Statuses are retained (``edge/<device>/status``: birth, or the Last Will's
``offline``), so every device that ever connected appears at once; telemetry and events
are not retained, so figures from them (drift, last seen) cover what arrived during
``--duration`` seconds — use ``edge-fleet watch`` for the live view. The per-device
folding is :class:`fleet.watch.FleetView` (shared with ``watch``); this module adds the
columns fleet operations need (groups, update phase and last outcome).

Exit codes: 0 ok, 2 bad arguments or the broker refused us.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.payloads import decode
from edge_agent.mqtt.topics import DEVICE_OUTPUT, FleetTopics, Topics
from edge_agent.protocol import (
    UPDATE_STOPPED,
    ProtocolError,
    UpdatePhase,
    UpdateResult,
    UpdateSummary,
)
from fleet.broker import add_broker_args, broker_config
from fleet.watch import DeviceRow, FleetView


@dataclass(frozen=True)
class StatusRow:
    """One device in ``edge-fleet status`` (JSON via ``dataclasses.asdict``)."""

    device: str
    online: bool | None
    profile: str | None
    groups: list[str] = field(default_factory=list)
    models: str = ""
    update: str = ""
    drift: bool = False
    last_seen: float | None = None
    stale: bool = False


def describe_update(doc: Mapping[str, Any] | None) -> str:
    """``"probation digits v2"``, ``"committed digits v2"``, ``"rolled_back digits v2
    (probation)"`` or ``""`` — the ``update`` part of a status document (pure)."""
    if not isinstance(doc, Mapping):
        return ""
    try:
        u = UpdateSummary.from_dict(doc)
    except ProtocolError:
        return ""
    if u.phase not in (UpdatePhase.IDLE, UPDATE_STOPPED):
        return f"{u.phase} {_what(u.name, u.version)}".strip()
    last = u.last
    if last is not None:
        tail = f" ({last.code})" if last.code and last.result != UpdateResult.COMMITTED else ""
        return f"{last.result} {_what(last.name, last.version)}".strip() + tail
    return "idle" if u.phase == UpdatePhase.IDLE else ""


def _what(name: str | None, version: int | None) -> str:
    return " ".join(x for x in (name, None if version is None else f"v{version}") if x)


def status_rows(rows: Sequence[DeviceRow], statuses: Mapping[str, Mapping[str, Any]], *,
                group: str | None = None,
                seen: Mapping[str, float] | None = None) -> list[StatusRow]:
    """Join the watch rows with each device's status document; keep ``group`` members.

    ``seen``: when each device last spoke (overrides the watch row's receive time, which
    for a retained status is when *we* subscribed, not when the device published it).
    """
    out = []
    for r in rows:
        doc = statuses.get(r.device, {})
        groups = [g for g in doc.get("groups", []) if isinstance(g, str)] \
            if isinstance(doc.get("groups"), list) else []
        if group is not None and group not in groups:
            continue
        out.append(StatusRow(device=r.device, online=r.online, profile=r.profile,
                             groups=groups, models=r.models,
                             update=describe_update(doc.get("update")), drift=r.drift,
                             last_seen=(seen or {}).get(r.device, r.last_seen),
                             stale=r.stale))
    return out


class StatusCollector:
    """A :class:`FleetView` plus the latest raw status document per device."""

    def __init__(self, prefix: str = "edge") -> None:
        self.view = FleetView(prefix)
        self.prefix = prefix
        self._docs: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def ingest(self, topic: str, payload: bytes, now: float | None = None) -> None:
        """Fold one message in. A status counts as seen at its own ``ts`` (it may be a
        retained message published long ago); telemetry and events when they arrive."""
        now = time.time() if now is None else now
        accepted = self.view.ingest(topic, payload, now)  # False for an older status
        where = Topics.split(topic, self.prefix)
        if where is None or where[1] not in DEVICE_OUTPUT:
            return
        doc = decode(payload)
        if doc is None:
            return
        device, kind = where
        ts = doc.get("ts")
        at = float(ts) if kind == "status" and isinstance(ts, (int, float)) else now
        with self._lock:
            if kind == "status":
                if not accepted:
                    return
                self._docs[device] = doc
            self._seen[device] = max(self._seen.get(device, 0.0), min(at, now))

    def attach(self, client: MqttClient) -> None:
        """Feed this collector from ``client`` (status, telemetry, events of every device)."""
        for kind in DEVICE_OUTPUT:
            client.subscribe(Topics.fleet_filter(kind, self.prefix), self._on, qos=1)

    def _on(self, topic: str, payload: bytes) -> None:
        self.ingest(topic, payload)

    def rows(self, *, group: str | None = None, now: float | None = None) -> list[StatusRow]:
        with self._lock:
            docs, seen = dict(self._docs), dict(self._seen)
        return status_rows(self.view.rows(now), docs, group=group, seen=seen)


def collect(config: MqttConfig, duration_s: float = 2.0, *, group: str | None = None
            ) -> list[StatusRow]:
    """Listen for ``duration_s`` and return the rows. Raises MqttConnectError."""
    col = StatusCollector(config.topic_prefix)
    client = MqttClient(config=config, client_id=f"edge-fleet-status-{time.time_ns()}",
                        dispatch_queue=200_000)  # every retained status arrives at once
    col.attach(client)
    client.connect()
    if group is not None:  # statuses retained on another cluster node (protocol.wants)
        client.publish(FleetTopics(config.topic_prefix).group_status_want(group), b"", 1)
    try:
        time.sleep(duration_s)
    finally:
        client.stop()
    return col.rows(group=group)


COLUMNS = ("device", "online", "profile", "groups", "models", "update", "drift", "last seen")


def render(rows: Sequence[StatusRow], now: float | None = None) -> str:
    """A plain-text table (no terminal library needed; safe to pipe)."""
    now = time.time() if now is None else now
    cells = [list(COLUMNS)]
    for r in rows:
        online = "offline" if r.online is False else ("stale" if r.stale else
                                                     "online" if r.online else "?")
        seen = "–" if r.last_seen is None else f"{max(0.0, now - r.last_seen):.0f} s ago"
        cells.append([r.device, online, r.profile or "–", ",".join(r.groups) or "–",
                      r.models or "–", r.update or "–", "DRIFT" if r.drift else "", seen])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    n_online = sum(1 for r in rows if r.online)
    return "\n".join([f"{len(rows)} devices, {n_online} online", *lines])


def cmd_status(a: argparse.Namespace) -> int:
    rows = collect(broker_config(a), a.duration, group=a.group)
    if a.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(render(rows))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="one table of the fleet (retained statuses)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=2.0,
                   help="seconds to listen (statuses are immediate; telemetry is not)")
    p.add_argument("--group", help="only devices in this group")
    p.add_argument("--json", action="store_true", help="JSON rows instead of the table")
    add_broker_args(p)
    p.set_defaults(func=cmd_status)
