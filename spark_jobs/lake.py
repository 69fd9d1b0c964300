"""Kafka (five topics) -> validated, deduplicated, partitioned Parquet lake.

    spark = session.build_session(settings)
    query = build_query(spark, settings)      # a started StreamingQuery
    query.awaitTermination()

Layout (Hive style, so Athena/Glue/Redshift Spectrum and pyarrow read it directly):
    {lake}/data/{topic}/dt=YYYY-MM-DD/hour=HH/part-*.snappy.parquet   valid rows, by event time (UTC)
    {lake}/quarantine/{topic}/dt=YYYY-MM-DD/part-*.snappy.parquet     rejects + raw value + reason
    {lake}/_staging/...                                               in-flight batches (see commit.py)
    {lake}/_checkpoints/lake-stream/                                  Kafka offsets, dedup state,
                                                                      commit manifests (lake_commits/)

Deduplication: the bridge is at-least-once, so a reading can arrive twice. Rows are deduplicated on
(topic, event_id) with Spark's dropDuplicatesWithinWatermark, and the watermark is on ingest time
(the micro-batch timestamp), not on event time. Spark drops rows that are late for a stateful
operator's watermark without telling anyone; with an ingest-time watermark no row can ever be late,
so nothing is dropped except true duplicates (counted as numDroppedDuplicateRows in the progress).
A copy that arrives more than `dedup_window_s` after the first is not caught by the stream; it
lands in the same dt/hour partition (same ts) and `compact` removes it. Records with old event times
(a Pi that was offline for a day) are never "too late": they land in their own dt/hour partition.
"""
from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from contracts import RecordType, record_type

from . import validation as V
from .commit import BatchCommitter, HadoopFS, plan_moves
from .schemas import LINEAGE
from .settings import LakeSettings, join

log = logging.getLogger(__name__)

LINEAGE_NAMES = [n for n, _, _ in LINEAGE]


def _violations_by_topic(topics: list[str], topic: Column, v: Column) -> Column:
    expr = None
    for t in topics:
        viol = V.violations(record_type(t), v)
        expr = F.when(topic == t, viol) if expr is None else expr.when(topic == t, viol)
    return expr


def classify(df: DataFrame, topics: list[str], future_tolerance_s: int) -> DataFrame:
    """Kafka rows (topic, partition, offset, timestamp, value) + ingest_ts -> one row per record with
    kind 'data' | 'quarantine', error_kind, reason, the parsed VARIANT `v`, event_ts, event_id, and
    the dedup key. Stateless, so it runs identically on a static DataFrame (tests) and a stream."""
    d = df.select(
        F.col("topic").alias("kafka_topic"), F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"), F.col("timestamp").alias("kafka_ts"),
        F.col("value"), F.col("ingest_ts"))
    d = d.withColumn("v", V.parse(F.col("value")))
    top = F.schema_of_variant(F.col("v"))
    is_obj = top.startswith("OBJECT")
    viol = F.when(is_obj, _violations_by_topic(topics, F.col("kafka_topic"), F.col("v")))
    d = d.withColumn("viol", viol)
    d = d.withColumn("event_id", F.when(is_obj, F.try_variant_get("v", "$.event_id", "string")))
    d = d.withColumn("event_ts", F.when(is_obj, F.try_to_timestamp(
        F.try_variant_get("v", "$.ts", "string"), F.lit(V.TS_FORMAT))))
    future = F.col("event_ts") > F.col("ingest_ts") + F.make_dt_interval(secs=F.lit(future_tolerance_s))
    error_kind = (F.when(F.col("value").isNull() | F.col("v").isNull(), "bad_json")
                  .when(~is_obj, "not_object")
                  .when(F.col("viol") != "", "contract")
                  .when(future, "future_ts"))
    reason = (F.when(F.col("value").isNull(), F.lit("empty Kafka value"))
              .when(F.col("v").isNull(), F.lit("not valid JSON"))
              .when(~is_obj, F.concat(F.lit("<record>="), F.lower(top), F.lit(": must be a JSON object")))
              .when(F.col("viol") != "", F.col("viol"))
              .when(future, F.concat(F.lit("ts="), F.col("event_ts").cast("string"),
                                     F.lit(f": more than {future_tolerance_s} s after ingest time "),
                                     F.col("ingest_ts").cast("string"))))
    d = d.withColumn("error_kind", error_kind).withColumn("reason", reason).drop("viol")
    d = d.withColumn("kind", F.when(F.col("error_kind").isNull(), "data").otherwise("quarantine"))
    # Rejects keep their own Kafka coordinates as key: every poison record is kept, retries included.
    d = d.withColumn("dedup_key", F.when(
        F.col("kind") == "data", F.concat_ws("/", "kafka_topic", "event_id")).otherwise(
        F.concat_ws("/", F.lit("kafka"), "kafka_topic", "kafka_partition", "kafka_offset")))
    return d


def data_frame(batch: DataFrame, rt: RecordType) -> DataFrame:
    """Valid rows of one topic in the lake's file schema + dt/hour partition columns."""
    rows = batch.filter((F.col("kind") == "data") & (F.col("kafka_topic") == rt.name))
    return rows.select(*V.typed_columns(rt, F.col("v")), *LINEAGE_NAMES,
                       F.date_format("event_ts", "yyyy-MM-dd").alias("dt"),
                       F.date_format("event_ts", "HH").alias("hour"))


