CREATE SCHEMA IF NOT EXISTS smartcity;

CREATE TABLE IF NOT EXISTS smartcity.vehicle_data (
  event_id VARCHAR(800) NOT NULL ENCODE ZSTD,
  device_id VARCHAR(256) NOT NULL ENCODE RAW,
  ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  clock VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  seq BIGINT NOT NULL ENCODE AZ64,
  source VARCHAR(3) NOT NULL ENCODE BYTEDICT,
  schema_version INTEGER NOT NULL ENCODE AZ64,
  make VARCHAR(256) ENCODE ZSTD,
  model VARCHAR(256) ENCODE ZSTD,
  year INTEGER ENCODE AZ64,
  fuel_type VARCHAR(128) ENCODE ZSTD,
  vin VARCHAR(68) ENCODE ZSTD,
  speed_kmh DOUBLE PRECISION ENCODE ZSTD,
  rpm DOUBLE PRECISION ENCODE ZSTD,
  coolant_c DOUBLE PRECISION ENCODE ZSTD,
  fuel_level_pct DOUBLE PRECISION ENCODE ZSTD,
  throttle_pct DOUBLE PRECISION ENCODE ZSTD,
  engine_load_pct DOUBLE PRECISION ENCODE ZSTD,
  battery_v DOUBLE PRECISION ENCODE ZSTD,
  lat DOUBLE PRECISION ENCODE ZSTD,
  lon DOUBLE PRECISION ENCODE ZSTD,
  kafka_topic VARCHAR(65535) NOT NULL ENCODE ZSTD,
  kafka_partition INTEGER NOT NULL ENCODE AZ64,
  kafka_offset BIGINT NOT NULL ENCODE AZ64,
  kafka_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  ingest_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  boot_id VARCHAR(32) ENCODE ZSTD,
  lake_snapshot_id BIGINT NOT NULL ENCODE AZ64,
  loaded_at TIMESTAMPTZ NOT NULL ENCODE AZ64,
  PRIMARY KEY (event_id)
)
DISTSTYLE KEY DISTKEY (device_id)
COMPOUND SORTKEY (device_id, ts);

COMMENT ON TABLE smartcity.vehicle_data IS 'OBD-II readings plus static vehicle facts';

COMMENT ON COLUMN smartcity.vehicle_data.event_id IS 'Unique, deterministic id of this reading: {device_id}:{boot_id}:{seq}. A replay of the same queued reading carries the same id; downstream deduplicates on it.';

COMMENT ON COLUMN smartcity.vehicle_data.device_id IS 'The vehicle''s edge device';

COMMENT ON COLUMN smartcity.vehicle_data.ts IS 'Event time, UTC, ISO-8601 with milliseconds and Z';

COMMENT ON COLUMN smartcity.vehicle_data.clock IS 'Which clock stamped ts: system (kernel says NTP-synchronised), gps (receiver time carried forward on the monotonic clock: the Pi has no RTC), unsynced (system clock, not known to be synchronised and no GPS time yet: treat ts with suspicion) or sim (the simulator''s clock)';

COMMENT ON COLUMN smartcity.vehicle_data.seq IS 'Per-device sequence number, strictly increasing across restarts';

COMMENT ON COLUMN smartcity.vehicle_data.source IS 'hw: real sensors; sim: simulation backend';

COMMENT ON COLUMN smartcity.vehicle_data.schema_version IS 'Version of this contract';

COMMENT ON COLUMN smartcity.vehicle_data.make IS 'Vehicle make (configuration)';

COMMENT ON COLUMN smartcity.vehicle_data.model IS 'Vehicle model (configuration)';

COMMENT ON COLUMN smartcity.vehicle_data.year IS 'Model year (configuration)';

COMMENT ON COLUMN smartcity.vehicle_data.fuel_type IS 'Fuel type (configuration)';

COMMENT ON COLUMN smartcity.vehicle_data.vin IS 'Vehicle identification number from OBD mode 09 PID 02 or configuration';

COMMENT ON COLUMN smartcity.vehicle_data.speed_kmh IS 'Vehicle speed (PID 0D), km/h';

COMMENT ON COLUMN smartcity.vehicle_data.rpm IS 'Engine speed (PID 0C), rev/min';

