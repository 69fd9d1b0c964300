-- name: camera_snapshots
-- answers: The roadside cameras along the route: per camera its position, when the vehicles saw it first and last, observations, mean vehicle count and speed, and its latest snapshot.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
SELECT camera_id,
       round(avg(lat), 5) AS lat,
       round(avg(lon), 5) AS lon,
       min(ts) AS first_seen_ts,
       max(ts) AS last_seen_ts,
       count(*) AS observations,
       count(DISTINCT device_id) AS devices,
       round(avg(vehicle_count), 1) AS avg_vehicle_count,
       round(avg(avg_speed_kmh), 1) AS avg_speed_kmh,
       max_by(snapshot_uri, CASE WHEN snapshot_uri IS NOT NULL THEN ts END) AS latest_snapshot_uri
FROM smartcity.traffic_data
WHERE ts >= {{start}} AND ts < {{end}}
  AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
GROUP BY camera_id
ORDER BY first_seen_ts, camera_id
