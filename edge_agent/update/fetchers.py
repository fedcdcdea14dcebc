"""Transports for the TUF client: a ``FetcherInterface`` over one announcement.

The ``Updater`` asks for URLs under ``announce:///metadata/`` and ``announce:///targets/``;
:class:`AnnouncementFetcher` answers from, in order: the files inlined in the
announcement, MQTT chunks (:class:`MqttChunks`), then HTTP(S) mirrors
(:class:`HttpMirrors`). None of these sources is trusted: python-tuf verifies every
metadata file, and a target is written to staging only chunk by chunk after each chunk
matched its *signed* sha256, so resuming never trusts bytes from before a crash.

Caps: every metadata download is capped by ngclient's ``*_max_length``; a target by
its signed length (more bytes than that → :class:`TargetMismatchError`, "endless data").
Raises TargetMismatchError / BadAnnouncementError (the data's fault) or
UpdateTransportError (stalled, unreachable: retried later).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from http.client import HTTPResponse
from typing import IO, Protocol, cast

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface

from edge_agent.mqtt.topics import FleetTopics
from edge_agent.update import faults
from edge_agent.update.errors import (
    BadAnnouncementError,
    TargetMismatchError,
    UpdateTransportError,
)
from edge_agent.update.staging import Staging
from edge_agent.update.wire import (
    CHUNK_HEADER_BYTES,
    Announcement,
    ChunkPlan,
    decode_chunk,
)

log = logging.getLogger(__name__)

BASE_URL = "announce:///"
READ_BYTES = 64 * 1024
Write = Callable[[int, bytes], None]
Progress = Callable[[int, int, str], None]  # chunks present, chunks total, source


class PubSub(Protocol):
    """What the chunk fetcher needs from :class:`edge_agent.mqtt.MqttClient`."""

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None],
                  qos: int = 1, *, max_bytes: int | None = None) -> Callable[[], None]: ...


class Cancelled(UpdateTransportError):
    """The agent is stopping; the download resumes at the next start."""


class MqttChunks:
    """Fetch chunks from retained ``<prefix>/blobs/<sha256>/<i>`` topics, ``window`` at a time.

    Subscribing to exact chunk topics (not a wildcard) bounds memory and broker fan-out,
    and after a broker restart the client re-subscribes only the chunks still missing.
    """

    def __init__(self, client: PubSub, prefix: str, window: int) -> None:
        self.client = client
        self.prefix = prefix
        self.topics = FleetTopics(prefix)
        self.window = window

    def fetch(self, sha256: str, plan: ChunkPlan, missing: set[int], write: Write, *,
              stall_s: float, deadline: float, stop: threading.Event) -> None:
        q: queue.Queue[tuple[int, bytes]] = queue.Queue()
        subs: dict[int, Callable[[], None]] = {}
        todo = deque(sorted(missing))

        def handler(topic: str, payload: bytes) -> None:
            with contextlib.suppress(ValueError):
                q.put((int(topic.rsplit("/", 1)[1]), payload))

        def fill() -> None:
            while len(subs) < self.window and todo:
                i = todo.popleft()
                subs[i] = self.client.subscribe(self.topics.chunk(sha256, i), handler,
                                                qos=1, max_bytes=plan.size + CHUNK_HEADER_BYTES)

        last = time.monotonic()
        try:
            fill()
            while subs:
                if stop.is_set():
                    raise Cancelled("agent stopping; the download resumes at the next start")
                try:
                    idx, payload = q.get(timeout=0.2)
                except queue.Empty:
                    now = time.monotonic()
                    if now - last > stall_s or now > deadline:
                        raise UpdateTransportError(
                            f"MQTT download stalled: no chunk for {now - last:.0f} s, "
                            f"{plan.count - len(subs) - len(todo)}/{plan.count} chunks "
                            "present") from None
                    continue
                if idx not in subs or not payload:
                    continue  # a duplicate after a reconnect, or a cleared retained topic
                data = decode_chunk(payload, idx, plan)
                write(idx, data)
                subs.pop(idx)()
                last = time.monotonic()
                fill()
        finally:
            for unsub in subs.values():
                unsub()


class HttpMirrors:
    """GET from the announcement's mirrors (``<mirror>/metadata/…``, ``<mirror>/targets/…``)."""

    def __init__(self, mirrors: tuple[str, ...], *, timeout_s: float, retries: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.mirrors = tuple(m if m.endswith("/") else m + "/" for m in mirrors)
        self.timeout_s = timeout_s
        self.retries = retries
        self.ssl_context = ssl_context

    def _open(self, url: str, start: int = 0) -> HTTPResponse:
        req = urllib.request.Request(url, headers={"User-Agent": "edge-agent-update/1"})
        if start:
            req.add_header("Range", f"bytes={start}-")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout_s,
                                          context=self.ssl_context)
            return cast(HTTPResponse, resp)
        except urllib.error.HTTPError as e:
            raise tuf_exc.DownloadHTTPError(f"{url}: HTTP {e.code}", e.code) from e
        except (urllib.error.URLError, OSError) as e:
            raise UpdateTransportError(f"{url}: {getattr(e, 'reason', e)}") from e

    def stream(self, rel: str) -> Iterator[bytes]:
        """Body of ``rel`` from the first mirror that has it (ngclient caps the length)."""
        last: Exception | None = None
        for m in self.mirrors:
            try:
                resp = self._open(m + rel)
            except (tuf_exc.DownloadHTTPError, UpdateTransportError) as e:
                last = e
                continue
            with resp:
                while True:
                    try:
                        block = resp.read(READ_BYTES)
                    except OSError as e:
                        raise UpdateTransportError(f"{m + rel}: {e}") from e
                    if not block:
                        return
                    yield block
        if isinstance(last, tuf_exc.DownloadHTTPError):
            raise last
        raise UpdateTransportError(f"no mirror could serve {rel}: {last}")

    def fetch(self, rel: str, plan: ChunkPlan, missing: set[int], write: Write, *,
              deadline: float, stop: threading.Event) -> None:
        """Fill ``missing`` chunk slots with resumed (Range) GETs, verifying each slot.

        A stream that ends early is resumed up to ``retries`` times; one that goes on past
        the signed length is refused at once (endless data).
        """
        attempts = 0
        while missing:
            if stop.is_set():
                raise Cancelled("agent stopping; the download resumes at the next start")
            if time.monotonic() > deadline:
                raise UpdateTransportError(f"HTTP download timed out, {len(missing)} chunks "
                                           "missing")
            first = min(missing)
            offset, _ = plan.span(first)
            try:
                self._one_pass(rel, plan, first, offset, missing, write, stop)
            except UpdateTransportError as e:
                attempts += 1
                if attempts > self.retries:
                    raise UpdateTransportError(
                        f"download incomplete after {attempts} attempts: "
                        f"{plan.count - len(missing)}/{plan.count} chunks ({e})") from e
                log.info("update: HTTP download interrupted (%s); resuming", e)
                time.sleep(min(2.0, 0.2 * attempts))

    def _one_pass(self, rel: str, plan: ChunkPlan, first: int, offset: int, missing: set[int],
                  write: Write, stop: threading.Event) -> None:
        last_err: Exception | None = None
        for m in self.mirrors:
            try:
                resp = self._open(m + rel, offset)
            except (tuf_exc.DownloadHTTPError, UpdateTransportError) as e:
                last_err = e
                continue
            with resp:
                status = getattr(resp, "status", 200)
                skip = offset if status == 200 else 0  # server ignored Range: skip the head
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and \
                        int(declared) - skip > plan.length - offset:
                    raise TargetMismatchError(
                        f"{rel}: server announces {int(declared) + offset - skip} bytes, "
                        f"signed length is {plan.length} (endless data refused)")
                self._drain(resp, skip)
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
                            raise TargetMismatchError(f"chunk {i} from {m}: sha256 is not "
                                                      "the signed one (tampered)")
                        write(i, data)
                if resp.read(1):
                    raise TargetMismatchError(f"{rel}: more bytes than the signed length "
                                              f"{plan.length} (endless data refused)")
                return
        if isinstance(last_err, tuf_exc.DownloadHTTPError) and last_err.status_code == 404:
            raise BadAnnouncementError(f"no mirror has {rel}")
        raise UpdateTransportError(f"no mirror reachable for {rel}: {last_err}")

    @staticmethod
    def _drain(resp: IO[bytes], n: int) -> None:
        while n > 0:
            block = resp.read(min(n, READ_BYTES))
            if not block:
                raise UpdateTransportError("stream ended while skipping to the resume offset")
            n -= len(block)


