"""The lake's rollups, refreshed from the tables they summarise: `refresh(spark, settings, table)`
(run by `smartcity-lake maintain` as the first step of a rollup table; `refresh_all`).

- gps_spans (catalog/tables.py) holds, per device and span of event time, what the span's fixes
  contribute to trip_summary: first and last fix, the length and moving/idle time of the steps
  between its own fixes, the speed sums.
- vehicle_spans holds, per device and span, how many harsh pairs (harsh_events' rule) lie between
  the span's own OBD readings, and its first and last reading. harsh_events skips the spans with
  none (most of them) and orders only the readings of the others.

Each row is a function of the set of source rows in its span alone, so a row that lands late
changes its own span's row and no other. A query takes a row only where the source holds exactly
as many rows for that span as the row counts (the lake only adds rows, one per event_id) and
computes the other spans from the source; so a stale or missing row costs the query time, never
a wrong answer, and the refresh need not be in the stream's commit.

The refresh recomputes the spans whose count differs from their row's (or that have no row) and
MERGEs them in by their key, one commit. The count per span is a scan of a few source columns;
only the rows of the stale spans are ordered. A span whose source rows were all deleted keeps its
row, which no query takes (no count matches it).

The arithmetic is the named queries' (analytics/queries/trip_summary.sql, harsh_events.sql) in
Spark SQL; tests/test_rollups.py runs them with the rollups current, stale and absent.
"""
from __future__ import annotations

import logging
import time

from smartcity.catalog.location import table_identifier
from smartcity.catalog.tables import (GPS_SPANS_MOVING_KMH, GPS_SPANS_SOURCE, GPS_SPANS_TABLE,
                                      GPS_SPANS_WIDTH_S, VEHICLE_SPANS_ACCEL_KMH_PER_S,
                                      VEHICLE_SPANS_BRAKE_KMH_PER_S, VEHICLE_SPANS_MAX_STEP_S,
                                      VEHICLE_SPANS_SOURCE, VEHICLE_SPANS_TABLE, VEHICLE_SPANS_WIDTH_S)

from .settings import LakeSettings

log = logging.getLogger(__name__)


def _epoch_s(column: str) -> str:
    """Epoch seconds with the fraction, a double (Spark's unix_timestamp() drops the fraction, and
    a literal 1000000.0 would make it a decimal). The same double as Athena's to_unixtime(ts):
    both are the correctly rounded quotient of one instant."""
    return f"unix_micros({column}) / 1e6"


def _great_circle_km(lat0: str, lon0: str, lat1: str, lon1: str) -> str:
    """Haversine on a sphere of the IUGG mean Earth radius, as trip_summary computes a step."""
    return (f"2 * 6371.0088 * asin(sqrt(power(sin(radians({lat1} - {lat0}) / 2), 2) + "
            f"cos(radians({lat0})) * cos(radians({lat1})) * power(sin(radians({lon1} - {lon0}) / 2), 2)))")


def _stale_rows(source: str, spans: str, columns: str, where: str, width_s: float, count: str,
                params: str, lags: tuple[str, ...]) -> str:
    """The CTEs both rollups start with: `source_rows` (the source rows that count, with their span),
    `stale` (the spans whose `count` in `spans` at `params` differs from the source's, or that
    have no row) and `ordered` (the rows of the stale spans in (ts, seq) order, with prev_<c> for
    each of `lags` and next_ts)."""
    w = "PARTITION BY device_id, span ORDER BY ts, seq"
    prev = "".join(f"lag({c}) OVER ({w}) AS prev_{c}, " for c in lags)
    return f"""
WITH source_rows AS (
    SELECT {columns},
           CAST(floor({_epoch_s('ts')} / CAST({width_s!r} AS DOUBLE)) AS BIGINT) AS span
    FROM {source}
    WHERE {where}
),
stale AS (
    SELECT c.device_id, c.span FROM (
        SELECT device_id, span, count(*) AS {count} FROM source_rows GROUP BY device_id, span) c
    LEFT ANTI JOIN (SELECT * FROM {spans} WHERE {params}) r
      ON r.device_id = c.device_id AND r.span = c.span AND r.{count} = c.{count}
),
ordered AS (
    SELECT f.*, {prev}lead(ts) OVER ({w}) AS next_ts
    FROM source_rows f LEFT SEMI JOIN stale s ON f.device_id = s.device_id AND f.span = s.span
)"""


def gps_spans_sql(gps: str, spans: str, width_s: float = GPS_SPANS_WIDTH_S,
                  moving_kmh: float = GPS_SPANS_MOVING_KMH) -> str:
    """The rows of the spans that are stale in `spans` (a fix count that differs, or no row),
    computed from `gps` (Spark SQL)."""
    return _stale_rows(gps, spans, "device_id, ts, seq, lat, lon, speed_kmh",
                       "lat IS NOT NULL AND lon IS NOT NULL", width_s, "fixes",
                       f"span_s = {width_s!r} AND moving_kmh = {moving_kmh!r}", ("ts", "lat", "lon")) + f""",
steps AS (
    SELECT *, {_epoch_s('ts')} - {_epoch_s('prev_ts')} AS step_s,
           {_great_circle_km('prev_lat', 'prev_lon', 'lat', 'lon')} AS step_km
    FROM ordered
)
SELECT device_id, CAST({width_s!r} AS DOUBLE) AS span_s, CAST({moving_kmh!r} AS DOUBLE) AS moving_kmh,
       span, count(*) AS fixes,
       min(ts) AS first_ts,
       max(CASE WHEN prev_ts IS NULL THEN lat END) AS first_lat,
       max(CASE WHEN prev_ts IS NULL THEN lon END) AS first_lon,
       max(CASE WHEN prev_ts IS NULL THEN speed_kmh END) AS first_speed_kmh,
       max(ts) AS last_ts,
       max(CASE WHEN next_ts IS NULL THEN lat END) AS last_lat,
       max(CASE WHEN next_ts IS NULL THEN lon END) AS last_lon,
       sum(step_km) AS km,
       sum(CASE WHEN speed_kmh >= {moving_kmh!r} THEN step_s END) AS moving_s,
       sum(CASE WHEN speed_kmh IS NULL OR speed_kmh < {moving_kmh!r} THEN step_s END) AS idle_s,
       sum(speed_kmh) AS speed_sum_kmh,
       count(speed_kmh) AS speeds,
       max(speed_kmh) AS max_speed_kmh,
       current_timestamp() AS refreshed_ts
FROM steps
GROUP BY device_id, span
"""


