"""The analysts' named queries: one Athena SQL file per question in analytics/queries/, and how a
file's parameters become SQL.

A file starts with a header of `--` lines:

    -- name: trip_summary
    -- answers: Per device and trip ...
    -- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
    -- param devices: list =  -- device_ids, comma-separated; empty: every device

and its SQL names each parameter as `{{name}}`. The SQL is Athena's (engine v3, Trino's dialect)
and reads the lake's tables as `smartcity.<table>` (the Glue database; the local Athena's session
catalog is the lake's). render() puts typed SQL literals in place of the placeholders, so what runs
on Athena or Trino is plain SQL with no parameter syntax of any engine; the embedded engine runs
the same text translated to DuckDB's dialect (analytics.engines).

Parameter types: timestamp (UTC; `2026-03-01`, `2026-03-01 08:00`, `2026-03-01T08:00:00Z`),
double, bigint, varchar, list (comma-separated varchar values; empty means "no filter" by the
queries' convention `cardinality({{devices}}) = 0 OR contains({{devices}}, device_id)`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from smartcity.catalog.sqltext import sql_string

PARAM_TYPES = ("timestamp", "double", "bigint", "varchar", "list")
_HEADER_RE = re.compile(r"^--\s*(name|answers|param)\b\s*(.*)$")
_PARAM_RE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\s*:\s*(?P<type>[a-z]+)\s*=\s*(?P<default>.*?)"
                       r"\s*(?:--\s*(?P<doc>.*))?$")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class QueryError(ValueError):
    """A query file or a parameter that cannot be used: the message says which and why."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    doc: str = ""


@dataclass(frozen=True)
class NamedQuery:
    name: str
    answers: str
    params: tuple[Param, ...]
    sql: str                 # the template, placeholders included
    path: Path | None = None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise QueryError(f"{self.name}: no parameter {name!r}; it takes "
                         f"{', '.join(p.name for p in self.params) or 'none'}")


@dataclass
class Rendered:
    """A query with its parameter values: the SQL to run and the values used."""
    query: NamedQuery
    values: dict[str, str] = field(default_factory=dict)
    sql: str = ""


def parse(text: str, path: Path | None = None, default_name: str | None = None) -> NamedQuery:
    """A NamedQuery from a file's text. Raises QueryError naming the file and the line at fault:
    a malformed param line, an unknown type, a placeholder without a param line, or the reverse."""
    where = str(path) if path else (default_name or "query")
    name, answers, params = default_name, "", []
    body_start = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _HEADER_RE.match(line.strip())
        if not line.strip().startswith("--"):
            body_start = i
            break
        body_start = i + 1
        if not m:
            continue
        key, rest = m.group(1), m.group(2).lstrip(":").strip()
        if key == "name":
            name = rest
        elif key == "answers":
            answers = rest
        else:
            pm = _PARAM_RE.match(rest)
            if not pm:
                raise QueryError(f"{where}:{i + 1}: a param line is '-- param NAME: TYPE = DEFAULT "
                                 f"[-- doc]', not {line.strip()!r}")
            if pm.group("type") not in PARAM_TYPES:
                raise QueryError(f"{where}:{i + 1}: parameter {pm.group('name')}: type must be one of "
                                 f"{', '.join(PARAM_TYPES)}, not {pm.group('type')!r}")
            params.append(Param(pm.group("name"), pm.group("type"), pm.group("default"),
                                (pm.group("doc") or "").strip()))
    if not name or not _NAME_RE.match(name):
        raise QueryError(f"{where}: a query needs '-- name: NAME' (lower-case SQL identifier), got {name!r}")
    sql = "\n".join(lines[body_start:]).strip().rstrip(";").strip()
    if not sql:
        raise QueryError(f"{where}: no SQL after the header")
    used = set(_PLACEHOLDER_RE.findall(sql))
    declared = {p.name for p in params}
    if used - declared:
        raise QueryError(f"{where}: {{{{{sorted(used - declared)[0]}}}}} is used but has no "
                         "'-- param' line")
    if declared - used:
        raise QueryError(f"{where}: parameter {sorted(declared - used)[0]} is declared but not used")
    q = NamedQuery(name, answers, tuple(params), sql, path)
    for p in params:   # a default must itself be a valid value
        literal(q, p, p.default)
    return q


def queries_dir() -> Path:
    return Path(str(resources.files("smartcity.analytics") / "queries"))


def load_all() -> dict[str, NamedQuery]:
    """Every named query shipped with the package, by name."""
    out = {}
    for f in sorted(queries_dir().glob("*.sql")):
        q = parse(f.read_text(), f, f.stem)
        if q.name != f.stem:
            raise QueryError(f"{f}: its name ({q.name}) must be the file's name")
        out[q.name] = q
    return out


def load(name_or_file: str) -> NamedQuery:
    """A named query by name, or any .sql file with the same header format."""
    if name_or_file.endswith(".sql"):
        p = Path(name_or_file)
        try:
            text = p.read_text()
        except OSError as e:
            raise QueryError(f"cannot read {p}: {e.strerror or e}") from None
        return parse(text, p, p.stem)
    queries = load_all()
    if name_or_file not in queries:
        raise QueryError(f"unknown query {name_or_file!r}; named queries: {', '.join(queries)} "
                         "(or a path to a .sql file)")
    return queries[name_or_file]


def parse_timestamp(text: str) -> datetime:
    """A UTC instant from `2026-03-01`, `2026-03-01 08:00[:00[.250]]`, `...T...Z` or `+00:00`."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise QueryError(f"expected a timestamp like 2026-03-01 or 2026-03-01T08:00:00Z, got {text!r}") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def literal(q: NamedQuery, p: Param, value: str) -> str:
    """The Athena SQL literal of `value` for parameter p; QueryError when it is not one."""
    try:
        if p.type == "timestamp":
            t = parse_timestamp(value)
            return f"TIMESTAMP '{t.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]} UTC'"
        if p.type == "double":
            x = float(value)
            if not math.isfinite(x):
                raise ValueError
            return repr(x)
        if p.type == "bigint":
            return str(int(value))
        if p.type == "varchar":
            return sql_string(value)
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            return "CAST(ARRAY[] AS ARRAY(VARCHAR))"
        return "ARRAY[" + ", ".join(sql_string(v) for v in items) + "]"
    except (ValueError, QueryError):
        raise QueryError(f"{q.name}: parameter {p.name} ({p.type}): {value!r} is not a "
                         f"{p.type}" + (" (e.g. 2026-03-01T08:00:00Z)" if p.type == "timestamp" else "")
                         ) from None


def render(q: NamedQuery, values: dict[str, str] | None = None) -> Rendered:
    """The query's Athena SQL with each parameter's value (or default) as a SQL literal."""
    values = dict(values or {})
    for k in values:
        q.param(k)   # an unknown parameter is an error, never ignored
    used = {p.name: values.get(p.name, p.default) for p in q.params}
    literals = {p.name: literal(q, p, used[p.name]) for p in q.params}
    sql = _PLACEHOLDER_RE.sub(lambda m: literals[m.group(1)], q.sql)
    return Rendered(q, used, sql)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`--param k=v` values as a dict; QueryError for one without '='."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise QueryError(f"--param {item!r}: expected NAME=VALUE")
        out[k.strip()] = v
    return out
