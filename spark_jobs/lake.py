"""Kafka (five topics) -> validated, deduplicated Apache Iceberg tables in the lake's catalog.

    spark = session.build_session(settings, iceberg=True)
    query = build_query(spark, settings)      # creates/evolves the tables, starts the query
    query.awaitTermination()

Tables (spark_jobs/iceberg_tables.py, generated from contracts/): lake.smartcity.{topic} for valid
rows (partitioned by days(ts)) and lake.smartcity.quarantine for rejects with their raw value and
reason (days(ingest_ts)). The catalog (settings.catalog) makes each commit atomic: a reader sees a
batch's rows of a table all at once or not at all. Spark's checkpoint stays at
{lake}/_checkpoints/lake-stream (Kafka offsets, dedup state).

Validation has a fast path (`triage`: a typed parse proves canonical valid records, see
validation.conforms) and the full path (`classify_full`, VARIANT, every rule with its reason) for
the rest, run in the batch writer on those rows only.

Deduplication, in two layers. The bridge is at-least-once and agents re-send, so a reading can
arrive twice, minutes or days apart.
1. In the stream: proven rows are deduplicated on (topic, event_id), others on (topic, SHA-256 of
   the bytes), with dropDuplicatesWithinWatermark on ingest time (the micro-batch timestamp), not
   on event time: Spark drops rows that are late for a stateful operator's watermark without
   telling anyone; with an ingest-time watermark no row can ever be late, so nothing is dropped
   except true duplicates (numDroppedDuplicateRows in the progress). Cheap; forgets a key after
   `dedup_window_s`.
2. At the table: the batch writer checks the batch's rows against the tables on (event_id, ts)
   (LakeWriter), so a copy arriving after the window, however late, is not added: one lookup job
   for every table a batch touches, then a plain append where no row is held already (nearly
   always) and a MERGE where one is. Records with old event times (a Pi that was offline
   for a day) are never "too late": they land in their own day partition. Quarantine rows are
   MERGEd on the Kafka record they were read from (QUARANTINE_MATCH): a record read again (a
   re-run whose batch key expired, a deleted checkpoint) is not quarantined twice.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from smartcity.catalog import tables as lake_tables
from smartcity.catalog.location import table_identifier
from smartcity.contracts import RecordType, record_type
from smartcity.contracts import schema as cs

from . import validation as V
from .iceberg_tables import QUARANTINE_TABLE, create_or_evolve
from .pause import pause_point
from .schemas import LINEAGE, wire_struct
from .settings import LakeSettings, kafka_options

log = logging.getLogger(__name__)

LINEAGE_NAMES = [n for n, _, _ in LINEAGE]


def _kafka_columns(df: DataFrame) -> DataFrame:
    return df.select(
        F.col("topic").alias("kafka_topic"), F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"), F.col("timestamp").alias("kafka_ts"),
        F.col("value"), F.col("ingest_ts"))


def _future(event_ts: Column, future_tolerance_s: int) -> Column:
    return event_ts > F.col("ingest_ts") + F.make_dt_interval(secs=F.lit(future_tolerance_s))


def classify(df: DataFrame, topics: list[str], future_tolerance_s: int) -> DataFrame:
    """The full path. Kafka rows (topic, partition, offset, timestamp, value) + ingest_ts -> one row
    per record with kind 'data' | 'quarantine', error_kind, reason, the parsed VARIANT `v`,
    event_ts and event_id. Stateless, so it runs identically on a static DataFrame (tests)."""
    return classify_full(_kafka_columns(df), topics, future_tolerance_s)


def classify_full(d: DataFrame, topics: list[str], future_tolerance_s: int) -> DataFrame:
    """`classify` on rows that already carry the lineage column names (kafka_topic, ...).

    One plan per topic, unioned: each topic's rows get only that topic's rules (and those in two
    projections, validation.with_violations). The five topics' rules in one CASE made a generated
    method beyond the JVM's 64 KB limit, and Spark then ran the stage interpreted (docs/lake.md)."""
    topic = F.col("kafka_topic")
    parts = [classify_topic(d.filter(topic == t), t, future_tolerance_s) for t in topics]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def classify_topic(d: DataFrame, topic: str, future_tolerance_s: int) -> DataFrame:
    """The full path on rows of one topic (the caller filters them)."""
    d = V.with_violations(d.withColumn("v", V.parse(F.col("value"))), record_type(topic), "v", "viol")
    top = F.schema_of_variant(F.col("v"))
    is_obj = top.startswith("OBJECT")
    d = d.withColumn("viol", F.when(is_obj, F.col("viol")))
    d = d.withColumn("event_id", F.when(is_obj, F.try_variant_get("v", "$.event_id", "string")))
    d = d.withColumn("event_ts", F.when(is_obj, F.try_to_timestamp(
        F.try_variant_get("v", "$.ts", "string"), F.lit(V.TS_FORMAT))))
    future = _future(F.col("event_ts"), future_tolerance_s)
    error_kind = (F.when(F.col("value").isNull() | F.col("v").isNull(), "bad_json")
                  .when(~is_obj, "not_object")
                  .when(F.col("viol") != "", "contract")
                  .when(future, "future_ts"))
    reason = (F.when(F.col("value").isNull(), F.lit("empty Kafka value"))
              .when(F.col("v").isNull(), V.json_problem(F.col("value")))  # the bridge's reason
              .when(~is_obj, F.concat(F.lit("<record>="), F.lower(top), F.lit(": must be a JSON object")))
              .when(F.col("viol") != "", F.col("viol"))
              .when(future, F.concat(F.lit("ts="), F.col("event_ts").cast("string"),
                                     F.lit(f": more than {future_tolerance_s} s after ingest time "),
                                     F.col("ingest_ts").cast("string"))))
    d = d.withColumn("error_kind", error_kind).withColumn("reason", reason).drop("viol")
    return d.withColumn("kind", F.when(F.col("error_kind").isNull(), "data").otherwise("quarantine"))


