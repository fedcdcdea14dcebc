"""Transports for the TUF client: a ``FetcherInterface`` over one announcement.

The ``Updater`` asks for URLs under ``announce:///metadata/`` and ``announce:///targets/``;
:class:`AnnouncementFetcher` answers from, in order: the files inlined in the
announcement, MQTT chunks (:class:`MqttChunks`), then HTTP(S) mirrors
(:class:`HttpMirrors`). None of these sources is trusted: python-tuf verifies every
metadata file, and a target is written to staging only chunk by chunk after each chunk
matched its *signed* sha256, so resuming never trusts bytes from before a crash. Which
announced mirrors may be asked at all is :mod:`edge_agent.update.mirrors`' decision:
metadata only from ``update.mirror_allowlist``, the target also from the mirrors its
signed entry names.

Caps in bytes: every metadata download is capped by ngclient's ``*_max_length``; a
target by its signed length (more bytes than that → :class:`TargetMismatchError`,
"endless data"). Caps in time: one :class:`~edge_agent.deadline.Deadline` per attempt
(``update.download_timeout_s``) over every file and every source — inline, MQTT chunks,
HTTP — checked on every chunk, wait and socket receive, so a source that drips is
abandoned mid-read; each metadata file also within ``update.metadata_timeout_s``.
Raises TargetMismatchError / BadAnnouncementError (the data's fault),
UpdateTransportError (stalled, unreachable: retried later) or its DownloadDeadlineError
(code ``deadline``: retried later, with backoff).
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
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Protocol

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface

from edge_agent.deadline import Deadline
from edge_agent.mqtt.topics import FleetTopics
from edge_agent.update import faults, mirror_http
from edge_agent.update.errors import (
    BadAnnouncementError,
    DownloadDeadlineError,
    TargetMismatchError,
    UpdateTransportError,
)
from edge_agent.update.mirror_http import MirrorResponse
from edge_agent.update.mirrors import MirrorChoice
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
              stall_s: float, deadline: Deadline, stop: threading.Event) -> None:
        """Fill ``missing``; raises UpdateTransportError when no chunk came for ``stall_s``,
        DownloadDeadlineError at ``deadline`` (checked on every chunk and every wait)."""
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

        def present() -> str:
            return f"{plan.count - len(subs) - len(todo)}/{plan.count} chunks present"

        last = time.monotonic()
        try:
            fill()
            while subs:
                if stop.is_set():
                    raise Cancelled("agent stopping; the download resumes at the next start")
                try:
                    idx, payload = q.get(timeout=deadline.timeout(0.2))
                except queue.Empty:
                    now = time.monotonic()
                    if now - last > stall_s:
                        raise UpdateTransportError(
                            f"MQTT download stalled: no chunk for {now - last:.0f} s, "
                            f"{present()}") from None
                    continue
                if idx not in subs or not payload:
                    continue  # a duplicate after a reconnect, or a cleared retained topic
                data = decode_chunk(payload, idx, plan)
                write(idx, data)
                subs.pop(idx)()
                last = time.monotonic()
                fill()
        except DownloadDeadlineError as e:
            raise _late(e, f"MQTT chunks: {present()}") from e
        finally:
            for unsub in subs.values():
                unsub()


def _late(e: DownloadDeadlineError, detail: str) -> DownloadDeadlineError:
    """The deadline's error with what was abandoned (source, progress)."""
    return DownloadDeadlineError(f"{e}; abandoned {detail}")


