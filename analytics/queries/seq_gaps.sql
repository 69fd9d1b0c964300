-- name: seq_gaps
-- answers: Data quality: per device and boot (event_id is {device_id}:{boot_id}:{seq}; seq is one counter per device across all topics), the sequence numbers the lake holds, the span they cover, how many are missing and in how many gaps. Missing numbers are readings the agent rejected, quarantined records, or data still on its way.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
--
-- blocks: per 62 numbers of a device and boot, one hash aggregate, with the numbers held as the
--   bits of a bigint (`held`, bit i: block + i; 62 bits, so that held shifted left by one stays
--   positive). The lake holds each event_id once, and an event_id is one seq of one device and
--   boot, so the bits are the readings. Ordering every reading instead (a lag over all of them),
--   or the readings of blocks that miss a number, cost the engines most of this query's time
--   (10.26 M rows, DuckDB: 3.4 -> 2.1 -> 1.2 s). boot_id is the lake's column derived from
--   event_id (catalog/tables.py DERIVED): reading every event_id to split it cost about half.
-- chained: gaps inside a block: its runs of held numbers (a held bit whose lower neighbour is not
--   held starts one) less one. A gap between blocks: the next block's first number after the
--   previous one's last.
WITH ids AS (
    SELECT device_id, boot_id, seq, ts FROM smartcity.gps_data
    UNION ALL SELECT device_id, boot_id, seq, ts FROM smartcity.vehicle_data
    UNION ALL SELECT device_id, boot_id, seq, ts FROM smartcity.weather_data
    UNION ALL SELECT device_id, boot_id, seq, ts FROM smartcity.traffic_data
    UNION ALL SELECT device_id, boot_id, seq, ts FROM smartcity.emergency_data
),
blocks AS (
    SELECT device_id, boot_id, seq - seq % 62 AS block,
           count(*) AS records, min(seq) AS first_seq, max(seq) AS last_seq,
           min(ts) AS first_ts, max(ts) AS last_ts,
           bitwise_or_agg(bitwise_left_shift(BIGINT '1', CAST(seq % 62 AS integer))) AS held
    FROM ids
    WHERE ts >= {{start}} AND ts < {{end}}
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
    GROUP BY device_id, boot_id, seq - seq % 62
),
chained AS (
    SELECT device_id, boot_id, records, first_seq, last_seq, first_ts, last_ts,
           bit_count(bitwise_and(held, bitwise_not(bitwise_left_shift(held, 1))), 64) - 1 AS inside_gaps,
           first_seq - lag(last_seq) OVER (PARTITION BY device_id, boot_id ORDER BY block) - 1 AS before
    FROM blocks
)
SELECT device_id,
       boot_id,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       sum(records) AS records,
       min(first_seq) AS first_seq,
       max(last_seq) AS last_seq,
       sum(last_seq - first_seq + 1 - records) + coalesce(sum(before), 0) AS missing_seqs,
       sum(inside_gaps) + count_if(before > 0) AS gaps
FROM chained
GROUP BY device_id, boot_id
ORDER BY device_id, first_ts, boot_id
