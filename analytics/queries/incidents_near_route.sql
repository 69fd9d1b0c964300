-- name: incidents_near_route
-- answers: Incidents (any reporter) that a vehicle passed within radius_m while they were reported, within window_min minutes of a report: per vehicle and incident the closest distance (spherical, metres) and when, from the vehicle's minute-by-minute mean positions.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids (vehicles), comma-separated; empty: every device
-- param radius_m: double = 2000  -- an incident further than this from every position is not near
-- param window_min: double = 30  -- positions this many minutes before or after a report count
WITH route AS (
    SELECT device_id, date_trunc('minute', ts) AS minute, to_unixtime(date_trunc('minute', ts)) AS minute_s,
           avg(lat) AS lat, avg(lon) AS lon
    FROM smartcity.gps_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND lat IS NOT NULL AND lon IS NOT NULL
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    GROUP BY device_id, date_trunc('minute', ts)
),
reports AS (
    -- The time window as plain columns: a range join on columns (an IEJoin in DuckDB) instead of
    -- an expression evaluated for every pair of minute and report.
    SELECT incident_id, type, severity, status, ts, lat, lon,
           to_unixtime(ts) - {{window_min}} * 60 AS from_s, to_unixtime(ts) + {{window_min}} * 60 AS to_s
    FROM smartcity.emergency_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND lat IS NOT NULL AND lon IS NOT NULL
),
near AS (
    SELECT r.device_id, e.incident_id, e.type, e.severity, e.status, e.ts AS reported_ts, r.minute,
           ST_Distance(to_spherical_geography(ST_Point(r.lon, r.lat)),
                       to_spherical_geography(ST_Point(e.lon, e.lat))) AS distance_m
    FROM route r
    JOIN reports e ON r.minute_s >= e.from_s AND r.minute_s <= e.to_s
)
SELECT device_id,
       incident_id,
       max_by(type, reported_ts) AS type,
       max_by(severity, reported_ts) AS severity,
       max_by(status, reported_ts) AS last_status,
       min(reported_ts) AS first_reported_ts,
       round(min(distance_m), 0) AS closest_m,
       min_by(minute, distance_m) AS closest_minute
FROM near
WHERE distance_m <= {{radius_m}}
GROUP BY device_id, incident_id
ORDER BY device_id, incident_id
