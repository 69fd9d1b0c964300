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

Bounds: max_bytes (payload bytes of the waiting AND the rejected rows) and max_age_s (enqueued_at,
wall clock, both tables). When exceeded, the OLDEST rows are dropped: the freshest data is worth
most after a long outage. Eviction order (kept longest last): rejected rows, oldest first (the
broker already refused them); then waiting readings of every stream but 'emergency', oldest
first; then 'emergency' readings, oldest first. Drops are counted (dropped_total for readings,
rejected_dropped_total for rejected rows, both persisted) and logged, at most one line a minute
per kind (edge.ratelimit). A row whose enqueued_at lies in the future (the wall clock jumped
backwards) is not considered old. A big forward jump of the clock (a Pi without RTC getting NTP
time) can make rows look older than they are: choose max_age_s in days, not minutes.

Disk policy (an SD card shared with the OS and its logs). With min_free_bytes > 0 the free space
of the queue's filesystem (os.statvfs: blocks available to unprivileged users) is checked at most
once per disk_check_s, not per append, and at once when SQLite reports the disk full.
- free >= min_free_bytes: only the bounds above apply.
- free < min_free_bytes ("disk low"): the queue file stops growing. Deleted rows do not shrink a
  SQLite file (VACUUM would need as much free space again), their pages are reused, so the queue
  is capped at what its file holds without growing (its payload bytes plus its free pages filled
  as densely as the used ones), measured when the disk turns low and kept until free space is
  back above min_free_bytes; acknowledged rows make room under the cap. Measured on a 16 MiB
  filesystem: 60,000 readings of 1 KB after the cap, and the file did not grow by one page.
  A new reading beyond the cap makes room by evicting, as above, rejected rows first,
  then the oldest non-emergency readings; 'emergency' readings are never evicted for the disk.
  When there is nothing of that left to evict, a new non-emergency reading is REFUSED (append
  returns None for it, refused_total()['disk_low'] counts it, one log line a minute); an
  'emergency' reading is still stored. So on a full disk the queue keeps every emergency reading
  and the newest other readings that fit in its file.
- SQLite reports the disk full (SQLITE_FULL: the filesystem has no block left, whatever the
  check said): the queue evicts as above (about 64 KiB) in its own transaction and retries once;
  if that fails too, the readings are refused (refused_total()['disk_full'], emergency included:
  there is no room to write them). append never raises for a full disk, so the agent keeps
  running and resumes storing when space comes back.
Refusals are counted in memory only (writing a counter needs the disk that is full). Keep
min_free_bytes well above the WAL file's size (about 4 MiB at SQLite's default checkpoint
interval): the WAL grows before rows reach the main file.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from smartcity.runtime.cli import ArgumentParser, UsageError, cli
from smartcity.runtime.ratelimit import LogLimiter

log = logging.getLogger(__name__)

Builder = Callable[[int], tuple[str, bytes]]  # seq -> (topic, payload)
EMERGENCY = "emergency"   # the stream kept longest when space runs out
ROOM_BYTES = 64 * 1024    # evicted at once when SQLite reports the disk full

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
INSERT OR IGNORE INTO meta(key, value) VALUES ('next_seq', 1), ('dropped_total', 0),
    ('rejected_dropped_total', 0);