COMMENT ON COLUMN smartcity.vehicle_data.coolant_c IS 'Engine coolant temperature (PID 05), degC';

COMMENT ON COLUMN smartcity.vehicle_data.fuel_level_pct IS 'Fuel tank level (PID 2F), percent';

COMMENT ON COLUMN smartcity.vehicle_data.throttle_pct IS 'Throttle position (PID 11), percent';

COMMENT ON COLUMN smartcity.vehicle_data.engine_load_pct IS 'Calculated engine load (PID 04), percent';

COMMENT ON COLUMN smartcity.vehicle_data.battery_v IS 'Control module voltage (PID 42), or the adapter''s supply voltage (ATRV) where PID 42 is unsupported: both are the battery as the car sees it; volts';

COMMENT ON COLUMN smartcity.vehicle_data.lat IS 'Latitude, WGS84 degrees, north positive';

COMMENT ON COLUMN smartcity.vehicle_data.lon IS 'Longitude, WGS84 degrees, east positive';

COMMENT ON COLUMN smartcity.vehicle_data.kafka_topic IS 'Kafka topic the record was read from';

COMMENT ON COLUMN smartcity.vehicle_data.kafka_partition IS 'Kafka partition';

COMMENT ON COLUMN smartcity.vehicle_data.kafka_offset IS 'Kafka offset within the partition';

COMMENT ON COLUMN smartcity.vehicle_data.kafka_ts IS 'Kafka record timestamp (broker/producer time), UTC';

COMMENT ON COLUMN smartcity.vehicle_data.ingest_ts IS 'Spark micro-batch time that wrote the row, UTC';

COMMENT ON COLUMN smartcity.vehicle_data.boot_id IS 'The agent''s boot id of this reading, the middle part of event_id ({device_id}:{boot_id}:{seq}); seq counts on within one boot id';

COMMENT ON COLUMN smartcity.vehicle_data.lake_snapshot_id IS 'Iceberg snapshot of the lake table whose data files brought this row (the snapshot the load read up to, for a full reconciliation)';

COMMENT ON COLUMN smartcity.vehicle_data.loaded_at IS 'When the warehouse load committed this row, UTC';

CREATE TABLE IF NOT EXISTS smartcity.gps_data (
  event_id VARCHAR(800) NOT NULL ENCODE ZSTD,
  device_id VARCHAR(256) NOT NULL ENCODE RAW,
  ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  clock VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  seq BIGINT NOT NULL ENCODE AZ64,
  source VARCHAR(3) NOT NULL ENCODE BYTEDICT,
  schema_version INTEGER NOT NULL ENCODE AZ64,
  lat DOUBLE PRECISION ENCODE ZSTD,
  lon DOUBLE PRECISION ENCODE ZSTD,
  alt_m DOUBLE PRECISION ENCODE ZSTD,
  speed_kmh DOUBLE PRECISION ENCODE ZSTD,
  heading_deg DOUBLE PRECISION ENCODE ZSTD,
  fix_mode INTEGER NOT NULL ENCODE AZ64,
  sats_used INTEGER ENCODE AZ64,
  hdop DOUBLE PRECISION ENCODE ZSTD,
  kafka_topic VARCHAR(65535) NOT NULL ENCODE ZSTD,
  kafka_partition INTEGER NOT NULL ENCODE AZ64,
  kafka_offset BIGINT NOT NULL ENCODE AZ64,
  kafka_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  ingest_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  boot_id VARCHAR(32) ENCODE ZSTD,
  lake_snapshot_id BIGINT NOT NULL ENCODE AZ64,
  loaded_at TIMESTAMPTZ NOT NULL ENCODE AZ64,
  PRIMARY KEY (event_id)
)
DISTSTYLE KEY DISTKEY (device_id)
COMPOUND SORTKEY (device_id, ts);

COMMENT ON TABLE smartcity.gps_data IS 'One position fix per receiver reporting cycle';

COMMENT ON COLUMN smartcity.gps_data.event_id IS 'Unique, deterministic id of this reading: {device_id}:{boot_id}:{seq}. A replay of the same queued reading carries the same id; downstream deduplicates on it.';

