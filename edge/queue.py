"""Durable on-disk FIFO of readings waiting to be published (store-and-forward).

Every reading is committed here before anything tries to publish it, and leaves only when the
broker has acknowledged it (ack) or a bound evicts it (drop-oldest, counted and logged).

Power-loss decisions:
- SQLite in WAL mode. With fsync=True (the default) synchronous=FULL: every commit is fsynced
  before append() returns. A reading is therefore on disk before the publisher can send it, so a
  power cut can never roll back a row (and its seq) that the broker already has, which would let
  the next boot hand the same seq to a different reading. On a Pi the sensors produce tens of
  readings per second, and append_many()/ack() batch, so the fsync cost is affordable.
  fsync=False gives synchronous=NORMAL: still never corrupt, but the last commits may roll back
  on power loss. Use it for benchmarks and tmpfs.
- The per-device seq counter lives in the same database and is advanced in the SAME transaction
  as the row, so seq is monotonic across restarts and a kill -9 at any point leaves neither a gap
  nor a duplicate among committed rows.
- Rows use AUTOINCREMENT rowids: never reused, even after the queue drains to empty, so a
  publisher cursor (after_rowid) can never skip a new row that got an old id.

Bounds: max_bytes (payload bytes) and max_age_s (enqueued_at, wall clock). When exceeded, the
OLDEST rows are dropped: the freshest data is worth most after a long outage. Drops are counted
(dropped_total, persisted) and logged. A row whose enqueued_at lies in the future (the wall
clock jumped backwards) is not considered old. A big forward jump of the clock (a Pi without
RTC getting NTP time) can make rows look older than they are: choose max_age_s in days, not
minutes.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

Builder = Callable[[int], tuple[str, bytes]]  # seq -> (topic, payload)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    rowid INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    rejected_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('next_seq', 1), ('dropped_total', 0);
"""


@dataclass(frozen=True)
class Row:
    rowid: int
    seq: int
    stream: str
    topic: str
    payload: bytes
    enqueued_at: float