"""


@dataclass(frozen=True)
class Row:
    rowid: int
    seq: int
    stream: str
    topic: str
    payload: bytes
    enqueued_at: float


def _disk_full(e: sqlite3.Error) -> bool:
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL \
        or "database or disk is full" in str(e)


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


class DurableQueue:
    def __init__(self, path: str | Path, max_bytes: int = 512 * 1024 * 1024,
                 max_age_s: float = 7 * 86400.0, fsync: bool = True,
                 clock: Callable[[], float] = time.time, min_free_bytes: int = 0,
                 disk_check_s: float = 5.0, statvfs: Callable[[str], Any] = os.statvfs,
                 monotonic: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        # Disk policy (module docstring): statvfs and monotonic are injectable for tests.
        self.min_free_bytes = min_free_bytes
        self.disk_check_s = disk_check_s
        self._statvfs = statvfs
        self._monotonic = monotonic
        self._next_disk_check = float("-inf")
        self._disk_cap: int | None = None      # payload bytes the file may hold while disk is low
        self._disk_free: int | None = None     # at the last check
        self._refused = {"disk_low": 0, "disk_full": 0}
        self._limited = LogLimiter(log, every_s=60.0)
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
        self._rejected_bytes = self._db.execute(
            "SELECT COALESCE(SUM(length(payload)), 0) FROM rejected").fetchone()[0]
        # Changes when ANOTHER connection commits (e.g. `smartcity-edge queue requeue-rejected`
        # while the agent runs): the counts above are then read again before they are used.
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._closed = False
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call fn() after every commit that added readings (append, requeue_rejected), outside
        the queue's lock, in the committing thread: the publisher wakes on it instead of polling.
        fn must be quick and must not raise. Readings another process adds are not seen."""
        self._listeners = [*self._listeners, fn]

    def remove_listener(self, fn: Callable[[], None]) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    def _notify(self) -> None:
        for fn in self._listeners:
            fn()

    # writing ---------------------------------------------------------------------------------
    def append(self, stream: str, build: Builder) -> int | None:
        """Allocate the next seq, let build(seq) make (topic, payload), store it. Returns the seq,
        or None when the disk policy refused the reading (counted in refused_total()).
        If build raises, nothing is stored and the seq is not consumed."""
        return self.append_many([(stream, build)])[0]

    def append_many(self, items: Sequence[tuple[str, Builder]]) -> list[int | None]:
        """Several readings in one transaction (one fsync). Returns their seqs in order, None for
        a reading refused because the disk is (nearly) full; never raises for a full disk.
        build() may be called twice for a reading (a retry after SQLITE_FULL): keep it pure."""
        if not items:
            return []
        out: list[int | None] = [None] * len(items)
        refused: dict[str, int] = {}
        dropped: dict[str, int] = {}
        with self._lock:
            self._check_disk_locked()
            keep = list(range(len(items)))
            if self._disk_cap is not None and self._total_bytes() >= self._disk_cap \
                    and not self._evictable_locked():
                keep = [i for i, (stream, _) in enumerate(items) if stream == EMERGENCY]
                if len(keep) < len(items):
                    refused["disk_low"] = len(items) - len(keep)
            batch = [items[i] for i in keep]
            if batch:
                try:
                    seqs, dropped = self._append_locked(batch)
                except sqlite3.OperationalError as e:
                    if not _disk_full(e):
                        raise
                    # The filesystem has no block left: stop growing, make room, retry once.
                    cap = self._file_capacity_locked()
                    self._disk_cap = cap if self._disk_cap is None else min(cap, self._disk_cap)
                    self._next_disk_check = self._monotonic() + self.disk_check_s
                    dropped = self._make_room_locked(ROOM_BYTES)
                    try:
                        seqs, more = self._append_locked(batch)
                        dropped = _add(dropped, more)
                    except sqlite3.OperationalError as e2:
                        if not _disk_full(e2):
                            raise
                        seqs = [None] * len(batch)
                        refused["disk_full"] = len(batch)
                for i, seq in zip(keep, seqs):
                    out[i] = seq
            for reason, n in refused.items():
                self._refused[reason] += n
        if self._listeners and any(seq is not None for seq in out):
            self._notify()
        if dropped:
            self._log_drops(dropped)
        for reason, n in refused.items():
            self._limited.error(
                "disk full: refusing readings" if reason == "disk_full" else
                "disk nearly full and nothing left to evict: refusing non-emergency readings",
                key=reason, extra={"refused": n, "refused_total": self._refused[reason],
                                   "streams": sorted({items[i][0] for i, s in enumerate(out)
                                                      if s is None}),
                                   "disk_free_bytes": self._disk_free,
                                   "min_free_bytes": self.min_free_bytes,
                                   "path": str(self.path)})
        return out

    def _append_locked(self, items: Sequence[tuple[str, Builder]]) -> tuple[list[int], dict]:
        db = self._db
        now = self._clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            self._follow_others_locked()
            seq = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
            # Rows up to here existed before this append: only they make room for the disk.
            before = None if self._disk_cap is None else \
                db.execute("SELECT COALESCE(MAX(rowid), 0) FROM readings").fetchone()[0]
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
            dropped = self._enforce_bounds_locked(now, before)
            db.execute("COMMIT")
        except BaseException:
            self._rollback_locked()
            raise
        return seqs, dropped

    def _follow_others_locked(self) -> None:
        """Inside a transaction: recount when another connection committed since we looked."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._recount_locked()

    def _rollback_locked(self) -> None:
        # SQLite rolls a transaction back by itself on some errors (SQLITE_FULL among them).
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._recount_locked()

    def _enforce_bounds_locked(self, now: float, before_rowid: int | None = None) -> dict[str, int]:
        """Drop rows beyond max_age_s / max_bytes / the disk cap, inside the caller's transaction,
        in the eviction order of the module docstring. The disk cap evicts only readings with a
        rowid <= before_rowid (those stored before this append): a new reading is refused up
        front rather than stored and evicted."""
        db = self._db
        dropped = {"age": 0, "size": 0, "disk": 0, "rejected": 0}
        cutoff = None if self.max_age_s is None else now - self.max_age_s
        for table in ("readings", "rejected") if self._rejected_bytes else ("readings",):
            head = db.execute(f"SELECT enqueued_at FROM {table} ORDER BY rowid LIMIT 1").fetchone()
            # Only scan when the head is too old: keeps append O(1) without an index on enqueued_at.
            if cutoff is not None and head and head[0] < cutoff:
                cur = db.execute(f"DELETE FROM {table} WHERE enqueued_at < ? "
                                 "RETURNING length(payload)", (cutoff,))
                sizes = [r[0] for r in cur.fetchall()]
                if table == "readings":
                    dropped["age"] += len(sizes)
                    self._bytes -= sum(sizes)
                    self._depth -= len(sizes)
                else:
                    dropped["rejected"] += len(sizes)
                    self._rejected_bytes -= sum(sizes)
        if self.max_bytes is not None and self._total_bytes() > self.max_bytes:
            n_rejected, n_readings = self._evict_locked(self._total_bytes() - self.max_bytes,
                                                        emergency=True)
            dropped["rejected"] += n_rejected
            dropped["size"] += n_readings
        if self._disk_cap is not None and self._total_bytes() > self._disk_cap:
            n_rejected, n_readings = self._evict_locked(self._total_bytes() - self._disk_cap,
                                                        emergency=False, upto_rowid=before_rowid)
            dropped["rejected"] += n_rejected
            dropped["disk"] += n_readings
        readings = dropped["age"] + dropped["size"] + dropped["disk"]
        if readings:
            db.execute("UPDATE meta SET value=value+? WHERE key='dropped_total'", (readings,))
        if dropped["rejected"]:
            db.execute("UPDATE meta SET value=value+? WHERE key='rejected_dropped_total'",
                       (dropped["rejected"],))
        return {k: v for k, v in dropped.items() if v}

    def _evict_locked(self, excess: int, emergency: bool,
                      upto_rowid: int | None = None) -> tuple[int, int]:
        """Delete at least `excess` payload bytes, oldest first: rejected rows, then non-emergency
        readings, then (if `emergency`) emergency readings. Returns (rejected, readings) deleted."""
        db = self._db
        limit = "" if upto_rowid is None else f" AND rowid <= {int(upto_rowid)}"
        stages = [("rejected", "", ()), ("readings", " AND stream != ?" + limit, (EMERGENCY,))]
        if emergency:
            stages.append(("readings", " AND stream = ?" + limit, (EMERGENCY,)))
        counts = {"rejected": 0, "readings": 0}
        for table, cond, args in stages:
            while excess > 0:
                # Walk oldest rows until enough bytes are covered, then delete up to that rowid.
                upto, covered = None, 0
                for rowid, size in db.execute(
                        f"SELECT rowid, length(payload) FROM {table} WHERE 1{cond} "
                        "ORDER BY rowid LIMIT 10000", args):
                    upto, covered = rowid, covered + size
                    if covered >= excess:
                        break
                if upto is None:
                    break
                sizes = [r[0] for r in db.execute(
                    f"DELETE FROM {table} WHERE rowid <= ?{cond} RETURNING length(payload)",
                    (upto, *args))]
                excess -= sum(sizes)
                counts[table] += len(sizes)
                if table == "readings":
                    self._bytes -= sum(sizes)
                    self._depth -= len(sizes)
                else:
                    self._rejected_bytes -= sum(sizes)
        return counts["rejected"], counts["readings"]

    def _make_room_locked(self, nbytes: int) -> dict[str, int]:
        """After SQLITE_FULL: evict about nbytes (never emergency readings) in a transaction of
        its own, so the retried append finds free pages. Returns what was dropped ({} if even
        that could not be written)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            n_rejected, n_readings = self._evict_locked(nbytes, emergency=False)
            if n_readings:
                db.execute("UPDATE meta SET value=value+? WHERE key='dropped_total'", (n_readings,))
            if n_rejected:
                db.execute("UPDATE meta SET value=value+? WHERE key='rejected_dropped_total'",
                           (n_rejected,))
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self._rollback_locked()
            if not _disk_full(e):
                raise
            return {}
        except BaseException:
            self._rollback_locked()
            raise
        return {k: v for k, v in (("rejected", n_rejected), ("disk", n_readings)) if v}

    def _evictable_locked(self) -> bool:
        """Is there anything the disk policy may evict (a rejected or a non-emergency row)?"""
        return self._rejected_bytes > 0 or self._db.execute(
            "SELECT 1 FROM readings WHERE stream != ? LIMIT 1", (EMERGENCY,)).fetchone() is not None

    def _total_bytes(self) -> int:
        return self._bytes + self._rejected_bytes

    def _file_capacity_locked(self) -> int:
        """Payload bytes the file can hold without growing: what it holds now, plus its free
        pages filled as densely as the used ones are (rows carry overhead: counting a free page
        as page_size payload bytes would let the file creep)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free_pages = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        total = self._total_bytes()
        return total if free_pages <= 0 or pages <= free_pages \
            else total * pages // (pages - free_pages)

    def _check_disk_locked(self) -> None:
        """statvfs at most once per disk_check_s; sets or clears the disk cap."""
        if self.min_free_bytes <= 0 and self._disk_cap is None:
            return
        now = self._monotonic()
        if now < self._next_disk_check:
            return
        self._next_disk_check = now + self.disk_check_s
        try:
            st = self._statvfs(str(self.path.parent))
            free = st.f_bavail * st.f_frsize
        except OSError as e:
            self._limited.warning("free space check failed", key=type(e).__name__,
                                  extra={"path": str(self.path.parent), "error": str(e)})
            return
        self._disk_free = free
        if free >= self.min_free_bytes:
            if self._disk_cap is not None:
                log.warning("disk space is back above min_free_bytes: the queue may grow again",
                            extra={"disk_free_bytes": free, "min_free_bytes": self.min_free_bytes})
            self._disk_cap = None
            return
        if self._disk_cap is None:
            # Fixed until the disk recovers: acknowledged rows make room under it, and measuring
            # again would not free a block of the filesystem.
            self._disk_cap = self._file_capacity_locked()
            log.warning("disk nearly full: the queue stops growing; oldest non-emergency readings "
                        "make room for new ones",
                        extra={"disk_free_bytes": free, "min_free_bytes": self.min_free_bytes,
                               "queue_cap_bytes": self._disk_cap, "path": str(self.path)})

    def _log_drops(self, dropped: dict[str, int]) -> None:
        self._limited.warning("queue bound exceeded: dropped oldest readings",
                              key=tuple(sorted(dropped)),
                              extra={"dropped": dropped, "dropped_total": self.dropped_total(),
                                     "rejected_dropped_total": self.rejected_dropped_total(),
                                     "max_bytes": self.max_bytes, "max_age_s": self.max_age_s,
                                     "disk_cap_bytes": self._disk_cap})

    def _recount_locked(self) -> None:
        self._bytes, self._depth = self._db.execute(
            "SELECT COALESCE(SUM(length(payload)), 0), COUNT(*) FROM readings").fetchone()
        self._rejected_bytes = self._db.execute(
            "SELECT COALESCE(SUM(length(payload)), 0) FROM rejected").fetchone()[0]

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
        way of the rows behind it, but kept on disk for inspection or requeue_rejected()
        (`smartcity-edge queue status`, `smartcity-edge queue requeue-rejected`)."""
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
                self._rejected_bytes += r[0]
            return r is not None

    def rejected(self, limit: int = 1000) -> list[tuple[Row, str]]:
        with self._lock:
            cur = self._db.execute("SELECT rowid, seq, stream, topic, payload, enqueued_at, reason "
                                   "FROM rejected ORDER BY rowid LIMIT ?", (limit,))
            return [(Row(*r[:6]), r[6]) for r in cur.fetchall()]

    def requeue_rejected(self) -> int:
        """After fixing the broker's ACL: put rejected rows back at the END of the queue (they keep
        their seq; downstream sees them late, not lost). Safe while an agent has the file open:
        its next append sees the change (data_version)."""
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
        if n:
            self._notify()
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
        """Readings evicted by the size/age bounds or the disk policy since the queue file was
        created (rejected rows are counted apart: rejected_dropped_total)."""
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key='dropped_total'").fetchone()[0]

    def rejected_dropped_total(self) -> int:
        """Rejected rows evicted by the bounds or the disk policy (persisted)."""
        with self._lock:
            return self._db.execute(
                "SELECT value FROM meta WHERE key='rejected_dropped_total'").fetchone()[0]

    def rejected_bytes(self) -> int:
        """Payload bytes in the rejected table (they count towards max_bytes)."""
        with self._lock:
            return self._rejected_bytes

    def refused_total(self) -> dict[str, int]:
        """Readings refused since this process started, by reason: 'disk_low' (nothing left
        to evict under min_free_bytes) and 'disk_full' (SQLite could not write)."""
        with self._lock:
            return dict(self._refused)

    def disk_free_bytes(self) -> int | None:
        """Free bytes of the queue's filesystem at the last check (None: not checked)."""
        with self._lock:
            return self._disk_free

    @property
    def disk_low(self) -> bool:
        """True while the disk policy keeps the queue from growing."""
        return self._disk_cap is not None

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