def _read_exact(resp: IO[bytes], n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        try:
            block = resp.read(n - got)
        except OSError as e:
            raise UpdateTransportError(f"connection lost: {e}") from e
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


class AnnouncementFetcher(FetcherInterface):
    """Serve the ngclient ``Updater`` from one announcement (see the module docstring)."""

    def __init__(self, ann: Announcement, *, staging: Staging, mqtt: MqttChunks | None,
                 http: HttpMirrors | None, transport: str, stall_s: float, timeout_s: float,
                 stop: threading.Event, progress: Progress | None = None) -> None:
        self.ann = ann
        self.staging = staging
        self.mqtt = mqtt if transport in ("auto", "mqtt") and ann.chunks else None
        self.http = http if transport in ("auto", "http") and http and http.mirrors else None
        self.stall_s = stall_s
        self.timeout_s = timeout_s
        self.stop = stop
        self.progress = progress
        self._target: TargetFile | None = None
        self._plan: ChunkPlan | None = None
        self.resumed_chunks = 0  # chunks already in staging when the download (re)started
        self.written = 0  # chunks received and written by this download
        self.sources: list[str] = []

    def expect_target(self, info: TargetFile, plan: ChunkPlan | None) -> None:
        """Route the next download of ``info`` through the chunked, resumable path."""
        self._target, self._plan = info, plan

    @staticmethod
    def _rel(url: str) -> str:
        if not url.startswith(BASE_URL):
            raise tuf_exc.DownloadHTTPError(f"unexpected URL {url}", 404)
        return url[len(BASE_URL):]

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = self._rel(url)
        if rel in self.ann.files:
            yield self.ann.files[rel]
            return
        if self.http is None:
            raise tuf_exc.DownloadHTTPError(f"{rel} is neither in the announcement nor on a "
                                            "mirror", 404)
        yield from self.http.stream(rel)

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        info, plan = self._target, self._plan
        rel = self._rel(url)
        if info is None or plan is None or not rel.startswith("targets/") \
                or rel in self.ann.files:
            with super().download_file(url, max_length) as f:
                yield f
            return
        if plan.length > max_length:
            raise TargetMismatchError(f"{rel}: chunk plan covers {plan.length} bytes, signed "
                                      f"length is {max_length}")
        path = self._stage(rel, info.hashes["sha256"], plan)
        with open(path, "rb") as f:
            yield f

    def _stage(self, rel: str, sha256: str, plan: ChunkPlan) -> str:
        missing = set(range(plan.count)) - self.staging.present(sha256, plan)
        self.resumed_chunks = plan.count - len(missing)
        deadline = time.monotonic() + self.timeout_s
        fd = self.staging.open_part(sha256, plan.length)
        source = ""

        def write(i: int, data: bytes) -> None:
            self.staging.write_at(fd, plan.span(i)[0], data)  # all of it, or OSError
            missing.discard(i)
            self.written += 1
            if self.progress:
                self.progress(plan.count - len(missing), plan.count, source)
            faults.point(f"chunk:{self.written}")

        try:
            if missing and self.mqtt is not None:
                source = "mqtt"
                self.sources.append(source)
                try:
                    self.mqtt.fetch(sha256, plan, missing, write, stall_s=self.stall_s,
                                    deadline=deadline, stop=self.stop)
                except Cancelled:
                    raise
                except UpdateTransportError:
                    if self.http is None:
                        raise
                    log.info("update: MQTT chunks stalled; continuing over HTTP")
            if missing and self.http is not None:
                source = "http"
                self.sources.append(source)
                self.http.fetch(rel, plan, missing, write, deadline=deadline, stop=self.stop)
            if missing:
                raise BadAnnouncementError(
                    f"{rel}: {len(missing)} chunks missing and the announcement offers no "
                    "source for them (no MQTT chunks, no mirror)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return str(self.staging.part(sha256))
