"""Turns sensor readings into contract records and puts them in the durable queue.

The sequence number is allocated inside the queue's transaction, so the event_id
({device_id}:{boot_id}:{seq}) is fixed the moment a reading is stored: a replay after an outage or
a restart publishes the very same id, and downstream deduplicates on it.
"""
from __future__ import annotations

import logging
import secrets
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator

import smartcity.contracts as contracts
from smartcity.contracts import SCHEMA_VERSION, ContractError, event_id, format_ts, mqtt_topic

log = logging.getLogger("smartcity.edge.recorder")


class Recorder:
    def __init__(self, queue, device_id: str, source: str,
                 now: Callable[[], tuple[datetime, str]], boot_id: str | None = None):
        self.queue = queue
        self.device_id = device_id
        self.source = source
        self.now = now
        # Random per process start: keeps ids unique even if the persisted seq were ever lost.
        self.boot_id = boot_id or secrets.token_hex(4)
        self._topics = {s: mqtt_topic(device_id, s) for s in contracts.STREAMS}
        self.records_total: dict[str, int] = {s: 0 for s in contracts.STREAMS}
        self.invalid_total: dict[str, int] = {s: 0 for s in contracts.STREAMS}
        self._local = threading.local()   # .pending: this thread's open batch(), else None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Readings this thread emits inside the block are stored together when it ends, in one
        queue transaction (one fsync instead of one per reading), in the order emitted; none of
        them is queued (or published) before that commit. For a driver that gets several readings
        at once, like a GPS read holding several reporting cycles. emit() returns None inside the
        block (the seqs are allocated at the commit); readings emitted before an exception in the
        block are still stored. Other threads' emits are not part of it. Nested blocks store at
        the end of the outermost."""
        local = self._local
        if getattr(local, "pending", None) is not None:
            yield
            return
        local.pending = []
        try:
            yield
        finally:
            pending, local.pending = local.pending, None
            if pending:
                self._store(pending)

    def _store(self, items: list[tuple[str, Callable[[int], tuple[str, bytes]]]]) -> list[int | None]:
        seqs = self.queue.append_many(items)
        for (stream, _), seq in zip(items, seqs):
            if seq is not None:
                self.records_total[stream] += 1
        return seqs

    def emit(self, stream: str, fields: dict[str, Any], ts: datetime | None = None,
             clock: str | None = None) -> int | None:
        """Queue one record; returns its seq, or None when the reading broke the contract (counted
        and logged with every violation: a producer bug must be loud, not a silent drop) or the
        queue refused it because the disk is full (counted and logged by the queue), and inside
        batch(), where the reading is stored when the block ends."""
        if ts is None:
            ts, clock = self.now()
        rt = contracts.record_type(stream)
        ts_text = format_ts(ts)
        envelope = {"device_id": self.device_id, "ts": ts_text, "clock": clock,
                    "source": self.source, "schema_version": SCHEMA_VERSION}
        # Validate before a seq is allocated, so an invalid reading leaves no hole in seq.
        probe = {**envelope, **fields, "event_id": event_id(self.device_id, self.boot_id, 0), "seq": 0}
        if not contracts.checker(rt)(probe):
            e = ContractError(rt.name, contracts.violations(rt, probe))
            self.invalid_total[stream] += 1
            log.error("reading rejected by contract", extra={"stream": stream, "error": str(e)})
            return None

        def build(seq: int) -> tuple[str, bytes]:
            rec = {"event_id": event_id(self.device_id, self.boot_id, seq), "seq": seq,
                   **envelope, **fields}
            return self._topics[stream], contracts.encode(rt, rec)

        pending = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append((stream, build))
            return None
        return self._store([(stream, build)])[0]
