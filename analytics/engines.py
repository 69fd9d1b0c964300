"""Where an analyst's query runs: the same Athena SQL on three engines.

- DuckDB (embedded, the default, no JVM): the SQL translated with sqlglot from Athena's dialect to
  DuckDB's, over views `smartcity.<table>` = `iceberg_scan(<the table's current metadata file>)`,
  resolved through the lake's catalog (catalog.reader) when the query runs, so it reads the
  snapshot the catalog names at that moment, like Athena does.
- Trino (the local Athena: deploy/local/trino.py runs it over the same catalog): the SQL unchanged,
  session catalog = the lake's catalog name, schema = its namespace, time zone UTC.
- Athena (AWS): the SQL unchanged, through boto3's start_query_execution in a workgroup, polled,
  results paginated.

Each returns a Result: column names and rows of Python values (timestamps as UTC datetimes).
Errors are EngineError with the engine's own message (an unknown column, a missing table, an
engine that does not answer).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Sequence

from smartcity.catalog.location import LakeLocation
from smartcity.catalog.sqltext import iceberg_scan, sql_name

# sqlglot's translation is checked against both engines by tests/test_analytics.py; one
# construct it does not translate is rewritten here (spherical_distance).
DUCKDB_EXTENSIONS = ("avro", "iceberg", "spatial")


class EngineError(RuntimeError):
    """A query an engine could not run: the message is the engine's, prefixed with the engine."""


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]
    engine: str
    elapsed_s: float = 0.0

    def to_arrow(self):
        import pyarrow as pa
        return pa.Table.from_pylist([dict(zip(self.columns, r)) for r in self.rows]) if self.rows else \
            pa.table({c: pa.array([], pa.null()) for c in self.columns})


def plain(value: Any) -> Any:
    """One engine-independent Python value: Decimal -> float, datetimes in UTC."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000}


def arrow_rows(table) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of an Arrow table, each value as plain() makes it, converted a column at a
    time: decimals cast to float64 by Arrow; timestamps (a naive one taken as UTC) from their
    microseconds since the epoch as datetimes in UTC; intervals as timedelta (a month as 30 days,
    as DuckDB's own Python values). Row by row through fetchall() and plain(), or through Arrow's
    own datetimes with a zone, the conversion cost more than the query on a large answer
    (weather_along_route, 112,500 rows: the SQL ~0.6 s, fetchall + plain ~1.1 s more, Arrow's
    datetimes in UTC 0.4 s for the one timestamp column, this ~0.05 s; 2026-12-03)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    values = []
    for col in table.columns:
        t = col.type
        if pa.types.is_decimal(t):
            values.append(col.cast(pa.float64()).to_pylist())
        elif pa.types.is_timestamp(t):
            # The same instant whatever the column's zone: Arrow stores UTC.
            us = col.cast(pa.int64())
            if t.unit != "us":   # Python's datetimes hold microseconds: nanoseconds truncated
                us = pc.divide(us, 1000) if t.unit == "ns" else pc.multiply(us, _US_PER_UNIT[t.unit])
            values.append([None if v is None else _EPOCH_UTC + timedelta(microseconds=v) for v in us.to_pylist()])
        elif pa.types.is_interval(t):
            values.append([None if v is None else timedelta(days=v.months * 30 + v.days, microseconds=v.nanoseconds // 1000)
                           for v in col.to_pylist()])
        else:
            values.append(col.to_pylist())
    return list(table.column_names), (list(zip(*values)) if values else [])


# ---- DuckDB --------------------------------------------------------------------------------------

def spherical_points(node):
    """((lon1, lat1), (lon2, lat2)) of Athena's ST_Distance(to_spherical_geography(ST_Point(lon1,
    lat1)), to_spherical_geography(ST_Point(lon2, lat2))) (metres on the sphere), or None for any
    other node (a planar ST_Distance among them)."""
    from sqlglot import exp
    if not isinstance(node, exp.StDistance):
        return None
    points = []
    for arg in (node.this, node.expression):
        if not (isinstance(arg, exp.Anonymous) and arg.name.lower() == "to_spherical_geography"
                and len(arg.expressions) == 1 and isinstance(arg.expressions[0], exp.StPoint)):
            return None
        p = arg.expressions[0]
        points.append((p.this, p.expression))
    return tuple(points)


def spherical_distance(node):
    """Athena's spherical ST_Distance (spherical_points) -> DuckDB spatial's
    ST_Distance_Sphere(ST_Point(lat1, lon1), ST_Point(lat2, lon2)): DuckDB has no spherical
    geography type, and its function takes points as (lat, lon). A planar ST_Distance stays:
    DuckDB's own means the same."""
    from sqlglot import exp
    points = spherical_points(node)
    if points is None:
        return node
    return exp.Anonymous(this="ST_Distance_Sphere", expressions=[
        exp.Anonymous(this="ST_Point", expressions=[lat.copy(), lon.copy()]) for lon, lat in points])