COMMENT ON COLUMN smartcity.gps_data.device_id IS 'The vehicle''s edge device';

COMMENT ON COLUMN smartcity.gps_data.ts IS 'Event time, UTC, ISO-8601 with milliseconds and Z';

COMMENT ON COLUMN smartcity.gps_data.clock IS 'Which clock stamped ts: system (kernel says NTP-synchronised), gps (receiver time carried forward on the monotonic clock: the Pi has no RTC), unsynced (system clock, not known to be synchronised and no GPS time yet: treat ts with suspicion) or sim (the simulator''s clock)';

COMMENT ON COLUMN smartcity.gps_data.seq IS 'Per-device sequence number, strictly increasing across restarts';

COMMENT ON COLUMN smartcity.gps_data.source IS 'hw: real sensors; sim: simulation backend';

COMMENT ON COLUMN smartcity.gps_data.schema_version IS 'Version of this contract';

COMMENT ON COLUMN smartcity.gps_data.lat IS 'Latitude, WGS84 degrees, north positive';

COMMENT ON COLUMN smartcity.gps_data.lon IS 'Longitude, WGS84 degrees, east positive';

COMMENT ON COLUMN smartcity.gps_data.alt_m IS 'Altitude above mean sea level, metres';

COMMENT ON COLUMN smartcity.gps_data.speed_kmh IS 'Speed over ground, km/h';

COMMENT ON COLUMN smartcity.gps_data.heading_deg IS 'Course over ground, degrees true, 0..360';

COMMENT ON COLUMN smartcity.gps_data.fix_mode IS '1 no fix, 2 2D, 3 3D';

COMMENT ON COLUMN smartcity.gps_data.sats_used IS 'Satellites used in the fix';

COMMENT ON COLUMN smartcity.gps_data.hdop IS 'Horizontal dilution of precision';

COMMENT ON COLUMN smartcity.gps_data.kafka_topic IS 'Kafka topic the record was read from';

COMMENT ON COLUMN smartcity.gps_data.kafka_partition IS 'Kafka partition';

COMMENT ON COLUMN smartcity.gps_data.kafka_offset IS 'Kafka offset within the partition';

COMMENT ON COLUMN smartcity.gps_data.kafka_ts IS 'Kafka record timestamp (broker/producer time), UTC';

COMMENT ON COLUMN smartcity.gps_data.ingest_ts IS 'Spark micro-batch time that wrote the row, UTC';

COMMENT ON COLUMN smartcity.gps_data.boot_id IS 'The agent''s boot id of this reading, the middle part of event_id ({device_id}:{boot_id}:{seq}); seq counts on within one boot id';

COMMENT ON COLUMN smartcity.gps_data.lake_snapshot_id IS 'Iceberg snapshot of the lake table whose data files brought this row (the snapshot the load read up to, for a full reconciliation)';

COMMENT ON COLUMN smartcity.gps_data.loaded_at IS 'When the warehouse load committed this row, UTC';

CREATE TABLE IF NOT EXISTS smartcity.traffic_data (
  event_id VARCHAR(800) NOT NULL ENCODE ZSTD,
  device_id VARCHAR(256) NOT NULL ENCODE RAW,
  ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  clock VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  seq BIGINT NOT NULL ENCODE AZ64,
  source VARCHAR(3) NOT NULL ENCODE BYTEDICT,
  schema_version INTEGER NOT NULL ENCODE AZ64,
  camera_id VARCHAR(256) NOT NULL ENCODE ZSTD,
  lat DOUBLE PRECISION NOT NULL ENCODE ZSTD,
  lon DOUBLE PRECISION NOT NULL ENCODE ZSTD,
  vehicle_count INTEGER NOT NULL ENCODE AZ64,
  avg_speed_kmh DOUBLE PRECISION ENCODE ZSTD,
  snapshot_uri VARCHAR(4096) ENCODE ZSTD,
  kafka_topic VARCHAR(65535) NOT NULL ENCODE ZSTD,
  kafka_partition INTEGER NOT NULL ENCODE AZ64,
  kafka_offset BIGINT NOT NULL ENCODE AZ64,
  kafka_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  ingest_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  boot_id VARCHAR(32) ENCODE ZSTD,
  lake_snapshot_id BIGINT NOT NULL ENCODE AZ64,
  loaded_at TIMESTAMPTZ NOT NULL ENCODE AZ64,
  PRIMARY KEY (event_id)
)
DISTSTYLE KEY DISTKEY (device_id)
COMPOUND SORTKEY (device_id, ts);

