-- name: quarantine_by_reason
-- answers: Data quality: records the lake quarantined, per ingest hour (UTC), topic and error kind, with one example reason. Quarantined records have no trusted device or event time, so this query filters on ingest time and takes no devices.
-- param start: timestamp = 1970-01-01 00:00:00  -- first ingest time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first ingest time excluded (UTC)
SELECT date_trunc('hour', ingest_ts) AS ingest_hour,
       kafka_topic,
       error_kind,
       count(*) AS records,
       min(reason) AS example_reason
FROM smartcity.quarantine
WHERE ingest_ts >= {{start}} AND ingest_ts < {{end}}
GROUP BY date_trunc('hour', ingest_ts), kafka_topic, error_kind
ORDER BY ingest_hour, kafka_topic, error_kind
