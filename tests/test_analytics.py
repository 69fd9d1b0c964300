"""The analysts' side (issue 12): named Athena queries answer their questions from the lake's
Iceberg tables, on the embedded engine (DuckDB, through the catalog) and on the local Athena
(Trino over the same catalog) with the same rows; smartcity-query's input mistakes are one line
and exit 2, an engine's error one line and exit 1.

The lake is a generated fleet (tests/support/fleet_lake.py: 3 buses, one hour each, OBD harsh
stops, incidents near the route, some dropped seqs and quarantined records) in tables the lake
job created. Spark runs once, in a child process, before anything else; Trino only after it."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from datetime import timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartcity.analytics import named  # noqa: E402
from smartcity.analytics.engines import DuckDBEngine, EngineError, to_duckdb  # noqa: E402
from smartcity.analytics.query import QuerySettings, main, run_named  # noqa: E402
from smartcity.catalog.reader import read_table  # noqa: E402
from smartcity.catalog.tables import data_table  # noqa: E402
from smartcity.contracts import record_type  # noqa: E402
from tests.support.fleet_lake import generate  # noqa: E402
from tests.support.query_parity import approx_bounds, assert_same_rows  # noqa: E402

DEVICES, HOURS, DROP_EVERY = 3, 1.0, 1000


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    path = tmp_path_factory.mktemp("analytics") / "lake"
    counts = generate(path, devices=DEVICES, days=1, hours_per_day=HOURS, drop_every=DROP_EVERY)
    return QuerySettings(lake=str(path)), counts


@pytest.fixture(scope="module")
def duck(lake):
    engine = DuckDBEngine(lake[0])
    yield engine
    engine.close()


def run(duck, name, **params):
    return run_named(name, {k: str(v) for k, v in params.items()}, engine=duck)


def rows_as_dicts(result):
    return [dict(zip(result.columns, r)) for r in result.rows]


# ---- the query files ------------------------------------------------------------------------------

def test_every_named_query_has_a_header_saying_what_it_answers_and_its_parameters():
    queries = named.load_all()
    assert len(queries) >= 8
    for q in queries.values():
        assert q.answers and q.path.name == f"{q.name}.sql"
        if q.name != "quarantine_by_reason":
            assert {"start", "end", "devices"} <= {p.name for p in q.params}, q.name
        assert all(p.doc for p in q.params), q.name


def test_parameters_become_typed_sql_literals():
    q = named.load("speed_profile")
    sql = named.render(q, {"start": "2026-03-02T01:00:00Z", "devices": "bus-0001, o'brien",
                           "speed_limit_kmh": "80"}).sql
    assert "TIMESTAMP '2026-03-02 01:00:00.000 UTC'" in sql
    assert "ARRAY['bus-0001', 'o''brien']" in sql and "> 80.0" in sql
    assert "CAST(ARRAY[] AS ARRAY(VARCHAR))" in named.render(q).sql   # no devices: every device


@pytest.mark.parametrize("values, message", [
    ({"nope": "1"}, "no parameter 'nope'"),
    ({"start": "yesterday"}, "start (timestamp): 'yesterday' is not a timestamp"),
    ({"speed_limit_kmh": "fast"}, "speed_limit_kmh (double): 'fast' is not a double"),
])
def test_a_bad_parameter_is_refused_by_name(values, message):
    with pytest.raises(named.QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        named.render(named.load("speed_profile"), values)


def test_a_query_file_is_checked_when_read(tmp_path):
    f = tmp_path / "q.sql"
    f.write_text("-- name: q\n-- param x: double = 1\nSELECT {{y}}\n")
    with pytest.raises(named.QueryError, match=r"\{\{y\}\} is used but has no '-- param' line"):
        named.load(str(f))
    f.write_text("-- name: q\n-- param x: money = 1\nSELECT {{x}}\n")
    with pytest.raises(named.QueryError, match="type must be one of"):
        named.load(str(f))


def test_spherical_distance_is_rewritten_for_duckdb():
    sql = to_duckdb("SELECT ST_Distance(to_spherical_geography(ST_Point(a.lon, a.lat)), "
                    "to_spherical_geography(ST_Point(b.lon, b.lat))) FROM t a, t b")
    assert "ST_DISTANCE_SPHERE(ST_POINT(A.LAT, A.LON), ST_POINT(B.LAT, B.LON))" in sql.upper()


def test_time_arithmetic_runs_on_duckdb_without_its_calendar_and_gives_trinos_numbers():
    """to_unixtime is the correctly rounded quotient of the epoch microseconds (what Trino gives
    for millisecond instants; DuckDB's epoch() is off by an ulp for some), date_diff in
    milliseconds subtracts whole epoch milliseconds as Trino does (a sub-millisecond part never
    counts), date_trunc to the minute is the instant floored; other date_diff units stay
    DuckDB's own."""
    import duckdb
    from fractions import Fraction
    sql = to_duckdb("SELECT to_unixtime(b) AS unix_s, date_diff('millisecond', a, b) AS ms, "
                    "date_trunc('minute', b) AS minute, date_diff('second', a, b) AS s FROM t")
    assert "EPOCH(" not in sql.upper() and "DATE_DIFF('MILLISECOND'" not in sql.upper()
    assert "DATE_DIFF('SECOND'" in sql.upper()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE t AS SELECT make_timestamptz(a_us) AS a, make_timestamptz(a_us + d_us) AS b, "
                "a_us + d_us AS b_us FROM (VALUES (1772409600123000, 2999), (1772409600123000, 3000), "
                "(1772409600123999, 1), (1772409659999000, 1234567)) v(a_us, d_us)")
    rows = con.execute(sql).fetchall()
    b_us = [r[0] for r in con.execute("SELECT b_us FROM t").fetchall()]
    assert [r[0] for r in rows] == [float(Fraction(us, 10**6)) for us in b_us]
    assert [r[1] for r in rows] == [2, 3, 1, 1234]
    assert [int(r[2].timestamp()) % 60 for r in rows] == [0, 0, 0, 0]
    assert [r[2].timestamp() for r in rows] == [us // 60_000_000 * 60.0 for us in b_us]



def test_duckdb_answers_become_the_same_python_values_as_row_by_row_conversion():
    """arrow_rows (a column at a time) gives what fetchall() + plain() gave (a value at a time):
    decimals as floats, every timestamp an aware datetime in UTC (naive ones taken as UTC; s, ms
    and ns units, before and after 1970), intervals as timedelta, NULLs as None, nested values
    untouched; and an empty answer keeps its columns."""
    import duckdb
    from smartcity.analytics.engines import arrow_rows, plain
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sql = ("SELECT 1.25::DECIMAL(10, 2) AS d, TIMESTAMP '2026-01-01 10:00:00.123456' AS naive, "
           "TIMESTAMPTZ '2026-01-01 10:00:00+07' AS aware, TIMESTAMP_NS '2026-01-01 10:00:00.123456789' AS ns, "
           "TIMESTAMP_S '1960-01-01 10:00:00' AS s, TIMESTAMP_MS '1969-12-31 23:59:59.5' AS ms, "
           "INTERVAL '1 month 2 days 3 seconds' AS iv, DATE '2026-01-02' AS day, [1.5::DECIMAL(4, 1)] AS l, "
           "NULL::TIMESTAMP AS none_ts, NULL::DECIMAL(4, 1) AS none_d, 'x' AS txt, 3::BIGINT AS i, 2.5 AS f "
           "FROM range(3)")
    columns, rows = arrow_rows(con.execute(sql).to_arrow_table())
    expected = [tuple(plain(v) for v in r) for r in con.execute(sql).fetchall()]
    assert columns == [d[0] for d in con.execute(sql).description]
    assert rows == expected and len(rows) == 3
    assert [type(v) for v in rows[0]] == [type(v) for v in expected[0]]
    assert all(v.tzinfo == timezone.utc for v in rows[0][1:6])
    assert arrow_rows(con.execute("SELECT 1 AS a WHERE false").to_arrow_table()) == (["a"], [])


def test_seq_gaps_counts_every_missing_number_and_gap_whatever_their_length_and_place():
    """Gaps of 1 to 500 numbers, at and across the query's internal block edges, boots that start
    and end inside a block, a device filter, readings spread over all five tables: seq_gaps says
    what a walk through each boot's numbers in order says (the expected values below)."""
    import random

    import duckdb
    import pyarrow as pa
    rng = random.Random(7)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA smartcity")
    tables = ("gps_data", "vehicle_data", "weather_data", "traffic_data", "emergency_data")
    for t in tables:
        con.execute(f"CREATE TABLE smartcity.{t} (device_id VARCHAR, event_id VARCHAR, seq BIGINT, ts TIMESTAMPTZ, "
                    "boot_id VARCHAR)")
    expected, rows = {}, []
    for d in range(3):
        device, seq = f"bus-{d}", rng.randrange(0, 200)
        for b in range(3):
            boot, held = f"{d:02d}{b:02d}beef", []
            for _ in range(rng.randrange(300, 1500)):
                held.append(seq)
                seq += 1 + (rng.choice((1, 2, 3, 31, 61, 62, 63, 100, 500)) if rng.random() < 0.02 else 0)
            seq += rng.randrange(0, 90)                     # the next boot goes on after a jump
            gaps = sum(1 for a, z in zip(held, held[1:]) if z - a > 1)
            expected[(device, boot)] = (len(held), held[0], held[-1], held[-1] - held[0] + 1 - len(held), gaps)
            rows += [(device, f"{device}:{boot}:{s}", s, s) for s in held]
    rng.shuffle(rows)
    boot_id_sql = data_table(record_type("gps_data")).derived_sql()["boot_id"]
    for i, t in enumerate(tables):
        part = pa.table(dict(zip(("device_id", "event_id", "seq", "s"), map(list, zip(*rows[i::len(tables)])))))
        con.register("part", part)
        con.execute(f"INSERT INTO smartcity.{t} SELECT device_id, event_id, seq, to_timestamp(1772409600 + s), "
                    f"{boot_id_sql} FROM part")   # the lake's derived column, by its own SQL
        con.unregister("part")

    def answer(**params):
        sql = to_duckdb(named.render(named.load("seq_gaps"), params).sql)
        return {(r[0], r[1]): tuple(r[4:]) for r in con.execute(sql).fetchall()}
    assert [d[0] for d in con.execute(to_duckdb(named.render(named.load("seq_gaps")).sql)).description] == [
        "device_id", "boot_id", "first_ts", "last_ts", "records", "first_seq", "last_seq", "missing_seqs", "gaps"]
    assert answer() == expected
    assert sum(v[3] for v in expected.values()) > 1000 and all(v[4] > 3 for v in expected.values())
    assert answer(devices="bus-1") == {k: v for k, v in expected.items() if k[0] == "bus-1"}


def test_percentiles_of_one_value_share_one_list_quantile_on_duckdb():
    """Three percentiles of d become one aggregate DuckDB computes once; a lone percentile and one
    in a subquery stay single; and the answers are the exact quantiles either way."""
    import duckdb
    sql = ("SELECT approx_percentile(d, 0.5) AS p50, approx_percentile(d, 0.99) AS p99, "
           "approx_percentile(d, 0.95) AS p95, approx_percentile(e, 0.5) AS e50, "
           "(SELECT approx_percentile(d, 0.1) FROM t) AS p10 FROM t")
    out = to_duckdb(sql).upper()
    assert out.count("QUANTILE_DISC(D, [0.5, 0.95, 0.99])") == 3
    assert "QUANTILE_DISC(E, 0.5)" in out and "QUANTILE_DISC(D, 0.1)" in out
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT i::DOUBLE AS d, (1000 - i)::DOUBLE AS e FROM range(1000) r(i)")
    assert con.execute(to_duckdb(sql)).fetchone() == (499.0, 989.0, 949.0, 500.0, 99.0)

# ---- answers on the embedded engine ------------------------------------------------------------------

def test_trip_summary_measures_each_bus_along_its_fixes(lake, duck):
    s, _ = lake
    gps = read_table(s, "gps_data", ["device_id", "ts", "lat", "lon", "speed_kmh"]).sort_by(
        [("device_id", "ascending"), ("ts", "ascending")]).to_pylist()
    expected: dict[str, float] = Counter()
    for a, b in zip(gps, gps[1:]):
        if a["device_id"] == b["device_id"]:
            expected[a["device_id"]] += haversine_km(a["lat"], a["lon"], b["lat"], b["lon"])
    trips = rows_as_dicts(run(duck, "trip_summary"))
    assert [t["device_id"] for t in trips] == sorted(expected)       # one trip each: no long gap
    for t in trips:
        assert t["distance_km"] == pytest.approx(expected[t["device_id"]], abs=0.002)
        assert t["duration_min"] == pytest.approx(HOURS * 60 - 1 / 60, abs=0.02)
        assert t["moving_min"] + t["idle_min"] == pytest.approx(t["duration_min"], abs=0.02)
        assert 0 < t["avg_speed_kmh"] < t["max_speed_kmh"] <= 112


def test_a_device_filter_and_a_time_window_narrow_the_answer(lake, duck):
    one = rows_as_dicts(run(duck, "speed_profile", devices="bus-0001"))
    assert {r["device_id"] for r in one} == {"bus-0001"}
    none = run(duck, "speed_profile", start="2030-01-01", end="2030-01-02")
    assert none.rows == []


def test_harsh_braking_finds_the_generated_hard_stops(lake, duck):
    events = rows_as_dicts(run(duck, "harsh_events"))
    braking = [e for e in events if e["kind"] == "harsh_braking"]
    assert braking, events
    assert all(e["accel_kmh_per_s"] <= -10 and e["speed_after_kmh"] < e["speed_before_kmh"] for e in braking)
    assert {e["device_id"] for e in braking} == {f"bus-{d:04d}" for d in range(DEVICES)}


def test_incidents_near_the_route_are_found_with_their_distance(lake, duck):
    near = rows_as_dicts(run(duck, "incidents_near_route"))
    own = [r for r in near if r["incident_id"].startswith(f"inc-{r['device_id']}-")]
    assert len(own) == 2 * DEVICES                          # every bus passes its own two incidents
    assert all(0 <= r["closest_m"] <= 2000 and r["last_status"] == "Resolved" for r in own)
    tight = rows_as_dicts(run(duck, "incidents_near_route", radius_m=1))
    assert len(tight) < len(near)


def test_data_quality_counts_quarantine_gaps_and_delay(lake, duck):
    s, counts = lake
    q = rows_as_dicts(run(duck, "quarantine_by_reason"))
    assert sum(r["records"] for r in q) == counts["quarantine"] == 5
    assert {r["error_kind"] for r in q} == {"contract", "bad_json"}
    gaps = rows_as_dicts(run(duck, "seq_gaps"))
    data_rows = sum(n for t, n in counts.items() if t != "quarantine")
    assert sum(g["records"] for g in gaps) == data_rows
    for g in gaps:   # one seq in every DROP_EVERY is skipped, each a gap of one
        assert g["missing_seqs"] == g["gaps"] == (g["records"] - 1) // DROP_EVERY
    delay = rows_as_dicts(run(duck, "ingest_delay"))
    assert {d["topic"] for d in delay} == {"gps_data", "vehicle_data", "weather_data", "traffic_data",
                                           "emergency_data"}
    assert all(1.0 <= d["approx_p50_delay_s"] <= 6.0 and d["max_delay_s"] <= 6.0 for d in delay)


def test_engine_health_weather_and_cameras_answer(lake, duck):
    health = rows_as_dicts(run(duck, "engine_health"))
    assert health and all(r["fuel_drop_pct"] > 0 and r["min_battery_v"] >= 13.4 for r in health)
    assert rows_as_dicts(run(duck, "engine_health", coolant_max_c=200))[0]["overheat_readings"] == 0
    weather = rows_as_dicts(run(duck, "weather_along_route"))
    assert len(weather) == DEVICES * HOURS * 60
    cams = rows_as_dicts(run(duck, "camera_snapshots"))
    assert cams and all(c["latest_snapshot_uri"].startswith("s3://") for c in cams)


# ---- smartcity-query ------------------------------------------------------------------------------

def cli(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_formats(lake, capsys, tmp_path):
    lake_dir = lake[0].lake
    rc, out, _ = cli(capsys, "trip_summary", "--lake", lake_dir, "--format", "json")
    assert rc == 0 and len(out.splitlines()) == DEVICES
    assert json.loads(out.splitlines()[0])["device_id"] == "bus-0000"
    rc, out, _ = cli(capsys, "trip_summary", "--lake", lake_dir, "--format", "csv")
    assert out.splitlines()[0].startswith("device_id,trip_no,trip_start")
    rc, out, _ = cli(capsys, "trip_summary", "--lake", lake_dir)
    assert f"({DEVICES} rows, duckdb," in out
    pq = tmp_path / "t.parquet"
    assert cli(capsys, "trip_summary", "--lake", lake_dir, "--format", "parquet", "-o", str(pq))[0] == 0
    import pyarrow.parquet as papq
    assert papq.read_table(pq).num_rows == DEVICES


@pytest.mark.parametrize("args, rc, message", [
    (["no_such_query"], 2, "smartcity-query: unknown query 'no_such_query'; named queries: "),
    (["trip_summary", "--param", "devices"], 2, "smartcity-query: --param 'devices': expected NAME=VALUE"),
    (["trip_summary", "--param", "start=soon"], 2, "smartcity-query: trip_summary: parameter start (timestamp)"),
    (["trip_summary", "--engine", "trino", "--trino", "127.0.0.1:9"], 1,
     "smartcity-query: trip_summary: trino: no Trino answers at 127.0.0.1:9"),
])
def test_cli_mistakes_are_one_line(lake, capsys, args, rc, message):
    got, out, err = cli(capsys, *args, "--lake", lake[0].lake)
    assert got == rc and err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_cli_sql_error_carries_the_engines_message(lake, capsys, tmp_path):
    f = tmp_path / "bad.sql"
    f.write_text("-- name: bad\nSELECT no_such_column FROM smartcity.gps_data\n")
    rc, _, err = cli(capsys, str(f), "--lake", lake[0].lake)
    assert rc == 1 and "no_such_column" in err and err.startswith("smartcity-query: bad: duckdb: ")


def test_a_missing_table_says_what_creates_it(tmp_path):
    with pytest.raises(EngineError, match="does not exist in the lake's catalog"):
        run_named("trip_summary", settings=QuerySettings(lake=str(tmp_path / "empty")))


def test_cli_list_names_every_query(capsys):
    rc, out, _ = cli(capsys, "--list")
    assert rc == 0 and all(name in out for name in named.load_all())


# ---- the same rows on the local Athena ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trino(lake, tmp_path_factory):
    from deploy.local.trino import TrinoServer
    from smartcity.spark_jobs.settings import LakeSettings
    srv = TrinoServer(tmp_path_factory.mktemp("trino"), LakeSettings(lake=lake[0].lake))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", sorted(named.load_all()))
def test_every_named_query_gives_the_same_rows_on_trino_and_duckdb(lake, duck, trino, name):
    from smartcity.analytics.engines import TrinoEngine
    rendered = named.render(named.load(name))
    on_trino = TrinoEngine(trino.endpoint).run(rendered.sql)
    on_duckdb = duck.run(rendered.sql)
    assert on_trino.rows, f"{name}: no rows: nothing compared"
    assert_same_rows(on_trino, on_duckdb, approx_bounds(duck, rendered.sql))



@pytest.mark.parametrize("name, params", [("trip_summary", {"moving_kmh": "5"}),
                                          ("harsh_events", {"max_step_s": "4"})])
def test_a_query_past_its_rollup_gives_the_same_rows_on_trino_and_duckdb(lake, duck, trino, name, params):
    """Parameters other than the rollups' (tests/test_rollups.py): every span computed from the
    source rows, the queries' other path, on both engines."""
    from smartcity.analytics.engines import TrinoEngine
    rendered = named.render(named.load(name), params)
    on_trino = TrinoEngine(trino.endpoint).run(rendered.sql)
    assert on_trino.rows, "no rows: nothing compared"
    assert_same_rows(on_trino, duck.run(rendered.sql))


# ---- the same rows on the warehouse (PostgreSQL, the Redshift stand-in) ---------------------------

@pytest.fixture(scope="module")
def warehouse(lake):
    """The fleet lake loaded by smartcity-warehouse into a local PostgreSQL; the Postgres settings
    smartcity-query reads it with (password from a file, as an operator gives it)."""
    import os
    import shutil
    import tempfile

    from deploy.local.postgres import PostgresServer
    from smartcity.analytics.query import Postgres
    from smartcity.warehouse.load import PostgresWarehouse
    from smartcity.warehouse.settings import WarehouseSettings
    # Not under pytest's tmp_path: as root the server runs as `postgres`, which may not enter
    # /tmp/pytest-of-root (0700).
    work = Path(tempfile.mkdtemp(prefix="smartcity-analytics-pg-"))
    os.chmod(work, 0o711)
    try:
        with PostgresServer(work / "pg") as srv:
            ws = WarehouseSettings(lake=lake[0].lake)
            ws.postgres.port, ws.postgres.password = srv.port, srv.password
            PostgresWarehouse(ws).load()
            secret = work / "pg-password"
            secret.write_text(srv.password)
            yield Postgres(port=srv.port, password_file=secret)
    finally:
        shutil.rmtree(work, ignore_errors=True)


WAREHOUSE_QUERIES = sorted(n for n in named.load_all() if n != "quarantine_by_reason")


@pytest.mark.parametrize("name", WAREHOUSE_QUERIES)
def test_every_named_query_gives_the_same_rows_on_the_warehouse_as_on_the_lake(lake, duck, warehouse, name):
    """Analysts in the warehouse get the lake's answers: the query text unchanged, translated by
    sqlglot plus the rewrites PostgreSQL needs (cardinality, round, max_by/min_by, percentiles,
    spherical distance)."""
    from smartcity.analytics.engines import PostgresEngine
    rendered = named.render(named.load(name))
    engine = PostgresEngine(warehouse)
    try:
        on_pg = engine.run(rendered.sql)
    finally:
        engine.close()
    on_duckdb = duck.run(rendered.sql)
    assert on_duckdb.rows, f"{name}: no rows: nothing compared"
    assert_same_rows(on_duckdb, on_pg, approx_bounds(duck, rendered.sql))


def test_an_empty_list_parameter_selects_everything_on_the_warehouse_too(lake, warehouse):
    """sqlglot writes Athena's cardinality(a) as array_length(a, 1), NULL for an empty array: an
    empty `devices` would have selected nothing. A device filter still narrows."""
    from smartcity.analytics.engines import PostgresEngine
    engine = PostgresEngine(warehouse)
    try:
        every = run(engine, "trip_summary")
        one = run(engine, "trip_summary", devices="bus-0001")
    finally:
        engine.close()
    assert {r[0] for r in every.rows} == {f"bus-{d:04d}" for d in range(DEVICES)}
    assert one.rows and {r[0] for r in one.rows} == {"bus-0001"}


def test_cli_on_the_warehouse_and_a_query_of_what_it_does_not_hold(lake, warehouse, capsys, monkeypatch):
    monkeypatch.setenv("SMARTCITY_QUERY_POSTGRES__PORT", str(warehouse.port))
    monkeypatch.setenv("SMARTCITY_QUERY_POSTGRES__PASSWORD_FILE", str(warehouse.password_file))
    rc, out, err = cli(capsys, "seq_gaps", "--engine", "postgres", "--format", "csv")
    assert rc == 0 and out.startswith("device_id,boot_id,"), err
    rc, out, err = cli(capsys, "quarantine_by_reason", "--engine", "postgres")
    assert rc == 1 and "no quarantine table" in err and len(err.strip().splitlines()) == 1

def haversine_km(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def test_the_module_runs_as_a_program(lake):
    r = subprocess.run([sys.executable, "-m", "smartcity.analytics.query", "ingest_delay", "--lake",
                        lake[0].lake, "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("topic,records,"), r.stderr


# ---- Athena (the API's shape, against moto's server on loopback) ----------------------------------

def test_athena_engine_runs_in_a_workgroup_and_types_the_results(tmp_path, monkeypatch):
    """moto runs no SQL: it answers the query with the result set given to it (its own API), so
    this proves the calls, the header row skipped, pagination and typing, not the SQL."""
    import urllib.request

    from smartcity.analytics.engines import AthenaEngine
    from tests.support.moto import ACCOUNT, AWS_VARS, REGION, MotoServer
    with MotoServer(tmp_path) as moto:
        for var in AWS_VARS:
            monkeypatch.delenv(var, raising=False)
        for k, v in moto.aws_env().items():
            monkeypatch.setenv(k, v)
        moto.client("athena").create_work_group(
            Name="smartcity", Configuration={"ResultConfiguration": {"OutputLocation": "s3://results/"}})
        header = {"Data": [{"VarCharValue": "device_id"}, {"VarCharValue": "fixes"},
                           {"VarCharValue": "max_speed_kmh"}, {"VarCharValue": "trip_start"}]}
        rows = [{"Data": [{"VarCharValue": f"bus-{i:04d}"}, {"VarCharValue": str(100 + i)},
                          {"VarCharValue": "88.5"}, {"VarCharValue": "2026-03-02 01:00:00.250 UTC"}]}
                for i in range(3)] + [{"Data": [{"VarCharValue": "bus-9999"}, {}, {}, {}]}]
        columns = [{"Name": "device_id", "Type": "varchar"}, {"Name": "fixes", "Type": "bigint"},
                   {"Name": "max_speed_kmh", "Type": "double"},
                   {"Name": "trip_start", "Type": "timestamp(3) with time zone"}]
        body = json.dumps({"account_id": ACCOUNT, "region": REGION,
                           "results": [{"rows": [header] + rows, "column_info": columns}]}).encode()
        urllib.request.urlopen(urllib.request.Request(
            moto.endpoint + "/moto-api/static/athena/query-results", data=body, method="POST",
            headers={"Content-Type": "application/json"}), timeout=10).read()
        r = AthenaEngine("smartcity", region=REGION, poll_s=0.05).run(
            named.render(named.load("trip_summary")).sql)
    assert r.columns == ["device_id", "fixes", "max_speed_kmh", "trip_start"]
    assert len(r.rows) == 4 and r.rows[0][:3] == ("bus-0000", 100, 88.5)
    assert r.rows[0][3].isoformat() == "2026-03-02T01:00:00.250000+00:00"
    assert r.rows[3] == ("bus-9999", None, None, None)          # NULLs come back as None
