"""The canonical wire encoding of a record: what producers put on MQTT and Kafka.

Canonical means: UTF-8 JSON, compact separators, the contract's fields in the contract's order,
every field present (a missing nullable field is written as null), no NaN or Infinity. Consumers
accept any JSON that satisfies the contract; the canonical form is what lets the lake job prove
a record valid with a typed parse and a byte comparison instead of checking each value's JSON
type (spark_jobs.validation.conforms), the way a record from a non-canonical producer is checked.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from .schema import RecordType, record_type


def encode(rt: RecordType | str, record: Mapping[str, Any]) -> bytes:
    """Canonical bytes of `record`. Fields outside the contract are kept, after the contract's, so
    encoding never hides a producer bug from validation."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    ordered = {name: record.get(name) for name in rt.field_names}
    ordered.update((k, v) for k, v in record.items() if k not in ordered)
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
