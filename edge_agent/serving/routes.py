"""The route table of :class:`~edge_agent.serving.http.HttpServer`: no sockets or threads.

This module holds what a handler author sees (:class:`Request`, :class:`Response`,
:class:`HTTPStatusError`, :func:`status_for`) and the matching rules: routes are tried in the
order added, a path that matches with another method is 405 (with ``Allow``), no match is 404.
It also decides which requests need the bearer token: a matched route's own ``auth`` flag; for
an unmatched request, the token is needed unless every route on that path is public (so
``POST /healthz`` is a 405, not a 401, while an unknown path is a 401 that does not reveal
which routes exist).

Raises :class:`HTTPStatusError` (405) and :class:`~edge_agent.errors.NotFoundError` (404).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias
from urllib.parse import parse_qs

from edge_agent.errors import (
    BadInputError,
    EdgeError,
    NotFoundError,
    RuntimeUnavailableError,
    TransportError,
)
from edge_agent.serving.codec import parse_json
from edge_agent.serving.images import ImageTooLarge
from edge_agent.serving.wire import Headers


class Connection(Protocol):
    """The side of a connection a :class:`Request` sees (http_loop.py's exchange)."""

    @property
    def headers(self) -> Headers: ...
    @property
    def client_address(self) -> tuple[str, int]: ...


class HTTPStatusError(EdgeError):
    """Raise from a handler to answer with a specific status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass
class Response:
    """A non-JSON (or pre-encoded) response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Request:
    """What a handler sees. ``body`` has been read whole before the handler runs."""

    __slots__ = ("body", "client", "groups", "headers", "method", "params", "path", "query",
                 "request_id", "route")

    def __init__(self, conn: Connection, method: str, path: str, query: str,
                 match: re.Match[str], body: bytes, request_id: str, route: str) -> None:
        self.method = method
        self.path = path
        self.query: dict[str, list[str]] = parse_qs(query) if query else {}
        self.groups: tuple[str | None, ...] = match.groups()
        self.params: dict[str, str | None] = match.groupdict()
        self.headers = conn.headers
        self.request_id = request_id
        self.client = conn.client_address[0] if conn.client_address else ""
        self.route = route
        self.body = body

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON. Raises InvalidRequestError (400) naming the parse error."""
        return parse_json(self.body)


# A handler answers ``(status, json-able body)`` or a :class:`Response`, or raises.
Handler: TypeAlias = Callable[[Request], "tuple[int, Any] | Response"]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    name: str
    auth: bool  # False: served without the bearer token (health checks only)
    inline: bool = False  # may run on the event loop when measured quick (serving/inline.py)
    takes_cores: Callable[[], bool] | None = None  # its work takes every core (inline.py)


def status_for(e: BaseException) -> int:
    """The HTTP status for an exception (also used by MQTT replies)."""
    if isinstance(e, HTTPStatusError):
        return e.status
    if isinstance(e, ImageTooLarge):
        return 413
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, BadInputError):
        return 400
    if isinstance(e, (TransportError, RuntimeUnavailableError)):
        return 503
    return 500


class RouteTable:
    """Routes in the order added; :meth:`match` finds one, :meth:`public` says if a path is."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, method: str, path_regex: str, handler: Handler, *, name: str | None = None,
            auth: bool = True, inline: bool = False,
            takes_cores: Callable[[], bool] | None = None) -> None:
        self._routes.append(Route(method.upper(), re.compile(path_regex), handler,
                                  name or path_regex, auth, inline, takes_cores))

    def match(self, method: str, path: str) -> tuple[Route, re.Match[str]]:
        """The first route for ``method`` fully matching ``path``; HEAD is served by the
        GET route (RFC 9110 §9.3.2; the server sends no body). Raises 405 or 404."""
        allowed: list[str] = []
        for r in self._routes:
            m = r.pattern.fullmatch(path)
            if m is None:
                continue
            if r.method == method or (method == "HEAD" and r.method == "GET"):
                return r, m
            allowed.extend((r.method, "HEAD") if r.method == "GET" else (r.method,))
        if allowed:
            methods = ", ".join(sorted(set(allowed)))
            raise HTTPStatusError(405, f"method {method} not allowed on {path} (allowed: "
                                       f"{methods})", headers={"Allow": methods})
        raise NotFoundError(f"unknown route: {method} {path}")

    def public(self, path: str) -> bool:
        """True if some route serves ``path`` and none of those needs the token."""
        on_path = [r for r in self._routes if r.pattern.fullmatch(path)]
        return bool(on_path) and not any(r.auth for r in on_path)
