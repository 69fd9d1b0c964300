-- name: harsh_events
-- answers: Harsh braking and harsh acceleration: consecutive OBD speed readings of a vehicle, at most max_step_s apart, whose speed changed faster than the thresholds (km/h per second; 10 km/h/s is about 0.28 g).
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
-- param brake_kmh_per_s: double = 10  -- a deceleration at least this strong is harsh braking
-- param accel_kmh_per_s: double = 8  -- an acceleration at least this strong is harsh acceleration
-- param max_step_s: double = 5  -- readings further apart are not compared
--
-- The readings are gathered per device into spans of 600 s of event time. The lake keeps, per
-- span, how many harsh pairs lie between its own readings and its first and last reading
-- (smartcity.vehicle_spans, refreshed by `smartcity-lake maintain`). A span whose row says none,
-- for these thresholds, inside [start, end), and counts as many readings as the table holds now
-- for it (the lake only adds readings, one row per event_id), is skipped: only its first and last
-- reading take part, in the pair across each span's start. The readings of every other span are
-- ordered and compared. A stale or missing rollup costs time, never a different answer.
-- (DuckDB, 3.4 M readings: ordering every reading was most of this query's ~1 s.)
--
-- pairs: inside the ordered spans, each reading and the one before it; across each span's start,
--   its first reading and the previous span's last.
WITH readings AS (
    SELECT device_id, event_id, ts, seq, speed_kmh, lat, lon,
           CAST(floor(to_unixtime(ts) / 600) AS BIGINT) AS span
    FROM smartcity.vehicle_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND speed_kmh IS NOT NULL
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
),
span_readings AS (
    SELECT device_id, span, count(*) AS readings
    FROM readings
    GROUP BY device_id, span
),
quiet AS (
    SELECT r.device_id, r.span, r.first_ts, r.first_event_id, r.first_speed_kmh, r.first_lat, r.first_lon,
           r.last_ts, r.last_speed_kmh
    FROM smartcity.vehicle_spans r
    JOIN span_readings c ON c.device_id = r.device_id AND c.span = r.span AND c.readings = r.readings
    WHERE r.harsh_pairs = 0 AND r.span_s = 600 AND r.brake_kmh_per_s = {{brake_kmh_per_s}}
      AND r.accel_kmh_per_s = {{accel_kmh_per_s}} AND r.max_step_s = {{max_step_s}}
      AND r.span * 600 >= to_unixtime({{start}}) AND (r.span + 1) * 600 <= to_unixtime({{end}})
),
ordered AS (
    SELECT device_id, event_id, ts, speed_kmh, lat, lon, span,
           lag(ts) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS prev_ts,
           lag(speed_kmh) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS prev_speed_kmh,
           lead(ts) OVER (PARTITION BY device_id, span ORDER BY ts, seq) AS next_ts
    FROM readings f
    WHERE NOT EXISTS (SELECT 1 FROM quiet q WHERE q.device_id = f.device_id AND q.span = f.span)
),
ends AS (
    SELECT device_id, span, first_ts, first_event_id, first_speed_kmh, first_lat, first_lon,
           last_ts, last_speed_kmh
    FROM quiet
    UNION ALL
    SELECT device_id, span, min(ts),
           max(CASE WHEN prev_ts IS NULL THEN event_id END),
           max(CASE WHEN prev_ts IS NULL THEN speed_kmh END),
           max(CASE WHEN prev_ts IS NULL THEN lat END),
           max(CASE WHEN prev_ts IS NULL THEN lon END),
           max(ts),
           max(CASE WHEN next_ts IS NULL THEN speed_kmh END)
    FROM ordered
    GROUP BY device_id, span
),
pairs AS (
    SELECT device_id, event_id, ts, speed_kmh, lat, lon, prev_ts, prev_speed_kmh
    FROM ordered
    WHERE prev_ts IS NOT NULL
    UNION ALL
    SELECT device_id, first_event_id, first_ts, first_speed_kmh, first_lat, first_lon,
           lag(last_ts) OVER (PARTITION BY device_id ORDER BY span),
           lag(last_speed_kmh) OVER (PARTITION BY device_id ORDER BY span)
    FROM ends
),
changes AS (
    SELECT *, (speed_kmh - prev_speed_kmh) / (to_unixtime(ts) - to_unixtime(prev_ts)) AS accel_kmh_per_s
    FROM pairs
    WHERE prev_ts IS NOT NULL
      AND to_unixtime(ts) - to_unixtime(prev_ts) > 0
      AND to_unixtime(ts) - to_unixtime(prev_ts) <= {{max_step_s}}
)
SELECT device_id,
       ts,
       event_id,
       CASE WHEN accel_kmh_per_s < 0 THEN 'harsh_braking' ELSE 'harsh_acceleration' END AS kind,
       round(prev_speed_kmh, 2) AS speed_before_kmh,
       round(speed_kmh, 2) AS speed_after_kmh,
       round(accel_kmh_per_s, 3) AS accel_kmh_per_s,
       lat,
       lon
FROM changes
WHERE accel_kmh_per_s <= -{{brake_kmh_per_s}} OR accel_kmh_per_s >= {{accel_kmh_per_s}}
ORDER BY device_id, ts, event_id