def vehicle_spans_sql(obd: str, spans: str, width_s: float = VEHICLE_SPANS_WIDTH_S,
                      brake: float = VEHICLE_SPANS_BRAKE_KMH_PER_S, accel: float = VEHICLE_SPANS_ACCEL_KMH_PER_S,
                      max_step_s: float = VEHICLE_SPANS_MAX_STEP_S) -> str:
    """The rows of the spans that are stale in `spans`, computed from `obd` (Spark SQL):
    harsh_events' rule (analytics/queries/harsh_events.sql) on the pairs inside each span."""
    params = (f"span_s = {width_s!r} AND brake_kmh_per_s = {brake!r} AND accel_kmh_per_s = {accel!r} "
              f"AND max_step_s = {max_step_s!r}")
    return _stale_rows(obd, spans, "device_id, event_id, ts, seq, speed_kmh, lat, lon",
                       "speed_kmh IS NOT NULL", width_s, "readings", params, ("ts", "speed_kmh")) + f""",
steps AS (
    SELECT *, {_epoch_s('ts')} - {_epoch_s('prev_ts')} AS step_s FROM ordered
)
SELECT device_id, CAST({width_s!r} AS DOUBLE) AS span_s, CAST({brake!r} AS DOUBLE) AS brake_kmh_per_s,
       CAST({accel!r} AS DOUBLE) AS accel_kmh_per_s, CAST({max_step_s!r} AS DOUBLE) AS max_step_s,
       span, count(*) AS readings,
       count(CASE WHEN step_s > 0 AND step_s <= {max_step_s!r}
                   AND ((speed_kmh - prev_speed_kmh) / step_s <= -{brake!r}
                        OR (speed_kmh - prev_speed_kmh) / step_s >= {accel!r}) THEN 1 END) AS harsh_pairs,
       min(ts) AS first_ts,
       max(CASE WHEN prev_ts IS NULL THEN event_id END) AS first_event_id,
       max(CASE WHEN prev_ts IS NULL THEN speed_kmh END) AS first_speed_kmh,
       max(CASE WHEN prev_ts IS NULL THEN lat END) AS first_lat,
       max(CASE WHEN prev_ts IS NULL THEN lon END) AS first_lon,
       max(ts) AS last_ts,
       max(CASE WHEN next_ts IS NULL THEN speed_kmh END) AS last_speed_kmh,
       current_timestamp() AS refreshed_ts
FROM steps
GROUP BY device_id, span
"""


# rollup table -> (its source table, the SQL of its stale rows, the columns that key a row)
ROLLUPS = {
    GPS_SPANS_TABLE: (GPS_SPANS_SOURCE, gps_spans_sql, ("device_id", "span_s", "moving_kmh", "span")),
    VEHICLE_SPANS_TABLE: (VEHICLE_SPANS_SOURCE, vehicle_spans_sql,
                          ("device_id", "span_s", "brake_kmh_per_s", "accel_kmh_per_s", "max_step_s", "span")),
}


def refresh(spark, s: LakeSettings, table: str) -> dict:
    """Recompute the stale spans of the rollup `table` from its source and MERGE them in (one
    commit; none when no span is stale). Returns {"spans_refreshed": N, "seconds": ...}."""
    t0 = time.monotonic()
    source, stale_sql, key = ROLLUPS[table]
    src, target = table_identifier(s, source), table_identifier(s, table)
    spark.sql(f"REFRESH TABLE {src}")
    spark.sql(f"REFRESH TABLE {target}")
    # Materialised once (counted, then merged, without computing the stale spans twice). Not
    # cache(): Spark 4.1 then fails to plan the MERGE ("No plan for TableReference ... gps_data").
    fresh = spark.sql(stale_sql(src, target)).localCheckpoint(eager=True)
    n = fresh.count()
    if n:
        view = f"smartcity_{table}_fresh"
        fresh.createOrReplaceTempView(view)
        on = " AND ".join(f"t.{c} = s.{c}" for c in key)
        spark.sql(f"MERGE INTO {target} t USING {view} s ON {on} "
                  "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        spark.catalog.dropTempView(view)
    r = {"spans_refreshed": n, "seconds": round(time.monotonic() - t0, 3)}
    log.info("rollup refreshed", extra={"table": target, **r})
    return r


def refresh_all(spark, s: LakeSettings) -> dict[str, dict]:
    return {table: refresh(spark, s, table) for table in ROLLUPS}
