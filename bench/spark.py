"""python -m bench spark [--rows N] [--max-offsets N] [--latency-s S] [--rate R] [--encoding E]:
the lake job (spark_jobs/lake.py) on a real local Kafka, writing Apache Iceberg tables through the
lake's catalog. Defaults: 600,000 records, 200,000 per trigger, 45 s of latency (~4 min on an idle
2-core machine, ~10 min on a loaded one); `--rows 30000` is the quick run (~2 min idle).

One SparkSession, one Kafka backlog of --rows records (five topics, three event hours), in order:

- rows_per_s: sustained Kafka -> Iceberg rate with full parsing, validation, stream dedup, the
  late-copy lookup and the per-table commits (settings.dedup = "merge", the default: an append
  for a table holding none of the batch's rows, else a MERGE), from StreamingQueryProgress
  (sum of numInputRows / sum of triggerExecution time) over the backlog. Measured batches: all
  but the first (code generation, JIT; the JVM is cold before it, as the job's is after a start)
  and but a remainder batch (see _backlog_run). cpu_ms_per_1k_rows: the driver JVM's CPU time over
  the same batches, which the other processes on shared cores move far less than wall time.
- rows_per_s_append: the same backlog again, dedup = "append" (plain appends), into a fresh lake
  (its own catalog `lake_append`) and checkpoint, right after; merge_cost_ratio = append / merge
  rate, merge_cost_ratio_cpu = merge / append CPU per row (both > 1 when the MERGE costs). The
  append run has the warmer JVM (after the merge run's first batch both are mostly compiled).
- batch_phases: where a measured batch's seconds go, mean per batch (LakeWriter.timings):
  classify_count_s (Kafka read, typed parse, stream dedup state, counts), write_commit_s (every
  table's write and commit), lookup_s (the late-copy lookup, part of write_commit_s), tables
  (each table's MERGE or append and its commit), and
  stream_other_s (triggerExecution - addBatch: offsets, write-ahead log, state store commit).
- source_only_rows_per_s: the ceiling, the same records read by a Spark batch query of the Kafka
  source and counted, nothing else; source_parse_rows_per_s: the same plus from_json of three
  fields and a distinct count of event_id. Each run 3 times, warm: the best of runs 2-3 (run 1 is
  class loading and JIT). fraction_of_source_ceiling = rows_per_s / source_only_rows_per_s.
- latency_p50_s / latency_p95_s: from a record's ts to the moment a reader first sees it: a steady
  producer (--rate records/s of gps_data, ts = now) and the stream at a 5 s trigger (merge, on the
  merge run's lake), a pyiceberg poller that reloads the table every POLL_S and, when the current
  snapshot changed, reads only the data files the new snapshots added.
- startup_s: SparkSession creation to the first batch visible to a pyiceberg reader (JVM start,
  jars, table creation, first batch's code generation); session_s: the SparkSession alone.
- maintain_s, gps_data_files_before / _after: Iceberg maintenance (spark_jobs.maintenance) of
  gps_data once the streams stopped, and the table's data files before and after (its `files`
  metadata table).
"""
from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from smartcity.runtime.cli import ArgumentParser

log = logging.getLogger(__name__)

POLL_S = 0.25          # the latency poller's period
SOURCE_RUNS = 3        # source-only runs per variant; the first is cold and not reported
APPEND_CATALOG = "lake_append"


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


def _mean(xs) -> float | None:
    xs = list(xs)
    return round(statistics.mean(xs), 2) if xs else None


def _snapshot_id(s, table: str) -> int | None:
    """The table's current snapshot id as a pyiceberg reader sees it now (None: no table or no
    snapshot yet)."""
    from smartcity.catalog.reader import load_table
    t = load_table(s, table)
    snap = t.current_snapshot() if t is not None else None
    return snap.snapshot_id if snap is not None else None


def _jvm_cpu(spark):
    """A function returning the CPU seconds (user + system, every thread: tasks, JIT, GC) the
    Spark driver's JVM has used so far; local mode runs the tasks in it. Unlike wall time, hardly
    moved by what other processes do on the shared cores."""
    import os
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick   # utime, stime (fields 14, 15)
    return cpu


