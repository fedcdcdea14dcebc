"""Watch folder: image files dropped in a folder are classified, reported and moved away.

Polling (no inotify dependency; works on every board and on network mounts). A file is
taken once it has not changed for ``settle_s`` (drop files atomically by writing a dot-file
or another extension and renaming it, and this never matters). Results go to the sinks
(a JSON-lines file and/or MQTT); the file moves to ``done/`` or, if it is not a usable
image, to ``failed/`` with an ``error`` result. The :class:`~edge_agent.sources.journal.
Journal` guarantees that after a crash or restart no file is classified again.

A file whose model is not loaded (yet) or busy stays where it is and is retried.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config import WatchSettings
from edge_agent.errors import BadInputError, EdgeError, NotFoundError
from edge_agent.registry import ModelRegistry
from edge_agent.sources.base import ResultSink, classify_image
from edge_agent.threadname import NamedThread

if TYPE_CHECKING:
    from edge_agent.sources.journal import Journal

log = logging.getLogger(__name__)
Mover = Callable[[Path, Path], None]


def move_file(src: Path, dest_dir: Path) -> None:
    """Move ``src`` into ``dest_dir`` (atomic rename; a suffix avoids overwriting)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    n = 1
    while dest.exists():
        dest = dest_dir / f"{src.stem}.{n}{src.suffix}"
        n += 1
    try:
        os.replace(src, dest)
    except OSError:
        shutil.move(str(src), str(dest))  # another filesystem


class WatchFolderSource:
    """Polls ``settings.dir``; one thread; :meth:`scan_once` is the whole algorithm."""

    name = "watch"

    def __init__(self, settings: WatchSettings, registry: ModelRegistry, sink: ResultSink, *,
                 max_image_pixels: int = 12_000_000, mover: Mover = move_file) -> None:
        if settings.dir is None or settings.model is None:
            raise ValueError("watch settings need dir and model")
        self.settings = settings
        self.dir = settings.dir
        self.model = settings.model
        self.registry = registry
        self.sink = sink
        self.max_image_pixels = max_image_pixels
        self.mover = mover
        self.done_dir = settings.done_dir or self.dir / "done"
        self.failed_dir = settings.failed_dir or self.dir / "failed"
        self.journal: Journal | None = None
        self._stop = threading.Event()
        self._scan_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.processed = 0
        self._waiting_logged: set[str] = set()

    def open(self) -> None:
        """Create the folder and open the journal (``start`` does this, then polls)."""
        from edge_agent.sources.journal import Journal  # sqlite3 only when a folder is watched

        self.dir.mkdir(parents=True, exist_ok=True)
        if self.journal is None:
            self.journal = Journal(self.settings.journal or self.dir / ".journal.sqlite3")
            self.journal.prune()

    def start(self) -> None:
        self.open()
        self._stop.clear()
        self._thread = NamedThread(target=self._run, name="watch-folder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:
                log.exception("watch folder scan failed")
            self._stop.wait(self.settings.poll_interval_s)

    def candidates(self) -> list[Path]:
        exts = self.settings.extensions
        try:
            entries = sorted(os.scandir(self.dir), key=lambda e: e.name)
        except OSError as e:
            log.warning("cannot list %s: %s", self.dir, e)
            return []
        return [Path(e.path) for e in entries
                if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
                and os.path.splitext(e.name)[1].lower() in exts]

    def scan_once(self) -> int:
        """Process every settled file once; returns how many were finished (moved)."""
        with self._scan_lock:
            return self._scan()

    def _scan(self) -> int:
        finished = 0
        now = time.time()
        for path in self.candidates():
            if self._stop.is_set():
                break
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime < self.settings.settle_s:
                continue  # still being written
            if self._process(path, st):
                finished += 1
        return finished

    def _process(self, path: Path, st: os.stat_result) -> bool:
        assert self.journal is not None
        if st.st_size > self.settings.max_file_bytes:
            data = b""
            digest = f"size-{st.st_size}"
        else:
            try:
                data = path.read_bytes()
            except OSError as e:
                log.warning("cannot read %s: %s", path, e)
                return False
            digest = hashlib.sha256(data).hexdigest()
        key = f"{path.name}:{st.st_mtime_ns}:{digest}"
        entry = self.journal.get(key)
        if entry is None:
            result = self._classify(path, data, digest, st.st_size)
            if result is None:
                return False  # model not available now: retry on a later scan
            status = "failed" if "error" in result else "done"
            self.journal.record(key, path.name, status, result)
            entry = self.journal.get(key)
            assert entry is not None
            self.processed += 1
        if not entry.emitted:
            self.sink.emit(entry.result)
            self.journal.mark_emitted(key)
        try:
            self.mover(path, self.failed_dir if entry.status == "failed" else self.done_dir)
        except OSError as e:
            log.warning("cannot move %s: %s (will retry)", path, e)
            return False
        return True

    def _classify(self, path: Path, data: bytes, digest: str, size: int
                  ) -> dict[str, Any] | None:
        base = {"file": path.name, "sha256": digest}
        if size > self.settings.max_file_bytes:
            return {**base, "model": self.model, "source": "watch", "at": round(time.time(), 3),
                    "error": f"file of {size} bytes is over the limit of "
                             f"{self.settings.max_file_bytes} bytes"}
        try:
            result = classify_image(self.registry, self.model, data,
                                    version=self.settings.version, k=self.settings.top_k,
                                    source="watch", request_id=path.name,
                                    max_pixels=self.max_image_pixels, **base)
        except NotFoundError as e:
            if self.model not in self._waiting_logged:
                log.warning("watch folder waits for model: %s", e)
                self._waiting_logged.add(self.model)
            return None
        except BadInputError as e:
            return {**base, "model": self.model, "source": "watch", "at": round(time.time(), 3),
                    "error": str(e)}
        except EdgeError as e:  # busy or a runtime fault: not the file's fault, retry later
            log.warning("watch folder: %s: %s (will retry)", path.name, e)
            return None
        self._waiting_logged.discard(self.model)
        return result