COMMENT ON TABLE smartcity.traffic_data IS 'A roadside camera''s observation';

COMMENT ON COLUMN smartcity.traffic_data.event_id IS 'Unique, deterministic id of this reading: {device_id}:{boot_id}:{seq}. A replay of the same queued reading carries the same id; downstream deduplicates on it.';

COMMENT ON COLUMN smartcity.traffic_data.device_id IS 'The vehicle''s edge device';

COMMENT ON COLUMN smartcity.traffic_data.ts IS 'Event time, UTC, ISO-8601 with milliseconds and Z';

COMMENT ON COLUMN smartcity.traffic_data.clock IS 'Which clock stamped ts: system (kernel says NTP-synchronised), gps (receiver time carried forward on the monotonic clock: the Pi has no RTC), unsynced (system clock, not known to be synchronised and no GPS time yet: treat ts with suspicion) or sim (the simulator''s clock)';

COMMENT ON COLUMN smartcity.traffic_data.seq IS 'Per-device sequence number, strictly increasing across restarts';

COMMENT ON COLUMN smartcity.traffic_data.source IS 'hw: real sensors; sim: simulation backend';

COMMENT ON COLUMN smartcity.traffic_data.schema_version IS 'Version of this contract';

COMMENT ON COLUMN smartcity.traffic_data.camera_id IS 'Roadside camera';

COMMENT ON COLUMN smartcity.traffic_data.lat IS 'Latitude, WGS84 degrees, north positive';

COMMENT ON COLUMN smartcity.traffic_data.lon IS 'Longitude, WGS84 degrees, east positive';

COMMENT ON COLUMN smartcity.traffic_data.vehicle_count IS 'Vehicles counted in the last interval';

COMMENT ON COLUMN smartcity.traffic_data.avg_speed_kmh IS 'Mean speed of counted vehicles, km/h';

COMMENT ON COLUMN smartcity.traffic_data.snapshot_uri IS 'Reference to the snapshot image (never an inline blob)';

COMMENT ON COLUMN smartcity.traffic_data.kafka_topic IS 'Kafka topic the record was read from';

COMMENT ON COLUMN smartcity.traffic_data.kafka_partition IS 'Kafka partition';

COMMENT ON COLUMN smartcity.traffic_data.kafka_offset IS 'Kafka offset within the partition';

COMMENT ON COLUMN smartcity.traffic_data.kafka_ts IS 'Kafka record timestamp (broker/producer time), UTC';

COMMENT ON COLUMN smartcity.traffic_data.ingest_ts IS 'Spark micro-batch time that wrote the row, UTC';

COMMENT ON COLUMN smartcity.traffic_data.boot_id IS 'The agent''s boot id of this reading, the middle part of event_id ({device_id}:{boot_id}:{seq}); seq counts on within one boot id';

COMMENT ON COLUMN smartcity.traffic_data.lake_snapshot_id IS 'Iceberg snapshot of the lake table whose data files brought this row (the snapshot the load read up to, for a full reconciliation)';

COMMENT ON COLUMN smartcity.traffic_data.loaded_at IS 'When the warehouse load committed this row, UTC';

