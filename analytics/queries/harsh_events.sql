-- name: harsh_events
-- answers: Harsh braking and harsh acceleration: consecutive OBD speed readings of a vehicle, at most max_step_s apart, whose speed changed faster than the thresholds (km/h per second; 10 km/h/s is about 0.28 g).
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
-- param brake_kmh_per_s: double = 10  -- a deceleration at least this strong is harsh braking
-- param accel_kmh_per_s: double = 8  -- an acceleration at least this strong is harsh acceleration
-- param max_step_s: double = 5  -- readings further apart are not compared
WITH readings AS (
    SELECT device_id, event_id, ts, speed_kmh, lat, lon,
           lag(ts) OVER (PARTITION BY device_id ORDER BY ts, seq) AS prev_ts,
           lag(speed_kmh) OVER (PARTITION BY device_id ORDER BY ts, seq) AS prev_speed_kmh
    FROM smartcity.vehicle_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND speed_kmh IS NOT NULL
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
),
changes AS (
    SELECT *, (speed_kmh - prev_speed_kmh) / (to_unixtime(ts) - to_unixtime(prev_ts)) AS accel_kmh_per_s
    FROM readings
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