# Units date_trunc can compute from the epoch in UTC (a day is 86,400 s in UTC; weeks, months
# and years are left to date_trunc).
_TRUNC_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


def _epoch_s(ts):
    """Seconds since the epoch of a timestamp, as DuckDB computes it fast: epoch_us(ts) / 1e6.
    DuckDB's epoch() on a timestamp with time zone costs ~5x as much (129 vs 26 ms over 6.75 M
    rows here, bench query's lake), and its answer is not the correctly rounded quotient (seconds
    plus microseconds times 1e-6: off by an ulp for a quarter of random instants); the
    quotient is what Trino's to_unixtime gives for the lake's millisecond event times."""
    from sqlglot import exp
    micros = exp.Anonymous(this="epoch_us", expressions=[ts])
    return exp.Paren(this=exp.Div(this=micros, expression=exp.Literal.number("1000000.0")))


def epoch_seconds(node):
    """to_unixtime(ts) -> (epoch_us(ts) / 1000000.0) for DuckDB (see _epoch_s)."""
    from sqlglot import exp
    if not isinstance(node, exp.TimeToUnix):
        return node
    return _epoch_s(node.this.copy())


def millis_diff(node):
    """date_diff('millisecond', a, b) -> (epoch_ms(b) - epoch_ms(a)) for DuckDB: Trino subtracts
    the two instants' epoch milliseconds, and DuckDB's own date_diff on a timestamp with time zone
    goes through ICU's calendar (ingest_delay over 10.26 M rows here: 5.3 s with it, 0.8 s without)."""
    from sqlglot import exp
    unit = node.args.get("unit") if isinstance(node, exp.DateDiff) else None
    if unit is None or unit.name.upper() != "MILLISECOND":
        return node
    ms = [exp.Anonymous(this="epoch_ms", expressions=[a.copy()]) for a in (node.this, node.expression)]
    return exp.Paren(this=exp.Sub(this=ms[0], expression=ms[1]))


def _anonymous(node, name: str, args: int):
    """The arguments of a call sqlglot leaves as an unknown function `name` with `args` of them."""
    from sqlglot import exp
    if isinstance(node, exp.Anonymous) and node.name.lower() == name and len(node.expressions) == args:
        return [a.copy() for a in node.expressions]
    return None


def bit_functions(node, postgres: bool = False):
    """Athena's bitwise_left_shift(x, n) -> x << n, and bit_count(x, 64) (the 1 bits of a bigint)
    -> bit_count(x) on DuckDB, bit_count(x::bit(64)) on PostgreSQL, which count the same bits;
    sqlglot leaves both as unknown functions. bit_count of a narrower width stays (no rewrite is
    known to be the same)."""
    from sqlglot import exp
    shift = _anonymous(node, "bitwise_left_shift", 2)
    if shift is not None:
        value, by = shift
        if postgres:    # PostgreSQL shifts by an int
            by = exp.Cast(this=by, to=exp.DataType.build("int"))
        return exp.Paren(this=exp.BitwiseLeftShift(this=value, expression=by))
    count = _anonymous(node, "bit_count", 2)
    if count is not None and count[1].is_int and count[1].to_py() == 64:
        x = count[0]
        x = exp.Cast(this=x, to=exp.DataType.build("bit(64)", dialect="postgres")) if postgres else x
        return exp.Anonymous(this="bit_count", expressions=[x])
    return node