CREATE TABLE IF NOT EXISTS smartcity.weather_data (
  event_id VARCHAR(800) NOT NULL ENCODE ZSTD,
  device_id VARCHAR(256) NOT NULL ENCODE RAW,
  ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  clock VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  seq BIGINT NOT NULL ENCODE AZ64,
  source VARCHAR(3) NOT NULL ENCODE BYTEDICT,
  schema_version INTEGER NOT NULL ENCODE AZ64,
  temperature_c DOUBLE PRECISION ENCODE ZSTD,
  humidity_pct DOUBLE PRECISION ENCODE ZSTD,
  precipitation_mm DOUBLE PRECISION ENCODE ZSTD,
  wind_speed_kmh DOUBLE PRECISION ENCODE ZSTD,
  air_quality_index INTEGER ENCODE AZ64,
  weather_condition VARCHAR(6) ENCODE BYTEDICT,
  lat DOUBLE PRECISION ENCODE ZSTD,
  lon DOUBLE PRECISION ENCODE ZSTD,
  kafka_topic VARCHAR(65535) NOT NULL ENCODE ZSTD,
  kafka_partition INTEGER NOT NULL ENCODE AZ64,
  kafka_offset BIGINT NOT NULL ENCODE AZ64,
  kafka_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  ingest_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  boot_id VARCHAR(32) ENCODE ZSTD,
  lake_snapshot_id BIGINT NOT NULL ENCODE AZ64,
  loaded_at TIMESTAMPTZ NOT NULL ENCODE AZ64,
  PRIMARY KEY (event_id)
)
DISTSTYLE KEY DISTKEY (device_id)
COMPOUND SORTKEY (device_id, ts);

COMMENT ON TABLE smartcity.weather_data IS 'Cabin/ambient conditions at the vehicle';

COMMENT ON COLUMN smartcity.weather_data.event_id IS 'Unique, deterministic id of this reading: {device_id}:{boot_id}:{seq}. A replay of the same queued reading carries the same id; downstream deduplicates on it.';

COMMENT ON COLUMN smartcity.weather_data.device_id IS 'The vehicle''s edge device';

COMMENT ON COLUMN smartcity.weather_data.ts IS 'Event time, UTC, ISO-8601 with milliseconds and Z';

COMMENT ON COLUMN smartcity.weather_data.clock IS 'Which clock stamped ts: system (kernel says NTP-synchronised), gps (receiver time carried forward on the monotonic clock: the Pi has no RTC), unsynced (system clock, not known to be synchronised and no GPS time yet: treat ts with suspicion) or sim (the simulator''s clock)';

COMMENT ON COLUMN smartcity.weather_data.seq IS 'Per-device sequence number, strictly increasing across restarts';

COMMENT ON COLUMN smartcity.weather_data.source IS 'hw: real sensors; sim: simulation backend';

COMMENT ON COLUMN smartcity.weather_data.schema_version IS 'Version of this contract';

COMMENT ON COLUMN smartcity.weather_data.temperature_c IS 'Air temperature (DHT), degC';

COMMENT ON COLUMN smartcity.weather_data.humidity_pct IS 'Relative humidity (DHT), percent';

COMMENT ON COLUMN smartcity.weather_data.precipitation_mm IS 'Precipitation in the last hour, mm (simulator only)';

COMMENT ON COLUMN smartcity.weather_data.wind_speed_kmh IS 'Wind speed, km/h (simulator only)';

COMMENT ON COLUMN smartcity.weather_data.air_quality_index IS 'Air quality index, US EPA scale (simulator only)';

COMMENT ON COLUMN smartcity.weather_data.weather_condition IS 'Condition (simulator only)';

COMMENT ON COLUMN smartcity.weather_data.lat IS 'Latitude, WGS84 degrees, north positive';

COMMENT ON COLUMN smartcity.weather_data.lon IS 'Longitude, WGS84 degrees, east positive';

COMMENT ON COLUMN smartcity.weather_data.kafka_topic IS 'Kafka topic the record was read from';

COMMENT ON COLUMN smartcity.weather_data.kafka_partition IS 'Kafka partition';

COMMENT ON COLUMN smartcity.weather_data.kafka_offset IS 'Kafka offset within the partition';

COMMENT ON COLUMN smartcity.weather_data.kafka_ts IS 'Kafka record timestamp (broker/producer time), UTC';

COMMENT ON COLUMN smartcity.weather_data.ingest_ts IS 'Spark micro-batch time that wrote the row, UTC';

COMMENT ON COLUMN smartcity.weather_data.boot_id IS 'The agent''s boot id of this reading, the middle part of event_id ({device_id}:{boot_id}:{seq}); seq counts on within one boot id';

COMMENT ON COLUMN smartcity.weather_data.lake_snapshot_id IS 'Iceberg snapshot of the lake table whose data files brought this row (the snapshot the load read up to, for a full reconciliation)';

