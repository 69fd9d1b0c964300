"""The lake's rollups, refreshed from the tables they summarise: `refresh_gps_spans(spark, settings)`
(run by `smartcity-lake maintain` as the first step of the gps_spans table).

gps_spans (catalog/tables.py) holds, per device and span of event time, what the span's fixes
contribute to trip_summary: first and last fix, the length and moving/idle time of the steps
between its own fixes, the speed sums. Those are functions of the set of fixes in the span alone,
so a fix that lands late changes its own span's row and no other. trip_summary takes a row only
where the table holds exactly `fixes` fixes for that span and computes the other spans from the
fixes; so a stale or missing row costs the query time, never a wrong answer, and the refresh
need not be in the stream's commit.

The refresh recomputes the spans whose fix count differs from their row's (or that have no row)
and MERGEs them in by (device_id, span_s, moving_kmh, span), one commit. The count per span is a
scan of three gps_data columns; only the fixes of the stale spans are ordered. A span whose fixes
were all deleted keeps its row, which no query takes (no fix count matches it).

The arithmetic is trip_summary's (analytics/queries/trip_summary.sql) in Spark SQL; the parity
tests run the query with the rollup current, stale and absent and compare the rows.
"""
from __future__ import annotations

import logging
import time

from smartcity.catalog.location import table_identifier
from smartcity.catalog.tables import (GPS_SPANS_MOVING_KMH, GPS_SPANS_SOURCE, GPS_SPANS_TABLE,
                                      GPS_SPANS_WIDTH_S)

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


def gps_spans_sql(gps: str, spans: str, width_s: float = GPS_SPANS_WIDTH_S,
                  moving_kmh: float = GPS_SPANS_MOVING_KMH) -> str:
    """The rows of the spans that are stale in `spans` (a fix count that differs, or no row),
    computed from `gps` (Spark SQL)."""
    w = "PARTITION BY device_id, span ORDER BY ts, seq"
    return f"""
WITH fixes AS (
    SELECT device_id, ts, seq, lat, lon, speed_kmh,
           CAST(floor({_epoch_s('ts')} / CAST({width_s!r} AS DOUBLE)) AS BIGINT) AS span
    FROM {gps}
    WHERE lat IS NOT NULL AND lon IS NOT NULL
),
stale AS (
    SELECT c.device_id, c.span FROM (
        SELECT device_id, span, count(*) AS fixes FROM fixes GROUP BY device_id, span) c
    LEFT ANTI JOIN (SELECT * FROM {spans} WHERE span_s = {width_s!r} AND moving_kmh = {moving_kmh!r}) r
      ON r.device_id = c.device_id AND r.span = c.span AND r.fixes = c.fixes
),
ordered AS (
    SELECT f.*,
           lag(ts) OVER ({w}) AS prev_ts, lag(lat) OVER ({w}) AS prev_lat,
           lag(lon) OVER ({w}) AS prev_lon, lead(ts) OVER ({w}) AS next_ts
    FROM fixes f LEFT SEMI JOIN stale s ON f.device_id = s.device_id AND f.span = s.span
),
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


def refresh_gps_spans(spark, s: LakeSettings) -> dict:
    """Recompute the stale spans of gps_spans from gps_data and MERGE them in (one commit; none
    when no span is stale). Returns {"spans_refreshed": N, "seconds": ...}."""
    t0 = time.monotonic()
    gps, spans = table_identifier(s, GPS_SPANS_SOURCE), table_identifier(s, GPS_SPANS_TABLE)
    spark.sql(f"REFRESH TABLE {gps}")
    spark.sql(f"REFRESH TABLE {spans}")
    # Computed once (the MERGE would otherwise plan the source twice: its count and its write).
    fresh = spark.sql(gps_spans_sql(gps, spans)).localCheckpoint(eager=True)
    n = fresh.count()
    if n:
        view = "smartcity_gps_spans_fresh"
        fresh.createOrReplaceTempView(view)
        key = " AND ".join(f"t.{c} = s.{c}" for c in ("device_id", "span_s", "moving_kmh", "span"))
        spark.sql(f"MERGE INTO {spans} t USING {view} s ON {key} "
                  "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        spark.catalog.dropTempView(view)
    r = {"spans_refreshed": n, "seconds": round(time.monotonic() - t0, 3)}
    log.info("rollup refreshed", extra={"table": spans, **r})
    return r
