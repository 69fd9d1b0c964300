-- name: seq_gaps
-- answers: Data quality: per device and boot (event_id is {device_id}:{boot_id}:{seq}; seq is one counter per device across all topics), the sequence numbers the lake holds, the span they cover, how many are missing and in how many gaps. Missing numbers are readings the agent rejected, quarantined records, or data still on its way.
-- param start: timestamp = 1970-01-01 00:00:00  -- first event time included (UTC)
-- param end: timestamp = 2100-01-01 00:00:00  -- first event time excluded (UTC)
-- param devices: list =  -- device_ids, comma-separated; empty: every device
WITH ids AS (
    SELECT device_id, event_id, seq, ts FROM smartcity.gps_data
    UNION ALL SELECT device_id, event_id, seq, ts FROM smartcity.vehicle_data
    UNION ALL SELECT device_id, event_id, seq, ts FROM smartcity.weather_data
    UNION ALL SELECT device_id, event_id, seq, ts FROM smartcity.traffic_data
    UNION ALL SELECT device_id, event_id, seq, ts FROM smartcity.emergency_data
),
booted AS (
    SELECT device_id, split_part(event_id, ':', 2) AS boot_id, seq, seq - seq % 256 AS block, ts
    FROM ids
    WHERE ts >= {{start}} AND ts < {{end}}
      AND (cardinality({{devices}}) = 0 OR contains({{devices}}, device_id))
),
blocks AS (
    -- Per 256 numbers of a device and boot, with a hash aggregate: ordering every reading (a
    -- lag over all of them) cost the engines most of this query's time (10 M rows, DuckDB 6.3 ->
    -- 3.9 s of CPU, Trino 18.4 -> 10.8 s). The lake holds each event_id once, and an event_id is
    -- one seq of one device and boot: a block holding as many readings as its span misses no
    -- number inside it, and the others miss exactly span - readings.
    SELECT device_id, boot_id, block,
           count(*) AS records, min(seq) AS first_seq, max(seq) AS last_seq,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM booted
    GROUP BY device_id, boot_id, block
),
inside AS (
    -- The gaps inside the blocks that miss numbers (a few percent of them where readings are
    -- rarely missing: 4.5 % in bench query's fleet): only their readings are put in order.
    SELECT device_id, boot_id, block, count_if(seq - prev_seq > 1) AS gaps
    FROM (SELECT b.device_id, b.boot_id, b.block, b.seq,
                 lag(b.seq) OVER (PARTITION BY b.device_id, b.boot_id, b.block ORDER BY b.seq) AS prev_seq
          FROM booted b
          JOIN blocks k ON k.device_id = b.device_id AND k.boot_id = b.boot_id AND k.block = b.block
          WHERE k.records < k.last_seq - k.first_seq + 1) AS holed
    GROUP BY device_id, boot_id, block
),
chained AS (
    -- A gap between two blocks: the next block's first number after the previous one's last.
    SELECT k.device_id, k.boot_id, k.records, k.first_seq, k.last_seq, k.first_ts, k.last_ts,
           coalesce(i.gaps, 0) AS inside_gaps,
           k.first_seq - lag(k.last_seq) OVER (PARTITION BY k.device_id, k.boot_id ORDER BY k.block) - 1 AS before
    FROM blocks k
    LEFT JOIN inside i ON i.device_id = k.device_id AND i.boot_id = k.boot_id AND i.block = k.block
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