COMMENT ON COLUMN smartcity.weather_data.loaded_at IS 'When the warehouse load committed this row, UTC';

CREATE TABLE IF NOT EXISTS smartcity.emergency_data (
  event_id VARCHAR(800) NOT NULL ENCODE ZSTD,
  device_id VARCHAR(256) NOT NULL ENCODE RAW,
  ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  clock VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  seq BIGINT NOT NULL ENCODE AZ64,
  source VARCHAR(3) NOT NULL ENCODE BYTEDICT,
  schema_version INTEGER NOT NULL ENCODE AZ64,
  incident_id VARCHAR(512) NOT NULL ENCODE ZSTD,
  type VARCHAR(9) NOT NULL ENCODE BYTEDICT,
  status VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  severity VARCHAR(8) NOT NULL ENCODE BYTEDICT,
  description VARCHAR(4096) ENCODE ZSTD,
  lat DOUBLE PRECISION ENCODE ZSTD,
  lon DOUBLE PRECISION ENCODE ZSTD,
  kafka_topic VARCHAR(65535) NOT NULL ENCODE ZSTD,
  kafka_partition INTEGER NOT NULL ENCODE AZ64,
  kafka_offset BIGINT NOT NULL ENCODE AZ64,
  kafka_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  ingest_ts TIMESTAMPTZ NOT NULL ENCODE AZ64,
  boot_id VARCHAR(32) ENCODE ZSTD,
  lake_snapshot_id BIGINT NOT NULL ENCODE AZ64,
  loaded_at TIMESTAMPTZ NOT NULL ENCODE AZ64,
  PRIMARY KEY (event_id)
)
DISTSTYLE KEY DISTKEY (device_id)
COMPOUND SORTKEY (device_id, ts);

COMMENT ON TABLE smartcity.emergency_data IS 'An incident and its lifecycle';

COMMENT ON COLUMN smartcity.emergency_data.event_id IS 'Unique, deterministic id of this reading: {device_id}:{boot_id}:{seq}. A replay of the same queued reading carries the same id; downstream deduplicates on it.';

COMMENT ON COLUMN smartcity.emergency_data.device_id IS 'The vehicle''s edge device';

COMMENT ON COLUMN smartcity.emergency_data.ts IS 'Event time, UTC, ISO-8601 with milliseconds and Z';

COMMENT ON COLUMN smartcity.emergency_data.clock IS 'Which clock stamped ts: system (kernel says NTP-synchronised), gps (receiver time carried forward on the monotonic clock: the Pi has no RTC), unsynced (system clock, not known to be synchronised and no GPS time yet: treat ts with suspicion) or sim (the simulator''s clock)';

COMMENT ON COLUMN smartcity.emergency_data.seq IS 'Per-device sequence number, strictly increasing across restarts';

COMMENT ON COLUMN smartcity.emergency_data.source IS 'hw: real sensors; sim: simulation backend';

COMMENT ON COLUMN smartcity.emergency_data.schema_version IS 'Version of this contract';

COMMENT ON COLUMN smartcity.emergency_data.incident_id IS 'Stable across the incident''s updates';

COMMENT ON COLUMN smartcity.emergency_data.type IS 'Incident kind';

COMMENT ON COLUMN smartcity.emergency_data.status IS 'Active until Resolved';

COMMENT ON COLUMN smartcity.emergency_data.severity IS 'Severity';

COMMENT ON COLUMN smartcity.emergency_data.description IS 'Human-readable description';

COMMENT ON COLUMN smartcity.emergency_data.lat IS 'Latitude, WGS84 degrees, north positive';

COMMENT ON COLUMN smartcity.emergency_data.lon IS 'Longitude, WGS84 degrees, east positive';

COMMENT ON COLUMN smartcity.emergency_data.kafka_topic IS 'Kafka topic the record was read from';

COMMENT ON COLUMN smartcity.emergency_data.kafka_partition IS 'Kafka partition';

COMMENT ON COLUMN smartcity.emergency_data.kafka_offset IS 'Kafka offset within the partition';

COMMENT ON COLUMN smartcity.emergency_data.kafka_ts IS 'Kafka record timestamp (broker/producer time), UTC';

