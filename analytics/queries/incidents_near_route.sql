-- name: incidents_near_route
-- answers: Incidents (any reporter) that a vehicle passed within radius_m while they were reported, within window_min minutes of a report: per vehicle and incident the closest distance (spherical, metres) and when, from the vehicle's minute-by-minute mean positions.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids (vehicles), comma-separated; empty: every device
-- param radius_m: double = 2000  -- an incident further than this from every position is not near
-- param window_min: double = 30  -- positions this many minutes before or after a report count
--
-- cells: Which minutes can be near a report, found by an equality join instead of comparing every
--   minute with every report of its time window (6.5 M pairs on 10 M fixes; DuckDB 4.5 -> 1.2 s
--   of CPU). Cells are radius_m tall in latitude (a degree of latitude is 111,195 m on the sphere
--   the distance is measured on, so a position within radius_m lies in the report's cell or the
--   next one up or down) and window_min long in time (a window of +/- window_min touches at most
--   three): each report is copied into the 3 x 3 cells around it and meets only the minutes in
--   them. The exact window and distance are checked on those pairs (near), so the answer is the
--   same.
-- closest_minute: the earliest of equally close minutes (a bus standing still), one answer on
--   every engine.
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
    SELECT incident_id, type, severity, status, ts, lat, lon,
           to_unixtime(ts) - {{window_min}} * 60 AS from_s, to_unixtime(ts) + {{window_min}} * 60 AS to_s
    FROM smartcity.emergency_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND lat IS NOT NULL AND lon IS NOT NULL
),
cells AS (
    SELECT e.*, floor(e.lat / (greatest({{radius_m}}, 1) / 111000.0)) + d_lat AS lat_cell,
           floor(to_unixtime(e.ts) / (greatest({{window_min}}, 1) * 60)) + d_time AS time_cell
    FROM reports e
    CROSS JOIN UNNEST(ARRAY[-1, 0, 1]) AS lat_step(d_lat)
    CROSS JOIN UNNEST(ARRAY[-1, 0, 1]) AS time_step(d_time)
),
near AS (
    SELECT r.device_id, e.incident_id, e.type, e.severity, e.status, e.ts AS reported_ts, r.minute,
           ST_Distance(to_spherical_geography(ST_Point(r.lon, r.lat)),
                       to_spherical_geography(ST_Point(e.lon, e.lat))) AS distance_m
    FROM route r
    JOIN cells e ON floor(r.lat / (greatest({{radius_m}}, 1) / 111000.0)) = e.lat_cell
                AND floor(r.minute_s / (greatest({{window_min}}, 1) * 60)) = e.time_cell
                AND r.minute_s >= e.from_s AND r.minute_s <= e.to_s
)
SELECT device_id,
       incident_id,
       max_by(type, reported_ts) AS type,
       max_by(severity, reported_ts) AS severity,
       max_by(status, reported_ts) AS last_status,
       min(reported_ts) AS first_reported_ts,
       round(min(distance_m), 0) AS closest_m,
       min_by(minute, ROW(distance_m, minute)) AS closest_minute
FROM near
WHERE distance_m <= {{radius_m}}
GROUP BY device_id, incident_id
ORDER BY device_id, incident_id