def epoch_trunc(node):
    """date_trunc('minute'|'second'|'hour'|'day', ts) -> to_timestamp(floor(epoch(ts) / N) * N)
    for DuckDB. The same instant (the session is UTC, which Athena's always is), ~10x faster on a
    timestamp with time zone: DuckDB's date_trunc on one goes through ICU's calendar (7.3 s vs
    0.7 s over 6.75 M rows here, bench query)."""
    from sqlglot import exp
    if not isinstance(node, exp.TimestampTrunc):
        return node
    unit = node.args.get("unit")
    n = _TRUNC_SECONDS.get(unit.name.upper() if unit is not None else "")
    if n is None:
        return node
    seconds = _epoch_s(node.this.copy())
    floored = exp.Anonymous(this="floor", expressions=[exp.Div(this=seconds, expression=exp.Literal.number(n))])
    return exp.Anonymous(this="to_timestamp", expressions=[exp.Mul(this=floored, expression=exp.Literal.number(n))])


def exact_quantile(node):
    """approx_percentile(x, p) -> quantile_disc(x, p) for DuckDB: the exact quantile (a value of
    x, as Trino's qdigest answer is) satisfies any approximation's guarantee, and DuckDB computes
    it faster than its own t-digest approx_quantile (0.49 s vs 0.98 s per call over 6.75 M rows
    grouped by device and hour, bench query's lake)."""
    from sqlglot import exp
    if not isinstance(node, exp.ApproxQuantile) or node.args.get("accuracy") or node.args.get("weight"):
        return node
    return exp.Anonymous(this="quantile_disc", expressions=[node.this.copy(), node.args["quantile"].copy()])


def shared_quantiles(node):
    """Several approx_percentile(x, p_i) of one x in one SELECT -> list_extract(quantile_disc(x,
    [p_1, ..., p_n]), i) for DuckDB: the same list quantile in every column is one aggregate to
    DuckDB, so x is gathered and sorted once instead of once per percentile (ingest_delay over 10 M
    rows: 2.35 -> 1.75 s of CPU). Runs before exact_quantile, which takes the single ones."""
    from sqlglot import exp
    if not isinstance(node, exp.Select):
        return node
    by_arg: dict[str, list] = {}
    for q in node.find_all(exp.ApproxQuantile):
        if q.parent_select is node and not (q.args.get("accuracy") or q.args.get("weight")) \
                and isinstance(q.args["quantile"], exp.Literal):
            by_arg.setdefault(q.this.sql(), []).append(q)
    for calls in by_arg.values():
        ps = sorted({float(q.args["quantile"].name) for q in calls})
        if len(ps) < 2:
            continue
        for q in calls:
            shared = exp.Anonymous(this="quantile_disc", expressions=[
                q.this.copy(), exp.Array(expressions=[exp.Literal.number(repr(p)) for p in ps])])
            index = exp.Literal.number(ps.index(float(q.args["quantile"].name)) + 1)
            q.replace(exp.Anonymous(this="list_extract", expressions=[shared, index]))
    return node


def rewrite_innermost_first(tree, rewrite):
    """`rewrite` applied to every node of `tree`, children before their parent, so that a
    rewritten call inside another (round(max_by(...), 1); bit_count(... bitwise_left_shift(...)))
    is rewritten too and kept: a top-down sqlglot transform does not look inside the node it
    puts in place of one. Returns the (possibly new) root."""
    for node in reversed(list(tree.walk(bfs=False))):
        new = rewrite(node)
        if new is not node:
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


# What DuckDB needs of Athena SQL beyond sqlglot's translation, in order; then the percentiles.
DUCKDB_REWRITES = (spherical_distance, epoch_trunc, epoch_seconds, millis_diff, bit_functions)
DUCKDB_PERCENTILES = (shared_quantiles, exact_quantile)


def to_duckdb(sql: str, percentiles=DUCKDB_PERCENTILES) -> str:
    """Athena SQL -> DuckDB SQL: sqlglot, each of DUCKDB_REWRITES, then `percentiles` (the
    parity tests put their own bounds there)."""
    import sqlglot
    from sqlglot.errors import ParseError
    try:
        tree = sqlglot.parse_one(sql, read="athena")
    except ParseError as e:
        raise EngineError(f"duckdb: the query does not parse as Athena SQL: {e}") from None
    for rewrite in DUCKDB_REWRITES + tuple(percentiles):
        tree = rewrite_innermost_first(tree, rewrite)
    return tree.sql(dialect="duckdb")


