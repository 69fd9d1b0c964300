"""Validation of a record against its contract, with errors that name field, value and rule."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from .schema import DOUBLE, INT, INT_RANGE, LONG, STRING, TIMESTAMP, Field, RecordType, record_type

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
            if not TS_RE.fullmatch(value):
                return "must be UTC ISO-8601 with milliseconds and Z (YYYY-MM-DDTHH:MM:SS.sssZ)"
            if not _valid_ts(value):
                return "not a valid calendar date/time"
        if f.max_length is not None and len(value) > f.max_length:
            return f"longer than {f.max_length} characters"
        if f.pattern is not None:
            p = _patterns.get(f.pattern) or _patterns.setdefault(f.pattern, re.compile(f.pattern))
            if not p.fullmatch(value):
                return f"must match {f.pattern}"
    elif t in (INT, LONG):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        lo, hi = INT_RANGE[t]
        if not lo <= value <= hi:
            return f"out of range for a {'32' if t == INT else '64'}-bit int"
    elif t == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if not _finite_double(value):
            return "must be finite"
    if f.enum is not None and value not in f.enum:
        return f"must be one of {list(f.enum)}"
    if f.minimum is not None and value < f.minimum:
        return f"must be >= {f.minimum}"
    if f.maximum is not None and value > f.maximum:
        return f"must be <= {f.maximum}"
    return None


def _finite_double(value: int | float) -> bool:
    # math.isfinite(int) converts to float and raises OverflowError past ~1.8e308: such an int
    # has no double either, so it is as non-finite as inf.
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _valid_ts(value: str) -> bool:
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


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


_checkers: dict[str, Callable[[Any], bool]] = {}


def checker(rt: RecordType | str) -> Callable[[Any], bool]:
    """A yes/no test equivalent to `not violations(rt, record)`, generated from the contract as
    straight-line Python: the bridge tests every message and only a failing one needs the
    explanation, so it pays for `violations` on bad input only (~3x cheaper on good input)."""
    # Cached by name: hashing the frozen RecordType would walk all its fields on every call.
    name = rt if isinstance(rt, str) else rt.name
    try:
        return _checkers[name]
    except KeyError:
        pass
    rt = record_type(rt) if isinstance(rt, str) else rt
    return _checkers.setdefault(rt.name, _generate_checker(rt))


def _generate_checker(rt: RecordType) -> Callable[[Any], bool]:
    env: dict[str, Any] = {"_M": object(), "Mapping": Mapping, "_known": frozenset(rt.field_names),
                           "_finite": _finite_double, "_ts_re": TS_RE.fullmatch, "_valid_ts": _valid_ts,
                           "_slow": lambda r: not violations(rt, r)}
    body = ["def ok(r):",
            # Non-dict mappings are rare (json.loads gives dicts): the generic walk handles them.
            "    if type(r) is not dict: return _slow(r)",
            "    if not r.keys() <= _known: return False"]
    for i, f in enumerate(rt.fields):
        v = f"v{i}"
        body.append(f"    {v} = r.get({f.name!r}, _M)")
        if f.nullable:  # absent or null passes; the rules below apply to a value only
            body.append(f"    if {v} is not None and {v} is not _M:")
            ind = "        "
        else:
            body.append(f"    if {v} is None or {v} is _M: return False")
            ind = "    "
        rules = []
        if f.type in (STRING, TIMESTAMP):
            rules.append(f"type({v}) is not str and not isinstance({v}, str)")
            if f.type == TIMESTAMP:
                rules += [f"not _ts_re({v})", f"not _valid_ts({v})"]
            if f.max_length is not None:
                rules.append(f"len({v}) > {f.max_length}")
            if f.pattern is not None:
                env[f"_p{i}"] = re.compile(f.pattern).fullmatch
                rules.append(f"not _p{i}({v})")
        elif f.type in (INT, LONG):
            lo, hi = INT_RANGE[f.type]
            rules.append(f"type({v}) is not int and (isinstance({v}, bool) or not isinstance({v}, int))")
            rules.append(f"not {lo} <= {v} <= {hi}")
        elif f.type == DOUBLE:
            rules.append(f"type({v}) is not float and type({v}) is not int and "
                         f"(isinstance({v}, bool) or not isinstance({v}, (int, float)))")
            rules.append(f"not _finite({v})")
        else:
            raise ValueError(f"no validation for logical type {f.type!r} of field {f.name}")
        if f.enum is not None:
            env[f"_e{i}"] = frozenset(f.enum)
            rules.append(f"{v} not in _e{i}")
        if f.minimum is not None:
            rules.append(f"{v} < {f.minimum!r}")
        if f.maximum is not None:
            rules.append(f"{v} > {f.maximum!r}")
        body += [f"{ind}if {r}: return False" for r in rules]
    body.append("    return True")
    exec(compile("\n".join(body), f"<contract {rt.name}>", "exec"), env)  # noqa: S102 - our own text
    return env["ok"]
