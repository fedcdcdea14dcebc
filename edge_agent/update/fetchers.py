"""Transports for the TUF client: a ``FetcherInterface`` over one announcement.

The ``Updater`` asks for URLs under ``announce:///metadata/`` and ``announce:///targets/``;
:class:`AnnouncementFetcher` answers from, in order: the files inlined in the
announcement, MQTT chunks (:class:`MqttChunks`), then HTTP(S) mirrors
(:class:`~edge_agent.update.mirror_http.HttpMirrors`). None of these sources is trusted:
python-tuf verifies every metadata file, and a target is written to staging only chunk
by chunk after each chunk matched its *signed* sha256, so resuming never trusts bytes
from before a crash. Which
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
import logging
import os
import queue
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
from edge_agent.protocol.wants import MAX_WANTED_CHUNKS, ChunkWant
from edge_agent.update import faults
from edge_agent.update.errors import (
    BadAnnouncementError,
    DownloadDeadlineError,
    TargetMismatchError,
    UpdateTransportError,
)
from edge_agent.update.mirror_http import HttpMirrors, Write
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
Progress = Callable[[int, int, str], None]  # chunks present, chunks total, source


class PubSub(Protocol):
    """What the chunk fetcher needs from :class:`edge_agent.mqtt.MqttClient`."""

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None],
                  qos: int = 1, *, max_bytes: int | None = None) -> Callable[[], None]: ...

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> bool: ...


class Cancelled(UpdateTransportError):
    """The agent is stopping; the download resumes at the next start."""


class MqttChunks:
    """Fetch chunks from retained ``<prefix>/blobs/<sha256>/<i>`` topics, ``window`` at a time.

    Subscribing to exact chunk topics (not a wildcard) bounds memory and broker fan-out,
    and after a broker restart the client re-subscribes only the chunks still missing.

    When ``want_after_s`` passes with no chunk, the subscribed chunks are asked for on
    ``want_topic`` (a :class:`~edge_agent.protocol.wants.ChunkWant`), again every
    ``want_after_s`` until ``stall_s``: on a cluster whose retained index is per node the
    retained chunks may never come, and the rollout tool answers a want live.
    """

    def __init__(self, client: PubSub, prefix: str, window: int, *,
                 want_topic: str | None = None, want_after_s: float = 2.0) -> None:
        self.client = client
        self.prefix = prefix
        self.topics = FleetTopics(prefix)
        self.window = window
        self.want_topic = want_topic
        self.want_after_s = want_after_s
        self.wants_sent = 0

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

        last = asked = time.monotonic()
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
                    if self.want_topic is not None and now - max(last, asked) \
                            >= self.want_after_s:
                        asked = now
                        want = ChunkWant(sha256, tuple(sorted(subs))[:MAX_WANTED_CHUNKS])
                        if self.client.publish(self.want_topic, want.to_bytes(), 1, False):
                            self.wants_sent += 1
                    continue
                if idx not in subs or not payload:
                    continue  # a duplicate after a reconnect, or a cleared retained topic
                data = decode_chunk(payload, idx, plan)
                write(idx, data)
                subs.pop(idx)()
                last = time.monotonic()
                fill()
        except DownloadDeadlineError as e:
            raise e.abandoning(f"MQTT chunks: {present()}") from e
        finally:
            for unsub in subs.values():
                unsub()


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
            if missing and self.stop.is_set():
                raise Cancelled("agent stopping; the download resumes at the next start")
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