def wire_column(topic: str) -> str:
    return f"wire_{topic}"


def wire_event_id(topics: list[str]) -> Column:
    """A row's event_id as its topic's typed parse (`wire_<topic>`) read it."""
    return F.coalesce(*[F.col(wire_column(t))["event_id"] for t in topics])


def triage(df: DataFrame, topics: list[str], future_tolerance_s: int) -> DataFrame:
    """The fast path, before deduplication. Each row is parsed once with its topic's typed schema
    (`wire_<topic>`, null for the other topics) and `fast_ok` says whether that alone proves it a
    valid, canonical, not-from-the-future record (validation.conforms). The producers' records
    normally all are; the rest (invalid, or valid JSON from a non-canonical producer) go through
    `classify_full` in the batch writer, which is ~10x dearer per row and gives the reasons.

    dedup_key: a proven record is keyed by (topic, event_id): the bridge's redeliveries and the
    agent's re-sends collapse into one. Any other row is keyed by (topic, SHA-256 of its bytes):
    exact copies collapse, but a record is never merged with a different payload that merely
    claims the same event_id (a broken record must not hide its valid twin, nor the reverse)."""
    d = _kafka_columns(df)
    text = F.col("value").cast("string")
    topic = F.col("kafka_topic")
    ok = F.lit(False)
    for t in topics:
        d = d.withColumn(wire_column(t), F.when(topic == t, F.from_json(text, wire_struct(t))))
        ok = F.when(topic == t, V.conforms(t, F.col("value"), F.col(wire_column(t)))).otherwise(ok)
    ts_text = F.coalesce(*[F.col(wire_column(t))["ts"] for t in topics])
    d = d.withColumn("event_ts", F.try_to_timestamp(ts_text, F.lit(V.TS_FORMAT)))
    d = d.withColumn("fast_ok", ok & F.coalesce(~_future(F.col("event_ts"), future_tolerance_s),
                                                F.lit(False)))
    event_id = wire_event_id(topics)
    raw_key = F.coalesce(F.sha2(F.col("value"), 256),
                         F.concat_ws("/", F.lit("empty"), "kafka_partition", "kafka_offset"))
    return d.withColumn("dedup_key", F.when(F.col("fast_ok"), F.concat_ws("/", topic, event_id))
                        .otherwise(F.concat_ws("/", topic, F.lit("sha256"), raw_key)))


def fast_data_frame(batch: DataFrame, rt: RecordType) -> DataFrame:
    """Proven rows of one topic in the data table's columns."""
    rows = batch.filter(F.col("fast_ok") & (F.col("kafka_topic") == rt.name))
    w = F.col(wire_column(rt.name))
    cols = [(F.col("event_ts") if f.type == cs.TIMESTAMP else w[f.name]).alias(f.name) for f in rt.fields]
    return with_derived(rows.select(*cols, *LINEAGE_NAMES))


