"""The connection side of :class:`~edge_agent.serving.http.HttpServer`: one event loop.

Why: a thread per connection spent 13 context switches per request handing the GIL around
on every socket read and write, and a slow client held a thread for as long as it dripped
(issue 17). Here one thread (``edge-agent-http``) owns every socket, non-blocking, in a
``selectors`` loop: it accepts, reads, finds the end of each request head, parses it
(:mod:`edge_agent.serving.wire`), checks the route, the token and ``Content-Length``
(:meth:`HttpServer.prepare`), reads the whole body, and only then runs the request
(:meth:`HttpServer.run`: decode + invoke, under the model's
:class:`~edge_agent.serving.admission.Admission` and its ``workers`` decode permits).
A request that is quick to serve (a small body, a route whose measured handler time is
under a millisecond, nothing else on the pool; or a prediction whose invoke takes every
core anyway: :mod:`edge_agent.serving.inline`) runs on the loop thread itself, as uvicorn
runs its endpoints: no thread hand-off, no selector re-arm. Every other request goes to a
pool of handler threads; its answer comes back through a queue and a wake-up socket pair,
and the loop writes it. A client that drips its head or body costs a socket and a buffer,
never a thread.

Per connection, one request at a time: while its handler runs the loop stops reading that
socket, and pipelined requests already buffered are parsed after the answer is written, so
answers go out in order (a loop, not a recursion: any number of pipelined requests). The
pool has at most ``max_connections`` threads, started on demand (idle ones are reused), so
admission answers (503 on a full queue) behave as before.

Deadlines (RFC-free, ours; the same as the threaded server had), checked from a heap:

* idle keep-alive connection: closed after ``idle_timeout_s`` without a byte, or sooner
  when every connection slot (``max_connections``, or the peer's
  ``max_connections_per_client``) is taken and it has waited longest between requests:
  a newcomer is refused (503) only when every slot is mid-request;
* request head: ``head_timeout_s`` from its first byte (408), and no receive gap over
  ``idle_timeout_s``;
* request body: ``body_timeout_s`` from the end of the head (408);
* a response the client does not read: closed after ``idle_timeout_s`` without progress.

Nothing here blocks: sends are non-blocking (the rest waits for ``EVENT_WRITE``), and the
loop sleeps in ``select`` until a socket, a handler's answer, a deadline or :meth:`stop`.
It wakes only for a deadline some open connection still has: checks left by closed
connections or moved later are dropped before it sleeps (:meth:`EventLoop._next_timeout`),
so an idle agent does not wake once per request it served before.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.nowait import WouldBlock, forbid_waiting
from edge_agent.serving.wire import MAX_HEAD_BYTES, MAX_HEADERS, MAX_LINE, Headers
from edge_agent.threadname import NamedThread, name_this_thread

if TYPE_CHECKING:
    from edge_agent.serving.http import HttpServer

log = logging.getLogger(__name__)

IDLE, HEAD, BODY, BUSY, WRITE = range(5)
_RECV = 65536  # bytes per recv into the loop's reused buffer
_RECV_BODY_MAX = 1 << 20
_ACCEPT_BATCH = 64
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_EMPTY = memoryview(b"")


@dataclass(frozen=True, slots=True)
class Head:
    """A request head as the loop found it: the raw bytes up to its empty line."""

    raw: bytes
    t0: float  # perf_counter when its first byte was read (the request's clock)


class Conn:
    """One client socket and its request state (touched by the loop thread only)."""

    __slots__ = ("buf", "check_at", "client_address", "close_after", "closed", "headers",
                 "last_io", "lines", "mask", "need", "out", "peer", "pending", "scan",
                 "since", "sock", "state", "t0")

    def __init__(self, sock: socket.socket, addr: tuple[str, int], now: float) -> None:
        self.sock = sock
        self.client_address = addr
        self.peer = str(addr[0]) if addr else ""
        self.buf = bytearray()
        self.state = IDLE
        self.since = self.last_io = now
        self.check_at = float("inf")
        self.out = _EMPTY
        self.close_after = False
        self.closed = False
        self.mask = 0
        self.scan = self.lines = 0  # head scan: offset of the current line, lines seen
        self.need = 0  # body bytes expected
        self.pending: object = None  # HttpServer.prepare's result, while the body arrives
        self.headers = Headers()
        self.t0 = 0.0


class EventLoop:
    """Accepts and serves connections for ``app`` on one thread (:meth:`start`)."""

    def __init__(self, app: HttpServer, lsock: socket.socket) -> None:
        self.app = app
        self._lsock = lsock
        lsock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(lsock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._conns: dict[int, Conn] = {}
        self._per_client: dict[str, int] = {}
        self._timers: list[tuple[float, int, Conn]] = []
        self._seq = itertools.count()
        self._done: deque[tuple[Conn, bytes, bool, object, float]] = deque()
        self._rbuf = bytearray(_RECV_BODY_MAX)
        self._rview = memoryview(self._rbuf)
        self._busy = 0  # requests on the pool (loop thread only)
        self._turn_t0 = 0.0  # monotonic start of the loop's current turn; 0: in select()
        self._woken = False
        self._listening = True
        self._stop_listening = False
        self._stopping = False
        self._unlistened = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, app.max_connections),
                                        thread_name_prefix="http-worker",
                                        initializer=name_this_thread)
        self._thread = NamedThread(target=self._run, name="edge-agent-http", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._lsock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listening socket (connections already open keep being served)."""
        self._stop_listening = True
        self._wake()
        self._unlistened.wait(5.0)

    def stop(self, grace_s: float) -> None:
        """Close every connection, end the loop and the pool."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout=grace_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def open_connections(self) -> int:
        return len(self._conns)

    def stalled_s(self) -> float:
        """How long the loop has been inside its current turn (0 while it waits in
        select): a request that never returns on the loop shows here (any thread)."""
        t0 = self._turn_t0
        return time.monotonic() - t0 if t0 else 0.0

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        sel = self._sel
        forbid_waiting()  # a handler run here raises WouldBlock instead of waiting
        try:
            while not self._stopping:
                self._turn_t0 = 0.0
                ready = sel.select(self._next_timeout())
                self._turn_t0 = time.monotonic()
                for key, events in ready:
                    conn = key.data
                    if conn is None:
                        self._accept()
                    elif conn is self._wake_r:
                        self._on_wake()
                    elif isinstance(conn, Conn):
                        if events & selectors.EVENT_WRITE:
                            self._flush(conn)
                            self._advance(conn)  # a pipelined request may be buffered
                        if events & selectors.EVENT_READ and not conn.closed:
                            self._on_readable(conn)
                self._expire()
        except Exception:  # a bug here must not leave a silent dead port
            log.exception("the HTTP event loop failed")
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._unlisten()
            sel.close()
            self._wake_r.close()
            self._wake_w.close()
            self._unlistened.set()

    def _on_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        self._woken = False  # before draining: an answer queued after this wakes us again
        if self._stop_listening:
            self._unlisten()
        while self._done:
            conn, data, close, pending, took_s = self._done.popleft()
            self._busy -= 1
            self.app.served(pending, took_s)
            if not conn.closed:
                self._send(conn, data, close)
                self._advance(conn)  # a pipelined request may be buffered already

    def _unlisten(self) -> None:
        if self._listening:
            self._listening = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(self._lsock)
            self._lsock.close()
        self._unlistened.set()

    def _accept(self) -> None:
        app = self.app
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: the backlog waits
                log.warning("accept failed: %s", e)
                return
            peer = str(addr[0]) if addr else ""
            refusal = None
            if len(self._conns) >= app.max_connections and not self._evict_idle(None):
                refusal = f"too many open connections (limit {app.max_connections}); retry later"
            elif (self._per_client.get(peer, 0) >= app.max_connections_per_client
                  and not self._evict_idle(peer)):
                refusal = (f"too many open connections from {peer} (limit "
                           f"{app.max_connections_per_client} per client); retry later")
            if refusal is not None:
                _refuse(sock, app.refusal(refusal))
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock, addr, time.monotonic())
            self._conns[sock.fileno()] = conn
            self._per_client[peer] = self._per_client.get(peer, 0) + 1
            self._watch(conn, selectors.EVENT_READ)
            self._schedule(conn)

    def _evict_idle(self, peer: str | None) -> bool:
        """Make room for a new connection, as nginx reuses keep-alive connections when it
        runs out: close the connection (of ``peer``, or anyone's) that has waited longest
        between requests, with nothing of a next request read. False: every slot is
        mid-request, and the newcomer is refused. Without this, a few hosts holding idle
        keep-alives (renewed by one request every ``idle_timeout_s``) locked everyone out.

        "Nothing read" includes the kernel's buffer: a connection whose next request's
        bytes arrived but were not read yet (its readable event comes after this accept in
        the same select round) is mid-request, not idle."""
        idle = sorted((c for c in self._conns.values()
                       if c.state == IDLE and not c.buf and (peer is None or c.peer == peer)),
                      key=lambda c: c.last_io)
        for conn in idle:
            if not _bytes_waiting(conn.sock):
                self._close(conn)
                return True
        return False

    def _watch(self, conn: Conn, mask: int) -> None:
        if mask == conn.mask:
            return
        if conn.mask == 0:
            self._sel.register(conn.sock, mask, conn)
        elif mask == 0:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, mask, conn)
        conn.mask = mask

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.mask:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(conn.sock)
        self._conns.pop(conn.sock.fileno(), None)
        n = self._per_client.get(conn.peer, 0) - 1
        if n > 0:
            self._per_client[conn.peer] = n
        else:
            self._per_client.pop(conn.peer, None)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.sock.close()
        conn.buf = bytearray()

    # ------------------------------------------------------------------ reading

    def _on_readable(self, conn: Conn) -> None:
        size = _RECV
        if conn.state == BODY:
            size = min(max(_RECV, conn.need - len(conn.buf)), _RECV_BODY_MAX)
        try:
            n = conn.sock.recv_into(self._rbuf, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not n:  # the client closed (mid-request or between requests)
            self._close(conn)
            return
        conn.last_io = time.monotonic()
        conn.buf += self._rview[:n]
        self._advance(conn)

    def _advance(self, conn: Conn) -> None:
        """Move the request state machine as far as the buffered bytes allow: every
        complete request in the buffer, in order, while each is answered at once."""
        while not conn.closed:
            if conn.state in (IDLE, HEAD):
                if conn.state == IDLE and conn.buf and conn.buf[0] in b"\r\n":
                    # RFC 9112 §2.2: empty lines before a request line are ignored
                    del conn.buf[:len(conn.buf) - len(conn.buf.lstrip(b"\r\n"))]
                if not conn.buf:
                    return
                if conn.state == IDLE:
                    conn.state, conn.since, conn.t0 = HEAD, time.monotonic(), time.perf_counter()
                    conn.scan = conn.lines = 0
                    self._schedule(conn)
                end = self._head_end(conn)
                if end < 0:
                    return
                raw = bytes(conn.buf[:end])
                del conn.buf[:end]
                self._on_head(conn, Head(raw, conn.t0))
            elif conn.state == BODY:
                if len(conn.buf) < conn.need:
                    return
                body = bytes(conn.buf[:conn.need])
                del conn.buf[:conn.need]
                self._submit(conn, body)
            else:
                return

    def _head_end(self, conn: Conn) -> int:
        """Offset just past the head's empty line; -1 if not here yet. Also returns the
        buffer's length once a line, the line count or the whole head is over its limit,
        so that the parser refuses it (431/414) without waiting for more."""
        buf = conn.buf
        while True:
            i = buf.find(b"\n", conn.scan)
            if i < 0:
                over = len(buf) - conn.scan > MAX_LINE or len(buf) > MAX_HEAD_BYTES
                return len(buf) if over else -1
            if conn.lines > 0 and (i == conn.scan or (i == conn.scan + 1
                                                      and buf[conn.scan] == 0x0D)):
                return i + 1  # the empty line: "\n" or "\r\n"
            conn.scan = i + 1
            conn.lines += 1
            if conn.lines > MAX_HEADERS + 1:
                return conn.scan

    def _on_head(self, conn: Conn, head: Head) -> None:
        prepared = self.app.prepare(conn, head)
        if isinstance(prepared, tuple):  # an answer already (a bad head, 401, 404, 413...)
            self._send(conn, *prepared)
            return
        conn.pending = prepared
        conn.need = prepared.length
        if conn.need == 0:
            self._submit(conn, b"")
            return
        if prepared.expect_continue:
            with contextlib.suppress(OSError):
                conn.sock.send(_CONTINUE)
        conn.state, conn.since = BODY, time.monotonic()
        self._schedule(conn)

    def _submit(self, conn: Conn, body: bytes) -> None:
        """Run the whole request: here if it is quick (:meth:`HttpServer.inline`), else
        on a handler thread, not reading the socket until it answers."""
        conn.state = BUSY
        pending, conn.pending = conn.pending, None
        if self.app.inline(pending, len(body), self._busy):
            t0 = time.perf_counter()
            try:
                data, close = self._run_request(conn, pending, body)
            except WouldBlock as e:  # it would wait (an interpreter or permit taken): pool
                if e.lasting:  # not a moment's contention: how this kind runs, for now
                    self.app.hold_off_loop(pending)
            else:
                self.app.served(pending, time.perf_counter() - t0)
                self._send(conn, data, close)
                return
        self._watch(conn, 0)
        self._busy += 1
        try:
            self._pool.submit(self._work, conn, pending, body)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._busy -= 1
            self._close(conn)

    def _run_request(self, conn: Conn, pending: object, body: bytes) -> tuple[bytes, bool]:
        try:
            return self.app.run(conn, pending, body)
        except WouldBlock:
            raise
        except Exception:  # run() answers every handler error itself; this is a bug
            log.exception("HTTP request failed outside its handler")
            return self.app.answer_error(500, "internal error"), True

    def _work(self, conn: Conn, pending: object, body: bytes) -> None:
        """On a handler thread: run the request, queue its answer (and how long the
        handler took) for the loop."""
        t0 = time.perf_counter()
        data, close = self._run_request(conn, pending, body)
        self._done.append((conn, data, close, pending, time.perf_counter() - t0))
        self._wake()

    # ------------------------------------------------------------------ writing

    def _send(self, conn: Conn, data: bytes, close: bool) -> None:
        """Write an answer (one send when the socket takes it all, as it mostly does);
        the rest waits for ``EVENT_WRITE``. The caller then moves on to any pipelined
        request (:meth:`_advance`, or its own loop)."""
        conn.close_after = close
        conn.state = WRITE
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._close(conn)
            return
        conn.out = memoryview(data)[n:] if n < len(data) else _EMPTY
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            while conn.out:
                n = conn.sock.send(conn.out)
                conn.out = conn.out[n:]
        except (BlockingIOError, InterruptedError):
            conn.last_io = time.monotonic()
            self._watch(conn, selectors.EVENT_WRITE)
            self._schedule(conn)
            return
        except OSError:
            self._close(conn)
            return
        if conn.close_after:
            self._close(conn)
            return
        conn.state, conn.last_io = IDLE, time.monotonic()
        self._watch(conn, selectors.EVENT_READ)  # a no-op when it was never unwatched
        self._schedule(conn)

    # ------------------------------------------------------------------ deadlines

    def _due(self, conn: Conn) -> tuple[float, str] | None:
        """When ``conn`` times out in its state, and the phase message (or "" to close)."""
        app, idle = self.app, conn.last_io + self.app.idle_timeout_s
        if conn.state in (IDLE, WRITE):
            return idle, ""
        if conn.state == HEAD:
            phase, what = conn.since + app.head_timeout_s, "request head"
            budget = app.head_timeout_s
        elif conn.state == BODY:
            phase, what = conn.since + app.body_timeout_s, "request body"
            budget = app.body_timeout_s
        else:
            return None
        if phase <= idle:
            return phase, f"{what} not received within {budget:g} s"
        return idle, f"connection idle for {app.idle_timeout_s:g} s"

    def _schedule(self, conn: Conn) -> None:
        due = self._due(conn)
        if due is not None and due[0] < conn.check_at:
            conn.check_at = due[0]
            heapq.heappush(self._timers, (due[0], next(self._seq), conn))

    def _next_timeout(self) -> float | None:
        """Seconds the loop may sleep: until the earliest live deadline (None: there is
        none). Checks nobody needs any more are dropped here, before sleeping, instead of
        waking the loop when they come due: those of closed connections, superseded ones,
        and a check a connection has since moved later (a request head's deadline once the
        request was answered and the connection is idle again) is re-armed at its new
        time. Without this, each of N requests on its own connection left two checks that
        woke the idle loop N times 10 s later (head) and N times 30 s later (idle)."""
        timers = self._timers
        while timers:
            at, _, conn = timers[0]
            if conn.closed or at != conn.check_at:
                heapq.heappop(timers)  # stale: closed, or a sooner check was scheduled
                continue
            due = self._due(conn)
            if due is not None and due[0] <= at:
                return max(0.0, at - time.monotonic())
            heapq.heappop(timers)  # busy (no deadline while its handler runs) or later
            conn.check_at = float("inf")
            if due is not None:
                self._schedule(conn)
        return None

    def _expire(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, conn = heapq.heappop(timers)
            if conn.closed or at != conn.check_at:
                continue  # stale: closed, or a sooner check was scheduled since
            conn.check_at = float("inf")
            due = self._due(conn)
            if due is None:
                continue
            if due[0] > now:
                self._schedule(conn)
            elif not due[1]:
                self._close(conn)
            else:
                self._watch(conn, 0)
                data = self.app.timed_out(conn, due[1], body=conn.state == BODY)
                conn.pending = None
                self._send(conn, data, True)


def _bytes_waiting(sock: socket.socket) -> bool:
    """True if the peer sent bytes not read yet (a closed peer's EOF is not bytes)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing there (EAGAIN) or the connection is gone
        return False


def _refuse(sock: socket.socket, data: bytes) -> None:
    """Answer a connection that gets no slot, without ever blocking the loop."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(data)
        sock.shutdown(socket.SHUT_WR)
    sock.close()