def _backlog_run(spark, s, rows: int, max_offsets: int, deadline_s: float = 1200.0) -> dict:
    """Start the lake query on `s` over the backlog, wait until it has read `rows` records, stop
    it; the rate, the batches and where their seconds went. query_to_visible_s: query start to the
    first gps_data snapshot a pyiceberg reader sees.

    Measured batches: all but the first (code generation, JIT) and but a remainder batch of fewer
    than max_offsets / 2 records (the Kafka source's rate limit rounds each partition's share down,
    leaving a few records for a last batch whose per-table commits would be charged to them).
    cpu_ms_per_1k_rows: the JVM's CPU from the end of the first batch to the end of the last
    measured one (read when the poll sees each batch's progress)."""
    from smartcity.spark_jobs.lake import build_query
    cpu = _jvm_cpu(spark)
    t0 = time.monotonic()
    q = build_query(spark, s)
    deadline = t0 + deadline_s
    visible_s = None
    cpu_at: dict[int, float] = {}   # batchId -> JVM CPU when its progress was first seen
    try:
        while time.monotonic() < deadline:
            if visible_s is None and _snapshot_id(s, "gps_data") is not None:
                visible_s = round(time.monotonic() - t0, 2)
            recent = q.recentProgress
            for p in recent:
                if p["batchId"] not in cpu_at:
                    cpu_at[p["batchId"]] = cpu()
            if visible_s is not None and sum(p["numInputRows"] for p in recent) >= rows:
                break
            if q.exception():
                raise RuntimeError(f"query failed: {q.exception()}")
            time.sleep(0.25)
        else:
            raise RuntimeError(f"the lake query did not read {rows} rows in {deadline_s:.0f} s")
        progress = [p for p in q.recentProgress if p["numInputRows"] > 0]
    finally:
        q.stop()
    steady = [p for p in progress[1:] if p["numInputRows"] >= max_offsets / 2] or progress[1:] or progress
    n = sum(p["numInputRows"] for p in steady)
    secs = sum(p["durationMs"]["triggerExecution"] for p in steady) / 1000
    ids = {p["batchId"] for p in steady}
    first, last = progress[0]["batchId"], max(ids)
    cpu_s = cpu_at[last] - cpu_at[first] if first in cpu_at and last in cpu_at and last != first else None
    timings = [t for t in q.lake_writer.timings if t["batch"] in ids]
    tables = sorted({name for t in timings for name in t["tables"]})
    return {
        "rows_per_s": round(n / secs) if secs else 0,
        "cpu_ms_per_1k_rows": round(cpu_s * 1e6 / n, 1) if cpu_s else None,
        "batches": [[p["batchId"], p["numInputRows"], round(p["durationMs"]["triggerExecution"] / 1000, 2)]
                    for p in progress],
        "measured_batches": sorted(ids),
        "first_batch_s": round(progress[0]["durationMs"]["triggerExecution"] / 1000, 2) if progress else None,
        "query_to_visible_s": visible_s,
        "phases": {
            "batch_s": _mean(p["durationMs"]["triggerExecution"] / 1000 for p in steady),
            "classify_count_s": _mean(t["classify_count_s"] for t in timings),
            "write_commit_s": _mean(t["write_commit_s"] for t in timings),
            "stream_other_s": _mean((p["durationMs"]["triggerExecution"] - p["durationMs"].get("addBatch", 0)) / 1000
                                    for p in steady),
            "tables": {name: _mean(t["tables"][name] for t in timings if name in t["tables"]) for name in tables},
            # dedup = merge: the one job finding which tables already hold some of the batch's rows
            "lookup_s": _mean(t["lookup_s"] for t in timings if "lookup_s" in t),
            # MERGE only: each table's [its source's local checkpoint (+ ts range), the MERGE itself]
            "merge_split": {name: [_mean(t["merge_split"][name][i] for t in timings
                                         if name in t.get("merge_split", {})) for i in (0, 1)]
                            for name in tables if any(name in t.get("merge_split", {}) for t in timings)},
        },
        "batch_timings": q.lake_writer.timings,
    }