class DurableQueue:
    def __init__(self, path: str | Path, max_bytes: int = 512 * 1024 * 1024,
                 max_age_s: float = 7 * 86400.0, fsync: bool = True,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        # One connection shared under a lock: sensor threads append, the publisher peeks/acks.
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so the seq read-modify-write
        # cannot interleave with another process writing the same file.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._bytes = self._db.execute(
            "SELECT COALESCE(SUM(length(payload)), 0) FROM readings").fetchone()[0]
        self._depth = self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        self._closed = False

    # writing ---------------------------------------------------------------------------------
    def append(self, stream: str, build: Builder) -> int:
        """Allocate the next seq, let build(seq) make (topic, payload), store it. Returns the seq.
        If build raises, nothing is stored and the seq is not consumed."""
        return self.append_many([(stream, build)])[0]

    def append_many(self, items: Sequence[tuple[str, Builder]]) -> list[int]:
        """Several readings in one transaction (one fsync). Returns their seqs in order."""
        if not items:
            return []
        with self._lock:
            db = self._db
            now = self._clock()
            db.execute("BEGIN IMMEDIATE")
            try:
                seq = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
                rows, seqs, added = [], [], 0
                for stream, build in items:
                    topic, payload = build(seq)
                    if isinstance(payload, str):
                        payload = payload.encode()
                    rows.append((seq, stream, topic, bytes(payload), now))
                    seqs.append(seq)
                    added += len(payload)
                    seq += 1
                db.executemany("INSERT INTO readings(seq, stream, topic, payload, enqueued_at) "
                               "VALUES (?, ?, ?, ?, ?)", rows)
                db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq,))
                self._bytes += added
                self._depth += len(rows)
                dropped = self._enforce_bounds_locked(now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._recount_locked()
                raise
        if dropped:
            self._log_drops(dropped)
        return seqs

    def _enforce_bounds_locked(self, now: float) -> dict[str, int]:
        """Drop oldest rows beyond max_bytes / max_age_s, inside the caller's transaction."""
        db = self._db
        dropped = {"size": 0, "age": 0}
        cutoff = None if self.max_age_s is None else now - self.max_age_s
        head = db.execute("SELECT enqueued_at FROM readings ORDER BY rowid LIMIT 1").fetchone()
        # Only scan when the head is too old: keeps append O(1) without an index on enqueued_at.
        if cutoff is not None and head and head[0] < cutoff:
            cur = db.execute("DELETE FROM readings WHERE enqueued_at < ? RETURNING length(payload)",
                             (cutoff,))
            sizes = [r[0] for r in cur.fetchall()]
            dropped["age"] = len(sizes)
            self._bytes -= sum(sizes)
            self._depth -= len(sizes)
        while self.max_bytes is not None and self._bytes > self.max_bytes and self._depth:
            excess = self._bytes - self.max_bytes
            # Walk oldest rows until enough bytes are covered, then delete up to that rowid.
            upto, covered = None, 0
            for rowid, size in db.execute(
                    "SELECT rowid, length(payload) FROM readings ORDER BY rowid LIMIT 10000"):
                upto, covered = rowid, covered + size
                if covered >= excess:
                    break
            cur = db.execute("DELETE FROM readings WHERE rowid <= ? RETURNING length(payload)",
                             (upto,))
            sizes = [r[0] for r in cur.fetchall()]
            dropped["size"] += len(sizes)
            self._bytes -= sum(sizes)
            self._depth -= len(sizes)
        total = dropped["size"] + dropped["age"]
        if total:
            db.execute("UPDATE meta SET value=value+? WHERE key='dropped_total'", (total,))
        return {k: v for k, v in dropped.items() if v}

    def enforce_bounds(self) -> dict[str, int]:
        """Apply the age bound now (append does it too); call periodically while idle."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._enforce_bounds_locked(self._clock())
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount_locked()
                raise
        if dropped:
            self._log_drops(dropped)
        return dropped

    def _log_drops(self, dropped: dict[str, int]) -> None:
        log.warning("queue bound exceeded: dropped oldest readings",
                    extra={"dropped": dropped, "dropped_total": self.dropped_total(),
                           "max_bytes": self.max_bytes, "max_age_s": self.max_age_s})

    def _recount_locked(self) -> None:
        self._bytes, self._depth = self._db.execute(
            "SELECT COALESCE(SUM(length(payload)), 0), COUNT(*) FROM readings").fetchone()

    # reading / acknowledging -----------------------------------------------------------------
    def peek(self, limit: int = 100, after_rowid: int | None = None) -> list[Row]:
        """Oldest first; after_rowid continues behind rows already handed out."""
        with self._lock:
            cur = self._db.execute(
                "SELECT rowid, seq, stream, topic, payload, enqueued_at FROM readings "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (after_rowid or 0, limit))
            return [Row(*r) for r in cur.fetchall()]

    def ack(self, rowids: Iterable[int]) -> int:
        """Delete delivered rows (one transaction). Unknown rowids (already dropped) are ignored.
        Returns how many rows were deleted."""
        ids = [(int(r),) for r in rowids]
        if not ids:
            return 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                n_before = db.total_changes
                size = 0
                for (rowid,) in ids:
                    r = db.execute("DELETE FROM readings WHERE rowid=? RETURNING length(payload)",
                                   (rowid,)).fetchone()
                    if r:
                        size += r[0]
                n = db.total_changes - n_before
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._recount_locked()
                raise
            self._bytes -= size
            self._depth -= n
            return n

    def reject(self, rowid: int, reason: str) -> bool:
        """Move a row the broker refused (e.g. not authorised) to the 'rejected' table: out of the
        way of the rows behind it, but kept on disk for inspection or requeue_rejected()."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO rejected SELECT rowid, seq, stream, topic, payload, "
                           "enqueued_at, ?, ? FROM readings WHERE rowid=?",
                           (self._clock(), reason, rowid))
                r = db.execute("DELETE FROM readings WHERE rowid=? RETURNING length(payload)",
                               (rowid,)).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._recount_locked()
                raise
            if r:
                self._bytes -= r[0]
                self._depth -= 1
            return r is not None

    def rejected(self, limit: int = 1000) -> list[tuple[Row, str]]:
        with self._lock:
            cur = self._db.execute("SELECT rowid, seq, stream, topic, payload, enqueued_at, reason "
                                   "FROM rejected ORDER BY rowid LIMIT ?", (limit,))
            return [(Row(*r[:6]), r[6]) for r in cur.fetchall()]

    def requeue_rejected(self) -> int:
        """After fixing the broker's ACL: put rejected rows back at the END of the queue (they keep
        their seq; downstream sees them late, not lost)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO readings(seq, stream, topic, payload, enqueued_at) "
                           "SELECT seq, stream, topic, payload, enqueued_at FROM rejected ORDER BY rowid")
                n = db.execute("DELETE FROM rejected").rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                self._recount_locked()
            return n

    # state -----------------------------------------------------------------------------------
    def depth(self) -> int:
        with self._lock:
            return self._depth

    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def oldest_age_s(self) -> float:
        """Age of the oldest waiting reading, 0.0 when empty."""
        with self._lock:
            r = self._db.execute("SELECT enqueued_at FROM readings ORDER BY rowid LIMIT 1").fetchone()
        return max(0.0, self._clock() - r[0]) if r else 0.0

    def dropped_total(self) -> int:
        """Rows evicted by the size/age bounds since the queue file was created."""
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key='dropped_total'").fetchone()[0]

    def rejected_total(self) -> int:
        """Rows the broker refused that sit in the rejected table."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]

    def next_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> "DurableQueue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
