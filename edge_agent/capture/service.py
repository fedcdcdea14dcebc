"""The capture component: picks inputs off the prediction hook, writes them off-thread.

The serving thread does only this per prediction of a switched-on model: a vectorised
threshold test, at most ``max_per_s`` times a second a copy of one sample, and a
``put_nowait`` on a bounded queue (full: the item is dropped and counted, the prediction
never waits). The writer thread dequantizes, makes the thumbnail or features, and stores
the item (:mod:`edge_agent.capture.store`); every second it refreshes the drifting class
bins from the telemetry monitor's last report. With ``on_feedback``, a request with an id
that is not captured at once is held in RAM (``feedback_memory_bytes``, oldest out) until
label feedback for it arrives: the samples it says were predicted wrong are captured,
filed under the label feedback gave. ``capture.store_full`` (oldest items
evicted) and ``capture.skipped`` (disk low, item too big, write failed) events are sent
at most once a minute each.

Pull: the MQTT commands ``capture_list`` and ``capture_get`` (chunked, ``chunk_bytes`` per
reply) on ``edge/<device>/cmd/…`` — the fleet control plane and its topic ACL
(docs/capture.md, docs/security.md); ``edge-fleet capture pull`` drives them.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle import TensorSpec
from edge_agent.capture.config import CaptureConfig
from edge_agent.capture.select import (
    choose,
    drifting_bins,
    features,
    is_image,
    thumbnail,
    to_pixels,
)
from edge_agent.capture.store import CaptureStore, encode_item
from edge_agent.errors import EdgeError, InvalidRequestError
from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.monitor.feedback import FeedbackItem
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.quant import dequantize
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

EVENT_EVERY_S = 60.0
LIST_MAX = 1000  # ids per capture_list reply


@dataclass(frozen=True)
class _Pick:
    model: str
    version: int
    reason: str
    x: np.ndarray  # one sample, as served (a copy)
    spec: TensorSpec | None
    top1: int
    confidence: float
    probabilities: np.ndarray | None
    request_id: str | None
    at: float
    truth: int | None = None  # the class label feedback gave (reason "feedback")


@dataclass(frozen=True)
class _Held:
    """A request's inputs kept in RAM until label feedback or eviction (oldest first)."""

    model: str
    version: int
    x: np.ndarray  # the whole batch, as served
    spec: TensorSpec | None
    top1: np.ndarray
    confidence: np.ndarray
    at: float


@dataclass(frozen=True)
class CaptureDeps:
    config: CaptureConfig
    registry: ModelRegistry
    hooks: Hooks
    store_root: Path  # the store lives in <store_root>/capture unless [capture] dir is set
    quality: Callable[[], Mapping[str, Mapping[str, Any]]]  # telemetry's last report
    add_command: Callable[[str, Callable[[dict[str, Any]], Any]], None] | None = None
    on_feedback: Callable[[Callable[[list[FeedbackItem]], None]], None] | None = None


def label_index(label: int | str, labels: tuple[str, ...]) -> int | None:
    """A feedback label (class index or name) as a class index; None if unknown."""
    if isinstance(label, int) and not isinstance(label, bool):
        return label if label >= 0 else None
    try:
        return labels.index(str(label))
    except ValueError:
        return int(label) if str(label).isdigit() else None


