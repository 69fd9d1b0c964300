-- name: trip_summary
-- answers: Per device and trip (fixes no more than trip_gap_s apart): start and end, distance along the fixes (great circle, km), duration, moving and idle time, average and maximum speed.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
-- param trip_gap_s: double = 600  -- a longer gap between two fixes starts a new trip (seconds, > 0)
-- param moving_kmh: double = 3  -- a step counts as moving at this GPS speed or more
WITH fixes AS (
    SELECT device_id, ts, seq, lat, lon, speed_kmh,
           lag(ts) OVER (PARTITION BY device_id ORDER BY ts, seq) AS prev_ts,
           lag(lat) OVER (PARTITION BY device_id ORDER BY ts, seq) AS prev_lat,
           lag(lon) OVER (PARTITION BY device_id ORDER BY ts, seq) AS prev_lon
    FROM smartcity.gps_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND lat IS NOT NULL AND lon IS NOT NULL
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
),
steps AS (
    SELECT device_id, ts, seq, speed_kmh,
           CASE WHEN prev_ts IS NULL OR to_unixtime(ts) - to_unixtime(prev_ts) > {{trip_gap_s}}
                THEN 1 ELSE 0 END AS new_trip,
           to_unixtime(ts) - to_unixtime(prev_ts) AS step_s,
           2 * 6371.0088 * asin(sqrt(
               power(sin(radians(lat - prev_lat) / 2), 2)
               + cos(radians(prev_lat)) * cos(radians(lat)) * power(sin(radians(lon - prev_lon) / 2), 2)
           )) AS step_km
    FROM fixes
),
buckets AS (
    -- The fixes gathered per device into spans of trip_gap_s. Two fixes of one span are less than
    -- trip_gap_s apart, so a trip never starts inside a span after its first fix: each span lies
    -- in one trip, and numbering the few spans (a running count of trip starts) numbers the trips.
    -- One sort of the fixes and no running sum over them (DuckDB: 11.2 -> ~4 s of CPU on 6.75 M
    -- fixes; a running sum over every fix cost ~5.5 s of it); the engines sum the spans' sums.
    SELECT device_id,
           floor(to_unixtime(ts) / {{trip_gap_s}}) AS span,
           max(new_trip) AS starts_trip,
           min(ts) AS first_ts,
           max(ts) AS last_ts,
           count(*) AS fixes,
           sum(CASE WHEN new_trip = 0 THEN step_km END) AS km,
           sum(CASE WHEN new_trip = 0 AND speed_kmh >= {{moving_kmh}} THEN step_s END) AS moving_s,
           sum(CASE WHEN new_trip = 0 AND (speed_kmh IS NULL OR speed_kmh < {{moving_kmh}}) THEN step_s END) AS idle_s,
           sum(speed_kmh) AS speed_sum,
           count(speed_kmh) AS speeds,
           max(speed_kmh) AS max_speed_kmh
    FROM steps
    GROUP BY device_id, floor(to_unixtime(ts) / {{trip_gap_s}})
),
trips AS (
    SELECT *, sum(starts_trip) OVER (PARTITION BY device_id ORDER BY span
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS trip_no
    FROM buckets
)
SELECT device_id,
       trip_no,
       min(first_ts) AS trip_start,
       max(last_ts) AS trip_end,
       sum(fixes) AS fixes,
       round(coalesce(sum(km), 0), 3) AS distance_km,
       round((to_unixtime(max(last_ts)) - to_unixtime(min(first_ts))) / 60.0, 2) AS duration_min,
       round(coalesce(sum(moving_s), 0) / 60.0, 2) AS moving_min,
       round(coalesce(sum(idle_s), 0) / 60.0, 2) AS idle_min,
       round(sum(speed_sum) / nullif(sum(speeds), 0), 2) AS avg_speed_kmh,
       round(max(max_speed_kmh), 2) AS max_speed_kmh
FROM trips
GROUP BY device_id, trip_no
ORDER BY device_id, trip_no
