"""A small, fast HTTP/1.1 JSON server on the standard library, with a route table.

Why not a framework: the agent must stay light (RSS budget on a Pi Zero) and the hot path
short; ``ThreadingHTTPServer`` with keep-alive, ``TCP_NODELAY``, one ``sendall`` per
response and a strict request-head parser of our own (:mod:`edge_agent.serving.wire`, not the
``email`` package) adds a fraction of a millisecond per request.

Other components add routes with :meth:`HttpServer.add_route`::

    def feedback(req: Request) -> tuple[int, Any]:
        doc = req.json()                       # InvalidRequestError → 400
        name = req.params["name"]              # named groups of the path regex
        return 202, {"accepted": True}         # any json.dumps-able body

    agent.http.add_route("POST", r"/v1/models/(?P<name>[^/:]+):feedback", feedback)

A handler returns ``(status, body)`` or a :class:`Response` (raw bytes), or raises an
:class:`~edge_agent.errors.EdgeError`: NotFoundError → 404, other BadInputError → 400,
Overloaded → 503 + Retry-After, TransportError / RuntimeUnavailableError → 503,
:class:`HTTPStatusError` → its status, anything else → 500 (logged with the request id).
Error bodies are always ``{"error": "<message>"}``. A request's body is read whole (within
``body_timeout_s``) after its route and token are checked and before its handler runs, so a
handler's work admission never waits on a slow client.

Limits: bearer token (constant-time compare; every route not added with ``auth=False``,
which only ``/healthz`` and the dashboard's page files are; the admin token also passes it,
and handlers of admin actions check :meth:`HttpServer.is_admin`), request body (413), open
connections in total and per peer IP (503), total time for a request head and for a body
(408, :mod:`.deadline`), idle keep-alive connections (closed after a timeout).

The route table and the handler-facing types live in :mod:`edge_agent.serving.routes` (no
sockets); this module is the connection side. Both are importable from here.

Size: a little over ~400 lines: the connection loop, its deadlines and its admission
points are one state machine per socket, and splitting it would spread one request's life
over several files; routing lives in :mod:`edge_agent.serving.routes`, deadline reads in
:mod:`edge_agent.serving.deadline`.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from edge_agent.errors import EdgeError, TransportError
from edge_agent.ids import request_id
from edge_agent.serving.admission import Overloaded
from edge_agent.serving.deadline import DeadlineReader
from edge_agent.serving.routes import (
    Handler,
    HTTPStatusError,
    Request,
    Response,
    Route,
    RouteTable,
    status_for,
)
from edge_agent.serving.wire import HeadError, Headers, parse_headers, parse_request_line

__all__ = ["HTTPStatusError", "Handler", "HttpServer", "Request", "Response", "Route",
           "status_for"]

log = logging.getLogger(__name__)
_RID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_LENGTH_RE = re.compile(r"[0-9]{1,18}")
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    headers: Headers  # type: ignore[assignment]  # ours, not an email.message.Message

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout_s)
        super().setup()
        self.reader = DeadlineReader(self.connection, self.server.idle_timeout_s)
        self.rfile = io.BufferedReader(self.reader)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        """One request; its head must arrive within ``head_timeout_s`` of its first byte."""
        self.reader.await_head(self.server.app.head_timeout_s)
        super().handle_one_request()

    def parse_request(self) -> bool:
        """Request line + headers with :mod:`edge_agent.serving.wire` (fast and strict).

        Replaces the standard library's version (same attributes set, same keep-alive and
        ``Expect: 100-continue`` rules) but refuses HTTP/0.9 and HTTP/2 request lines.
        """
        self.t0 = time.perf_counter()  # request line read: the request's clock starts here
        self.command = None  # type: ignore[assignment]
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        try:
            method, target, version = parse_request_line(self.raw_requestline)
            self.request_version = f"HTTP/{version[0]}.{version[1]}"
            self.command, self.path = method, target
            self.headers = parse_headers(self.rfile)
        except HeadError as e:
            self.send_error(e.status, str(e))
            return False
        except TimeoutError as e:  # slowloris: the head dripped in past its deadline
            self.send_error(408, str(e))
            return False
        self.reader.clear()
        conn = self.headers.get("Connection", "").lower()
        self.close_connection = (version < (1, 1) and conn != "keep-alive") or conn == "close"
        expects = self.headers.get("Expect", "").lower() == "100-continue"
        return not expects or version < (1, 1) or self.handle_expect_100()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self.server.app.dispatch(self)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        """Errors found while parsing the request line/headers, answered as JSON."""
        self.close_connection = True
        msg = message or _REASONS.get(code, "error")
        rid = request_id()
        with contextlib.suppress(OSError):
            self.server.app.write(self, code, json.dumps({"error": msg}).encode(),
                                  "application/json", {}, rid, head=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], app: HttpServer) -> None:
        self.app = app
        self.idle_timeout_s = app.idle_timeout_s
        self._conns: set[socket.socket] = set()
        self._per_client: dict[str, int] = {}
        self._conn_lock = threading.Lock()
        # the accept loop sleeps in select() until a connection or shutdown() (which
        # writes to this pair) instead of waking every poll interval to look for a flag
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._stopped = threading.Event()
        super().__init__(addr, _Handler)  # closes the pair too (server_close) if bind fails

    def serve_forever(self, poll_interval: float | None = None) -> None:
        """Accept until :meth:`shutdown`; ``poll_interval`` is ignored (nothing polls)."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping:
                    ready = sel.select()
                    if self._stopping:
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self._accept_one()
                    self.service_actions()
        finally:
            self._stopped.set()

    def _accept_one(self) -> None:
        """One ready connection, as socketserver's own loop takes it."""
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        if not self.verify_request(request, client_address):
            self.shutdown_request(request)
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Accept thread: take a connection slot (total and per peer IP) or refuse with 503."""
        peer = _peer(client_address)
        app = self.app
        with self._conn_lock:
            refusal = None
            if len(self._conns) >= app.max_connections:
                refusal = f"too many open connections (limit {app.max_connections}); retry later"
            elif self._per_client.get(peer, 0) >= app.max_connections_per_client:
                refusal = (f"too many open connections from {peer} (limit "
                           f"{app.max_connections_per_client} per client); retry later")
            else:
                self._conns.add(request)
                self._per_client[peer] = self._per_client.get(peer, 0) + 1
        if refusal is not None:
            app.refuse_connection(request, refusal)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            peer = _peer(client_address)
            with self._conn_lock:
                self._conns.discard(request)
                n = self._per_client.get(peer, 0) - 1
                if n > 0:
                    self._per_client[peer] = n
                else:
                    self._per_client.pop(peer, None)

    def open_connections(self) -> int:
        with self._conn_lock:
            return len(self._conns)

    def close_all(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class HttpServer:
    """Route table + limits + a ThreadingHTTPServer bound on :meth:`start`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8501, *, token: str | None = None,
                 max_body_bytes: int = 8 * 1024 * 1024, max_connections: int = 64,
                 max_connections_per_client: int = 16, idle_timeout_s: float = 30.0,
                 head_timeout_s: float = 10.0, body_timeout_s: float = 60.0,
                 on_response: Callable[[str, int, float], None] | None = None,
                 admin_token: str | None = None) -> None:
        self.host, self.port = host, port
        self._token = token.encode() if token else None
        self._admin = admin_token.encode() if admin_token else None
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self.idle_timeout_s = idle_timeout_s
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.on_response = on_response
        self._routes = RouteTable()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._date = ("", 0)

    # ------------------------------------------------------------------ routes

    def add_route(self, method: str, path_regex: str, handler: Handler, *,
                  name: str | None = None, auth: bool = True) -> None:
        """Serve ``method`` on paths fully matching ``path_regex`` (named groups → params).

        Routes are tried in the order added; ``name`` labels metrics (default: the regex).
        ``auth=False`` exempts the route from the bearer token (health checks only).
        """
        self._routes.add(method, path_regex, handler, name=name, auth=auth)

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        if self._httpd is None:
            return self.host, self.port
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        """Bind and serve on a background thread. Raises TransportError if it cannot bind."""
        try:
            self._httpd = _Server((self.host, self.port), self)
        except OSError as e:
            raise TransportError(f"cannot listen on {self.host}:{self.port} "
                                 f"({e.strerror or e})") from e
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="edge-agent-http", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 5.0, in_flight: Callable[[], int] | None = None) -> None:
        """Stop accepting, let admitted requests finish (up to ``grace_s``), close the rest."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        deadline = time.monotonic() + grace_s
        while in_flight and in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        httpd.close_all()
        if self._thread:
            self._thread.join(timeout=grace_s)

    def open_connections(self) -> int:
        return self._httpd.open_connections() if self._httpd else 0

    # ------------------------------------------------------------------ requests

    def _authorized(self, headers: Headers) -> bool:
        """The data token, or the admin token (an admin may also read)."""
        if self._token is None:
            return True
        return _bearer(headers, self._token) or self.is_admin(headers)

    @property
    def admin_enabled(self) -> bool:
        return self._admin is not None

    def is_admin(self, headers: Headers) -> bool:
        """True if the request carries ``[http] admin_token`` (never when none is set)."""
        return self._admin is not None and _bearer(headers, self._admin)

    def dispatch(self, h: _Handler) -> None:
        t0 = getattr(h, "t0", None) or time.perf_counter()
        rid_in = h.headers.get("X-Request-Id")
        rid = rid_in if rid_in and _RID_RE.match(rid_in) else request_id()
        method = h.command.upper()
        path, _, query = h.path.partition("?")
        path = unquote(path)
        route_name = "unmatched"
        extra: dict[str, str] = {}
        req: Request | None = None
        try:
            route, match = self._route(h, method, path, extra)
            route_name = route.name
            length = self._content_length(h)
            req = Request(h, method, path, query, match, length, rid, route.name)
            self._read_body(h, req)
            result = route.handler(req)
            if isinstance(result, Response):
                status, body, ctype = result.status, result.body, result.content_type
                extra.update(result.headers)
            else:
                status, doc = result
                body, ctype = _dumps(doc), "application/json"
        except Exception as e:
            status = status_for(e)
            if status >= 500 and not isinstance(e, EdgeError):
                log.exception("request %s %s failed (request id %s)", method, path, rid)
                msg = f"internal error ({type(e).__name__}); request id {rid}"
            else:
                msg = str(e)
            if isinstance(e, HTTPStatusError):
                extra.update(e.headers)
            if isinstance(e, Overloaded):
                extra["Retry-After"] = str(e.retry_after_s)
            body, ctype = _dumps({"error": msg}), "application/json"
        if (req is not None and not req.body_read) or (req is None and _has_body(h)):
            h.close_connection = True  # unread body bytes would corrupt the next request
        try:
            self.write(h, status, body, ctype, extra, rid, head=method == "HEAD")
        except OSError:
            h.close_connection = True
        if self.on_response is not None:
            self.on_response(route_name, status, time.perf_counter() - t0)

    def _route(self, h: _Handler, method: str, path: str, extra: dict[str, str]
               ) -> tuple[Route, re.Match[str]]:
        """The matching route, after the token check its ``auth`` flag asks for.

        Raises HTTPStatusError (401 without the token, 405) or NotFoundError (404).
        """
        try:
            route, match = self._routes.match(method, path)
        except EdgeError:
            if not self._routes.public(path):
                self._require_token(h, extra)
            raise
        if route.auth:
            self._require_token(h, extra)
        return route, match

    def _read_body(self, h: _Handler, req: Request) -> None:
        """The whole body, within ``body_timeout_s``, before the handler runs.

        So a handler's work admission (:mod:`edge_agent.serving.admission`) is only ever
        taken by a request whose body is here: a client dripping its body holds its own
        connection slot until the deadline, never a model's queue. Raises HTTPStatusError
        (408 past the deadline, 400 for a short body) or TransportError.
        """
        if req.body_read:
            return
        h.reader.start("request body", self.body_timeout_s)
        try:
            req.body  # noqa: B018  (the property reads and keeps it)
        finally:
            h.reader.clear()

    def _require_token(self, h: _Handler, extra: dict[str, str]) -> None:
        if not self._authorized(h.headers):
            extra["WWW-Authenticate"] = 'Bearer realm="edge-agent"'
            raise HTTPStatusError(401, "missing or wrong bearer token (send "
                                       "'Authorization: Bearer <token>')")

    def _content_length(self, h: _Handler) -> int:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            raise HTTPStatusError(411, "chunked request bodies are not supported; send "
                                       "Content-Length")
        raw = h.headers.get("Content-Length")
        if raw is None:
            return 0
        if _LENGTH_RE.fullmatch(raw) is None:  # RFC 9110 §8.6: 1*DIGIT (no sign, no '_')
            raise HTTPStatusError(400, f"invalid Content-Length {raw[:40]!r}")
        n = int(raw)
        if n > self.max_body_bytes:
            raise HTTPStatusError(413, f"request body of {n} bytes is over the limit of "
                                       f"{self.max_body_bytes} bytes")
        return n

    def write(self, h: _Handler, status: int, body: bytes, ctype: str,
              headers: Mapping[str, str], rid: str, *, head: bool) -> None:
        """Status line, headers and body in one ``sendall`` (no Nagle/delayed-ACK stall)."""
        now = int(time.time())
        if self._date[1] != now:
            self._date = (formatdate(now, usegmt=True), now)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                 f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 f"Date: {self._date[0]}\r\nX-Request-Id: {rid}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if h.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1", "replace")
        h.wfile.write(data if head else data + body)

    def refuse_connection(self, sock: socket.socket, message: str) -> None:
        """Answer 503 on a connection that gets no slot (on the accept thread: never waits
        more than a second)."""
        body = _dumps({"error": message})
        msg = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
               ).encode() + body
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            sock.sendall(msg)


def _peer(client_address: Any) -> str:
    """The peer IP of a connection (the unit of the per-client connection cap)."""
    return str(client_address[0]) if client_address else ""


def _bearer(headers: Headers, token: bytes) -> bool:
    scheme, _, cred = (headers.get("Authorization") or "").partition(" ")
    # compare_digest on bytes of any length: time depends only on the token's length
    return scheme.lower() == "bearer" and hmac.compare_digest(
        cred.strip().encode("utf-8", "replace"), token)


def _has_body(h: _Handler) -> bool:
    return bool(h.headers.get("Content-Length", "0") not in ("", "0")
                or h.headers.get("Transfer-Encoding"))


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
