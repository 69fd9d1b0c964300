"""python -m bench spark [--rows N] [--latency-s S] [--rate R]: the lake job on a real local Kafka.

- rows_per_s: sustained Kafka -> Parquet rate with full parsing, validation, dedup and the commit,
  from StreamingQueryProgress (sum of numInputRows / sum of triggerExecution time), over a
  pre-loaded backlog, first (compile-heavy) batch excluded.
- latency_p50_s / latency_p95_s: from a record's ts to the moment a pyarrow reader polling the lake
  (every 0.2 s) first sees it, at a 5 s trigger and a steady producer.
- startup_s: SparkSession creation to the first batch visible in the lake (JVM start, jars, first
  batch's code generation); session_s: the SparkSession alone.
- files_per_hour_before / _after: mean visible files per topic/hour partition before and after
  `compact` over every hour of the backlog.
"""
from __future__ import annotations

import json
import logging
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from smartcity.runtime.cli import ArgumentParser

log = logging.getLogger(__name__)


def _template(rt) -> dict:
    """A valid record with every nullable field filled (real readings mostly are), so the parse
    does the work it does on the agent's records, not on a record of nulls."""
    from smartcity.contracts import example, violations
    from smartcity.contracts import schema as cs
    r = example(rt.name)
    for f in rt.fields:
        if r.get(f.name) is not None:
            continue
        if f.enum:
            v = f.enum[-1]
        elif f.type == cs.DOUBLE:
            lo, hi = (f.minimum if f.minimum is not None else -1000.0), (f.maximum if f.maximum is not None else 1000.0)
            v = round(lo + (hi - lo) * 0.3721, 6)
        elif f.type in (cs.INT, cs.LONG):
            v = int(f.minimum if f.minimum is not None else 0) + 1
        else:
            v = "bench"
        if not violations(rt, {**r, f.name: v}):
            r[f.name] = v
    return r