def quarantine_frame(batch: DataFrame) -> DataFrame:
    rows = batch.filter(F.col("kind") == "quarantine")
    return rows.select(
        F.col("value").cast("string").alias("raw_value"), F.base64("value").alias("raw_value_b64"),
        "error_kind", "reason", "event_id", *LINEAGE_NAMES,
        F.col("kafka_topic").alias("q_topic"), F.date_format("ingest_ts", "yyyy-MM-dd").alias("dt"))


def kafka_stream(spark: SparkSession, s: LakeSettings) -> DataFrame:
    r = (spark.readStream.format("kafka")
         .option("kafka.bootstrap.servers", s.bootstrap)
         .option("subscribe", ",".join(s.topics))
         .option("startingOffsets", s.starting_offsets)
         .option("failOnDataLoss", str(s.fail_on_data_loss).lower()))
    if s.max_offsets_per_trigger:
        r = r.option("maxOffsetsPerTrigger", str(s.max_offsets_per_trigger))
    return r.load().withColumn("ingest_ts", F.current_timestamp())


def stream_frame(spark: SparkSession, s: LakeSettings) -> DataFrame:
    d = classify(kafka_stream(spark, s), s.topics, s.future_tolerance_s)
    return (d.withWatermark("ingest_ts", f"{s.dedup_window_s} seconds")
             .dropDuplicatesWithinWatermark(["dedup_key"]))


class LakeWriter:
    """foreachBatch function: write a micro-batch to staging, then commit it (commit.py)."""

    def __init__(self, spark: SparkSession, s: LakeSettings):
        self.spark, self.s = spark, s
        self.lake_fs = HadoopFS(spark, s.lake)
        self.log_fs = HadoopFS(spark, s.checkpoint)
        self.committer = BatchCommitter(self.lake_fs, self.log_fs, s.lake, join(s.checkpoint, "lake_commits"))
        self.totals: dict[str, int] = {}
        self.timings: list[dict] = []  # per committed batch: where the time went
        self._tag: str | None = None
        self.last_batch: int | None = None

    def query_tag(self) -> str:
        """Stable for this checkpoint (Spark's query id), so re-runs produce the same file names and a
        new checkpoint can never overwrite an old one's files."""
        if self._tag is None:
            meta = json.loads(self.log_fs.read_text(join(self.s.checkpoint, "metadata")))
            self._tag = meta["id"].replace("-", "")[:12]
        return self._tag

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        state = self.committer.state(batch_id)
        if state is not None:
            # Already visible (done) or half visible (pending): never write it again. Still run the
            # plan once so the dedup state store records this batch's version.
            batch.write.format("noop").mode("overwrite").save()
            info = self.committer.resume(batch_id) if state == "pending" else self.committer.done_info(batch_id)
            log.warning("lake: batch %d was already %s; reused its files", batch_id, state)
            self._count(info.get("counts", {}))
            self.last_batch = batch_id
            return
        staging = join(self.s.lake, "_staging", self.query_tag(), f"{batch_id:010d}")
        self.lake_fs.delete(staging)
        batch = batch.persist()
        try:
            counts = {f"{r['kind']}/{r['kafka_topic']}": r["count"]
                      for r in batch.groupBy("kind", "kafka_topic").count().collect()}
            t_count = time.monotonic()
            for t in self.s.topics:
                n = counts.get(f"data/{t}", 0)
                if n:
                    files = max(1, math.ceil(n / self.s.target_rows_per_file))
                    (data_frame(batch, record_type(t)).coalesce(files).write.mode("overwrite")
                     .partitionBy("dt", "hour").parquet(join(staging, "data", t)))
            nq = sum(v for k, v in counts.items() if k.startswith("quarantine/"))
            if nq:
                (quarantine_frame(batch).coalesce(1).write.mode("overwrite")
                 .partitionBy("q_topic", "dt").parquet(join(staging, "quarantine")))
        finally:
            batch.unpersist()
        t_write = time.monotonic()
        staged = [rel for rel, _ in self.lake_fs.list_files(staging)]
        moves = plan_moves(staged, self.query_tag(), batch_id)
        self.committer.commit(batch_id, staging, moves, {"counts": counts})
        self._count(counts)
        self.last_batch = batch_id
        t_end = time.monotonic()
        self.timings.append({"batch": batch_id, "classify_count_s": round(t_count - t0, 2),
                             "write_s": round(t_write - t_count, 2), "commit_s": round(t_end - t_write, 2)})
        log.info("lake: batch %d committed: %s files, counts %s, %.2f s", batch_id, len(moves),
                 counts, time.monotonic() - t0)
        if nq:
            log.warning("lake: batch %d quarantined %d records", batch_id, nq)

    def _count(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.totals[k] = self.totals.get(k, 0) + v


def build_query(spark: SparkSession, s: LakeSettings, writer: LakeWriter | None = None,
                query_name: str = "smartcity_lake"):
    """Start the streaming query; returns the StreamingQuery (writer at query.lake_writer)."""
    writer = writer or LakeWriter(spark, s)
    q = (stream_frame(spark, s).writeStream
         .queryName(query_name)
         .foreachBatch(writer)
         .option("checkpointLocation", s.checkpoint)
         .trigger(processingTime=f"{s.trigger_s} seconds")
         .start())
    q.lake_writer = writer  # type: ignore[attr-defined]
    return q


def run(s: LakeSettings, duration_s: float | None = None) -> dict[str, Any]:
    """Run the stream until stopped (Ctrl-C / SIGTERM) or for `duration_s`; returns totals."""
    from .session import build_session
    spark = build_session(s)
    q = build_query(spark, s)
    try:
        q.awaitTermination(duration_s)
    except KeyboardInterrupt:
        pass
    finally:
        if q.isActive:
            q.stop()
    return dict(q.lake_writer.totals)