def referenced_tables(sql: str, namespace: str) -> list[str]:
    """The tables of `namespace` an Athena query reads (`namespace.table`), in first-use order."""
    import sqlglot
    from sqlglot import exp
    out = []
    for t in sqlglot.parse_one(sql, read="athena").find_all(exp.Table):
        if t.db == namespace and t.name not in out:
            out.append(t.name)
    return out


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, location: LakeLocation, threads: int | None = None):
        self.location = location
        self.threads = threads
        self._con = None

    def connection(self):
        if self._con is None:
            from smartcity.catalog.reader import duckdb_connection
            config = {"threads": str(self.threads)} if self.threads else None
            self._con = duckdb_connection(config=config, extensions=DUCKDB_EXTENSIONS, location=self.location)
        return self._con

    def bind_tables(self, con, sql: str) -> None:
        """(Re)point the views smartcity.<table> at each table's current metadata file."""
        from smartcity.catalog.reader import load_table
        ns = self.location.catalog.namespace
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_name(ns)}")
        for table in referenced_tables(sql, ns):
            t = load_table(self.location, table)
            if t is None:
                raise EngineError(f"duckdb: table {ns}.{table} does not exist in the lake's catalog "
                                  f"({self.location.lake}); the lake job creates it "
                                  "(smartcity-lake tables, or its first batch)")
            con.execute(f"CREATE OR REPLACE VIEW {sql_name(ns)}.{sql_name(table)} AS "
                        f"SELECT * FROM {iceberg_scan(t.metadata_location)}")

    def run(self, sql: str) -> Result:
        import duckdb
        t0 = time.perf_counter()
        con = self.connection()
        self.bind_tables(con, sql)
        try:
            columns, rows = arrow_rows(con.execute(to_duckdb(sql)).to_arrow_table())
        except duckdb.Error as e:
            raise EngineError(f"duckdb: {e}") from None
        return Result(columns, rows, self.name, time.perf_counter() - t0)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


# ---- Trino ---------------------------------------------------------------------------------------

def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """'127.0.0.1:8080' or 'http://127.0.0.1:8080' -> ('127.0.0.1', 8080)."""
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


def trino_connect(endpoint: str, catalog: str = "lake", schema: str = "smartcity", user: str = "smartcity",
                  timezone: str = "UTC", request_timeout_s: float = 60.0, **kw: Any):
    """A DB-API connection (the `trino` client) with the session pinned to UTC (a client zone of
    Asia/Bangkok moves day and hour windows) and the lake's catalog and namespace as defaults. A
    failed query raises trino.exceptions.TrinoQueryError carrying Trino's message."""
    import trino
    # The client sets INFO on its own logger when imported ("failed after 3 attempts" on every
    # refused connection); the process's configured level decides instead.
    logging.getLogger("trino").setLevel(logging.NOTSET)
    host, port = parse_endpoint(endpoint)
    return trino.dbapi.connect(host=host, port=port, user=user, catalog=catalog, schema=schema,
                               timezone=timezone, http_scheme="http",
                               request_timeout=request_timeout_s, **kw)


def trino_query(endpoint: str, sql: str, params: Sequence[Any] | None = None, **connect_kw: Any) -> list[tuple]:
    """Run one statement and return all its rows (each a tuple)."""
    conn = trino_connect(endpoint, **connect_kw)
    try:
        cur = conn.cursor()
        cur.execute(sql, params) if params is not None else cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


class TrinoEngine:
    name = "trino"

    def __init__(self, endpoint: str, catalog: str = "lake", schema: str = "smartcity", user: str = "smartcity"):
        self.endpoint, self.catalog, self.schema, self.user = endpoint, catalog, schema, user

    def run(self, sql: str) -> Result:
        from trino.exceptions import TrinoConnectionError, TrinoQueryError
        t0 = time.perf_counter()
        try:
            conn = trino_connect(self.endpoint, self.catalog, self.schema, self.user)
            try:
                cur = conn.cursor()
                cur.execute(sql)
                rows = cur.fetchall()
                columns = [d[0] for d in cur.description]
            finally:
                conn.close()
        except TrinoQueryError as e:
            raise EngineError(f"trino: {e.error_name}: {e.message}") from None
        except TrinoConnectionError:
            raise EngineError(f"trino: no Trino answers at {self.endpoint} (start the local Athena: "
                              "python -m deploy.local.stack up --athena)") from None
        return Result(columns, [tuple(plain(v) for v in r) for r in rows], self.name,
                      time.perf_counter() - t0)

    def close(self) -> None:
        pass


# ---- Athena --------------------------------------------------------------------------------------

# Athena returns every value as text; the column's type says how to read it back.
_ATHENA_NUMBERS = {"tinyint": int, "smallint": int, "integer": int, "bigint": int,
                   "double": float, "float": float, "real": float, "decimal": float}


