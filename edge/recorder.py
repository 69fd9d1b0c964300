"""Turns sensor readings into contract records and puts them in the durable queue.

The sequence number is allocated inside the queue's transaction, so the event_id
({device_id}:{boot_id}:{seq}) is fixed the moment a reading is stored: a replay after an outage or
a restart publishes the very same id, and downstream deduplicates on it.
"""
from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any, Callable

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

    def emit(self, stream: str, fields: dict[str, Any], ts: datetime | None = None,
             clock: str | None = None) -> int | None:
        """Queue one record; returns its seq, or None when the reading broke the contract (counted
        and logged with every violation: a producer bug must be loud, not a silent drop) or the
        queue refused it because the disk is full (counted and logged by the queue)."""
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

        seq = self.queue.append(stream, build)
        if seq is not None:
            self.records_total[stream] += 1
        return seq