def fast_keys(batch: DataFrame, ranges: dict[str, tuple[int, int]]) -> DataFrame:
    """(table, event_id, ts) of the batch's proven rows of each table of `ranges` whose ts is in
    that table's range (µs, inclusive): what fast_data_frame puts in those columns, as one
    projection of the batch (the `event_id` column the writer adds before persisting it)."""
    topic, ts = F.col("kafka_topic"), F.unix_micros(F.col("event_ts"))
    wanted = F.lit(False)
    for t, (lo, hi) in ranges.items():
        wanted = wanted | ((topic == t) & (ts >= lo) & (ts <= hi))
    return batch.filter(F.col("fast_ok") & wanted).select(
        topic.alias("table"), "event_id", F.col("event_ts").alias("ts"))


def data_frame(batch: DataFrame, rt: RecordType) -> DataFrame:
    """Valid rows of one topic (after classify) in the data table's columns."""
    rows = batch.filter((F.col("kind") == "data") & (F.col("kafka_topic") == rt.name))
    return with_derived(rows.select(*V.typed_columns(rt, F.col("v")), *LINEAGE_NAMES))


def with_derived(rows: DataFrame) -> DataFrame:
    """A data table's rows (contract fields and lineage) with the columns the lake derives from
    them (catalog/tables.py DERIVED), each computed by its SQL (Spark's cheaper equivalent where it
    has one), appended in order."""
    return rows.select("*", *[F.expr(d.spark_sql or d.sql).alias(d.field.name) for d in lake_tables.DERIVED])


def quarantine_frame(batch: DataFrame) -> DataFrame:
    rows = batch.filter(F.col("kind") == "quarantine")
    return rows.select(
        F.col("value").cast("string").alias("raw_value"), F.base64("value").alias("raw_value_b64"),
        "error_kind", "reason", "event_id", *LINEAGE_NAMES)


def kafka_stream(spark: SparkSession, s: LakeSettings) -> DataFrame:
    r = (spark.readStream.format("kafka")
         .options(**kafka_options(s))  # bootstrap servers, SASL/SSL (settings.kafka_options)
         .option("subscribe", ",".join(s.topics))
         .option("startingOffsets", s.starting_offsets)
         .option("failOnDataLoss", str(s.fail_on_data_loss).lower()))
    if s.max_offsets_per_trigger:
        r = r.option("maxOffsetsPerTrigger", str(s.max_offsets_per_trigger))
    return r.load().withColumn("ingest_ts", F.current_timestamp())


def stream_frame(spark: SparkSession, s: LakeSettings) -> DataFrame:
    d = triage(kafka_stream(spark, s), s.topics, s.future_tolerance_s)
    return (d.withWatermark("ingest_ts", f"{s.dedup_window_s} seconds")
             .dropDuplicatesWithinWatermark(["dedup_key"]))


def _materialize(df: DataFrame) -> tuple[DataFrame, bool]:
    """The classified full-path rows, computed once for the counts and every write.

    localCheckpoint makes them a leaf of the later plans: with persist(), the union with the fast
    rows of the same batch did not match the persisted plan (the second branch's batch relation
    gets new attribute ids), so every write re-ran the micro-batch and the full validation. But a
    local checkpoint's blocks live only on the executors that computed them: on a cluster, losing
    one mid-batch would fail the query (the restart then resumes exactly once) instead of
    recomputing. So: local checkpoint in local mode (no executor can be lost alone), persist on
    a cluster (slower on the full path, never failing). Returns (frame, is_local_checkpoint)."""
    if df.sparkSession.sparkContext.master.startswith("local"):
        return df.localCheckpoint(), True
    return df.persist(), False


def _release(frame: DataFrame, local_checkpoint: bool) -> None:
    """Drop the blocks now (Spark's cleaner would, once the driver's GC runs)."""
    if not local_checkpoint:
        frame.unpersist()
        return
    try:
        frame._jdf.logicalPlan().rdd().unpersist(False)
    except Exception:  # noqa: BLE001 - best effort; the ContextCleaner frees them later anyway
        log.debug("lake: could not unpersist a local checkpoint", exc_info=True)