class CaptureService:
    """See module docstring. ``start``/``stop`` are idempotent."""

    def __init__(self, deps: CaptureDeps) -> None:
        self.deps = deps
        c = self.cfg = deps.config
        self.models = frozenset(c.models)
        self.store = CaptureStore(c.dir or deps.store_root / "capture", max_bytes=c.max_bytes,
                                  max_files=c.max_files, max_item_bytes=c.max_item_bytes,
                                  min_free_bytes=c.min_free_bytes)
        self._q: queue.Queue[_Pick | None] = queue.Queue(c.queue)
        self._bins: dict[str, frozenset[int]] = {}
        self._next_at = 0.0
        self._event_at: dict[str, float] = {}
        self.dropped = self.limited = self.stored = self.evicted = self.skipped = 0
        self._undo: Callable[[], None] | None = None
        self._held: OrderedDict[str, _Held] = OrderedDict()  # request id → inputs
        self._held_bytes = 0
        self._held_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.deps.add_command is not None:
            self.deps.add_command("capture_list", self.list_items)
            self.deps.add_command("capture_get", self.get_chunk)
        if self.deps.on_feedback is not None and self.cfg.on_feedback:
            self.deps.on_feedback(self.feedback)
        self._undo = self.deps.hooks.on_prediction(self._on_prediction)
        self._thread = NamedThread(target=self._work, daemon=True, name="capture")
        self._thread.start()

    def counters(self) -> dict[str, int]:
        """Telemetry's ``capture`` object: what happened to the inputs picked since start
        (``stored``, ``limited`` by ``max_per_s``, ``dropped`` on a full queue, ``skipped``
        by the store, ``evicted`` oldest-first) and the store's ``items`` and ``bytes``."""
        return {"stored": self.stored, "limited": self.limited, "dropped": self.dropped,
                "skipped": self.skipped, "evicted": self.evicted, "items": len(self.store),
                "bytes": self.store.total_bytes}

    def stop(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self._thread is not None:
            try:
                self._q.put(None, timeout=2)
            except queue.Full:
                pass
            self._thread.join(5)
            self._thread = None

    # ---- the serving thread ------------------------------------------------------------

    def _on_prediction(self, rec: PredictionRecord) -> None:
        if rec.model not in self.models or not rec.ok or rec.inputs_raw is None:
            return
        bins = self._bins.get(rec.model)
        if (not bins and rec.request_id is None and rec.confidence is not None
                and rec.confidence.min() >= self.cfg.confidence_below):
            return  # the common case: confident, nothing drifting, no id to hold
        picks = choose(rec.confidence, rec.top1, confidence_below=self.cfg.confidence_below,
                       drift_bins=bins or frozenset())
        hold = (self.cfg.on_feedback and rec.request_id is not None and rec.top1 is not None
                and rec.confidence is not None
                and rec.inputs_raw.nbytes <= self.cfg.feedback_memory_bytes)
        if not picks:
            if hold:  # bounded by feedback_memory_bytes, not by the write rate: a request
                # held too late (or skipped by max_per_s) could never be matched by feedback
                assert rec.request_id is not None and rec.top1 is not None
                assert rec.confidence is not None
                self._hold(rec.request_id, _Held(rec.model, rec.version,
                                                 np.array(rec.inputs_raw), rec.input_spec,
                                                 np.array(rec.top1), np.array(rec.confidence),
                                                 rec.at))
            return
        now = time.monotonic()
        if now < self._next_at:
            self.limited += 1
            return
        self._next_at = now + 1.0 / self.cfg.max_per_s
        i, reason = picks[0]
        assert rec.top1 is not None and rec.confidence is not None  # choose() checked
        probs = rec.probabilities
        pick = _Pick(rec.model, rec.version, reason, np.array(rec.inputs_raw[i]),
                     rec.input_spec, int(rec.top1[i]), float(rec.confidence[i]),
                     None if probs is None else np.array(probs[i]), rec.request_id, rec.at)
        try:
            self._q.put_nowait(pick)
        except queue.Full:
            self.dropped += 1

    def _hold(self, request_id: str, held: _Held) -> None:
        with self._held_lock:
            old = self._held.pop(request_id, None)
            if old is not None:
                self._held_bytes -= old.x.nbytes
            self._held[request_id] = held
            self._held_bytes += held.x.nbytes
            while self._held_bytes > self.cfg.feedback_memory_bytes and self._held:
                _, gone = self._held.popitem(last=False)
                self._held_bytes -= gone.x.nbytes

    def feedback(self, items: list[FeedbackItem]) -> None:
        """Label feedback: the held samples it says were predicted wrong are captured."""
        for it in items:
            with self._held_lock:
                h = self._held.pop(it.request_id, None)
                if h is not None:
                    self._held_bytes -= h.x.nbytes
            if h is None:
                continue
            labels: tuple[str, ...] = ()
            try:
                labels = tuple(self.deps.registry.get(h.model, h.version).manifest.labels)
            except EdgeError:
                pass
            for j, label in enumerate(it.labels[:len(h.top1)]):
                truth = label_index(label, labels)
                if truth is None or truth == int(h.top1[j]):
                    continue
                try:
                    self._q.put_nowait(_Pick(h.model, h.version, "feedback", h.x[j], h.spec,
                                             int(h.top1[j]), float(h.confidence[j]), None,
                                             it.request_id, h.at, truth))
                except queue.Full:
                    self.dropped += 1

    # ---- the writer thread -------------------------------------------------------------

    def _work(self) -> None:
        refresh_at = 0.0
        while True:
            if time.monotonic() >= refresh_at:
                refresh_at = time.monotonic() + 1.0
                try:
                    self._refresh_bins()
                except Exception:
                    log.exception("capture: drift bins")
            try:
                pick = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if pick is None:
                return
            try:
                self._write(pick)
            except Exception:
                log.exception("capture: item not stored")

    def _refresh_bins(self) -> None:
        if not self.cfg.on_drift:
            return
        quality = self.deps.quality()
        bins: dict[str, frozenset[int]] = {}
        for model in self.models:
            q = quality.get(model) or {}
            if not q.get("drift") or not q.get("class_hist"):
                continue
            try:
                ref = self.deps.registry.get(model, int(q["version"])).manifest.drift_reference
            except (EdgeError, KeyError, ValueError, TypeError):
                continue
            if ref is not None:
                bins[model] = drifting_bins(q["class_hist"], ref.class_hist)
        self._bins = bins

    def item_of(self, p: _Pick) -> tuple[np.ndarray, dict[str, Any]]:
        """The array and metadata stored for one pick (``mode`` decides the array)."""
        x = dequantize(p.x, p.spec) if p.spec is not None else p.x.astype(np.float32)
        labels: tuple[str, ...] = ()
        pre = None
        try:
            m = self.deps.registry.get(p.model, p.version).manifest
            labels, pre = tuple(m.labels), m.preprocessing
        except EdgeError:
            pass
        mode = self.cfg.mode
        if mode == "thumbnail" and (pre is None or not is_image(x)):
            mode = "features"  # no pixels to shrink: keep no more than features
        if mode == "thumbnail":
            assert pre is not None
            data: np.ndarray = thumbnail(to_pixels(x, pre), self.cfg.thumbnail_px)
        elif mode == "features":
            data = features(x, p.probabilities)
        else:
            data = x
        y = p.top1 if p.truth is None else p.truth  # the folder: feedback's label, if any
        meta = {"model": p.model, "version": p.version, "reason": p.reason, "top1": p.top1,
                "y": y, "label": labels[y] if 0 <= y < len(labels) else str(y),
                "labels": list(labels), "confidence": round(p.confidence, 6),
                "request_id": p.request_id, "at": p.at, "mode": mode,
                "preprocessing": asdict(pre) if pre is not None else None}
        return data, meta

    def _write(self, p: _Pick) -> None:
        data, meta = self.item_of(p)
        res = self.store.put(encode_item(data, meta))
        self.evicted += res.evicted
        if res.item_id is not None:
            self.stored += 1
        if res.evicted:
            self._event("warning", EventKind.CAPTURE_STORE_FULL,
                        f"capture store full ({self.cfg.max_files} items / "
                        f"{self.cfg.max_bytes} bytes): {res.evicted} oldest removed",
                        evicted=self.evicted, items=len(self.store), bytes=self.store.total_bytes)
        if res.skipped is not None:
            self.skipped += 1
            self._event("warning", EventKind.CAPTURE_SKIPPED,
                        f"capture item not stored: {res.skipped}", reason=res.skipped,
                        min_free_bytes=self.cfg.min_free_bytes, skipped=self.skipped)

    def _event(self, level: str, kind: EventKind, message: str, **data: Any) -> None:
        now = time.monotonic()
        if now - self._event_at.get(kind, -1e9) >= EVENT_EVERY_S:
            self._event_at[kind] = now
            self.deps.hooks.emit_event(level, kind, message, **data)

    # ---- the pull commands -------------------------------------------------------------

    def list_items(self, args: dict[str, Any]) -> dict[str, Any]:
        """``capture_list {"after": id}`` → up to LIST_MAX ``{"id", "bytes"}``, oldest first."""
        after = str(args.get("after") or "")
        items = [{"id": i, "bytes": n} for i, n in self.store.ids() if i > after]
        return {"items": items[:LIST_MAX], "more": len(items) > LIST_MAX,
                "chunk_bytes": self.cfg.chunk_bytes, "bytes": self.store.total_bytes,
                "max_bytes": self.cfg.max_bytes, "max_files": self.cfg.max_files}

    def get_chunk(self, args: dict[str, Any]) -> dict[str, Any]:
        """``capture_get {"id", "offset"}`` → ``chunk_bytes`` of the item, base64."""
        offset = args.get("offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidRequestError(f"capture_get: offset must be an integer, got {offset!r}")
        item = args.get("id")
        if not isinstance(item, str):
            raise InvalidRequestError(f"capture_get: id must be a string, got {item!r}")
        data, total = self.store.read(item, offset, self.cfg.chunk_bytes)
        return {"id": item, "offset": offset, "total": total,
                "data": base64.b64encode(data).decode()}