def _records(n: int, start: datetime, device: str, hours: int, canonical: bool = True):
    from smartcity.contracts import encode, format_ts
    from smartcity.contracts.schema import RECORD_TYPES
    templates = {rt.name: _template(rt) for rt in RECORD_TYPES}
    topics = list(templates)
    for i in range(n):
        t = topics[i % len(topics)]
        r = dict(templates[t])
        r.update(event_id=f"{device}:0000beef:{i}", device_id=device, seq=i,
                 ts=format_ts(start + timedelta(seconds=(i * hours * 3600) // max(n, 1))))
        # canonical: the agent's wire form (the lake job's fast path); else json.dumps' default
        # spacing, as a third-party producer might write (the full VARIANT path for every row).
        yield t, (encode(t, r) if canonical else json.dumps(r).encode())


def _produce(bootstrap: str, items) -> int:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000})
    n = 0
    for topic, value in items:
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
    p.flush(60)
    return n


def _files_per_hour(lake: str) -> float:
    from smartcity.spark_jobs.reader import visible_files
    from smartcity.contracts.schema import RECORD_TYPES
    counts: dict[tuple, int] = {}
    for rt in RECORD_TYPES:
        for f in visible_files(lake, "data", rt.name):
            key = (rt.name,) + tuple(Path(f).parts[-3:-1])
            counts[key] = counts.get(key, 0) + 1
    return round(statistics.mean(counts.values()), 2) if counts else 0.0


def run(args: list[str]) -> dict:
    ap = ArgumentParser(prog="python -m bench spark")
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--max-offsets", type=int, default=200_000)
    ap.add_argument("--latency-s", type=float, default=45.0)
    ap.add_argument("--rate", type=float, default=200.0, help="records/s in the latency phase")
    ap.add_argument("--encoding", choices=("canonical", "spaced"), default="canonical",
                    help="canonical: the agent's wire form; spaced: json.dumps default (full path)")
    a = ap.parse_args(args)
    from deploy.local.kafka import KafkaServer
    from smartcity.spark_jobs.compact import compact_hour, hours
    from smartcity.spark_jobs.lake import build_query
    from smartcity.spark_jobs.reader import visible_files
    from smartcity.spark_jobs.session import build_session
    from smartcity.spark_jobs.settings import LakeSettings

    tmp = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    out: dict = {"rows": a.rows, "encoding": a.encoding}
    with KafkaServer(tmp / "kafka") as kafka:
        kafka.create_topics(partitions=2)
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        t = time.monotonic()
        _produce(kafka.bootstrap, _records(a.rows, start, "bench", 3, a.encoding == "canonical"))
        out["produce_s"] = round(time.monotonic() - t, 2)
        s = LakeSettings(bootstrap=kafka.bootstrap, lake=str(tmp / "lake"), trigger_s=0.5,
                         max_offsets_per_trigger=a.max_offsets)
        t0 = time.monotonic()
        spark = build_session(s, "bench-spark")
        out["session_s"] = round(time.monotonic() - t0, 2)
        q = build_query(spark, s)
        deadline = time.monotonic() + 900
        while not visible_files(s.lake, "data", "gps_data") and time.monotonic() < deadline:
            time.sleep(0.1)
        out["startup_s"] = round(time.monotonic() - t0, 2)
        done = 0
        while time.monotonic() < deadline:
            done = sum(p["numInputRows"] for p in q.recentProgress)
            if done >= a.rows:
                break
            if q.exception():
                raise RuntimeError(f"query failed: {q.exception()}")
            time.sleep(0.5)
        progress = [p for p in q.recentProgress if p["numInputRows"] > 0]
        q.stop()
        out["batch_timings"] = q.lake_writer.timings
        steady = progress[1:] or progress
        rows = sum(p["numInputRows"] for p in steady)
        secs = sum(p["durationMs"]["triggerExecution"] for p in steady) / 1000
        out["rows_per_s"] = round(rows / secs) if secs else 0
        out["batches"] = len(progress)
        out["first_batch_s"] = round(progress[0]["durationMs"]["triggerExecution"] / 1000, 2) if progress else None
        out["files_per_hour_before"] = _files_per_hour(s.lake)
        t = time.monotonic()
        for rt_name in s.topics:
            for dt, hour in hours(s, rt_name):
                compact_hour(spark, s, rt_name, dt, hour)
        out["compact_s"] = round(time.monotonic() - t, 2)
        out["files_per_hour_after"] = _files_per_hour(s.lake)

        # Latency at a 5 s trigger: a steady producer stamps ts=now; a pyarrow poller times visibility.
        s5 = LakeSettings(bootstrap=kafka.bootstrap, lake=s.lake, trigger_s=5.0,
                          max_offsets_per_trigger=a.max_offsets, starting_offsets="latest",
                          checkpoint=str(tmp / "checkpoint-latency"))
        q = build_query(spark, s5)
        latencies: list[float] = []
        stop = threading.Event()

        def producer():
            from confluent_kafka import Producer
            from smartcity.contracts import encode, example, format_ts
            p = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0})
            i = 0
            while not stop.is_set():
                r = example("gps_data")
                r.update(event_id=f"lat:0000cafe:{i}", device_id="lat", seq=i, ts=format_ts(time.time()))
                p.produce("gps_data", encode("gps_data", r))
                p.poll(0)
                i += 1
                time.sleep(1 / a.rate)
            p.flush(10)

        def poller():
            import pyarrow.parquet as pq
            seen: set[str] = set()
            while not stop.is_set():
                for f in visible_files(s.lake, "data", "gps_data"):
                    if f in seen:
                        continue
                    seen.add(f)
                    now = time.time()
                    tb = pq.read_table(f, columns=["device_id", "ts"])
                    for dev, ts in zip(tb.column("device_id").to_pylist(), tb.column("ts").to_pylist()):
                        if dev == "lat":
                            latencies.append(now - ts.replace(tzinfo=timezone.utc).timestamp())
                time.sleep(0.2)

        # Files of the backlog are already there; the poller only times new ones.
        threads = [threading.Thread(target=poller), threading.Thread(target=producer)]
        time.sleep(0)  # start poller first so it marks existing files before the producer runs
        threads[0].start()
        time.sleep(1.0)
        threads[1].start()
        time.sleep(a.latency_s)
        stop.set()
        for th in threads:
            th.join()
        q.stop()
        spark.stop()
    if latencies:
        qs = statistics.quantiles(latencies, n=100)
        out.update(latency_p50_s=round(statistics.median(latencies), 2), latency_p95_s=round(qs[94], 2),
                   latency_samples=len(latencies))
    else:
        out.update(latency_p50_s=None, latency_p95_s=None, latency_samples=0)
    return out