def _athena_value(text: str | None, athena_type: str) -> Any:
    if text is None:
        return None
    base = athena_type.split("(")[0].lower()
    if base in _ATHENA_NUMBERS:
        return _ATHENA_NUMBERS[base](text)
    if base == "boolean":
        return text == "true"
    if base.startswith("timestamp"):
        s = text.replace(" UTC", "").strip()
        return plain(datetime.fromisoformat(s))
    return text


class AthenaEngine:
    """Amazon Athena through boto3: the query starts in `workgroup` (whose configuration sets the
    result location and encryption), with the Glue database `database` as its default; polled
    every poll_s until it succeeds, fails or is cancelled; results paginated."""
    name = "athena"

    def __init__(self, workgroup: str, database: str = "smartcity", catalog: str = "AwsDataCatalog",
                 region: str | None = None, endpoint_url: str | None = None,
                 output_location: str | None = None, poll_s: float = 0.5, timeout_s: float = 600.0):
        import boto3
        self.client = boto3.client("athena", region_name=region, endpoint_url=endpoint_url)
        self.workgroup, self.database, self.catalog = workgroup, database, catalog
        self.output_location, self.poll_s, self.timeout_s = output_location, poll_s, timeout_s

    def run(self, sql: str) -> Result:
        from botocore.exceptions import BotoCoreError, ClientError
        t0 = time.perf_counter()
        try:
            kw: dict[str, Any] = {"QueryString": sql, "WorkGroup": self.workgroup,
                                  "QueryExecutionContext": {"Database": self.database, "Catalog": self.catalog}}
            if self.output_location:
                kw["ResultConfiguration"] = {"OutputLocation": self.output_location}
            qid = self.client.start_query_execution(**kw)["QueryExecutionId"]
            while True:
                status = self.client.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
                state = status["State"]
                if state == "SUCCEEDED":
                    break
                if state in ("FAILED", "CANCELLED"):
                    raise EngineError(f"athena: query {qid} {state.lower()}: "
                                      f"{status.get('StateChangeReason', 'no reason given')}")
                if time.perf_counter() - t0 > self.timeout_s:
                    self.client.stop_query_execution(QueryExecutionId=qid)
                    raise EngineError(f"athena: query {qid} still {state.lower()} after {self.timeout_s:g} s; stopped")
                time.sleep(self.poll_s)
            columns: list[str] = []
            types: list[str] = []
            rows: list[tuple] = []
            first = True
            for page in self.client.get_paginator("get_query_results").paginate(QueryExecutionId=qid):
                rs = page["ResultSet"]
                if not columns:
                    meta = rs.get("ResultSetMetadata", {}).get("ColumnInfo", [])
                    columns = [c["Name"] for c in meta]
                    types = [c.get("Type", "varchar") for c in meta]
                data = rs.get("Rows", [])
                if first and data:
                    data = data[1:]   # the first row of the first page repeats the column names
                first = False
                for r in data:
                    cells = [d.get("VarCharValue") for d in r.get("Data", [])]
                    rows.append(tuple(_athena_value(v, t) for v, t in zip(cells, types)))
        except (ClientError, BotoCoreError) as e:
            raise EngineError(f"athena: {e}") from None
        return Result(columns, rows, self.name, time.perf_counter() - t0)

    def close(self) -> None:
        pass


# ---- PostgreSQL (the warehouse's local stand-in) -------------------------------------------------
# sqlglot's Athena -> PostgreSQL output is not trusted as it is (issue 13): it keeps functions
# PostgreSQL lacks and turns cardinality(a) into array_length(a, 1), which is NULL, not 0, for an
# empty array (a `devices` filter left empty would then select nothing). Each rewrite below is
# checked by the parity tests against DuckDB on the same rows (tests/test_analytics.py).

EARTH_RADIUS_M = 6371008.8   # the mean radius DuckDB's ST_Distance_Sphere uses (Trino: 6371.01 km)


def _pg(template: str, **parts) -> "Any":
    import sqlglot
    return sqlglot.parse_one(template.format(**{k: v.sql(dialect="postgres") for k, v in parts.items()}),
                             read="postgres")


