-- name: trip_summary
-- answers: Per device and trip (fixes no more than trip_gap_s apart): start and end, distance along the fixes (great circle, km), duration, moving and idle time, average and maximum speed.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
-- param trip_gap_s: double = 600  -- a longer gap between two fixes starts a new trip (seconds, > 0)
-- param moving_kmh: double = 3  -- a step counts as moving at this GPS speed or more
--
-- The fixes are gathered per device into spans of trip_gap_s of event time. Two fixes of one span
-- are less than trip_gap_s apart, so a trip never starts inside a span after its first fix: each
-- span lies in one trip, and a trip is its spans' sums plus the steps between them. What a span
-- contributes is a function of its own fixes alone, and the lake keeps it per span
-- (smartcity.gps_spans, refreshed by `smartcity-lake maintain`). A row of it is taken only where
-- it was computed from exactly the fixes read here: same parameters, a span inside [start, end),
-- and as many fixes as the table holds now for that span (the lake only adds fixes, one row per
-- event_id). Every other span is computed from its fixes. A stale or missing rollup costs time,
-- never a different answer. (DuckDB, 6.75 M fixes: ordering every fix cost ~1.6 s of CPU.)
WITH fixes AS (
    SELECT device_id, ts, seq, lat, lon, speed_kmh,
           CAST(floor(to_unixtime(ts) / {{trip_gap_s}}) AS BIGINT) AS span
    FROM smartcity.gps_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND lat IS NOT NULL AND lon IS NOT NULL
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
),
span_fixes AS (
    SELECT device_id, span, count(*) AS fixes
    FROM fixes
    GROUP BY device_id, span
),
kept AS (
    SELECT r.device_id, r.span, r.fixes, r.first_ts, r.first_lat, r.first_lon, r.first_speed_kmh,
           r.last_ts, r.last_lat, r.last_lon, r.km, r.moving_s, r.idle_s, r.speed_sum_kmh,
           r.speeds, r.max_speed_kmh
    FROM smartcity.gps_spans r
    JOIN span_fixes c ON c.device_id = r.device_id AND c.span = r.span AND c.fixes = r.fixes
    WHERE r.span_s = {{trip_gap_s}} AND r.moving_kmh = {{moving_kmh}}
      AND r.span * {{trip_gap_s}} >= to_unixtime({{start}})
      AND (r.span + 1) * {{trip_gap_s}} <= to_unixtime({{end}})
),
ordered AS (
    SELECT device_id, span, ts, lat, lon, speed_kmh,
           lag(ts) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS prev_ts,
           lag(lat) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS prev_lat,
           lag(lon) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS prev_lon,
           lead(ts) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS next_ts
    FROM fixes f
    WHERE NOT EXISTS (SELECT 1 FROM kept k WHERE k.device_id = f.device_id AND k.span = f.span)
),
steps AS (
    SELECT *,
           to_unixtime(ts) - to_unixtime(prev_ts) AS step_s,
           2 * 6371.0088 * asin(sqrt(
               power(sin(radians(lat - prev_lat) / 2), 2)
               + cos(radians(prev_lat)) * cos(radians(lat)) * power(sin(radians(lon - prev_lon) / 2), 2)
           )) AS step_km
    FROM ordered
),
computed AS (
    SELECT device_id, span, count(*) AS fixes,
           min(ts) AS first_ts,
           max(CASE WHEN prev_ts IS NULL THEN lat END) AS first_lat,
           max(CASE WHEN prev_ts IS NULL THEN lon END) AS first_lon,
           max(CASE WHEN prev_ts IS NULL THEN speed_kmh END) AS first_speed_kmh,
           max(ts) AS last_ts,
           max(CASE WHEN next_ts IS NULL THEN lat END) AS last_lat,
           max(CASE WHEN next_ts IS NULL THEN lon END) AS last_lon,
           sum(step_km) AS km,
           sum(CASE WHEN speed_kmh >= {{moving_kmh}} THEN step_s END) AS moving_s,
           sum(CASE WHEN speed_kmh IS NULL OR speed_kmh < {{moving_kmh}} THEN step_s END) AS idle_s,
           sum(speed_kmh) AS speed_sum_kmh,
           count(speed_kmh) AS speeds,
           max(speed_kmh) AS max_speed_kmh
    FROM steps
    GROUP BY device_id, span
),
spans AS (
    SELECT * FROM kept
    UNION ALL
    SELECT * FROM computed
),
linked AS (
    SELECT *,
           lag(last_ts) OVER (PARTITION BY device_id ORDER BY span) AS prev_ts,
           lag(last_lat) OVER (PARTITION BY device_id ORDER BY span) AS prev_lat,
           lag(last_lon) OVER (PARTITION BY device_id ORDER BY span) AS prev_lon
    FROM spans
),
starts AS (
    SELECT *,
           to_unixtime(first_ts) - to_unixtime(prev_ts) AS entry_s,
           2 * 6371.0088 * asin(sqrt(
               power(sin(radians(first_lat - prev_lat) / 2), 2)
               + cos(radians(prev_lat)) * cos(radians(first_lat)) * power(sin(radians(first_lon - prev_lon) / 2), 2)
           )) AS entry_km,
           CASE WHEN prev_ts IS NULL OR to_unixtime(first_ts) - to_unixtime(prev_ts) > {{trip_gap_s}}
                THEN 1 ELSE 0 END AS starts_trip
    FROM linked
),
trips AS (
    SELECT *, sum(starts_trip) OVER (PARTITION BY device_id ORDER BY span
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS trip_no
    FROM starts
)
SELECT device_id,
       trip_no,
       min(first_ts) AS trip_start,
       max(last_ts) AS trip_end,
       sum(fixes) AS fixes,
       round(sum(coalesce(km, 0) + CASE WHEN starts_trip = 0 THEN entry_km ELSE 0 END), 3) AS distance_km,
       round((to_unixtime(max(last_ts)) - to_unixtime(min(first_ts))) / 60.0, 2) AS duration_min,
       round(sum(coalesce(moving_s, 0)
                 + CASE WHEN starts_trip = 0 AND first_speed_kmh >= {{moving_kmh}} THEN entry_s ELSE 0 END) / 60.0, 2) AS moving_min,
       round(sum(coalesce(idle_s, 0)
                 + CASE WHEN starts_trip = 0 AND (first_speed_kmh IS NULL OR first_speed_kmh < {{moving_kmh}})
                        THEN entry_s ELSE 0 END) / 60.0, 2) AS idle_min,
       round(sum(speed_sum_kmh) / nullif(sum(speeds), 0), 2) AS avg_speed_kmh,
       round(max(max_speed_kmh), 2) AS max_speed_kmh
FROM trips
GROUP BY device_id, trip_no
ORDER BY device_id, trip_no
