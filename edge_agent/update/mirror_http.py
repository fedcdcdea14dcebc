"""One HTTP(S) GET from a mirror in which no wait outlives the update's deadline (IO shell).

Why not ``urllib``: its socket timeout bounds one receive, not a response. A mirror that
sends a byte just before each timeout kept ``read(n)`` looping (and the single update
worker busy) forever, with or without a valid signature; and it followed redirects to
any URL, past ``update.mirror_allowlist``. Here:

* the TCP connect, the TLS handshake (CPython bounds a whole handshake by the socket
  timeout) and the request each get ``min(read_timeout_s, time left)``;
* the response head and body are read through :class:`edge_agent.deadline.SocketReader`:
  every receive waits at most ``min(read_timeout_s, time left)`` and the deadline's
  error is raised once it has passed, mid-header or mid-body;
* redirects are not followed (a 3xx is an HTTP error, like a 4xx): a mirror cannot send
  the device elsewhere; no proxy is used. Host names are resolved by the system resolver
  (its own timeouts; an IP literal needs none).

Raises tuf's ``DownloadHTTPError`` (status >= 300, with the code), UpdateTransportError
(unreachable, connection lost, nothing received for ``read_timeout_s``, a malformed
response) and the deadline's error (``DownloadDeadlineError`` on the update path).
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_exc

from edge_agent.deadline import Deadline, SocketReader
from edge_agent.update.errors import UpdateTransportError

USER_AGENT = "edge-agent-update/1"


class _Source:
    """What ``http.client.HTTPResponse`` needs of a socket: a binary file to parse."""

    def __init__(self, fp: io.BufferedReader) -> None:
        self._fp = fp

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return self._fp


class MirrorResponse:
    """An open response (status 200 or 206); close it (or use ``with``)."""

    def __init__(self, url: str, sock: socket.socket, resp: http.client.HTTPResponse) -> None:
        self.url = url
        self._sock = sock
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body (b"" at its end); every receive is bounded."""
        try:
            return self._resp.read(n)
        except http.client.HTTPException as e:
            raise UpdateTransportError(f"{self.url}: {type(e).__name__}: {e}") from e
        except OSError as e:
            raise UpdateTransportError(f"{self.url}: connection lost: {e}") from e

    def close(self) -> None:
        self._resp.close()
        self._sock.close()

    def __enter__(self) -> MirrorResponse:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def get(url: str, *, deadline: Deadline, read_timeout_s: float, start: int = 0,
        ssl_context: ssl.SSLContext | None = None) -> MirrorResponse:
    """GET ``url`` (from byte ``start`` with ``Range``) under ``deadline``; see the module
    docstring for the bounds and what it raises."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise UpdateTransportError(f"{url}: {e}") from e
    if parts.scheme not in ("http", "https") or not host:
        raise UpdateTransportError(f"{url}: not an http(s) URL")
    https = parts.scheme == "https"
    port = port or (443 if https else 80)

    def stalled(msg: str) -> Exception:
        return UpdateTransportError(f"{url}: {msg} (update.http_timeout_s)")

    try:
        sock: socket.socket = socket.create_connection(
            (host, port), timeout=deadline.timeout(read_timeout_s))
    except TimeoutError as e:
        deadline.check()
        raise stalled(f"connect: no answer for {read_timeout_s:g} s") from e
    except OSError as e:
        raise UpdateTransportError(f"{url}: {e.strerror or e}") from e
    try:
        if https:
            sock.settimeout(deadline.timeout(read_timeout_s))
            ctx = ssl_context or ssl.create_default_context()
            sock = ctx.wrap_socket(sock, server_hostname=host)
        sock.settimeout(deadline.timeout(read_timeout_s))
        conn = http.client.HTTPConnection(host, port)
        conn.default_port = 443 if https else 80  # Host: without the scheme's own port
        conn.sock = sock  # http.client formats and sends the request; the socket is ours
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                   "Connection": "close"}
        if start:
            headers["Range"] = f"bytes={start}-"
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers=headers)
        reader = SocketReader(sock, read_timeout_s, deadline, stalled=stalled)
        resp = http.client.HTTPResponse(cast(socket.socket, _Source(io.BufferedReader(reader))),
                                        method="GET", url=url)
        resp.begin()
    except TimeoutError as e:  # connect/handshake/send waited its bound
        sock.close()
        deadline.check()
        raise stalled(f"no progress for {read_timeout_s:g} s") from e
    except (http.client.HTTPException, ValueError) as e:
        sock.close()
        raise UpdateTransportError(f"{url}: malformed response ({type(e).__name__}: {e})"
                                   ) from e
    except OSError as e:
        sock.close()
        raise UpdateTransportError(f"{url}: {e.strerror or e}") from e
    except BaseException:
        sock.close()
        raise
    if resp.status not in (200, 206):
        what = f"redirect to {resp.headers.get('Location', '?')!r} not followed" \
            if 300 <= resp.status < 400 else f"HTTP {resp.status}"
        resp.close()
        sock.close()
        raise tuf_exc.DownloadHTTPError(f"{url}: {what}", resp.status)
    return MirrorResponse(url, sock, resp)