# Snapshot summary property that names the stream batch a commit belongs to:
# "{query id}:{batch id}" (the query id persists in the checkpoint).
BATCH_PROPERTY = "smartcity.stream-batch"
_SNAPSHOT_PROPERTY_CONF = f"spark.sql.iceberg.snapshot-property.{BATCH_PROPERTY}"

# With dedup = "merge", what makes a row one the table already holds. A data row: its event_id
# and ts (a copy of a reading has the same ts, so with the batch's ts bounds added to the ON the
# match reads only the partitions and files of the batch's ts range: LakeWriter._merge). A
# quarantine row: the Kafka record it was read from, (topic, partition, offset) and the record's
# timestamp (a topic deleted and created again reuses offsets, not timestamps):
# the same record read again (a batch re-run whose key expired with its snapshot, a deleted
# checkpoint) is not quarantined twice, while two copies of a bad payload sent twice are two
# Kafka records and both stay. The quarantine is partitioned by ingest time, which differs
# between the reads, so its match reads the table's Kafka columns whole: cheap while bad records
# are rare, and only for batches that quarantine anything.
DATA_MATCH = "t.event_id = s.event_id AND t.ts = s.ts"
QUARANTINE_MATCH = ("t.kafka_topic = s.kafka_topic AND t.kafka_partition = s.kafka_partition "
                    "AND t.kafka_offset = s.kafka_offset AND t.kafka_ts <=> s.kafka_ts")


def ts_within(column: str, lo: int, hi: int) -> str:
    """`column` between lo and hi (µs, inclusive), as SQL with the bounds as literals: a filter
    on a table's ts that Iceberg prunes partitions and files with (the MERGE's ON, the lookup's
    scan). Not a join condition: `t.ts = s.ts` alone prunes nothing."""
    return f"{column} >= timestamp_micros({int(lo)}) AND {column} <= timestamp_micros({int(hi)})"


