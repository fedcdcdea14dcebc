"""``edge-fleet watch``: a live table of devices from their MQTT status and telemetry.

Usable as a library (``fleet status`` and tests reuse it)::

    from fleet.watch import FleetView, collect
    rows = collect(MqttConfig.from_url("mqtt://broker:1883"), duration_s=3)   # list[DeviceRow]

    view = FleetView()                       # or feed it yourself (pure, no network)
    view.ingest("edge/pi-17/status", payload)
    view.rows()

:class:`FleetView` subscribes to nothing by itself: it digests ``edge/+/status``,
``edge/+/telemetry`` and ``edge/+/events`` messages. Durable messages carry a per-device
sequence number; :class:`SequenceTracker` drops the rare QoS 1 duplicate (a message
resent after a reconnect) so every figure counts each message once.

Exit codes: 0 ok, 2 bad arguments or the broker refused us.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.payloads import decode
from edge_agent.mqtt.topics import DEVICE_OUTPUT, Topics
from edge_agent.protocol import EventKind, ProtocolError, Status
from edge_agent.protocol.order import newer_status
from fleet.broker import add_broker_args, broker_config

STALE_AFTER_S = 3.0  # × the device's telemetry interval: "online" but silent is flagged


@dataclass
class DeviceRow:
    """One device as the table shows it (JSON-able via ``dataclasses.asdict``)."""

    device: str
    online: bool | None = None
    profile: str | None = None
    models: str = ""
    cpu_percent: float | None = None
    temp_c: float | None = None
    req_per_s: float | None = None
    p50_ms: float | None = None
    drift: bool = False
    psi: float | None = None  # the largest drift PSI any model reports (class or confidence)
    last_seen: float | None = None  # receive time, seconds since the epoch
    stale: bool = False  # online but no telemetry for 3 intervals
    seq: int | None = None
    duplicates: int = 0
    last_event: str | None = None


class SequenceTracker:
    """Per-device highest sequence number seen on durable topics; drops repeats."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.duplicates: dict[str, int] = {}
        self.gaps: dict[str, int] = {}  # numbers skipped (other topics, or dropped)

    def accept(self, device: str, seq: int) -> bool:
        """True for a new message; False for one already seen (a QoS 1 resend)."""
        last = self.last.get(device)
        if last is not None and seq <= last:
            self.duplicates[device] = self.duplicates.get(device, 0) + 1
            return False
        if last is not None and seq > last + 1:
            self.gaps[device] = self.gaps.get(device, 0) + seq - last - 1
        self.last[device] = seq
        return True


class FleetView:
    """Folds device messages into :class:`DeviceRow` s (thread-safe, no I/O)."""

    def __init__(self, prefix: str = "edge") -> None:
        self.prefix = prefix
        self.seq = SequenceTracker()
        self._rows: dict[str, DeviceRow] = {}
        self._interval: dict[str, float] = {}
        self._status_docs: dict[str, dict[str, Any]] = {}  # the newest status document per device
        self._lock = threading.Lock()

    def ingest(self, topic: str, payload: bytes, now: float | None = None) -> bool:
        """Digest one message; False if it was not a device message or was a repeat."""
        where = Topics.split(topic, self.prefix)
        if where is None or where[1] not in DEVICE_OUTPUT:
            return False
        device, kind = where
        doc = decode(payload)
        if doc is None:
            return False
        now = time.time() if now is None else now
        with self._lock:
            row = self._rows.setdefault(device, DeviceRow(device))
            if kind == "status":
                return self._status(row, doc, now)
            seq = doc.get("seq")
            # an event the device's outbox could not store came live, without a seq of its own
            if isinstance(seq, int) and doc.get("stored") is not False \
                    and not self.seq.accept(device, seq):
                row.duplicates = self.seq.duplicates.get(device, 0)
                return False
            row.seq = seq if isinstance(seq, int) else row.seq
            row.last_seen = now
            if kind == "telemetry":
                self._telemetry(row, doc)
            elif kind == "events":
                kind_ = str(doc.get("kind", ""))
                row.last_event = f"{doc.get('level', '?')}: {kind_}"
                if kind_ == EventKind.DRIFT_DETECTED:
                    row.drift = True
            return True

    def _status(self, row: DeviceRow, doc: dict[str, Any], now: float) -> bool:
        """Fold a status in unless an already seen one is newer (the Last Will is older by
        seq and ts than its connection's births: edge_agent.protocol.order)."""
        try:
            st = Status.from_dict(doc)
        except ProtocolError:
            return False
        if not newer_status(self._status_docs.get(row.device), doc):
            return False
        self._status_docs[row.device] = doc
        row.online = st.online
        row.last_seen = now
        if st.online:
            row.profile = st.profile
            row.models = ", ".join(f"{m.name} v{m.active}" for m in st.models)
            iv = st.telemetry_interval_s
            if iv is not None and iv > 0:
                self._interval[row.device] = iv
        return True

    def _telemetry(self, row: DeviceRow, doc: dict[str, Any]) -> None:
        sysd = _dict(doc.get("system"))
        row.cpu_percent = _num(sysd.get("cpu_percent"))
        row.temp_c = _num(sysd.get("cpu_temp_c"))
        iv = doc.get("interval_s")
        if isinstance(iv, (int, float)) and iv > 0:
            self._interval[row.device] = float(iv)
        models = _dict(doc.get("models"))
        rps, p50s, drift, psis = 0.0, [], False, []
        for m in models.values():
            if not isinstance(m, dict):
                continue
            rps += _num(m.get("requests_per_s")) or 0.0
            p50 = _num(_dict(m.get("latency_ms")).get("p50"))
            if p50 is not None:
                p50s.append(p50)
            q = _dict(m.get("quality"))
            drift = drift or q.get("drift") is True
            psis += [v for v in map(_num, _dict(q.get("psi")).values()) if v is not None]
        row.req_per_s = round(rps, 2)
        row.p50_ms = max(p50s) if p50s else None
        row.drift = drift
        row.psi = max(psis) if psis else None
        if row.online is None:
            row.online = True  # telemetry flows: it is up even if we missed the status

    def rows(self, now: float | None = None) -> list[DeviceRow]:
        now = time.time() if now is None else now
        with self._lock:
            out = []
            for d, r in sorted(self._rows.items()):
                iv = self._interval.get(d)
                r.stale = bool(r.online and iv and r.last_seen is not None
                               and now - r.last_seen > STALE_AFTER_S * iv)
                out.append(DeviceRow(**asdict(r)))
            return out


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def subscribe_view(client: MqttClient, view: FleetView) -> None:
    """Feed ``view`` from ``client`` (status, telemetry and events of every device)."""
    def handler(topic: str, payload: bytes) -> None:
        view.ingest(topic, payload)

    for kind in DEVICE_OUTPUT:
        client.subscribe(Topics.fleet_filter(kind, view.prefix), handler, qos=1)