# command line: `smartcity-edge queue ...` -----------------------------------------------------
QUEUE_FILE = "queue.sqlite3"   # in the agent's data_dir


@cli("smartcity-edge queue")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(
        prog="smartcity-edge queue",
        description="The agent's durable queue: what waits, what the broker refused; put refused "
                    "readings back in line once the broker's ACL is fixed. Safe while the agent runs.")
    p.add_argument("command", choices=("status", "requeue-rejected"),
                   help="status: counts and the oldest refused readings, as JSON; requeue-rejected: "
                        "refused readings go back at the end of the queue (same seq)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the agent's data_dir (default: $SMARTCITY_EDGE_DATA_DIR, else run/edge)")
    p.add_argument("--limit", type=int, default=10, help="status: refused readings listed (default 10)")
    a = p.parse_args(argv)
    data_dir = a.data_dir or Path(os.environ.get("SMARTCITY_EDGE_DATA_DIR") or "run/edge")
    path = data_dir / QUEUE_FILE
    if not path.is_file():
        raise UsageError(f"--data-dir: no queue at {path} (the agent's data_dir holds {QUEUE_FILE})")
    with DurableQueue(path) as q:
        if a.command == "requeue-rejected":
            out: dict[str, Any] = {"requeued": q.requeue_rejected()}
        else:
            now = time.time()
            out = {"rejected_oldest": [
                {"seq": r.seq, "stream": r.stream, "topic": r.topic, "reason": reason,
                 "age_s": round(now - r.enqueued_at, 1)} for r, reason in q.rejected(a.limit)]}
        out = {"path": str(path), "waiting": q.depth(), "waiting_bytes": q.bytes(),
               "oldest_age_s": round(q.oldest_age_s(), 1), "next_seq": q.next_seq(),
               "dropped_total": q.dropped_total(), "rejected": q.rejected_total(),
               "rejected_bytes": q.rejected_bytes(),
               "rejected_dropped_total": q.rejected_dropped_total(), **out}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
