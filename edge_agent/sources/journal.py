"""A small SQLite journal of processed files, so nothing is processed twice after a restart.

Each file is keyed by ``name:mtime_ns:sha256``. The watch source records the result
*before* emitting it and marks it emitted after, then moves the file::

    classify → record(key, result)  → emit to sinks → mark_emitted(key) → move file
                 crash here: on restart the stored result is emitted, the model is not rerun
                                      crash here: on restart the file is only moved

So every file is classified once and its result emitted at least once (exactly once
unless the process dies between emitting and marking). WAL + synchronous=FULL make each
step durable. Raises ``sqlite3.Error`` for a broken database file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    key     TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    status  TEXT NOT NULL,      -- done | failed
    result  TEXT NOT NULL,      -- the JSON emitted to the sinks
    emitted INTEGER NOT NULL DEFAULT 0,
    at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS processed_at ON processed (at);
"""


@dataclass(frozen=True)
class Entry:
    key: str
    name: str
    status: str
    result: dict[str, Any]
    emitted: bool


class Journal:
    """Thread-safe (one connection behind a lock); keeps at most ``keep`` newest rows."""

    def __init__(self, path: Path, *, keep: int = 100_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT key, name, status, result, emitted FROM processed "
                                   "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Entry(row[0], row[1], row[2], json.loads(row[3]), bool(row[4]))

    def record(self, key: str, name: str, status: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO processed (key, name, status, result, "
                             "emitted, at) VALUES (?, ?, ?, ?, 0, ?)",
                             (key, name, status, json.dumps(result), time.time()))

    def mark_emitted(self, key: str) -> None:
        with self._lock:
            self._db.execute("UPDATE processed SET emitted = 1 WHERE key = ?", (key,))

    def prune(self) -> int:
        """Drop the oldest rows beyond ``keep``; returns how many were dropped."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM processed WHERE key IN (SELECT key FROM processed "
                "ORDER BY at DESC LIMIT -1 OFFSET ?)", (self.keep,))
            return cur.rowcount

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM processed").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
