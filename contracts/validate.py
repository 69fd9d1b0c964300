"""Validation of a record against its contract, with errors that name field, value and rule."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from .schema import DOUBLE, INT, LONG, STRING, TIMESTAMP, Field, RecordType, record_type

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_patterns: dict[str, re.Pattern[str]] = {}


@dataclass(frozen=True)
class Violation:
    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        v = repr(self.value)
        if len(v) > 80:
            v = v[:77] + "..."
        return f"{self.field}={v}: {self.rule}"


class ContractError(ValueError):
    def __init__(self, record: str, violations: list[Violation]):
        self.record = record
        self.violations = violations
        super().__init__(f"{record}: " + "; ".join(str(v) for v in violations))


def _check(f: Field, value: Any) -> str | None:
    if value is None:
        return None if f.nullable else "required, must not be null"
    t = f.type
    if t == STRING or t == TIMESTAMP:
        if not isinstance(value, str):
            return f"must be a string, got {type(value).__name__}"
        if t == TIMESTAMP:
            if not TS_RE.match(value):
                return "must be UTC ISO-8601 with milliseconds and Z (YYYY-MM-DDTHH:MM:SS.sssZ)"
            try:
                datetime.fromisoformat(value[:-1])
            except ValueError:
                return "not a valid calendar date/time"
        if f.max_length is not None and len(value) > f.max_length:
            return f"longer than {f.max_length} characters"
        if f.pattern is not None:
            p = _patterns.get(f.pattern) or _patterns.setdefault(f.pattern, re.compile(f.pattern))
            if not p.search(value):
                return f"must match {f.pattern}"
    elif t in (INT, LONG):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
    elif t == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return "must be finite"
    if f.enum is not None and value not in f.enum:
        return f"must be one of {list(f.enum)}"
    if f.minimum is not None and value < f.minimum:
        return f"must be >= {f.minimum}"
    if f.maximum is not None and value > f.maximum:
        return f"must be <= {f.maximum}"
    return None


def violations(rt: RecordType | str, record: Any) -> list[Violation]:
    """Every way `record` breaks its contract (empty when valid). Unknown fields are violations:
    a typo in a producer should not become a silently missing column."""
    if isinstance(rt, str):
        rt = record_type(rt)
    if not isinstance(record, Mapping):
        return [Violation("<record>", type(record).__name__, "must be a JSON object")]
    out = []
    for f in rt.fields:
        if f.name not in record:
            if not f.nullable:
                out.append(Violation(f.name, None, "required field is missing"))
            continue
        rule = _check(f, record[f.name])
        if rule:
            out.append(Violation(f.name, record[f.name], rule))
    known = set(rt.field_names)
    for k in record:
        if k not in known:
            out.append(Violation(str(k), record[k], "unknown field"))
    return out


def validate(rt: RecordType | str, record: Any) -> Mapping[str, Any]:
    """Return `record` unchanged when valid, else raise ContractError listing every violation."""
    if isinstance(rt, str):
        rt = record_type(rt)
    v = violations(rt, record)
    if v:
        raise ContractError(rt.name, v)
    return record
