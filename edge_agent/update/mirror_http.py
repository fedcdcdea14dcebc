"""The HTTP(S) mirror transport: bounded GETs, resumed and verified (IO shell).

:func:`get` is one GET in which no wait outlives the update's deadline;
:class:`HttpMirrors` fills a target's chunk slots from mirrors with resumed (``Range``)
GETs, each slot checked against its *signed* sha256 before it is written, and streams
metadata files.

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
response) and the deadline's error (``DownloadDeadlineError`` on the update path);
HttpMirrors also TargetMismatchError (tampered, endless data) and BadAnnouncementError
(no mirror has the file).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol, cast
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_exc

from edge_agent.deadline import Deadline, SocketReader
from edge_agent.update.errors import (
    BadAnnouncementError,
    DownloadDeadlineError,
    TargetMismatchError,
    UpdateTransportError,
)
from edge_agent.update.wire import ChunkPlan

log = logging.getLogger(__name__)

USER_AGENT = "edge-agent-update/1"
READ_BYTES = 64 * 1024
Write = Callable[[int, bytes], None]  # chunk index, verified data


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


class HttpMirrors:
    """GET ``<mirror>metadata/…`` and ``<mirror>targets/…`` under the update's deadline.

    Which mirrors may be asked is decided per file by the caller
    (:class:`~edge_agent.update.fetchers.AnnouncementFetcher`, see
    :mod:`edge_agent.update.mirrors`); every request is :func:`get`.
    """

    def __init__(self, *, timeout_s: float, retries: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout_s = timeout_s  # per socket operation (connect, handshake, receive)
        self.retries = retries
        self.ssl_context = ssl_context

    def _open(self, url: str, deadline: Deadline, start: int = 0) -> MirrorResponse:
        return get(url, deadline=deadline, read_timeout_s=self.timeout_s, start=start,
                   ssl_context=self.ssl_context)

    def stream(self, mirrors: tuple[str, ...], rel: str, deadline: Deadline) -> Iterator[bytes]:
        """Body of ``rel`` from the first mirror that has it (ngclient caps the length)."""
        last: Exception | None = None
        for m in mirrors:
            try:
                resp = self._open(m + rel, deadline)
            except DownloadDeadlineError:
                raise
            except (tuf_exc.DownloadHTTPError, UpdateTransportError) as e:
                last = e
                continue
            with resp:
                try:
                    while block := resp.read(READ_BYTES):
                        yield block
                except DownloadDeadlineError as e:
                    raise e.abandoning(f"{rel} from {m}") from e
                return
        if isinstance(last, tuf_exc.DownloadHTTPError):
            raise last
        raise UpdateTransportError(f"no mirror could serve {rel}: {last}")

    def fetch(self, mirrors: tuple[str, ...], rel: str, plan: ChunkPlan, missing: set[int],
              write: Write, *, deadline: Deadline, stop: threading.Event) -> None:
        """Fill ``missing`` chunk slots with resumed (Range) GETs, verifying each slot.

        A stream that ends early is resumed up to ``retries`` times; one that goes on past
        the signed length is refused at once (endless data); one still running at
        ``deadline`` is abandoned mid-read (DownloadDeadlineError, never resumed here).
        """
        attempts = 0
        while missing and not stop.is_set():  # stopping: the caller sees what is missing
            first = min(missing)
            offset, _ = plan.span(first)
            try:
                self._one_pass(mirrors, rel, plan, first, offset, missing, write, stop,
                               deadline)
            except DownloadDeadlineError:
                raise
            except UpdateTransportError as e:
                attempts += 1
                if attempts > self.retries:
                    raise UpdateTransportError(
                        f"download incomplete after {attempts} attempts: "
                        f"{plan.count - len(missing)}/{plan.count} chunks ({e})") from e
                log.info("update: HTTP download interrupted (%s); resuming", e)
                stop.wait(min(2.0, 0.2 * attempts, max(0.0, deadline.left())))

    def _one_pass(self, mirrors: tuple[str, ...], rel: str, plan: ChunkPlan, first: int,
                  offset: int, missing: set[int], write: Write, stop: threading.Event,
                  deadline: Deadline) -> None:
        last_err: Exception | None = None
        for m in mirrors:
            try:
                try:
                    resp = self._open(m + rel, deadline, offset)
                except DownloadDeadlineError:
                    raise
                except (tuf_exc.DownloadHTTPError, UpdateTransportError) as e:
                    last_err = e
                    continue
                with resp:
                    self._read_body(resp, m, rel, plan, first, offset, missing, write, stop)
                return
            except DownloadDeadlineError as e:
                raise e.abandoning(f"{rel} from {m}, {plan.count - len(missing)}/"
                                   f"{plan.count} chunks present") from e
        if isinstance(last_err, tuf_exc.DownloadHTTPError) and last_err.status_code == 404:
            raise BadAnnouncementError(f"no mirror has {rel}")
        raise UpdateTransportError(f"no mirror reachable for {rel}: {last_err}")

    @staticmethod
    def _read_body(resp: MirrorResponse, m: str, rel: str, plan: ChunkPlan, first: int,
                   offset: int, missing: set[int], write: Write, stop: threading.Event) -> None:
        """Chunks ``first``… from one response, each checked against its signed hash."""
        skip = offset if resp.status == 200 else 0  # server ignored Range: skip the head
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and \
                int(declared) - skip > plan.length - offset:
            raise TargetMismatchError(
                f"{rel}: server announces {int(declared) + offset - skip} bytes, "
                f"signed length is {plan.length} (endless data refused)")
        _drain(resp, skip)
        for i in range(first, plan.count):
            if stop.is_set():
                return
            _, n = plan.span(i)
            data = _read_exact(resp, n)
            if len(data) < n:
                raise UpdateTransportError(
                    f"{rel}: stream ended at byte {plan.span(i)[0] + len(data)} of "
                    f"{plan.length} (truncated)")
            if i in missing:
                if hashlib.sha256(data).hexdigest() != plan.hashes[i]:
                    raise TargetMismatchError(f"chunk {i} from {m}: sha256 is not the signed "
                                              "one (tampered)")
                write(i, data)
        if resp.read(1):
            raise TargetMismatchError(f"{rel}: more bytes than the signed length "
                                      f"{plan.length} (endless data refused)")


class _Body(Protocol):
    def read(self, n: int) -> bytes: ...


def _drain(resp: _Body, n: int) -> None:
    while n > 0:
        block = resp.read(min(n, READ_BYTES))
        if not block:
            raise UpdateTransportError("stream ended while skipping to the resume offset")
        n -= len(block)


def _read_exact(resp: _Body, n: int) -> bytes:
    """``n`` bytes, or fewer at the end of the stream (each read bounded by the deadline)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        block = resp.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)