def _source_only(spark, s, rows: int) -> dict:
    """The Kafka source alone on the backlog (batch reads, earliest -> latest), SOURCE_RUNS times
    per variant: `count` counts the records; `parse` does from_json of three fields and counts the
    distinct event_ids. Rates: the best warm run (runs 2..)."""
    from pyspark.sql import functions as F

    from smartcity.spark_jobs.settings import kafka_options

    def frame():
        return (spark.read.format("kafka").options(**kafka_options(s))
                .option("subscribe", ",".join(s.topics))
                .option("startingOffsets", "earliest").option("endingOffsets", "latest")
                .option("failOnDataLoss", "true").load())

    fields = "event_id STRING, device_id STRING, ts STRING"
    variants = {
        "count": lambda: frame().count(),
        "parse": lambda: (frame().select(F.from_json(F.col("value").cast("string"), fields).alias("j"))
                          .select("j.event_id").distinct().count()),
    }
    cpu = _jvm_cpu(spark)
    out: dict = {}
    for name, job in variants.items():
        runs, cpus = [], []
        for _ in range(SOURCE_RUNS):
            t, c = time.monotonic(), cpu()
            n = job()
            runs.append(round(time.monotonic() - t, 2))
            cpus.append(cpu() - c)
            if n != rows:
                raise RuntimeError(f"source-only {name}: {n} records, expected {rows}")
        best = min(range(1, len(runs)) or range(len(runs)), key=runs.__getitem__)
        out[name] = {"runs_s": runs, "rows_per_s": round(rows / runs[best]),
                     "cpu_ms_per_1k_rows": round(cpus[best] * 1e6 / rows, 1)}
    return out


def _added_files(t, since: int | None) -> tuple[int | None, list[str]]:
    """(current snapshot id, data files added by the snapshots after `since` up to it)."""
    from pyiceberg.manifest import ManifestContent, ManifestEntryStatus
    snap = t.current_snapshot()
    if snap is None or snap.snapshot_id == since:
        return since, []
    files: list[str] = []
    cur = snap
    while cur is not None and cur.snapshot_id != since:
        for m in cur.manifests(t.io):
            if m.content != ManifestContent.DATA or m.added_snapshot_id != cur.snapshot_id:
                continue
            files += [e.data_file.file_path for e in m.fetch_manifest_entry(t.io)
                      if e.status == ManifestEntryStatus.ADDED and e.snapshot_id == cur.snapshot_id]
        cur = t.snapshot_by_id(cur.parent_snapshot_id) if cur.parent_snapshot_id is not None else None
    return snap.snapshot_id, files