class LakeWriter:
    """foreachBatch function: one Iceberg commit per table the micro-batch touches.

    Exactly once per table: each commit carries the batch's key in its snapshot summary
    (BATCH_PROPERTY). Spark re-runs a batch only when its commit log lacks it (a kill, a crash, a
    stop mid-batch), and only the first batch a process runs can be such a re-run: for that one the
    writer looks the key up in every table's snapshots and skips the tables that already hold it.
    So a kill between two tables' commits, or after the last and before Spark's commit log, neither
    loses nor doubles a row.

    One row per event_id however late (settings.dedup = "merge"): a copy that arrives after the
    stream's dedup window (hours or days later, an agent's re-send after a long outage) is matched
    against the table on (event_id, ts) and not added. A copy has the same ts, so the match reads
    only the files whose ts range meets the batch's min and max; and a copy the stream's dedup
    state still remembers never reaches the writer, so the lookup reads a table only up to the
    greatest ts among the rows that state may have forgotten (_lookup_ranges: a batch after it,
    the normal case, and a catch-up batch reaching back only into this run's recent commits, are
    not looked up at all). Then one Spark job looks up, for every data table of the batch at
    once, how many of its rows the table already holds (_held_copies); a table holding none gets
    a plain append
    (five MERGEs cost a 200k-row batch ~2-3 s more than five appends, docs/benchmarks.md), a
    table holding some gets MERGE ... WHEN NOT MATCHED THEN INSERT (_merge). Spark itself runs
    that MERGE as a left anti join and an append (RewriteMergeIntoTable), which Iceberg commits
    as an append snapshot with no conflict check: the lookup and the append are two steps of the
    same thing, safe because this query is the only writer of new rows to its tables (its
    checkpoint; maintenance only rewrites files): nothing can add a copy between them. Tables
    whose batch has full-path rows (their ts range is not in the counts), and the quarantine (on
    its Kafka record, QUARANTINE_MATCH), always MERGE: both are rare. dedup = "append" writes
    plain appends with no lookup (late copies then stay until removed by other means): kept for
    measuring (bench spark) and for throwaway lakes."""

    def __init__(self, spark: SparkSession, s: LakeSettings):
        self.spark, self.s = spark, s
        self.totals: dict[str, int] = {}
        self.timings: list[dict] = []  # per committed batch: where the time went
        self._merge_split: dict[str, list[float]] = {}  # per table: [source s, MERGE s] (MERGE only)
        self._paths: dict[str, str] = {}   # per table: "append" | "merge", this batch
        # Per data table, what the late-copy lookup must read (µs; see _lookup_ranges). _old_top:
        # the greatest ts among the rows the stream's dedup state may have forgotten, None if
        # none; absent: not known, read from the table (_tables_max_ts). _recent: (ingest ts,
        # greatest ts) of this run's commits of proven rows, whose event_ids that state still
        # holds (_committed_ts); they join _old_top once older than the dedup window.
        self._old_top: dict[str, int | None] = {}
        self._recent: dict[str, list[tuple[int, int]]] = {}
        self.last_batch: int | None = None
        self.query_id: str | None = None      # set by build_query once the query started
        self._first = True

    def starting(self) -> None:
        """A query (new, or restarted from its checkpoint) is about to call this writer: its
        first batch may be one Spark runs again (see __call__). Called before the query starts,
        so that a reused writer's first batch cannot run before it."""
        self._first = True

    def _key(self, batch: DataFrame, batch_id: int) -> str:
        qid = batch.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId") or self.query_id
        if not qid:
            raise RuntimeError("lake: the streaming query id is unknown; cannot key the batch's commits")
        return f"{qid}:{batch_id}"

    def committed_tables(self, spark: SparkSession, key: str, tables: list[str]) -> set[str]:
        """The tables whose snapshots already carry this batch's key."""
        done = set()
        for t in tables:
            ident = table_identifier(self.s, t)
            spark.sql(f"REFRESH TABLE {ident}")
            n = spark.sql(f"SELECT count(*) AS n FROM {ident}.snapshots "
                          f"WHERE summary['{BATCH_PROPERTY}'] = '{key}'").collect()[0]["n"]
            if n:
                done.add(t)
        return done

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        spark = batch.sparkSession
        key = self._key(batch, batch_id)
        tables = [*self.s.topics, QUARANTINE_TABLE]
        if self._first:
            done = self.committed_tables(spark, key, tables)
            # A batch Spark runs again was not in its commit log: the dedup state lacks its keys
            # though a table may hold its rows. Forget every commit of an earlier run.
            self._old_top, self._recent = {}, {}
        else:
            done = set()
        self._first = False
        self._merge_split, self._paths = {}, {}
        if done:
            log.warning("lake: batch re-run after a restart; tables already committed are skipped",
                        extra={"batch_id": batch_id, "tables": sorted(done)})
        # Persisted for the counts and every write: what those read, no more. The dedup key is
        # done with; a proven row's Kafka value is never read again (its columns come from the
        # typed parse), so only the full path's rows keep theirs (caching every row's value cost
        # ~1 s of CPU per 200k-row batch: bench spark, docs/benchmarks.md). event_id as a column
        # of its own: the late-copy lookup reads it without decoding the five parsed structs.
        batch = (batch.drop("dedup_key")
                 .withColumn("value", F.when(F.col("fast_ok"), F.lit(None)).otherwise(F.col("value")))
                 .withColumn("event_id", wire_event_id(self.s.topics))
                 .persist())
        full = None
        commits: dict[str, float] = {}
        lookup_s = None
        try:
            counts: dict[str, int] = {}
            n_full = 0
            # The proven rows' ts range per topic comes with the counts (no job of its own): the
            # MERGE's ON bounds the target's ts with it (see _merge).
            ts_range: dict[str, tuple[int, int]] = {}
            ingest = 0   # the batch's ingest ts (µs): one value, Spark's current_timestamp()
            for r in batch.groupBy("fast_ok", "kafka_topic").agg(
                    F.count(F.lit(1)).alias("count"), F.unix_micros(F.min("event_ts")).alias("lo"),
                    F.unix_micros(F.max("event_ts")).alias("hi"),
                    F.unix_micros(F.max("ingest_ts")).alias("ingest")).collect():
                ingest = max(ingest, r["ingest"] or 0)
                if r["fast_ok"]:
                    counts[f"data/{r['kafka_topic']}"] = r["count"]
                    ts_range[r["kafka_topic"]] = (r["lo"], r["hi"])
                else:
                    n_full += r["count"]
            full_data: dict[str, int] = {}
            if n_full:
                rest = batch.filter(~F.col("fast_ok")).select(*LINEAGE_NAMES, "value")
                full, full_is_lcp = _materialize(classify_full(rest, self.s.topics, self.s.future_tolerance_s))
                for r in full.groupBy("kind", "kafka_topic").count().collect():
                    k = f"{r['kind']}/{r['kafka_topic']}"
                    counts[k] = counts.get(k, 0) + r["count"]
                    if r["kind"] == "data":
                        full_data[r["kafka_topic"]] = r["count"]
            t_count = time.monotonic()
            spark.conf.set(_SNAPSHOT_PROPERTY_CONF, key)
            try:
                frames: dict[str, DataFrame] = {}
                ranges: dict[str, tuple[int, int] | None] = {}
                for t in self.s.topics:
                    if not counts.get(f"data/{t}", 0) or t in done:
                        continue
                    rt = record_type(t)
                    frames[t] = fast_data_frame(batch, rt)
                    ranges[t] = ts_range.get(t)
                    if full is not None and full_data.get(t):
                        # Rows of the full path may repeat an event_id of the fast path or of each
                        # other (their stream dedup key is the bytes): one row per event_id.
                        frames[t] = frames[t].unionByName(data_frame(full, rt)).dropDuplicates(["event_id"])
                        ranges[t] = None   # their ts are not in the counts: _merge computes the range
                held: dict[str, int] = {}
                if self.s.dedup == "merge":
                    tl = time.monotonic()
                    held, looked = self._lookup_ranges(spark, ranges, ingest)
                    held |= self._held_copies(spark, fast_keys(batch, looked), looked)
                    lookup_s = round(time.monotonic() - tl, 2)
                for t, frame in frames.items():
                    pause_point(f"before:{t}")
                    tc = time.monotonic()
                    self._write_data(spark, t, frame, ranges[t], held.get(t))
                    self._committed_ts(t, ranges[t], ingest)
                    commits[t] = round(time.monotonic() - tc, 2)
                    pause_point(f"after:{t}")
                nq = sum(v for k, v in counts.items() if k.startswith("quarantine/"))
                if nq and QUARANTINE_TABLE not in done:
                    pause_point(f"before:{QUARANTINE_TABLE}")
                    tc = time.monotonic()
                    self._write_quarantine(spark, quarantine_frame(full))
                    commits[QUARANTINE_TABLE] = round(time.monotonic() - tc, 2)
                    pause_point(f"after:{QUARANTINE_TABLE}")
            finally:
                spark.conf.unset(_SNAPSHOT_PROPERTY_CONF)
        finally:
            if full is not None:
                _release(full, full_is_lcp)
            batch.unpersist()
        pause_point("end")
        self._count(counts)
        self.last_batch = batch_id
        t_end = time.monotonic()
        self.timings.append({"batch": batch_id, "classify_count_s": round(t_count - t0, 2),
                             "write_commit_s": round(t_end - t_count, 2), "tables": commits,
                             "paths": dict(self._paths),
                             **({"lookup_s": lookup_s} if lookup_s is not None else {}),
                             **({"merge_split": self._merge_split} if self._merge_split else {})})
        log.info("lake: batch committed", extra={"batch_id": batch_id, "counts": counts,
                                                 "seconds": round(t_end - t0, 2)})
        if nq:
            log.warning("lake: batch quarantined records", extra={"batch_id": batch_id, "quarantined": nq})

    def _lookup_ranges(self, spark: SparkSession, ranges: dict[str, tuple[int, int] | None],
                       ingest_us: int) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
        """Which part of each table's batch range the lookup must read. Returns (held: the tables
        known to hold none of the batch's rows, with 0; looked: the others, with the range left
        to look up). ingest_us: the batch's ingest ts.

        A table can hold a copy of a batch's row only at that row's ts. And a row whose event_id
        the stream's dedup state still holds never reaches the writer: that state keeps the keys
        of every batch this run committed less than `dedup_window_s` of ingest time ago (Spark
        evicts a key once the ingest-time watermark, the latest ingest ts minus the window, passes
        its ingest ts plus the window: after two windows at the earliest). So the lookup needs
        only the rows the state may have forgotten: those committed before this run (read once as
        the table's greatest ts) and this run's commits older than one window. Above their
        greatest ts (_old_top) a table holds only rows the state remembers. A fresh batch, a
        backlog read in order, and a catch-up batch whose range reaches back into the last
        batches' (its Kafka partitions' shares cover slightly different event times) need no
        lookup; a vehicle replaying a queue older than the window is looked up over the overlap."""
        window_us = self.s.dedup_window_s * 1_000_000
        unknown = [t for t, r in ranges.items() if r and t not in self._old_top]
        for t, top in self._tables_max_ts(spark, unknown).items():
            self._old_top[t], self._recent[t] = top, []
        held, looked = {}, {}
        for t, r in ranges.items():
            if not r:
                continue            # full-path rows: the MERGE
            recent = self._recent[t]
            while recent and ingest_us - recent[0][0] >= window_us:
                _, hi = recent.pop(0)
                self._old_top[t] = hi if self._old_top[t] is None else max(self._old_top[t], hi)
            top = self._old_top[t]
            if top is None or r[0] > top:
                held[t] = 0
            else:
                looked[t] = (r[0], min(r[1], top))
        return held, looked

    def _tables_max_ts(self, spark: SparkSession, tables: list[str]) -> dict[str, int | None]:
        """The greatest ts each table holds (µs), None when it is empty, in one Spark job. Iceberg
        answers each max() from its data files' metrics (Spark's aggregate push-down), reading
        no data."""
        if not tables:
            return {}
        tops = None
        for t in tables:
            top = (spark.table(table_identifier(self.s, t)).agg(F.max("ts").alias("top"))
                   .select(F.lit(t).alias("table"), F.unix_micros("top").alias("top")))
            tops = top if tops is None else tops.unionByName(top)
        return {r["table"]: r["top"] for r in tops.collect()}

    def _committed_ts(self, table: str, ts_range: tuple[int, int] | None, ingest_us: int) -> None:
        """After a commit to `table` of a batch ingested at ingest_us: its proven rows' event_ids
        are in the dedup state from now on. A commit with full-path rows (ts_range None: their
        range is not known here; their state key is their bytes, not the event_id) makes the
        table's knowledge unknown: read again next time."""
        if table not in self._old_top:
            return
        if ts_range is None:
            del self._old_top[table], self._recent[table]
        else:
            self._recent[table].append((ingest_us, ts_range[1]))

    def _held_copies(self, spark: SparkSession, keys: DataFrame,
                     ranges: dict[str, tuple[int, int]]) -> dict[str, int]:
        """How many of a batch's rows each table of `ranges` already holds (same event_id and ts),
        in one Spark job for all of them. keys: the batch's rows as (table, event_id, ts);
        ranges: per table, the (min, max) of its rows' ts in microseconds. The keys are
        semi-joined with the tables' rows, each table read only inside its range, as literals,
        so Iceberg reads only the files whose ts range meets it (like _merge's ON).

        `keys` must be one projection of the batch, not a union of per-table frames: Spark
        matches a persisted batch in one branch of a union only (the others get new attribute
        ids), and the other branches then computed the micro-batch again (Kafka, parse and
        dedup state: 5-7 s per batch in bench spark)."""
        if not ranges:
            return {}
        held = None
        for t, (lo, hi) in ranges.items():
            rows = (spark.table(table_identifier(self.s, t)).where(ts_within("ts", lo, hi))
                    .select(F.lit(t).alias("table"), "event_id", "ts"))
            held = rows if held is None else held.unionByName(rows)
        found = keys.join(held, ["table", "event_id", "ts"], "left_semi")
        return {t: 0 for t in ranges} | {r["table"]: r["count"] for r in found.groupBy("table").count().collect()}

    def _write_data(self, spark: SparkSession, topic: str, frame: DataFrame,
                    ts_range: tuple[int, int] | None = None, held: int | None = None) -> None:
        """ts_range: the frame's (min, max) ts in microseconds, when known (else computed).
        held: how many of the frame's rows the table holds already (_held_copies): 0 appends,
        more or None (not looked up) MERGEs."""
        if self.s.dedup == "append" or held == 0:
            frame.writeTo(table_identifier(self.s, topic)).append()
            self._paths[topic] = "append"
            return
        self._merge(spark, topic, frame, DATA_MATCH, ts_range=ts_range or True)
        self._paths[topic] = "merge"

    def _write_quarantine(self, spark: SparkSession, frame: DataFrame) -> None:
        if self.s.dedup == "append":
            frame.writeTo(table_identifier(self.s, QUARANTINE_TABLE)).append()
            return
        self._merge(spark, QUARANTINE_TABLE, frame, QUARANTINE_MATCH)

    def _merge(self, spark: SparkSession, table: str, frame: DataFrame, match: str,
               ts_range: tuple[int, int] | bool = False) -> None:
        """MERGE INTO the table ... ON `match` WHEN NOT MATCHED THEN INSERT *: rows the table
        already holds are not added again; Iceberg commits it as an append snapshot.

        ts_range (data tables): the batch's (min, max) ts in microseconds, or True to compute it
        here. Spark plans the insert-only MERGE as a left anti join of the batch against the
        target, the target's (event_id, ts) broadcast; a condition in ON on t.ts alone is pushed
        into the target's scan, while `t.ts = s.ts` is not. So the ON gets
        `t.ts BETWEEN <batch min> AND <batch max>` as literals: Iceberg then reads only the
        partitions and files whose ts range meets the batch's, instead of every file of the
        table each batch. Every row the match could find has a ts equal to one of the batch's,
        inside that range: the bounds change what is read, never what matches."""
        ident = table_identifier(self.s, table)
        # The source is a local checkpoint: MERGE over the micro-batch's own plan failed in Spark
        # 4.1.1's optimizer (PLAN_VALIDATION_FAILED_RULE_IN_BATCH, UpdateAttributeNullability:
        # "the plan was previously resolved and now became unresolved"); a checkpoint is a leaf.
        # On a cluster, an executor lost mid-batch then fails the query instead of recomputing,
        # and the restart re-runs the batch exactly once (see _materialize). Lazy: the blocks are
        # written by the MERGE's own scan of its source (the plan reads the source once), not by
        # a job of their own before it (0.35-0.54 s per table per batch on the loaded machine,
        # 2026-12-03: the MERGE's source split in LakeWriter.timings).
        t0 = time.monotonic()
        src = frame.localCheckpoint(eager=False)
        view = f"smartcity_batch_{table}"
        src.createOrReplaceTempView(view)
        try:
            if ts_range is True:
                r = src.agg(F.unix_micros(F.min("ts")).alias("lo"), F.unix_micros(F.max("ts")).alias("hi")).first()
                ts_range = (r["lo"], r["hi"]) if r is not None and r["lo"] is not None else False
            if ts_range:
                match += " AND " + ts_within("t.ts", *ts_range)
            t1 = time.monotonic()
            spark.sql(f"MERGE INTO {ident} t USING {view} s ON {match} WHEN NOT MATCHED THEN INSERT *")
            self._merge_split[table] = [round(t1 - t0, 2), round(time.monotonic() - t1, 2)]
        finally:
            spark.catalog.dropTempView(view)
            _release(src, True)

    def _count(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.totals[k] = self.totals.get(k, 0) + v


def build_query(spark: SparkSession, s: LakeSettings, writer: LakeWriter | None = None,
                query_name: str = "smartcity_lake"):
    """Start the streaming query; returns the StreamingQuery (writer at query.lake_writer)."""
    writer = writer or LakeWriter(spark, s)
    create_or_evolve(spark, s)   # the tables exist, and follow contracts/, before the first batch
    writer.starting()
    q = (stream_frame(spark, s).writeStream
         .queryName(query_name)
         .foreachBatch(writer)
         .option("checkpointLocation", s.checkpoint)
         .trigger(processingTime=f"{s.trigger_s} seconds")
         .start())
    writer.query_id = q.id
    q.lake_writer = writer  # type: ignore[attr-defined]
    return q


def run(s: LakeSettings, duration_s: float | None = None,
        stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the stream until `stop` is set (the CLI sets it on SIGTERM/SIGINT) or for `duration_s`;
    returns totals.

    The wait is a loop of short `awaitTermination` calls rather than one long call interrupted by
    an exception: an exception raised while py4j waits for the JVM's answer leaves that connection
    half-read, and the next call (`isActive`, `stop`) then failed with "Answer from Java side is
    empty" (1 run in 4 of the SASL stream test)."""
    from .session import build_session
    spark = build_session(s, iceberg=True)
    q = build_query(spark, s)
    stop = stop or threading.Event()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if q.awaitTermination(1):   # True: the query ended (a failure raises here)
                break
    finally:
        if q.isActive:
            q.stop()
    return dict(q.lake_writer.totals)