def collect(config: MqttConfig, duration_s: float = 3.0, *, client_id: str | None = None,
            prefix: str = "edge") -> list[DeviceRow]:
    """Listen for ``duration_s`` and return the table data. Raises MqttConnectError."""
    view = FleetView(prefix)
    client = MqttClient(config=config, client_id=client_id or f"edge-fleet-{time.time_ns()}")
    subscribe_view(client, view)
    client.connect()
    try:
        time.sleep(duration_s)
    finally:
        client.stop()
    return view.rows()


def render(rows: list[DeviceRow], now: float | None = None) -> Any:
    """A ``rich`` table of ``rows``."""
    from rich.table import Table

    now = time.time() if now is None else now
    t = Table(title=f"edge fleet — {len(rows)} devices, "
                    f"{sum(1 for r in rows if r.online)} online")
    for col, just in (("device", "left"), ("online", "center"), ("profile", "left"),
                      ("models", "left"), ("CPU %", "right"), ("temp °C", "right"),
                      ("req/s", "right"), ("p50 ms", "right"), ("drift", "center"),
                      ("last seen", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]

    def f(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for r in rows:
        online = "[red]offline[/]" if r.online is False else (
            "[yellow]stale[/]" if r.stale else "[green]online[/]" if r.online else "?")
        seen = "–" if r.last_seen is None else f"{max(0.0, now - r.last_seen):.0f} s ago"
        t.add_row(r.device, online, r.profile or "–", r.models or "–",
                  f(r.cpu_percent, ".0f"), f(r.temp_c, ".1f"), f(r.req_per_s, ".1f"),
                  f(r.p50_ms, ".2f"), "[red]DRIFT[/]" if r.drift else "", seen)
    return t


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("watch", help="live table of devices (MQTT status + telemetry)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(p)
    p.add_argument("--once", action="store_true",
                   help="listen for --duration seconds, print the table once, exit")
    p.add_argument("--duration", type=float, default=3.0, help="seconds (with --once)")
    p.add_argument("--json", action="store_true", help="with --once: JSON rows instead")
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between redraws")
    p.set_defaults(func=cmd_watch)


def cmd_watch(a: argparse.Namespace) -> int:
    cfg = broker_config(a)
    if a.once:
        rows = collect(cfg, a.duration, prefix=a.prefix)
        if a.json:
            print(json.dumps([asdict(r) for r in rows], indent=1))
        else:
            from rich.console import Console
            Console().print(render(rows))
        return 0
    from rich.live import Live

    view = FleetView(a.prefix)
    client = MqttClient(config=cfg, client_id=f"edge-fleet-watch-{time.time_ns()}")
    subscribe_view(client, view)
    client.connect()
    try:
        with Live(render(view.rows()), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(a.refresh)
                live.update(render(view.rows()))
    except KeyboardInterrupt:
        return 0
    finally:
        client.stop()


if __name__ == "__main__":  # pragma: no cover
    from fleet.cli import main
    sys.exit(main(["watch", *sys.argv[1:]]))
