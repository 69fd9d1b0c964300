-- name: weather_along_route
-- answers: The weather the vehicle drove through, minute by minute (UTC): its mean position and speed in the minute joined with the weather readings of the same device and minute.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
WITH route AS (
    SELECT device_id, date_trunc('minute', ts) AS minute,
           avg(lat) AS lat, avg(lon) AS lon, avg(speed_kmh) AS speed_kmh
    FROM smartcity.gps_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND lat IS NOT NULL AND lon IS NOT NULL
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    GROUP BY device_id, date_trunc('minute', ts)
),
weather AS (
    SELECT device_id, date_trunc('minute', ts) AS minute,
           avg(temperature_c) AS temperature_c, avg(humidity_pct) AS humidity_pct,
           max(precipitation_mm) AS precipitation_mm, max(wind_speed_kmh) AS wind_speed_kmh,
           max(air_quality_index) AS air_quality_index,
           max_by(weather_condition, CASE WHEN weather_condition IS NOT NULL THEN ts END) AS weather_condition
    FROM smartcity.weather_data
    WHERE ts >= {{start}} AND ts < {{end}}
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    GROUP BY device_id, date_trunc('minute', ts)
)
SELECT r.device_id,
       r.minute,
       round(r.lat, 5) AS lat,
       round(r.lon, 5) AS lon,
       round(r.speed_kmh, 1) AS speed_kmh,
       round(w.temperature_c, 1) AS temperature_c,
       round(w.humidity_pct, 1) AS humidity_pct,
       w.precipitation_mm,
       w.wind_speed_kmh,
       w.air_quality_index,
       w.weather_condition
FROM route r
JOIN weather w ON w.device_id = r.device_id AND w.minute = r.minute
ORDER BY r.device_id, r.minute
