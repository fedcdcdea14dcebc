"""Store-and-forward: a bounded on-disk FIFO of messages waiting for a broker PUBACK.

Telemetry, events and results are *put* here, never published directly. Each put takes
the device's next sequence number in the same SQLite transaction that stores the row, so
the number is persisted with the message and never goes backwards across restarts (or
crashes: WAL journal, one transaction per put). Rows are deleted only when the broker
acknowledged them (:mod:`edge_agent.mqtt.forwarder` does that); a row refused by the
broker (PUBACK reason >= 0x80, e.g. an ACL denial) is deleted and counted as refused.

Past ``max_messages`` or ``max_bytes`` the *oldest* rows are dropped and counted; the
counters are persisted and reported in telemetry, so a consumer that sees a gap in the
sequence numbers can tell loss from delay.

A database that cannot be opened (corrupt file) is moved aside and replaced; the new one
starts its sequence at the current time in milliseconds so numbers still only go up.

Raises ``OSError`` when the directory cannot be created; SQLite errors after opening are
wrapped in :class:`~edge_agent.errors.TransportError` (disk trouble, not bad data).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import TransportError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class OutboxStats:
    depth: int  # messages waiting (including those on the wire without a PUBACK yet)
    bytes: int
    oldest_age_s: float | None
    last_seq: int
    dropped: int  # removed unsent because the cap was reached (since the DB was created)
    refused: int  # the broker refused them (PUBACK reason >= 0x80)


class Outbox:
    """A bounded, persistent FIFO keyed by sequence number; thread-safe."""

    def __init__(self, path: Path, *, max_messages: int = 20_000, max_bytes: int = 64 << 20,
                 on_put: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.on_put = on_put
        self.reset_reason: str | None = None  # set when a damaged DB was replaced
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s is unreadable (%s); moved to %s", self.path, e, aside)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            self._db = self._open()
            self._set_meta("seq", max(self._meta("seq"), int(time.time() * 1000)))
            self.reset_reason = f"damaged outbox replaced ({e})"
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
                               ).fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                             timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
            db.executescript(_SCHEMA)
            db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value=excluded.value", (key, value))

    def put(self, topic: str, build: Callable[[int], bytes], *, qos: int = 1,
            retain: bool = False) -> int:
        """Store ``build(seq)`` under the next sequence number; returns that number.

        ``build`` runs inside the transaction (keep it cheap and pure). Raises
        TransportError on disk failure; nothing is stored then and the number is not used.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = self._meta("seq") + 1
                    payload = build(seq)
                    self._db.execute("INSERT INTO outbox(seq, topic, payload, qos, retain, "
                                     "created) VALUES(?,?,?,?,?,?)",
                                     (seq, topic, payload, qos, int(retain), time.time()))
                    self._set_meta("seq", seq)
                    self._count += 1
                    self._bytes += len(payload)
                    self._enforce_cap()
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    self._recount()
                    raise
            except sqlite3.Error as e:
                raise TransportError(f"outbox {self.path}: cannot store message: {e}") from e
        if self.on_put is not None:
            self.on_put()
        return seq

    def _enforce_cap(self) -> None:
        """Drop the oldest rows until within both caps (inside the caller's transaction)."""
        if self._count <= self.max_messages and self._bytes <= self.max_bytes:
            return
        dropped = 0
        while self._count > self.max_messages or self._bytes > self.max_bytes:
            over = max(self._count - self.max_messages, 1)
            rows = self._db.execute("SELECT seq, LENGTH(payload) FROM outbox ORDER BY seq "
                                    "LIMIT ?", (min(over, 1000),)).fetchall()
            if not rows:
                break
            freed = 0
            cut: list[int] = []
            for seq, n in rows:
                if self._count - len(cut) <= self.max_messages and \
                        self._bytes - freed <= self.max_bytes:
                    break
                cut.append(seq)
                freed += int(n)
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (cut[-1],))
            self._count -= len(cut)
            self._bytes -= freed
            dropped += len(cut)
        self._set_meta("dropped", self._meta("dropped") + dropped)

    def _rollback(self) -> None:
        """Undo the open transaction, keeping the error that ended it: on a full disk
        (SQLITE_FULL) SQLite has already rolled back, and a second ROLLBACK would replace
        "database or disk is full" by "no transaction is active"."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _recount(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) "
                                   "FROM outbox").fetchone()
            self._count, self._bytes = int(row[0]), int(row[1])

    def peek(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """The next ``limit`` rows with ``seq > after_seq``, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT seq, topic, payload, qos, retain FROM outbox "
                                        "WHERE seq > ? ORDER BY seq LIMIT ?",
                                        (after_seq, limit)).fetchall()
            except sqlite3.Error as e:
                raise TransportError(f"outbox {self.path}: cannot read: {e}") from e
        return [OutboxRow(int(s), t, bytes(p), int(q), bool(r)) for s, t, p, q, r in rows]

    def remove(self, seqs: list[int], *, refused: int = 0) -> None:
        """Delete acknowledged (or refused) rows; unknown numbers are ignored."""
        if not seqs:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for i in range(0, len(seqs), 500):
                        part = seqs[i:i + 500]
                        self._db.execute(f"DELETE FROM outbox WHERE seq IN "
                                         f"({','.join('?' * len(part))})", part)
                    if refused:
                        self._set_meta("refused", self._meta("refused") + refused)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except sqlite3.Error as e:
                raise TransportError(f"outbox {self.path}: cannot delete: {e}") from e
            finally:
                self._recount()

    def last_seq(self) -> int:
        """The most recently allocated sequence number (0 before the first put)."""
        with self._lock:
            return self._meta("seq")

    def stats(self) -> OutboxStats:
        with self._lock:
            row = self._db.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
            oldest = row[0] if row else None  # the primary key's first row: no table scan
            return OutboxStats(self._count, self._bytes,
                               None if oldest is None else max(0.0, time.time() - oldest),
                               self._meta("seq"), self._meta("dropped"), self._meta("refused"))

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()