def _latency(spark, s, tmp: Path, seconds: float, rate: float) -> dict:
    """The stream at a 5 s trigger on the lake of `s` (new checkpoint, latest offsets), a steady
    producer of gps_data stamped with ts = now, and a pyiceberg poller timing visibility."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from smartcity.spark_jobs.lake import build_query
    from smartcity.catalog.reader import load_table
    from smartcity.spark_jobs.settings import LakeSettings
    s5 = LakeSettings(bootstrap=s.bootstrap, lake=s.lake, trigger_s=5.0, dedup="merge",
                      max_offsets_per_trigger=s.max_offsets_per_trigger, starting_offsets="latest",
                      checkpoint=str(tmp / "checkpoint-latency"))
    latencies: list[float] = []
    polls: list[float] = []
    snapshots = 0
    errors: list[str] = []
    stop = threading.Event()
    q = build_query(spark, s5)

    def producer():
        from confluent_kafka import Producer

        from smartcity.contracts import encode, example, format_ts
        p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 0})
        i = 0
        while not stop.is_set():
            r = example("gps_data")
            r.update(event_id=f"lat:0000cafe:{i}", device_id="lat", seq=i, ts=format_ts(time.time()))
            p.produce("gps_data", encode("gps_data", r))
            p.poll(0)
            i += 1
            time.sleep(1 / rate)
        p.flush(10)

    def poller():
        nonlocal snapshots
        last = _snapshot_id(s5, "gps_data")   # the backlog's rows are not timed
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                t = load_table(s5, "gps_data")
                last, files = _added_files(t, last)
                now = time.time()
                if files:
                    snapshots += 1
                for f in files:
                    with t.io.new_input(f).open() as fh:
                        tb = pq.read_table(fh, columns=["device_id", "ts"])
                    tb = tb.filter(pc.equal(tb.column("device_id"), "lat"))
                    us = pc.cast(tb.column("ts"), pa.int64()).to_pylist()
                    latencies.extend(now - u / 1e6 for u in us)
            except Exception as e:  # noqa: BLE001 - e.g. a file expired between lookup and read
                errors.append(str(e))
                log.warning("bench spark: latency poll failed", extra={"error": str(e)[:200]})
            polls.append(time.monotonic() - t0)
            stop.wait(max(0.0, POLL_S - (time.monotonic() - t0)))

    threads = [threading.Thread(target=poller, name="bench-poller"),
               threading.Thread(target=producer, name="bench-producer")]
    try:
        threads[0].start()
        time.sleep(1.0)
        threads[1].start()
        time.sleep(seconds)
    finally:
        stop.set()
        for th in threads:
            th.join()
        q.stop()
    out: dict = {"latency_samples": len(latencies), "latency_snapshots": snapshots,
                 "latency_poll_s": _mean(polls), "latency_poll_errors": len(errors)}
    if len(latencies) >= 2:
        qs = statistics.quantiles(latencies, n=100)
        out.update(latency_p50_s=round(statistics.median(latencies), 2), latency_p95_s=round(qs[94], 2))
    else:
        out.update(latency_p50_s=None, latency_p95_s=None)
    return out


def _files(spark, s, table: str) -> int:
    """Data files of the table's current snapshot (its `files` metadata table), after a REFRESH:
    the session's catalog caches a table, and another query's commits may not be in that copy."""
    from smartcity.catalog.location import table_identifier
    ident = table_identifier(s, table)
    spark.sql(f"REFRESH TABLE {ident}")
    return spark.sql(f"SELECT count(*) AS n FROM {ident}.files").collect()[0]["n"]


def _maintain(spark, s) -> dict:
    """Maintenance of gps_data (rewrite sorted, expire, orphans, manifests): seconds, data files
    before and after, and what maintain reports."""
    from smartcity.spark_jobs.maintenance import maintain
    before = _files(spark, s, "gps_data")
    t = time.monotonic()
    result = maintain(spark, s, tables=["gps_data"])
    return {"maintain_s": round(time.monotonic() - t, 2), "gps_data_files_before": before,
            "gps_data_files_after": _files(spark, s, "gps_data"),
            "maintain_result": {k: v for r in result for k, v in r.items() if k != "table"}}


def _use_catalog(spark, s) -> None:
    """Register s.catalog in the running session (a session knows the catalog it was built with)."""
    from smartcity.catalog.location import prepare_catalog
    from smartcity.spark_jobs.settings import catalog_spark_conf
    prepare_catalog(s)
    for k, v in catalog_spark_conf(s).items():
        if k != "spark.sql.extensions":   # static, and the same for every catalog
            spark.conf.set(k, v)


def run(args: list[str]) -> dict:
    ap = ArgumentParser(prog="python -m bench spark")
    ap.add_argument("--rows", type=int, default=600_000, help="backlog records (five topics)")
    ap.add_argument("--max-offsets", type=int, default=None,
                    help="records per trigger in the backlog runs (default: rows / 3, at most 200,000)")
    ap.add_argument("--latency-s", type=float, default=None,
                    help="seconds of the latency phase (default 45; 20 below 100,000 rows)")
    ap.add_argument("--rate", type=float, default=200.0, help="records/s in the latency phase")
    ap.add_argument("--encoding", choices=("canonical", "spaced"), default="canonical",
                    help="canonical: the agent's wire form; spaced: json.dumps default (full path)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (Kafka's log, the lakes)")
    a = ap.parse_args(args)
    from deploy.local.kafka import KafkaServer
    from smartcity.spark_jobs.session import build_session
    from smartcity.catalog.location import Catalog
    from smartcity.spark_jobs.settings import LakeSettings

    max_offsets = a.max_offsets or min(200_000, max(1, a.rows // 3))
    latency_s = a.latency_s if a.latency_s is not None else (45.0 if a.rows >= 100_000 else 20.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    out: dict = {"rows": a.rows, "encoding": a.encoding, "max_offsets": max_offsets,
                 "latency_s": latency_s, "rate": a.rate}
    t_all = time.monotonic()
    with KafkaServer(tmp / "kafka") as kafka:
        kafka.create_topics(partitions=2)
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        t = time.monotonic()
        _produce(kafka.bootstrap, _records(a.rows, start, "bench", 3, a.encoding == "canonical"))
        out["produce_s"] = round(time.monotonic() - t, 2)
        common = dict(bootstrap=kafka.bootstrap, trigger_s=0.5, max_offsets_per_trigger=max_offsets)
        s = LakeSettings(lake=str(tmp / "lake"), dedup="merge", **common)
        s_append = LakeSettings(lake=str(tmp / "lake-append"), dedup="append",
                                catalog=Catalog(name=APPEND_CATALOG), **common)
        t0 = time.monotonic()
        spark = build_session(s, "bench-spark", iceberg=True)
        out["session_s"] = round(time.monotonic() - t0, 2)
        try:
            log.info("bench spark: merge run")
            merge = _backlog_run(spark, s, a.rows, max_offsets)
            out["startup_s"] = round(out["session_s"] + merge["query_to_visible_s"], 2)
            log.info("bench spark: append run")
            _use_catalog(spark, s_append)
            append = _backlog_run(spark, s_append, a.rows, max_offsets)
            mr, ar = merge["rows_per_s"], append["rows_per_s"]
            mc, ac = merge["cpu_ms_per_1k_rows"], append["cpu_ms_per_1k_rows"]
            out.update(rows_per_s=mr, rows_per_s_append=ar, merge_cost_ratio=round(ar / mr, 2) if mr else None,
                       cpu_ms_per_1k_rows=mc, cpu_ms_per_1k_rows_append=ac,
                       merge_cost_ratio_cpu=round(mc / ac, 2) if mc and ac else None,
                       first_batch_s=merge["first_batch_s"], first_batch_s_append=append["first_batch_s"],
                       batches={"merge": merge["batches"], "append": append["batches"]},
                       measured_batches={"merge": merge["measured_batches"], "append": append["measured_batches"]},
                       batch_phases={"merge": merge["phases"], "append": append["phases"]},
                       batch_timings={"merge": merge["batch_timings"], "append": append["batch_timings"]})
            log.info("bench spark: source-only runs")
            src = _source_only(spark, s, a.rows)
            out.update(source_only_rows_per_s=src["count"]["rows_per_s"], source_only_runs_s=src["count"]["runs_s"],
                       source_only_cpu_ms_per_1k_rows=src["count"]["cpu_ms_per_1k_rows"],
                       source_parse_rows_per_s=src["parse"]["rows_per_s"], source_parse_runs_s=src["parse"]["runs_s"],
                       source_parse_cpu_ms_per_1k_rows=src["parse"]["cpu_ms_per_1k_rows"])
            out["fraction_of_source_ceiling"] = round(mr / out["source_only_rows_per_s"], 3)
            log.info("bench spark: latency")
            out.update(_latency(spark, s, tmp, latency_s, a.rate))
            log.info("bench spark: maintenance")
            out.update(_maintain(spark, s))
        finally:
            spark.stop()
    if a.keep:
        out["tmp"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    out["total_s"] = round(time.monotonic() - t_all, 1)
    return out
