-- name: engine_health
-- answers: Per device and hour (UTC), from OBD-II: readings, coolant (maximum, readings over coolant_max_c), time in RPM bands (idle, normal, high), fuel level at the hour's first and last reading and its drop, lowest battery voltage.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
-- param coolant_max_c: double = 105  -- coolant hotter than this is counted as overheating
-- param idle_rpm: double = 1000  -- below: idle band
-- param high_rpm: double = 3500  -- at or above: high band
-- (The fuel level's first and last readings skip readings without one.)
SELECT device_id,
       date_trunc('hour', ts) AS hour,
       count(*) AS readings,
       round(max(coolant_c), 1) AS max_coolant_c,
       count_if(coolant_c > {{coolant_max_c}}) AS overheat_readings,
       count_if(rpm < {{idle_rpm}}) AS idle_rpm_readings,
       count_if(rpm >= {{idle_rpm}} AND rpm < {{high_rpm}}) AS normal_rpm_readings,
       count_if(rpm >= {{high_rpm}}) AS high_rpm_readings,
       round(max(rpm), 0) AS max_rpm,
       round(min_by(fuel_level_pct, CASE WHEN fuel_level_pct IS NOT NULL THEN ts END), 2) AS fuel_first_pct,
       round(max_by(fuel_level_pct, CASE WHEN fuel_level_pct IS NOT NULL THEN ts END), 2) AS fuel_last_pct,
       round(min_by(fuel_level_pct, CASE WHEN fuel_level_pct IS NOT NULL THEN ts END) - max_by(fuel_level_pct, CASE WHEN fuel_level_pct IS NOT NULL THEN ts END), 2) AS fuel_drop_pct,
       round(min(battery_v), 2) AS min_battery_v
FROM smartcity.vehicle_data
WHERE ts >= {{start}} AND ts < {{end}}
  AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
GROUP BY device_id, date_trunc('hour', ts)
ORDER BY device_id, hour