def pg_rewrite(node):
    """One Athena construct -> its PostgreSQL equivalent (or the node unchanged)."""
    from sqlglot import exp
    if isinstance(node, exp.Struct) and not any(isinstance(e, (exp.PropertyEQ, exp.Alias)) for e in node.expressions):
        # ROW(a, b) (e.g. a min_by key: by a, then b): sqlglot writes STRUCT(...), unknown to PostgreSQL.
        return exp.Anonymous(this="ROW", expressions=[e.copy() for e in node.expressions])
    if isinstance(node, exp.ArraySize):                      # 0 for an empty array, as Athena
        return exp.Anonymous(this="cardinality", expressions=[node.this.copy()])
    if isinstance(node, exp.Round) and node.args.get("decimals") is not None:
        # PostgreSQL rounds to n places only a numeric (Decimal: engines.plain makes it a float).
        return exp.Round(this=exp.Cast(this=node.this.copy(), to=exp.DataType.build("numeric")),
                         decimals=node.args["decimals"].copy())
    if isinstance(node, (exp.ArgMax, exp.ArgMin)):           # max_by / min_by: x of the row with max/min y
        order = "DESC" if isinstance(node, exp.ArgMax) else "ASC"
        return _pg(f"(array_agg({{x}} ORDER BY {{y}} {order}) FILTER (WHERE {{y}} IS NOT NULL))[1]",
                   x=node.this, y=node.expression)
    if isinstance(node, exp.ApproxQuantile) and not (node.args.get("accuracy") or node.args.get("weight")):
        # The exact quantile, a value of x, as DuckDB's rewrite (exact_quantile) gives it.
        return _pg("percentile_disc({p}) WITHIN GROUP (ORDER BY {x})", p=node.args["quantile"], x=node.this)
    bits = bit_functions(node, postgres=True)
    if bits is not node:
        return bits
    points = spherical_points(node)     # spherical only: haversine in metres; a planar one stays,
    if points is not None:              # and PostgreSQL, which has none, says so
        (lon1, lat1), (lon2, lat2) = points
        return _pg(f"2 * {EARTH_RADIUS_M} * asin(sqrt(power(sin(radians({{lat2}} - {{lat1}}) / 2), 2) + "
                   "cos(radians({lat1})) * cos(radians({lat2})) * power(sin(radians({lon2} - {lon1}) / 2), 2)))",
                   lat1=lat1, lon1=lon1, lat2=lat2, lon2=lon2)
    return node


def to_postgres(sql: str, namespace: str = "smartcity", schema: str = "smartcity") -> str:
    """Athena SQL -> PostgreSQL SQL: sqlglot, pg_rewrite, and the lake's namespace read as the
    warehouse schema."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError
    try:
        tree = sqlglot.parse_one(sql, read="athena")
    except ParseError as e:
        raise EngineError(f"postgres: the query does not parse as Athena SQL: {e}") from None
    tree = rewrite_innermost_first(tree, pg_rewrite)
    if schema != namespace:
        for t in tree.find_all(exp.Table):
            if t.db == namespace:
                t.set("db", exp.to_identifier(schema))
    return tree.sql(dialect="postgres")


class PostgresEngine:
    """The named queries on the warehouse's PostgreSQL stand-in (smartcity-warehouse loads it from
    the lake: the same rows, event_id once; quarantine is never loaded)."""
    name = "postgres"

    def __init__(self, connection, schema: str = "smartcity", namespace: str = "smartcity"):
        self.connection_settings = connection     # runtime.postgres.PostgresConnection
        self.schema = schema
        self.namespace = namespace
        self._conn = None

    def _connect(self):
        from smartcity.runtime.postgres import connect
        c = self.connection_settings
        return connect(c.conninfo(), c.secret(), ("SET TIME ZONE 'UTC'", "SET jit = off"))

    def run(self, sql: str) -> Result:
        import psycopg
        if "quarantine" in referenced_tables(sql, self.namespace):
            raise EngineError("postgres: the warehouse has no quarantine table (quarantined records never "
                              "enter it); run this query on the lake (--engine duckdb, trino or athena)")
        t0 = time.perf_counter()
        pg_sql = to_postgres(sql, self.namespace, self.schema)
        try:
            if self._conn is None:
                self._conn = self._connect()
            cur = self._conn.execute(pg_sql)
            rows = cur.fetchall()
            columns = [d.name for d in cur.description]
        except psycopg.Error as e:
            raise EngineError("postgres: " + " ".join(str(e).split())) from None
        return Result(columns, [tuple(plain(v) for v in r) for r in rows], self.name, time.perf_counter() - t0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