COMMENT ON COLUMN smartcity.emergency_data.ingest_ts IS 'Spark micro-batch time that wrote the row, UTC';

COMMENT ON COLUMN smartcity.emergency_data.boot_id IS 'The agent''s boot id of this reading, the middle part of event_id ({device_id}:{boot_id}:{seq}); seq counts on within one boot id';

COMMENT ON COLUMN smartcity.emergency_data.lake_snapshot_id IS 'Iceberg snapshot of the lake table whose data files brought this row (the snapshot the load read up to, for a full reconciliation)';

COMMENT ON COLUMN smartcity.emergency_data.loaded_at IS 'When the warehouse load committed this row, UTC';

CREATE TABLE IF NOT EXISTS smartcity.load_state (table_name VARCHAR(128) NOT NULL, snapshot_id BIGINT, files INTEGER NOT NULL, rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL, mode VARCHAR(16) NOT NULL, loaded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (table_name));

CREATE TABLE IF NOT EXISTS smartcity.load_files (table_name VARCHAR(128) NOT NULL, snapshot_id BIGINT NOT NULL, file_path VARCHAR(4096) NOT NULL, record_count BIGINT NOT NULL, loaded_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS smartcity.load_refused (table_name VARCHAR(128) NOT NULL, snapshot_id BIGINT NOT NULL, file_path VARCHAR(4096) NOT NULL, error VARCHAR(4096) NOT NULL, refused_at TIMESTAMPTZ NOT NULL);

DROP TABLE IF EXISTS smartcity.gps_spans;

CREATE TABLE smartcity.gps_spans (
  device_id VARCHAR(256) NOT NULL,
  span_s DOUBLE PRECISION NOT NULL,
  moving_kmh DOUBLE PRECISION NOT NULL,
  span BIGINT NOT NULL,
  fixes BIGINT NOT NULL,
  first_ts TIMESTAMPTZ NOT NULL,
  first_lat DOUBLE PRECISION NOT NULL,
  first_lon DOUBLE PRECISION NOT NULL,
  first_speed_kmh DOUBLE PRECISION,
  last_ts TIMESTAMPTZ NOT NULL,
  last_lat DOUBLE PRECISION NOT NULL,
  last_lon DOUBLE PRECISION NOT NULL,
  km DOUBLE PRECISION,
  moving_s DOUBLE PRECISION,
  idle_s DOUBLE PRECISION,
  speed_sum_kmh DOUBLE PRECISION,
  speeds BIGINT NOT NULL,
  max_speed_kmh DOUBLE PRECISION,
  refreshed_ts TIMESTAMPTZ NOT NULL
);

COMMENT ON TABLE smartcity.gps_spans IS 'trip_summary''s rollup of gps_data: per device and span of event time, what its fixes contribute to a trip (rows are used where their fix count is current) (empty in the warehouse: the queries compute every span from its rows)';

DROP TABLE IF EXISTS smartcity.vehicle_spans;

CREATE TABLE smartcity.vehicle_spans (
  device_id VARCHAR(256) NOT NULL,
  span_s DOUBLE PRECISION NOT NULL,
  brake_kmh_per_s DOUBLE PRECISION NOT NULL,
  accel_kmh_per_s DOUBLE PRECISION NOT NULL,
  max_step_s DOUBLE PRECISION NOT NULL,
  span BIGINT NOT NULL,
  readings BIGINT NOT NULL,
  harsh_pairs BIGINT NOT NULL,
  first_ts TIMESTAMPTZ NOT NULL,
  first_event_id VARCHAR(800) NOT NULL,
  first_speed_kmh DOUBLE PRECISION NOT NULL,
  first_lat DOUBLE PRECISION,
  first_lon DOUBLE PRECISION,
  last_ts TIMESTAMPTZ NOT NULL,
  last_speed_kmh DOUBLE PRECISION NOT NULL,
  refreshed_ts TIMESTAMPTZ NOT NULL
);

COMMENT ON TABLE smartcity.vehicle_spans IS 'harsh_events'' rollup of vehicle_data: per device and span of event time, its harsh pairs and first and last reading (rows are used where their reading count is current) (empty in the warehouse: the queries compute every span from its rows)';
