"""Label feedback: ground truth arriving later for earlier request ids → rolling metrics.

Predictions that carry a request id are remembered in :class:`PredictionMemory`, a
bounded LRU map (oldest forgotten first, and after ``ttl_s``), so feedback can be joined
to what the model said. :class:`FeedbackTracker` keeps the last ``window`` labelled
samples per model and computes :mod:`edge_agent.monitor.metrics` over them.

Feedback documents (MQTT ``edge/<device>/feedback`` or REST
``POST /v1/models/<name>:feedback``)::

    {"request_id": "r-17", "label": 3}                # one sample
    {"request_id": "r-18", "label": ["cat", "dog"]}   # a batch of two, labels by name
    [{"request_id": "r-19", "label": 0}, ...]         # many at once
    {"feedback": [ ... ]}                             # the same, wrapped

:func:`parse_feedback` raises :class:`~edge_agent.errors.InvalidRequestError` saying what
was expected; unknown or expired request ids are reported, not raised.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.monitor.metrics import ClassificationMetrics, classification_metrics

MAX_ITEMS = 10_000  # feedback items per document


class Remembered(NamedTuple):
    """What a request was answered with (a tuple: thousands are made per second)."""

    model: str
    version: int
    top1: np.ndarray  # (batch,)
    score: np.ndarray | None  # (batch,) probability of class 1 for binary models
    classes: int
    at: float


@dataclass(frozen=True)
class FeedbackItem:
    request_id: str
    labels: tuple[int | str, ...]  # one per sample of the request
    model: str | None = None


class PredictionMemory:
    """request id → what the model predicted; bounded in size and age (thread-safe)."""

    def __init__(self, max_entries: int = 10_000, ttl_s: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._map: OrderedDict[str, Remembered] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def remember(self, request_id: str, entry: Remembered) -> None:
        self.remember_many([(request_id, entry)])

    def remember_many(self, items: Iterable[tuple[str, Remembered]]) -> None:
        m = self._map
        with self._lock:
            for rid, entry in items:
                m.pop(rid, None)  # a reused id moves to the young end
                m[rid] = entry
            over = len(m) - self.max_entries
            for _ in range(max(0, over)):
                m.popitem(last=False)
            self.evicted += max(0, over)

    def pop(self, request_id: str, now: float | None = None) -> Remembered | None:
        """The prediction for ``request_id`` (once: feedback is counted one time)."""
        now = time.time() if now is None else now
        with self._lock:
            e = self._map.pop(request_id, None)
        if e is None or now - e.at > self.ttl_s:
            return None
        return e

    def __len__(self) -> int:
        return len(self._map)


def parse_feedback(doc: Any, *, model: str | None = None) -> list[FeedbackItem]:
    """Validate a feedback document (see module docstring). Raises InvalidRequestError."""
    if isinstance(doc, dict) and "feedback" in doc:
        doc = doc["feedback"]
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise InvalidRequestError("feedback: expected at least one item")
    if len(items) > MAX_ITEMS:
        raise InvalidRequestError(f"feedback: at most {MAX_ITEMS} items per document, got "
                                  f"{len(items)}")
    out = []
    for i, it in enumerate(items):
        where = f"feedback[{i}]" if isinstance(doc, list) else "feedback"
        if not isinstance(it, dict):
            raise InvalidRequestError(f"{where}: expected an object with request_id and label, "
                                      f"got {type(it).__name__}")
        rid = it.get("request_id")
        if not isinstance(rid, str) or not 1 <= len(rid) <= 128:
            raise InvalidRequestError(f"{where}.request_id: expected a string of 1..128 "
                                      f"characters, got {type(rid).__name__}")
        if "label" not in it:
            raise InvalidRequestError(f"{where}.label: missing")
        lab = it["label"]
        labels = lab if isinstance(lab, list) else [lab]
        if not labels or not all(_is_label(x) for x in labels):
            raise InvalidRequestError(f"{where}.label: expected a class index, a class name, "
                                      f"or a list of those, got {lab!r:.80}")
        m = it.get("model", model)
        if m is not None and not isinstance(m, str):
            raise InvalidRequestError(f"{where}.model: expected a string")
        if model is not None and m != model:
            raise InvalidRequestError(f"{where}.model: {m!r} does not match the URL's {model!r}")
        out.append(FeedbackItem(rid, tuple(labels), m))
    return out


def _is_label(x: Any) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool) and x >= 0) or \
        (isinstance(x, str) and 0 < len(x) <= 256)


@dataclass
class FeedbackResult:
    accepted: int = 0  # samples joined to a prediction
    unknown: list[str] | None = None  # request ids not remembered (never seen, or expired)
    rejected: list[str] | None = None  # joined but unusable (wrong model, label count/name)

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "unknown": self.unknown or [],
                "rejected": self.rejected or []}


class FeedbackTracker:
    """Rolling window of (label, prediction, score) per model → metrics (thread-safe)."""

    def __init__(self, memory: PredictionMemory, window: int = 1000) -> None:
        self.memory = memory
        self.window = window
        self._data: dict[str, deque[tuple[int, int, float]]] = {}
        self._binary: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.total = 0

    def apply(self, items: Sequence[FeedbackItem],
              labels_of: dict[str, Sequence[str]] | None = None) -> FeedbackResult:
        """Join items to remembered predictions; ``labels_of[model]`` maps names → index."""
        res = FeedbackResult(0, [], [])
        assert res.unknown is not None and res.rejected is not None
        for it in items:
            rem = self.memory.pop(it.request_id)
            if rem is None:
                res.unknown.append(it.request_id)
                continue
            if it.model is not None and it.model != rem.model:
                res.rejected.append(f"{it.request_id}: was a {rem.model!r} request, not "
                                    f"{it.model!r}")
                continue
            if len(it.labels) != len(rem.top1):
                res.rejected.append(f"{it.request_id}: {len(it.labels)} labels for a batch of "
                                    f"{len(rem.top1)}")
                continue
            names = list((labels_of or {}).get(rem.model, ()))
            idx: list[int] = []
            for lab in it.labels:
                if isinstance(lab, str):
                    if lab not in names:
                        break
                    idx.append(names.index(lab))
                elif lab < rem.classes:
                    idx.append(lab)
                else:
                    break
            if len(idx) != len(it.labels):
                res.rejected.append(f"{it.request_id}: unknown label in {list(it.labels)!r:.80}")
                continue
            with self._lock:
                d = self._data.setdefault(rem.model, deque(maxlen=self.window))
                self._binary[rem.model] = rem.classes == 2
                for k, y in enumerate(idx):
                    s = float(rem.score[k]) if rem.score is not None else float("nan")
                    d.append((y, int(rem.top1[k]), s))
                self.total += len(idx)
            res.accepted += len(idx)
        return res

    def metrics(self, model: str) -> ClassificationMetrics | None:
        with self._lock:
            d = list(self._data.get(model, ()))
            binary = self._binary.get(model, False)
        if not d:
            return None
        arr = np.asarray(d, dtype=np.float64)
        score = arr[:, 2] if binary and not np.isnan(arr[:, 2]).any() else None
        return classification_metrics(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64),
                                      score, binary=binary)

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._data)
