"""A small, fast HTTP/1.1 JSON server on the standard library, with a route table.

Why not a framework: the agent must stay light (RSS budget on a Pi Zero) and the hot path
short. One event loop (:mod:`edge_agent.serving.http_loop`) owns every socket: it reads and
parses request heads (a strict parser of our own, :mod:`edge_agent.serving.wire`), checks
the route, token and ``Content-Length`` here (:meth:`HttpServer.prepare`), reads the body,
and runs the request (:meth:`HttpServer.run`) on a handler thread, or on the loop itself
when it is measured quick (routes added with ``inline=True``; :mod:`edge_agent.serving.inline`
decides); the answer goes back in one write with ``TCP_NODELAY``.

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
handler's work admission never waits on a slow client, and a slow client never holds a
handler thread.

Limits: bearer token (constant-time compare; every route not added with ``auth=False``,
which only ``/healthz`` and the dashboard's page files are; the admin token also passes it,
and handlers of admin actions check :meth:`HttpServer.is_admin`), request body (413), open
connections in total and per peer IP (503), total time for a request head and for a body
(408), idle keep-alive connections (closed after a timeout).

The route table and the handler-facing types live in :mod:`edge_agent.serving.routes` (no
sockets); the sockets in :mod:`edge_agent.serving.http_loop`. Both are importable from here.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from edge_agent.errors import EdgeError, TransportError
from edge_agent.ids import request_id
from edge_agent.nowait import WouldBlock
from edge_agent.serving.admission import Overloaded
from edge_agent.serving.http_loop import Conn, EventLoop, Head
from edge_agent.serving.inline import InlinePolicy
from edge_agent.serving.routes import (
    Handler,
    HTTPStatusError,
    Request,
    Response,
    Route,
    RouteTable,
    status_for,
)
from edge_agent.serving.wire import (
    MAX_HEAD_BYTES,
    MAX_LINE,
    HeadError,
    Headers,
    parse_headers,
    parse_request_line,
)

__all__ = ["HTTPStatusError", "Handler", "HttpServer", "Request", "Response", "Route",
           "status_for"]

log = logging.getLogger(__name__)
_RID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_LENGTH_RE = re.compile(r"[0-9]{1,18}")
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_BACKLOG = 128
Answer = tuple[bytes, bool]  # the response's bytes, and whether to close after it


@dataclass(slots=True)
class Prepared:
    """A request whose head passed :meth:`HttpServer.prepare`: waiting for its body."""

    route: Route
    match: re.Match[str]
    method: str
    path: str
    query: str
    length: int
    rid: str
    t0: float
    close: bool
    expect_continue: bool
    headers: Headers
    client_address: tuple[str, int]

    @property
    def kind(self) -> str:
        """What the inline policy measures per: one route on one path (model version)."""
        return f"{self.method} {self.path}"


class HttpServer:
    """Route table + limits + the event loop bound on :meth:`start`."""

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
        self._inline = InlinePolicy()
        self._loop: EventLoop | None = None
        self._date = ("", 0)

    # ------------------------------------------------------------------ routes

    def add_route(self, method: str, path_regex: str, handler: Handler, *,
                  name: str | None = None, auth: bool = True, inline: bool = False,
                  takes_cores: Callable[[], bool] | None = None) -> None:
        """Serve ``method`` on paths fully matching ``path_regex`` (named groups → params).

        Routes are tried in the order added; ``name`` labels metrics (default: the regex).
        ``auth=False`` exempts the route from the bearer token (health checks only).
        ``inline=True``: the handler may run on the event loop thread when its measured
        time is under a millisecond (:mod:`edge_agent.serving.inline`); only for handlers
        that never wait on IO or a lock held for long (the data plane, not admin actions).
        ``takes_cores()`` True: this request's work takes every core anyway (one interpreter
        of as many threads as cores), so it may hold the loop longer (``cores_max_s``).
        """
        self._routes.add(method, path_regex, handler, name=name, auth=auth, inline=inline,
                         takes_cores=takes_cores)

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        return self._loop.address if self._loop is not None else (self.host, self.port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        """Bind and serve on a background thread. Raises TransportError if it cannot bind."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            lsock = socket.create_server((self.host, self.port), family=family,
                                         backlog=_BACKLOG)
        except OSError as e:
            raise TransportError(f"cannot listen on {self.host}:{self.port} "
                                 f"({e.strerror or e})") from e
        self._loop = EventLoop(self, lsock)
        self._loop.start()

    def stop(self, grace_s: float = 5.0, in_flight: Callable[[], int] | None = None) -> None:
        """Stop accepting, let admitted requests finish (up to ``grace_s``), close the rest."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.stop_accepting()
        deadline = time.monotonic() + grace_s
        while in_flight and in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        loop.stop(grace_s)

    def open_connections(self) -> int:
        return self._loop.open_connections() if self._loop else 0

    def stalled_s(self) -> float:
        """How long the event loop has been inside one turn (0: waiting, or not started);
        the systemd watchdog stops pinging past its period (edge_agent/systemd.py)."""
        loop = self._loop
        return loop.stalled_s() if loop is not None else 0.0

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

    def prepare(self, conn: Conn, head: Head) -> Prepared | Answer:
        """On the loop: parse a head, match its route, check token and length (cheap, no
        IO). Returns what the body is awaited for, or the answer to send at once."""
        nl = head.raw.find(b"\n")
        line = head.raw[:nl + 1] if nl >= 0 else head.raw
        try:
            if len(line) > MAX_LINE:
                raise HeadError(414, _REASONS[414])
            if len(head.raw) > MAX_HEAD_BYTES:
                raise HeadError(431, f"request head over {MAX_HEAD_BYTES} bytes")
            method, target, version = parse_request_line(line)
            headers = parse_headers(io.BytesIO(head.raw[len(line):]))
        except HeadError as e:
            return self.answer_error(e.status, str(e)), True
        conn.headers = headers
        rid_in = headers.get("X-Request-Id")
        rid = rid_in if rid_in and _RID_RE.match(rid_in) else request_id()
        method = method.upper()
        path, _, query = target.partition("?")
        path = unquote(path)
        hdr = headers.get("Connection", "").lower()
        close = (version < (1, 1) and hdr != "keep-alive") or hdr == "close"
        extra: dict[str, str] = {}
        route_name = "unmatched"
        try:
            route, match = self._route(headers, method, path, extra)
            route_name = route.name
            length = self._content_length(headers)
        except Exception as e:
            status, body = _error_body(e, extra, method, path, rid)
            close = close or _has_body(headers)  # unread body bytes would corrupt the next
            data = self._response(status, body, "application/json", extra, rid, close=close,
                                  head=method == "HEAD")
            self._observe(route_name, status, head.t0)
            return data, close
        expects = (version >= (1, 1)
                   and headers.get("Expect", "").lower() == "100-continue")
        return Prepared(route, match, method, path, query, length, rid, head.t0, close,
                        expects, headers, conn.client_address)

    def inline(self, pending: object, body_bytes: int, pool_busy: int) -> bool:
        """On the loop: serve this request there (True) or on the pool."""
        assert isinstance(pending, Prepared)
        route = pending.route
        return route.inline and self._inline.inline(pending.kind, body_bytes, pool_busy,
                                                    route.takes_cores)

    def hold_off_loop(self, pending: object) -> None:
        """On the loop: this request's kind cannot run there for now (a lasting
        WouldBlock); its next ones go to the pool without a wasted decode."""
        if isinstance(pending, Prepared):
            self._inline.hold(pending.kind)

    def served(self, pending: object, seconds: float) -> None:
        """On the loop: a request's handler took ``seconds``; feeds the inline decisions."""
        if isinstance(pending, Prepared) and pending.route.inline:
            self._inline.observe(pending.kind, seconds)

    def run(self, conn: Conn, pending: object, body: bytes) -> Answer:
        """The route's handler on the whole request, as bytes (on a handler thread, or on
        the loop, where it raises WouldBlock instead of waiting)."""
        assert isinstance(pending, Prepared)
        p, extra = pending, {}
        try:
            req = Request(p, p.method, p.path, p.query, p.match, body, p.rid, p.route.name)
            result = p.route.handler(req)
            if isinstance(result, Response):
                status, out, ctype = result.status, result.body, result.content_type
                extra.update(result.headers)
            else:
                status, doc = result
                out, ctype = _dumps(doc), "application/json"
        except WouldBlock:  # on the loop, where it must not wait: the loop hands it over
            raise
        except Exception as e:
            status, out = _error_body(e, extra, p.method, p.path, p.rid)
            ctype = "application/json"
        data = self._response(status, out, ctype, extra, p.rid, close=p.close,
                              head=p.method == "HEAD")
        self._observe(p.route.name, status, p.t0)
        return data, p.close

    def timed_out(self, conn: Conn, message: str, *, body: bool) -> bytes:
        """The 408 for a head or body not received in time (the connection then closes)."""
        if not body or not isinstance(conn.pending, Prepared):
            return self.answer_error(408, message)
        p = conn.pending
        data = self._response(408, _dumps({"error": f"timed out waiting for the request "
                                                    f"body ({message})"}),
                              "application/json", {}, p.rid, close=True, head=False)
        self._observe(p.route.name, 408, p.t0)
        return data

    def answer_error(self, status: int, message: str) -> bytes:
        """A JSON error answered before any route is known; the connection then closes."""
        msg = message or _REASONS.get(status, "error")
        return self._response(status, _dumps({"error": msg}), "application/json", {},
                              request_id(), close=True, head=False)

    def refusal(self, message: str) -> bytes:
        """The 503 for a connection that gets no slot."""
        return self._response(503, _dumps({"error": message}), "application/json",
                              {"Retry-After": "1"}, request_id(), close=True, head=False)

    def _observe(self, route: str, status: int, t0: float) -> None:
        if self.on_response is not None:
            self.on_response(route, status, time.perf_counter() - t0)

    def _route(self, headers: Headers, method: str, path: str, extra: dict[str, str]
               ) -> tuple[Route, re.Match[str]]:
        """The matching route, after the token check its ``auth`` flag asks for.

        Raises HTTPStatusError (401 without the token, 405) or NotFoundError (404).
        """
        try:
            route, match = self._routes.match(method, path)
        except EdgeError:
            if not self._routes.public(path):
                self._require_token(headers, extra)
            raise
        if route.auth:
            self._require_token(headers, extra)
        return route, match

    def _require_token(self, headers: Headers, extra: dict[str, str]) -> None:
        if not self._authorized(headers):
            extra["WWW-Authenticate"] = 'Bearer realm="edge-agent"'
            raise HTTPStatusError(401, "missing or wrong bearer token (send "
                                       "'Authorization: Bearer <token>')")

    def _content_length(self, headers: Headers) -> int:
        """The body's length. Any Transfer-Encoding overrides Content-Length (RFC 9112
        §6.3) and none is decoded here: chunked is 411, another coding 501 (never framed
        by Content-Length: a proxy in front may frame it by the coding)."""
        coding = headers.get("Transfer-Encoding")
        if coding is not None and "chunked" in coding.lower():
            raise HTTPStatusError(411, "chunked request bodies are not supported; send "
                                       "Content-Length")
        if coding is not None:
            raise HTTPStatusError(501, f"Transfer-Encoding {coding[:40]!r} is not supported; "
                                       "send the body as it is, with Content-Length")
        raw = headers.get("Content-Length")
        if raw is None:
            return 0
        if _LENGTH_RE.fullmatch(raw) is None:  # RFC 9110 §8.6: 1*DIGIT (no sign, no '_')
            raise HTTPStatusError(400, f"invalid Content-Length {raw[:40]!r}")
        n = int(raw)
        if n > self.max_body_bytes:
            raise HTTPStatusError(413, f"request body of {n} bytes is over the limit of "
                                       f"{self.max_body_bytes} bytes")
        return n

    def _response(self, status: int, body: bytes, ctype: str, headers: Mapping[str, str],
                  rid: str, *, close: bool, head: bool) -> bytes:
        """Status line, headers and body as one buffer (one send: no Nagle stall)."""
        now = int(time.time())
        date = self._date
        if date[1] != now:
            date = self._date = (formatdate(now, usegmt=True), now)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                 f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 f"Date: {date[0]}\r\nX-Request-Id: {rid}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if close:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1", "replace")
        return data if head else data + body


def _error_body(e: Exception, extra: dict[str, str], method: str, path: str, rid: str
                ) -> tuple[int, bytes]:
    """The status and ``{"error": ...}`` body for an exception (500s logged)."""
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
    return status, _dumps({"error": msg})


def _bearer(headers: Headers, token: bytes) -> bool:
    scheme, _, cred = (headers.get("Authorization") or "").partition(" ")
    # compare_digest on bytes of any length: time depends only on the token's length
    return scheme.lower() == "bearer" and hmac.compare_digest(
        cred.strip().encode("utf-8", "replace"), token)


def _has_body(headers: Headers) -> bool:
    return bool(headers.get("Content-Length", "0") not in ("", "0")
                or headers.get("Transfer-Encoding"))


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
