"""``edge-fleet dashboard``: the fleet on a web page, live, from the same MQTT topics.

::

    edge-fleet dashboard --broker URL [--port 8090] [--host 127.0.0.1] [broker options]

It reads exactly what ``edge-fleet status`` / ``watch`` read — retained statuses,
telemetry and events of every device (:class:`fleet.status.StatusCollector`, which folds
them with :class:`fleet.watch.FleetView`) — plus the retained progress each
``edge-fleet rollout`` publishes on ``<prefix>/rollouts/<id>/progress``
(:meth:`~edge_agent.mqtt.topics.FleetTopics.rollout_progress`). :class:`FleetBoard` is the
in-memory model (no I/O); the HTTP shell serves the page (files in the package,
``fleet/dashboard_static``, no CDN, no build step) and ``GET /api/fleet``, a JSON snapshot
the page polls every ``POLL_MS`` (slower for big fleets: the snapshot says how often).

Memory is bounded: at most ``MAX_DEVICES`` devices are tracked (later ones are counted in
``dropped_devices``), the last ``EVENTS_PER_DEVICE`` events per device, and the
``MAX_ROLLOUTS`` most recently updated rollouts. The page is read-only: it sends nothing
to the broker.

Exit codes: 0 stopped (Ctrl-C), 2 bad arguments or the broker unreachable / refused us.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.payloads import decode
from edge_agent.mqtt.topics import ROLLOUTS, Topics
from fleet.broker import add_broker_args, broker_config, connect_once
from fleet.status import StatusCollector

log = logging.getLogger(__name__)

MAX_DEVICES = 10_000
EVENTS_PER_DEVICE = 8  # kept and shown, newest first
MAX_ROLLOUTS = 20
MAX_TEXT = 300  # characters of an event message kept
POLL_MS = 1000  # the page's poll period; 5 ms more per device above 200 devices
POLL_MS_PER_DEVICE = 5
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}


class FleetBoard:
    """Devices (status + telemetry), recent events per device, rollouts (thread-safe)."""

    def __init__(self, prefix: str = "edge") -> None:
        self.prefix = prefix
        self.collector = StatusCollector(prefix)
        self._events: dict[str, deque[dict[str, Any]]] = {}
        self._rollouts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._known: set[str] = set()
        self.dropped_devices = 0
        self._lock = threading.Lock()

    def ingest(self, topic: str, payload: bytes, now: float | None = None) -> None:
        """Fold one message in (a device's status/telemetry/event, or rollout progress)."""
        now = time.time() if now is None else now
        parts = topic.split("/")
        if len(parts) == 4 and parts[0] == self.prefix and parts[1] == ROLLOUTS \
                and parts[3] == "progress":
            self._rollout(parts[2], payload)
            return
        device = Topics.device_of(topic, self.prefix)
        if device is None:
            return
        with self._lock:
            if device not in self._known:
                if len(self._known) >= MAX_DEVICES:
                    self.dropped_devices += 1
                    return
                self._known.add(device)
        self.collector.ingest(topic, payload, now)
        if topic.endswith("/events"):
            doc = decode(payload)
            if doc is not None:
                self._event(device, doc, now)

    def _event(self, device: str, doc: dict[str, Any], now: float) -> None:
        at = doc.get("at")
        ev = {"at": float(at) if isinstance(at, (int, float)) and at > 0 else now,
              "level": str(doc.get("level", "?"))[:16], "kind": str(doc.get("kind", "?"))[:64],
              "message": str(doc.get("message", ""))[:MAX_TEXT]}
        with self._lock:
            self._events.setdefault(device, deque(maxlen=EVENTS_PER_DEVICE)).append(ev)

    def _rollout(self, rollout_id: str, payload: bytes) -> None:
        doc = decode(payload) if payload else None
        with self._lock:
            self._rollouts.pop(rollout_id, None)
            if doc is None or not isinstance(doc.get("waves"), list):
                return  # an empty retained message: the progress was deleted
            self._rollouts[rollout_id] = doc
            while len(self._rollouts) > MAX_ROLLOUTS:
                self._rollouts.popitem(last=False)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """What ``GET /api/fleet`` returns: one JSON document of the whole board."""
        now = time.time() if now is None else now
        live = {r.device: r for r in self.collector.view.rows(now)}
        devices = []
        for s in self.collector.rows(now=now):
            w = live.get(s.device)
            devices.append({**asdict(s), "p50_ms": w and w.p50_ms, "req_per_s": w and w.req_per_s,
                            "cpu_percent": w and w.cpu_percent, "temp_c": w and w.temp_c,
                            "psi": w and w.psi})
        with self._lock:
            events = {d: list(q) for d, q in self._events.items()}
            rollouts = list(reversed(self._rollouts.values()))
            dropped = self.dropped_devices
        return {"now": now, "devices": devices, "events": events, "rollouts": rollouts,
                "dropped_devices": dropped,
                "poll_ms": max(POLL_MS, POLL_MS_PER_DEVICE * len(devices))}

    def attach(self, client: MqttClient) -> None:
        """Feed the board from ``client``: device output and every rollout's progress."""
        def on(topic: str, payload: bytes) -> None:
            self.ingest(topic, payload)

        for kind in ("status", "telemetry", "events"):
            client.subscribe(Topics.fleet_filter(kind, self.prefix), on, qos=1)
        client.subscribe(f"{self.prefix}/{ROLLOUTS}/+/progress", on, qos=1)


def static_file(name: str) -> bytes:
    return resources.files("fleet").joinpath("dashboard_static", name).read_bytes()


def make_server(board: FleetBoard, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP shell: the page's files and ``GET /api/fleet``; everything else 404."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-fleet-dashboard"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/api/fleet":
                self._send(200, json.dumps(board.snapshot()).encode(), "application/json")
            elif path in STATIC:
                name, ctype = STATIC[path]
                self._send(200, static_file(name), ctype)
            else:
                self._send(404, b'{"error":"not found"}', "application/json")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", "default-src 'self'")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    return srv


def cmd_dashboard(a: argparse.Namespace) -> int:
    cfg = broker_config(a)
    board = FleetBoard(cfg.topic_prefix)
    client = MqttClient(config=cfg, client_id=f"edge-fleet-dashboard-{time.time_ns()}",
                        dispatch_queue=200_000)  # every retained status arrives at once
    board.attach(client)
    connect_once(client)  # MqttConnectError (exit 2) when the broker is unreachable
    try:
        try:
            srv = make_server(board, a.host, a.port)
        except OSError as e:
            print(f"edge-fleet: error: --port {a.port}: {e.strerror}", file=sys.stderr)
            return 2
        print(f"fleet dashboard: http://{a.host}:{srv.server_port}/ (broker {cfg.url}; "
              "Ctrl-C stops)", flush=True)
        try:
            srv.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            return 0
        finally:
            srv.server_close()
        return 0
    finally:
        client.stop()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dashboard", help="live fleet page in a browser (devices, "
                              "rollouts, events)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8090, help="HTTP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this workstation only)")
    add_broker_args(p)
    p.set_defaults(func=cmd_dashboard)


if __name__ == "__main__":  # pragma: no cover
    from fleet.cli import main
    sys.exit(main(["dashboard", *sys.argv[1:]]))
