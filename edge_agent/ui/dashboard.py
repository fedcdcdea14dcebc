"""The dashboard's shell: hooks in, bounded rings, the ``/ui/`` routes, one sampler thread.

Routes (docs/dashboard.md):

* ``GET /ui/``, ``/ui/app.js``, ``/ui/app.css`` — the page, from ``static/`` in the
  package. Public: they carry no data (a browser cannot send a bearer token when it
  navigates); the page asks for the token and keeps it in ``sessionStorage``.
* ``GET /ui/api/state?since=SEQ&series=1`` — everything the page shows, as one JSON
  document (bearer token as every API route). Polled by the page every 2 s.
* ``POST /ui/api/rollback`` — admin only (``[http] admin_token``, else 403): a signed
  rollback command (the announcement ``edge-fleet rollback`` makes) for an installed
  version, handed to the update component's verifying intake exactly like one from
  MQTT or ``POST /v1/agent/update/announce``. The page cannot sign: it is never a way
  around update security.

Cost when nobody looks: a prediction hook that adds to a fixed ring of time buckets (a
lock and a few additions); predictions and thumbnails are kept only while a page polled
within :data:`VIEWER_TTL_S`. Memory is fixed by the ring capacities, not by uptime or by
how many pages are open (polling holds no per-client state).

Raises nothing at construction; handlers raise HTTPStatusError (403, 409) and
InvalidRequestError (400) with messages that name what was wrong.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.agent_view import AgentView
from edge_agent.errors import InvalidRequestError, NotFoundError
from edge_agent.hooks import AgentEvent, Hooks, PredictionRecord
from edge_agent.registry import ModelRegistry
from edge_agent.serving.http import HttpServer, HTTPStatusError, Request, Response
from edge_agent.store import ModelStore
from edge_agent.telemetry.system import SystemSampler
from edge_agent.threadname import NamedThread
from edge_agent.ui.rings import PredictionRing, SampleRing, SeriesRing, thumbnail, top_k

if TYPE_CHECKING:
    from edge_agent.update.service import UpdateService

VIEWER_TTL_S = 30.0  # predictions/thumbnails are kept while a page polled this recently
ROLLBACK_WAIT_S = 30.0  # how long POST /ui/api/rollback waits for the update's outcome
_STATIC = {"": ("index.html", "text/html; charset=utf-8"),
           "app.js": ("app.js", "text/javascript; charset=utf-8"),
           "app.css": ("app.css", "text/css; charset=utf-8")}
_THROTTLE_NOW = ("under_voltage", "freq_capped", "throttled", "soft_temp_limit")
_UPDATE_EVENTS = 50  # update events kept for the history table


@dataclass(frozen=True)
class DashboardDeps:
    """What the dashboard reads (all thread-safe) and the one action it may take."""

    http: HttpServer
    hooks: Hooks
    registry: ModelRegistry
    store: ModelStore
    view: AgentView
    store_root: Path
    telemetry: Callable[[], dict[str, Any] | None]  # the last telemetry body, if any
    update: Callable[[], UpdateService | None]  # the signed-update component, if on
    sample_interval_s: float = 10.0  # drift/quality/system samples (360 kept: 1 h)


class Dashboard:
    """See the module docstring. ``start``/``stop`` run the sampler thread."""

    def __init__(self, deps: DashboardDeps) -> None:
        self.d = deps
        self._lock = threading.Lock()
        self.series = SeriesRing(buckets=360, width_s=10.0)
        self.predictions = PredictionRing(20)
        self.drift = SampleRing(360)
        self.system = SampleRing(360)
        self.quality: dict[str, Any] = {}
        self.update_events: deque[dict[str, Any]] = deque(maxlen=_UPDATE_EVENTS)
        self._viewed_at = -1e9  # monotonic time of the last state poll
        self._last_body: dict[str, Any] | None = None
        self._sampler: SystemSampler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._undo: list[Callable[[], None]] = []
        self._static: dict[str, bytes] = {}
        self.register_routes(deps.http)

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._undo = [self.d.hooks.on_prediction(self._on_prediction),
                      self.d.hooks.on_event(self._on_event)]
        self._thread = NamedThread(target=self._loop, name="edge-ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        for u in self._undo:
            u()
        self._undo.clear()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def viewing(self) -> bool:
        return time.monotonic() - self._viewed_at < VIEWER_TTL_S

    # ---- hooks (caller's thread: quick) --------------------------------------------------

    def _on_prediction(self, rec: PredictionRecord) -> None:
        if rec.source == "probe":
            return
        with self._lock:
            self.series.add(rec.model, rec.at, rec.latency_s, rec.ok)
        if not rec.ok or not self.viewing():
            return
        entry: dict[str, Any] = {"model": rec.model, "version": rec.version, "at": rec.at,
                                 "source": rec.source, "batch": rec.batch,
                                 "latency_ms": round(1000 * rec.latency_s, 3),
                                 "request_id": rec.request_id}
        if rec.probabilities is not None and len(rec.probabilities):
            entry["top"] = top_k(rec.probabilities[0], self._labels(rec.model, rec.version))
        if rec.inputs_raw is not None and len(rec.inputs_raw):
            entry["thumb"] = thumbnail(rec.inputs_raw[0])  # copied: the record is not kept
        with self._lock:
            self.predictions.add(entry)

    def _labels(self, model: str, version: int) -> tuple[str, ...]:
        try:
            return tuple(self.d.registry.get(model, version).manifest.labels)
        except NotFoundError:
            return ()

    def _on_event(self, ev: AgentEvent) -> None:
        if not ev.kind.startswith("update."):
            return
        row = {"at": ev.at, "level": ev.level, "kind": ev.kind, "message": ev.message,
               "code": ev.data.get("code"), "reason": ev.data.get("reason"),
               "name": ev.data.get("name"), "version": ev.data.get("version")}
        with self._lock:
            self.update_events.append(row)

    # ---- sampler thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                self.sample(time.time())
            except Exception:  # a broken sample must not end the history
                import logging

                logging.getLogger(__name__).exception("dashboard sample failed")
            if self._stop.wait(self.d.sample_interval_s):
                return

    def sample(self, now: float) -> None:
        """One drift/quality/system sample (from telemetry's last body when it runs)."""
        body = self.d.telemetry()
        if body is not None:
            system = body.get("system") or {}
            fresh = body is not self._last_body
            self._last_body = body
        else:
            if self._sampler is None:  # only without telemetry: psutil's CPU % is shared
                prof = self.d.view.profile
                self._sampler = SystemSampler(self.d.store_root,
                                              thermal_paths=tuple(prof.thermal_paths),
                                              throttling_path=prof.throttling_path)
            system, fresh = self._sampler.sample(), False
        row = {k: system.get(k) for k in ("cpu_percent", "process_cpu_percent", "rss_bytes",
                                          "cpu_temp_c", "load")}
        throttled = system.get("throttled")
        row["throttled"] = [k for k in _THROTTLE_NOW if throttled.get(k)] \
            if isinstance(throttled, dict) else None
        with self._lock:
            self.system.add(now, row)
        if not fresh or body is None:
            return
        psi: dict[str, Any] = {}
        quality: dict[str, Any] = {}
        for name, m in (body.get("models") or {}).items():
            q = m.get("quality") if isinstance(m, dict) else None
            if isinstance(q, dict):
                p = q.get("psi")
                psi[name] = p.get("class") if isinstance(p, dict) else None
                quality[name] = {"version": q.get("version"), "samples": q.get("samples"),
                                 "drift": q.get("drift"), "threshold": q.get("drift_threshold"),
                                 "psi": p, "mean_confidence": q.get("mean_confidence")}
            fb = m.get("feedback") if isinstance(m, dict) else None
            if isinstance(fb, dict):
                quality.setdefault(name, {})["feedback"] = {
                    k: v for k, v in fb.items() if isinstance(v, (int, float)) or v is None}
        with self._lock:
            if psi:
                self.drift.add(now, psi)
            self.quality = quality

    # ---- routes --------------------------------------------------------------------------

    def register_routes(self, http: HttpServer) -> None:
        http.add_route("GET", "/ui", self._redirect, name="ui", auth=False)
        http.add_route("GET", r"/ui/(?P<file>|app\.js|app\.css)", self._file, name="ui",
                       auth=False)
        http.add_route("GET", "/ui/api/state", self.state, name="ui_state")
        http.add_route("POST", "/ui/api/rollback", self.rollback, name="ui_rollback")

    def _redirect(self, req: Request) -> Response:
        return Response(301, b"", "text/plain", {"Location": "/ui/"})

    def _file(self, req: Request) -> Response:
        key = req.params["file"] or ""
        name, ctype = _STATIC[key]
        data = self._static.get(key)
        if data is None:
            data = self._static[key] = resources.files("edge_agent.ui").joinpath(
                "static", name).read_bytes()
        return Response(200, data, ctype, {"Cache-Control": "no-cache",
                                           "X-Content-Type-Options": "nosniff",
                                           "Content-Security-Policy": _CSP})

    def state(self, req: Request) -> tuple[int, Any]:
        """Everything the page shows. ``since``: the last prediction seq it has."""
        self._viewed_at = time.monotonic()
        since = _int_arg(req, "since", 0)
        now = time.time()
        models = []
        for m in self.d.registry.snapshot():
            name = m["name"]
            models.append({**m, "installed": self.d.store.versions(name),
                           "serving": self.d.store.serving_version(name)})
        upd = self.d.update()
        status = self.d.view.status()
        with self._lock:
            doc: dict[str, Any] = {
                "device_id": self.d.view.device_id, "profile": self.d.view.profile.name,
                "agent_version": status.get("agent_version"),
                "uptime_s": status.get("uptime_s"), "now": now,
                "admin": self.d.http.is_admin(req.headers),
                "updates_enabled": upd is not None,
                "models": models,
                "load_failures": status.get("load_failures"),
                "seq": self.predictions.seq,
                "predictions": self.predictions.since(since),
                "quality": self.quality,
                "system": self.system.rows()[-1][1] if len(self.system) else None,
                "update_history": list(self.update_events)[::-1],
                "update": upd.status() if upd is not None else None,
            }
            if _int_arg(req, "series", 1):
                doc["series"] = self.series.series(now)
                doc["drift"] = self.drift.rows()
                doc["system_series"] = self.system.rows()
        return 200, doc

    def rollback(self, req: Request) -> tuple[int, Any]:
        """Admin: hand a signed rollback command to the update flow and report its outcome."""
        if not self.d.http.is_admin(req.headers):
            raise HTTPStatusError(403, "admin action: send the admin token "
                                       "('Authorization: Bearer <http.admin_token>'); the data "
                                       "token only reads" if self.d.http.admin_enabled else
                                       "admin actions are off on this device: set "
                                       "[http] admin_token")
        doc = req.json()
        if not isinstance(doc, dict):
            raise InvalidRequestError("body must be a JSON object {model, to_version, "
                                      "announcement}")
        model, to, ann = doc.get("model"), doc.get("to_version"), doc.get("announcement")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError(f"'model' must be a model name, got {model!r}")
        if isinstance(to, bool) or not isinstance(to, int) or to < 1:
            raise InvalidRequestError(f"'to_version' must be a positive int, got {to!r}")
        installed = self.d.store.versions(model) if model in self.d.store.names() else []
        if to not in installed:
            raise HTTPStatusError(409, f"{model} v{to} is not installed here (installed: "
                                       f"{installed or 'none'}); nothing was changed")
        upd = self.d.update()
        if upd is None:
            raise HTTPStatusError(409, "signed updates are off on this device ([update]): a "
                                       "rollback is carried out only as a signed command")
        if isinstance(ann, dict):
            payload = json.dumps(ann, separators=(",", ":")).encode()
        elif isinstance(ann, str) and ann:
            payload = ann.encode()
        else:
            raise InvalidRequestError("'announcement' is missing: a rollback needs the signed "
                                      "command from the workstation (edge-fleet rollback "
                                      f"--model {model} --to-version {to} …)")
        if len(payload) > upd.deps.config.max_announcement_bytes:
            raise HTTPStatusError(413, f"announcement of {len(payload)} bytes is over "
                                       f"update.max_announcement_bytes")
        from edge_agent.update.service import LOCAL_TOPIC

        before = upd.outcomes[-1] if upd.outcomes else None
        upd.submit(LOCAL_TOPIC, payload)
        deadline = time.monotonic() + ROLLBACK_WAIT_S
        while time.monotonic() < deadline:
            last = upd.outcomes[-1] if upd.outcomes else None
            if last is not None and last is not before and upd.idle():
                serving = self.d.store.serving_version(model)
                body = {**last.to_dict(), "serving": serving}
                if last.result != "rolled_back":
                    body["error"] = f"rollback refused ({last.code}): {last.reason}"
                    return 409, body
                if serving != to:
                    body["error"] = (f"the signed command rolled {model} back to v{serving}, "
                                     f"not v{to}")
                    return 409, body
                return 200, body
            time.sleep(0.05)
        return 202, {"queued": True, "error": f"no outcome within {ROLLBACK_WAIT_S:g} s; "
                                              "see the update history"}


_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _int_arg(req: Request, key: str, default: int) -> int:
    vals = req.query.get(key)
    if not vals:
        return default
    v = vals[0]
    if not v.isdigit() or len(v) > 18:
        raise InvalidRequestError(f"query parameter {key!r} must be a non-negative integer, "
                                  f"got {v[:40]!r}")
    return int(v)
