"""smartcity-query: run an analyst's named query (or any .sql file in the same format) on the lake.

    smartcity-query --list
    smartcity-query trip_summary --param devices=demo-bus-01 --param start=2026-03-01
    smartcity-query speed_profile --engine trino --format csv
    smartcity-query my.sql --engine athena --format json
    smartcity-query trip_summary --engine postgres

Engines (analytics.engines): duckdb (default: embedded, reads the lake's Iceberg tables through
the catalog), trino (the local Athena), athena (AWS), postgres (the warehouse's local stand-in,
as smartcity-warehouse loaded it: [postgres] host, port, database, user, password_file, schema). Settings: QuerySettings, from
defaults < TOML (--config) < SMARTCITY_QUERY_* environment < flags; the lake's location uses the
same names as the lake job's ([s3], [catalog], lake).

Exit status: 0 with results; 1 when the engine could not run the query (its message on one
line: an SQL error, a missing table, an engine that does not answer); 2 for a usage mistake (an
unknown query, a missing or malformed parameter, a bad flag or setting).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smartcity.catalog.location import LakeLocation
from smartcity.runtime.cli import ArgumentParser, UsageError, cli, one_line
from smartcity.runtime.obs import configure_logging
from smartcity.runtime.postgres import PostgresConnection
from smartcity.runtime.settings import load as load_settings

from . import named
from .engines import AthenaEngine, DuckDBEngine, EngineError, PostgresEngine, Result, TrinoEngine

PROG = "smartcity-query"
ENV_PREFIX = "SMARTCITY_QUERY_"
ENGINES = ("duckdb", "trino", "athena", "postgres")
FORMATS = ("table", "csv", "json", "parquet")


@dataclass
class Trino:
    endpoint: str = "127.0.0.1:8080"   # the local Athena (python -m deploy.local.stack up --athena)
    user: str = "smartcity"


@dataclass
class Athena:
    workgroup: str = "smartcity"      # its configuration sets the result location and encryption
    database: str = "smartcity"       # the Glue database holding the lake's tables
    region: str | None = None         # default: the AWS provider chain's
    endpoint_url: str | None = None   # an Athena API endpoint other than AWS's (tests)
    output_location: str | None = None  # s3://... when the workgroup does not enforce one


@dataclass
class Postgres(PostgresConnection):
    schema: str = "smartcity"         # the schema smartcity-warehouse loads (its `schema` setting)


@dataclass
class QuerySettings(LakeLocation):
    """Where the lake is (LakeLocation) and which engine runs the query."""
    engine: str = "duckdb"
    trino: Trino = field(default_factory=Trino)
    athena: Athena = field(default_factory=Athena)
    postgres: Postgres = field(default_factory=Postgres)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")


def make_engine(s: QuerySettings):
    if s.engine == "duckdb":
        return DuckDBEngine(s)
    if s.engine == "trino":
        return TrinoEngine(s.trino.endpoint, s.catalog.name, s.catalog.namespace, s.trino.user)
    if s.engine == "postgres":
        return PostgresEngine(s.postgres, s.postgres.schema, s.catalog.namespace)
    a = s.athena
    return AthenaEngine(a.workgroup, a.database, region=a.region, endpoint_url=a.endpoint_url,
                        output_location=a.output_location)


def run_named(name_or_file: str, values: dict[str, str] | None = None,
              settings: QuerySettings | None = None, engine=None) -> Result:
    """Render and run one query; named.QueryError for bad input, EngineError from the engine."""
    s = settings or QuerySettings()
    rendered = named.render(named.load(name_or_file), values)
    own = engine is None
    engine = engine or make_engine(s)
    try:
        return engine.run(rendered.sql)
    finally:
        if own:
            engine.close()


# ---- output --------------------------------------------------------------------------------------

def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1e15 else repr(v)
    return str(v)


def format_table(r: Result) -> str:
    cells = [[_text(v) for v in row] for row in r.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(r.columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()   # noqa: E731
    out = [line(r.columns), line(["-" * w for w in widths])] + [line(row) for row in cells]
    out.append(f"({len(r.rows)} row{'s' if len(r.rows) != 1 else ''}, {r.engine}, {r.elapsed_s * 1000:.0f} ms)")
    return "\n".join(out)


def format_csv(r: Result) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(r.columns)
    for row in r.rows:
        w.writerow([_text(v) for v in row])
    return buf.getvalue()


def format_json(r: Result) -> str:
    """One JSON object per row (JSON lines); timestamps as ISO-8601 UTC."""
    return "".join(json.dumps(dict(zip(r.columns, row)), default=_text) + "\n" for row in r.rows)


# ---- CLI -----------------------------------------------------------------------------------------

def _list() -> str:
    out = []
    for q in named.load_all().values():
        out.append(f"{q.name}\n    {q.answers}")
        for p in q.params:
            out.append(f"    --param {p.name}=<{p.type}>  (default {p.default or 'empty'}){'  ' + p.doc if p.doc else ''}")
    return "\n".join(out)


@cli(PROG)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog=PROG, description="Run a named analyst query (Athena SQL) on the lake.")
    ap.add_argument("query", nargs="?", help="a named query (--list) or a .sql file with the same header")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a query parameter (repeatable); the others keep their defaults")
    ap.add_argument("--engine", choices=ENGINES, help="default duckdb (embedded)")
    ap.add_argument("--format", choices=FORMATS, default="table")
    ap.add_argument("--output", "-o", type=Path, help="write here instead of stdout (parquet: required)")
    ap.add_argument("--lake", help="the lake folder or URI (default: settings, else ./lake)")
    ap.add_argument("--trino", metavar="HOST:PORT", help="the Trino (local Athena) endpoint")
    ap.add_argument("--config", help="a TOML settings file")
    ap.add_argument("--list", action="store_true", help="list the named queries and their parameters")
    ap.add_argument("--sql", action="store_true", help="print the rendered SQL for the engine instead of running it")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the engines' progress (INFO) on stderr")
    a = ap.parse_args(argv)
    # Quiet by default, whatever configured logging before: a refused query is one line on
    # stderr, not the Trino client's retries in front of it.
    configure_logging(logging.INFO if a.verbose else logging.WARNING, json=False)
    if a.list:
        print(_list())
        return 0
    if not a.query:
        ap.error("name a query (or --list)")
    if a.format == "parquet" and not a.output:
        ap.error("--format parquet needs --output FILE")
    overrides: dict[str, Any] = {}
    if a.engine:
        overrides["engine"] = a.engine
    if a.lake:
        overrides["lake"] = a.lake
    if a.trino:
        overrides["trino.endpoint"] = a.trino
    s = load_settings(QuerySettings, a.config, ENV_PREFIX, overrides)
    try:
        values = named.parse_assignments(a.param)
        rendered = named.render(named.load(a.query), values)
    except named.QueryError as e:
        raise UsageError(str(e)) from None
    if a.sql:
        from .engines import to_duckdb, to_postgres
        print(to_duckdb(rendered.sql) if s.engine == "duckdb" else
              to_postgres(rendered.sql, s.catalog.namespace, s.postgres.schema) if s.engine == "postgres" else
              rendered.sql)
        return 0
    engine = make_engine(s)
    try:
        result = engine.run(rendered.sql)
    except EngineError as e:
        print(f"{PROG}: {rendered.query.name}: {one_line(e)}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    if a.format == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(result.to_arrow(), a.output)
        print(f"{len(result.rows)} rows -> {a.output}", file=sys.stderr)
        return 0
    text = {"table": format_table, "csv": format_csv, "json": format_json}[a.format](result)
    if a.output:
        a.output.write_text(text if text.endswith("\n") else text + "\n")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