class HttpMirrors:
    """GET ``<mirror>metadata/…`` and ``<mirror>targets/…`` under the update's deadline.

    Which mirrors may be asked is decided per file by :class:`AnnouncementFetcher` (see
    :mod:`edge_agent.update.mirrors`); every request is :func:`mirror_http.get`.
    """

    def __init__(self, *, timeout_s: float, retries: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout_s = timeout_s  # per socket operation (connect, handshake, receive)
        self.retries = retries
        self.ssl_context = ssl_context

    def _open(self, url: str, deadline: Deadline, start: int = 0) -> MirrorResponse:
        return mirror_http.get(url, deadline=deadline, read_timeout_s=self.timeout_s,
                               start=start, ssl_context=self.ssl_context)

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
                    raise _late(e, f"{rel} from {m}") from e
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
        while missing:
            if stop.is_set():
                raise Cancelled("agent stopping; the download resumes at the next start")
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
                raise _late(e, f"{rel} from {m}, {plan.count - len(missing)}/{plan.count} "
                               "chunks present") from e
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


class AnnouncementFetcher(FetcherInterface):
    """Serve the ngclient ``Updater`` from one announcement (see the module docstring).

    One fetcher per update attempt: its :class:`~edge_agent.deadline.Deadline` starts when
    it is made and bounds every download of the attempt (``timeout_s``); each metadata
    file also gets at most ``metadata_timeout_s``.
    """

    def __init__(self, ann: Announcement, *, staging: Staging, mqtt: MqttChunks | None,
                 http: HttpMirrors | None, transport: str, stall_s: float, timeout_s: float,
                 stop: threading.Event, allowlist: tuple[str, ...] = (),
                 metadata_timeout_s: float = 60.0, progress: Progress | None = None) -> None:
        self.ann = ann
        self.staging = staging
        self.deadline = Deadline(timeout_s, "update.download_timeout_s: downloads not "
                                 "complete", error=DownloadDeadlineError)
        self.metadata_timeout_s = metadata_timeout_s
        self.mqtt = mqtt if transport in ("auto", "mqtt") and ann.chunks else None
        self.http = http if transport in ("auto", "http") else None
        self.choice = MirrorChoice(ann.mirrors, allowlist)
        self.target_mirrors: tuple[str, ...] = ()  # known once the targets are verified
        self.ignored_mirrors = self.choice.ignored()
        self.stall_s = stall_s
        self.stop = stop
        self.progress = progress
        self._target: TargetFile | None = None
        self._plan: ChunkPlan | None = None
        self.resumed_chunks = 0  # chunks already in staging when the download (re)started
        self.written = 0  # chunks received and written by this download
        self.sources: list[str] = []

    def expect_target(self, info: TargetFile, plan: ChunkPlan | None,
                      signed_mirrors: tuple[str, ...] = ()) -> None:
        """Route the next download of ``info`` through the chunked, resumable path, from
        the mirrors its verified entry names (``signed_mirrors``) or the allowlist allows."""
        self._target, self._plan = info, plan
        self.target_mirrors = self.choice.for_target(signed_mirrors) if self.http else ()
        self.ignored_mirrors = self.choice.ignored(signed_mirrors)
        if self.ignored_mirrors:
            log.warning("update: %s: ignoring announced mirrors that are neither in "
                        "update.mirror_allowlist nor signed for the target: %s", info.path,
                        ", ".join(self.ignored_mirrors))

    def _ignored_note(self) -> str:
        return f"; ignored (neither in update.mirror_allowlist nor signed for the target): " \
            f"{', '.join(self.ignored_mirrors)}" if self.ignored_mirrors else ""

    @staticmethod
    def _rel(url: str) -> str:
        if not url.startswith(BASE_URL):
            raise tuf_exc.DownloadHTTPError(f"unexpected URL {url}", 404)
        return url[len(BASE_URL):]

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = self._rel(url)
        meta = rel.startswith("metadata/")
        deadline = self.deadline.within(self.metadata_timeout_s, "update.metadata_timeout_s: "
                                        f"{rel} not received") if meta else self.deadline
        deadline.check()
        if rel in self.ann.files:
            yield self.ann.files[rel]
            return
        mirrors = self.choice.for_metadata() if meta else self.target_mirrors
        if self.http is None or not mirrors:
            raise tuf_exc.DownloadHTTPError(
                f"{rel} is neither in the announcement nor on an allowed mirror"
                f"{self._ignored_note()}", 404)
        yield from self.http.stream(mirrors, rel, deadline)

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
                                    deadline=self.deadline, stop=self.stop)
                except (Cancelled, DownloadDeadlineError):
                    raise
                except UpdateTransportError:
                    if not self.target_mirrors:
                        raise
                    log.info("update: MQTT chunks stalled; continuing over HTTP")
            if missing and self.http is not None and self.target_mirrors:
                source = "http"
                self.sources.append(source)
                self.http.fetch(self.target_mirrors, rel, plan, missing, write,
                                deadline=self.deadline, stop=self.stop)
            if missing:
                raise BadAnnouncementError(
                    f"{rel}: {len(missing)} chunks missing and the announcement offers no "
                    f"usable source for them (MQTT chunks: {'yes' if self.mqtt else 'no'}, "
                    f"mirrors: {', '.join(self.target_mirrors) or 'none'})"
                    f"{self._ignored_note()}")
            os.fsync(fd)
        finally:
            os.close(fd)
        return str(self.staging.part(sha256))
