"""The bounded on-device capture store: one atomic ``.npz`` file per item.

Caps: ``max_bytes`` and ``max_files`` (the oldest items go first to make room), one item
at most ``max_item_bytes``, and nothing is written while the disk has less than
``min_free_bytes`` free — the store never fills the disk the models and the outbox live
on. Items are named by a sequence number (``000000000042.npz``) so the oldest sorts first
and ids are never reused within a store. Each holds ``data`` (the thumbnail, the input or
the features) and ``meta`` (UTF-8 JSON: model, version, prediction, confidence, reason,
label, time, mode, preprocessing). Thread-safe; IO only (the choices are in
:mod:`edge_agent.capture.select`).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import InvalidRequestError, NotFoundError
from edge_agent.fsutil import atomic_write_bytes

ITEM = re.compile(r"^(\d{12})\.npz$")


@dataclass(frozen=True)
class PutResult:
    """What :meth:`CaptureStore.put` did: stored (with its id) or why not, and evictions."""

    item_id: str | None
    evicted: int = 0
    skipped: str | None = None  # too_big | disk_low | write_failed


def encode_item(data: np.ndarray, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, data=data, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return buf.getvalue()


def decode_item(blob: bytes, *, max_bytes: int) -> tuple[np.ndarray, dict[str, Any]]:
    """An item's arrays back (the pull side). Raises InvalidRequestError on a bad item."""
    if len(blob) > max_bytes:
        raise InvalidRequestError(f"capture item is {len(blob)} bytes, over {max_bytes}")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            data, meta = z["data"], json.loads(bytes(z["meta"]).decode())
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"capture item is not a capture .npz ({e})") from e
    if not isinstance(meta, dict):
        raise InvalidRequestError("capture item meta is not a JSON object")
    return data, meta


class CaptureStore:
    """See module docstring."""

    def __init__(self, root: Path, *, max_bytes: int, max_files: int, max_item_bytes: int,
                 min_free_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes, self.max_files = max_bytes, max_files
        self.max_item_bytes, self.min_free_bytes = max_item_bytes, min_free_bytes
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob(".*.tmp"):  # an interrupted atomic write
            tmp.unlink(missing_ok=True)
        self._items: OrderedDict[str, int] = OrderedDict()  # id → bytes, oldest first
        for p in sorted(self.root.iterdir()):
            m = ITEM.match(p.name)
            if m and p.is_file():
                self._items[m[1]] = p.stat().st_size
        self._next = int(next(reversed(self._items))) + 1 if self._items else 1
        self._bytes = sum(self._items.values())

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def put(self, blob: bytes) -> PutResult:
        """Store one encoded item, evicting the oldest to stay under both caps."""
        n = len(blob)
        if n > self.max_item_bytes or n > self.max_bytes:
            return PutResult(None, skipped="too_big")
        with self._lock:
            evicted = 0
            while self._items and (self._bytes + n > self.max_bytes
                                   or len(self._items) + 1 > self.max_files):
                old, size = self._items.popitem(last=False)
                (self.root / f"{old}.npz").unlink(missing_ok=True)
                self._bytes -= size
                evicted += 1
            try:
                free = shutil.disk_usage(self.root).free
            except OSError:
                free = 0
            if free - n < self.min_free_bytes:
                return PutResult(None, evicted, "disk_low")
            item_id = f"{self._next:012d}"
            try:
                atomic_write_bytes(self.root / f"{item_id}.npz", blob)
            except OSError:
                return PutResult(None, evicted, "write_failed")
            self._next += 1
            self._items[item_id] = n
            self._bytes += n
            return PutResult(item_id, evicted)

    def ids(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._items.items())

    def read(self, item_id: str, offset: int, length: int) -> tuple[bytes, int]:
        """``length`` bytes of an item from ``offset`` and its total size.

        Raises InvalidRequestError (a malformed id or range), NotFoundError (gone: evicted).
        """
        if not isinstance(item_id, str) or not re.fullmatch(r"\d{12}", item_id):
            raise InvalidRequestError(f"capture id must be 12 digits, got {item_id!r}")
        if offset < 0 or length <= 0:
            raise InvalidRequestError(f"bad range offset={offset} length={length}")
        with self._lock:
            size = self._items.get(item_id)
        if size is None:
            raise NotFoundError(f"capture item {item_id} is not in the store (evicted?)")
        try:
            with open(self.root / f"{item_id}.npz", "rb") as f:
                f.seek(offset)
                return f.read(length), size
        except FileNotFoundError as e:
            raise NotFoundError(f"capture item {item_id} is gone") from e
