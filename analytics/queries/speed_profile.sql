-- name: speed_profile
-- answers: Per device and hour (UTC): GPS fixes, the mean, median, 90th and 95th percentile and maximum speed, and the share of fixes above speed_limit_kmh.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
-- param speed_limit_kmh: double = 90  -- fixes above this speed are counted as over the limit
SELECT device_id,
       date_trunc('hour', ts) AS hour,
       count(*) AS fixes,
       round(avg(speed_kmh), 2) AS avg_speed_kmh,
       round(approx_percentile(speed_kmh, 0.5), 2) AS approx_p50_speed_kmh,
       round(approx_percentile(speed_kmh, 0.9), 2) AS approx_p90_speed_kmh,
       round(approx_percentile(speed_kmh, 0.95), 2) AS approx_p95_speed_kmh,
       round(max(speed_kmh), 2) AS max_speed_kmh,
       round(CAST(count_if(speed_kmh > {{speed_limit_kmh}}) AS DOUBLE) / count(*), 4) AS over_limit_share
FROM smartcity.gps_data
WHERE ts >= {{start}} AND ts < {{end}}
  AND speed_kmh IS NOT NULL
  AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
GROUP BY device_id, date_trunc('hour', ts)
ORDER BY device_id, hour
