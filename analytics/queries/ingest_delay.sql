-- name: ingest_delay
-- answers: Data quality: how late records reach the lake, per topic: seconds from event time (ts) to the Spark batch that wrote the row (ingest_ts), median, 95th and 99th percentile and maximum. A vehicle offline for hours shows here as a long tail.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
--
-- delays: whole milliseconds (bigint): the engines agree on them exactly, and a quantile of
--   integers is cheaper than one of doubles (DuckDB, 10.26 M rows: 1.2 -> 0.8 s).
WITH delays AS (
    SELECT 'gps_data' AS topic, date_diff('millisecond', ts, ingest_ts) AS delay_ms
    FROM smartcity.gps_data
    WHERE ts >= {{start}} AND ts < {{end}} AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    UNION ALL
    SELECT 'vehicle_data', date_diff('millisecond', ts, ingest_ts)
    FROM smartcity.vehicle_data
    WHERE ts >= {{start}} AND ts < {{end}} AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    UNION ALL
    SELECT 'weather_data', date_diff('millisecond', ts, ingest_ts)
    FROM smartcity.weather_data
    WHERE ts >= {{start}} AND ts < {{end}} AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    UNION ALL
    SELECT 'traffic_data', date_diff('millisecond', ts, ingest_ts)
    FROM smartcity.traffic_data
    WHERE ts >= {{start}} AND ts < {{end}} AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    UNION ALL
    SELECT 'emergency_data', date_diff('millisecond', ts, ingest_ts)
    FROM smartcity.emergency_data
    WHERE ts >= {{start}} AND ts < {{end}} AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
)
SELECT topic,
       count(*) AS records,
       round(approx_percentile(delay_ms, 0.5) / 1000.0, 1) AS approx_p50_delay_s,
       round(approx_percentile(delay_ms, 0.95) / 1000.0, 1) AS approx_p95_delay_s,
       round(approx_percentile(delay_ms, 0.99) / 1000.0, 1) AS approx_p99_delay_s,
       round(max(delay_ms) / 1000.0, 1) AS max_delay_s
FROM delays
GROUP BY topic
ORDER BY topic
