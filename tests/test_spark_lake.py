"""The Spark lake job on real services: a real Kafka (KRaft) broker, one real local Spark for the
module and the lake's Iceberg catalog (SQLite); the crash tests run the job as its own driver process
so it can be killed with SIGKILL. What the lake holds is read as an outside reader does: through
the catalog with pyiceberg (catalog/reader.py), never by listing folders."""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
from confluent_kafka import Producer  # noqa: E402

from smartcity.contracts import RECORD_TYPES, encode, example, format_ts, violations  # noqa: E402
from deploy.local.kafka import KafkaServer  # noqa: E402
from smartcity.catalog.reader import event_ids, load_table, read_table, read_table_duckdb  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings  # noqa: E402
from tests.support.harness import wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPICS = [rt.name for rt in RECORD_TYPES]
_ids = itertools.count()


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    with KafkaServer(tmp_path_factory.mktemp("kafka")) as k:
        k.create_topics(partitions=2)
        yield k


@pytest.fixture(scope="module")
def module_lake(tmp_path_factory) -> LakeSettings:
    """The lake of the module's Spark session: its catalog is fixed when the session starts."""
    return LakeSettings(lake=str(tmp_path_factory.mktemp("module") / "lake"))


@pytest.fixture(scope="module")
def spark(module_lake):
    from smartcity.spark_jobs.session import build_session
    s = build_session(module_lake, iceberg=True)
    yield s
    s.stop()


def record(topic: str, ts: datetime, device: str = "veh-1") -> dict:
    r = example(topic)
    n = next(_ids)
    # Three boots, so that a column derived from event_id's middle part is seen to vary with it.
    r.update(event_id=f"{device}:{0xabcd + n % 3:08x}:{n}", device_id=device, seq=n, ts=format_ts(ts))
    return r


def produce(bootstrap: str, items: list[tuple[str, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for topic, value in items:
        p.produce(topic, value)
    assert p.flush(30) == 0


def lake_ids(s: LakeSettings, topic: str) -> list[str]:
    return event_ids(s, topic)


def device_ids(lake: Path | LakeSettings, topic: str, device: str) -> list[str]:
    """event_ids of one device's rows in a lake's table (tests share Kafka topics)."""
    t = read_table(lake if isinstance(lake, LakeSettings) else LakeSettings(lake=str(lake)), topic,
                   ["event_id", "device_id"])
    return [] if t is None else [e for e, d in zip(*t.to_pydict().values()) if d == device]


def test_the_jobs_boot_id_expression_equals_the_portable_one_on_every_event_id_the_contract_allows(spark):
    """The lake job computes boot_id with Spark's cheaper expression (catalog/tables.py DERIVED):
    it must give what `split_part(event_id, ':', 2)` gives (the SQL the other engines and the
    fills use), on event_ids of every shape the contract's pattern admits."""
    import re

    from pyspark.sql import functions as F

    from smartcity.catalog.tables import DERIVED
    from smartcity.contracts.schema import ENVELOPE
    pattern = re.compile(next(f.pattern for f in ENVELOPE if f.name == "event_id"))
    ids = [f"{dev}:{boot}:{seq}" for dev in ("a", "bus-0001", "x.y_z-9", "D" * 64, "-", "car.7")
           for boot in ("00000000", "0000abcd", "ffffffff", "7a3b9c01") for seq in (0, 7, 10**15)]
    assert all(pattern.fullmatch(e) for e in ids)
    (boot,) = [d for d in DERIVED if d.field.name == "boot_id"]
    assert boot.spark_sql is not None
    got = spark.createDataFrame([(e,) for e in ids], "event_id string").select(
        "event_id", F.expr(boot.spark_sql).alias("job"), F.expr(boot.sql).alias("portable")).collect()
    assert [(r.job, r.portable) for r in got] == [(e.split(":")[1],) * 2 for e in ids]


def test_spark_validation_agrees_with_contracts_on_every_rule(spark):
    """Valid examples and one mutation per rule kind, per topic: Spark rejects exactly the fields
    contracts.violations rejects."""
    from pyspark.sql import functions as F
    from smartcity.spark_jobs import validation as V
    cases = []
    for rt in RECORD_TYPES:
        good = example(rt.name)
        cases.append((rt.name, good))
        for f in rt.fields:
            for bad in ("text", 1.5, True, None, 10 ** 6, -(10 ** 6), "x" * 300, {"a": 1}):
                cases.append((rt.name, {**good, f.name: bad}))
            cases.append((rt.name, {k: v for k, v in good.items() if k != f.name}))
        cases.append((rt.name, {**good, "surprise": 1}))
        cases.append((rt.name, {**good, "ts": "2026-02-30T00:00:00.000Z"}))
        cases.append((rt.name, {**good, "ts": "2026-01-01 00:00:00"}))
        cases.append((rt.name, {**good, "event_id": "no-boot-id"}))
    rows = [(t, json.dumps(r).encode()) for t, r in cases]
    df = spark.createDataFrame(rows, "topic string, value binary").withColumn("v", V.parse(F.col("value")))
    out = []
    for rt in RECORD_TYPES:
        sub = df.filter(F.col("topic") == rt.name)
        out += sub.select("value", F.array(*V.messages(rt, F.col("v"))).alias("viol")).collect()
    assert len(out) == len(cases)
    by_value = {bytes(r["value"]): [m for m in r["viol"] if m] for r in out}
    mismatches = []
    for topic, rec in cases:
        expected = sorted({v.field for v in violations(topic, rec)})
        got = sorted({m.split("=", 1)[0].split(":", 1)[0] for m in by_value[json.dumps(rec).encode()]})
        if "surprise" in rec:
            assert "surprise: unknown field" in by_value[json.dumps(rec).encode()]
        if expected != got:
            mismatches.append((topic, rec, expected, got))
    assert not mismatches, mismatches[:5]


def test_the_fast_path_proves_valid_only_what_the_full_validation_accepts(spark):
    """validation.conforms (typed parse + byte comparison + rules) may say "not proven" for a valid
    record, but must never pass a record the full VARIANT validation rejects; and every valid
    record in the canonical wire form is proven."""
    from pyspark.sql import functions as F
    from smartcity.spark_jobs import validation as V
    from smartcity.spark_jobs.schemas import wire_struct
    cases = []
    for rt in RECORD_TYPES:
        good = example(rt.name)
        cases += [(rt.name, encode(rt, good)), (rt.name, json.dumps(good).encode())]
        for f in rt.fields:
            for bad in ("text", "5", 1.5, 1.0, 7, True, None, 10 ** 6, -(10 ** 6), 2 ** 40, "x" * 300,
                        {"a": 1}, [1], float("nan"), float("inf"), 1e-4, 1e7):
                rec = {**good, f.name: bad}
                cases.append((rt.name, json.dumps(rec, separators=(",", ":")).encode()))
                cases.append((rt.name, json.dumps({k: rec[k] for k in rt.field_names}, separators=(",", ":"),
                                                  ensure_ascii=False).encode()))
            cases.append((rt.name, encode(rt, {k: v for k, v in good.items() if k != f.name})))
        cases.append((rt.name, encode(rt, {**good, "surprise": 1})))
        cases.append((rt.name, encode(rt, {**good, "ts": "2026-02-30T00:00:00.000Z"})))
        cases.append((rt.name, encode(rt, good)[:-1] + b',"event_id":"x:0000abcd:1"}'))
        cases.append((rt.name, encode(rt, good) + b" "))
    df = spark.createDataFrame(cases, "topic string, value binary").withColumn("v", V.parse(F.col("value")))
    out = []
    for rt in RECORD_TYPES:
        sub = df.filter(F.col("topic") == rt.name)
        st = F.from_json(F.col("value").cast("string"), wire_struct(rt))
        out += sub.select("topic", "value", V.conforms(rt, F.col("value"), st).alias("proven"),
                          V.violations(rt, F.col("v")).alias("viol")).collect()
    assert len(out) == len(cases)
    proven = [r for r in out if r["proven"]]
    assert proven, "the canonical examples must be proven"
    wrongly = [(r["topic"], bytes(r["value"]), r["viol"]) for r in proven
               if r["viol"] != "" or violations(r["topic"], json.loads(r["value"]))]
    assert not wrongly, wrongly[:5]
    for rt in RECORD_TYPES:
        assert any(r["proven"] and bytes(r["value"]) == encode(rt, example(rt.name)) for r in out), rt.name
    # Valid but not canonical: left to the full path, which accepts it.
    spaced = [r for r in out if bytes(r["value"]).startswith(b'{"event_id": ')]
    assert spaced and not any(r["proven"] for r in spaced) and all(r["viol"] == "" for r in spaced)


def test_stream_lands_each_event_once_and_a_copy_however_late_never_twice(kafka, spark, module_lake):
    """Valid records of every topic land once in their Iceberg table, poison goes to the quarantine
    table with its reason, and a copy of an event_id that arrives after the stream's dedup window
    has forgotten it (a re-send hours or days later) is matched by the MERGE and not added."""
    from smartcity.spark_jobs.lake import build_query
    s = dataclasses.replace(module_lake, bootstrap=kafka.bootstrap, trigger_s=1,
                            starting_offsets="earliest", dedup_window_s=2)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    sent: dict[str, list[dict]] = {t: [] for t in TOPICS}
    for topic in TOPICS:
        for k in range(40):  # spread over four event hours, including data three hours late
            sent[topic].append(record(topic, now - timedelta(hours=k % 4, seconds=k)))
        sent[topic].append(record(topic, now - timedelta(days=2)))   # two days late
    # Half in the canonical wire form (the fast path), half as other producers may write JSON
    # (spaces, another key order: the full path); both must land the same way.
    good = [(t, encode(t, r) if i % 2 else json.dumps(dict(reversed(r.items()))).encode())
            for t in TOPICS for i, r in enumerate(sent[t])]
    poison = [
        ("gps_data", b"{not json"),
        ("vehicle_data", json.dumps({**record("vehicle_data", now), "speed_kmh": "fast"}).encode()),
        ("weather_data", json.dumps({k: v for k, v in record("weather_data", now).items() if k != "event_id"}).encode()),
        ("traffic_data", json.dumps(record("traffic_data", now + timedelta(days=2))).encode()),
        ("emergency_data", b"[1, 2, 3]"),
    ]
    produce(kafka.bootstrap, good[: len(good) // 2] + poison)
    q = build_query(spark, s)

    def settled(n_rows: int):
        return lambda: (all(len(lake_ids(s, t)) >= n_rows for t in TOPICS)
                        and q.lastProgress and q.lastProgress["numInputRows"] == 0)
    try:
        wait_until(lambda: len(lake_ids(s, "gps_data")) > 0, 240, "first batch in the lake")
        # A bridge retry within the window: the first half again (already committed) plus the rest.
        produce(kafka.bootstrap, good)
        wait_until(settled(41), 120, "all events")
        assert q.isActive, "poison records must not stop the query"
        for topic in TOPICS:
            t = read_table(s, topic, ["event_id", "ts", "kafka_offset", "boot_id"])
            ids = t.column("event_id").to_pylist()
            assert sorted(ids) == sorted(r["event_id"] for r in sent[topic]), topic
            # The derived column, from both validation paths: the middle part of event_id.
            assert t.column("boot_id").to_pylist() == [e.split(":")[1] for e in ids], topic
            want = {r["event_id"]: r["ts"] for r in sent[topic]}
            got_ts = {e: ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                      for e, ts in zip(ids, t.column("ts").to_pylist())}
            assert got_ts == want, topic
        quarantine = read_table(s, "quarantine").to_pylist()
        kinds = {r["kafka_topic"]: r["error_kind"] for r in quarantine}
        assert len(quarantine) == 5 and kinds == {
            "gps_data": "bad_json", "vehicle_data": "contract", "weather_data": "contract",
            "traffic_data": "future_ts", "emergency_data": "not_object"}
        veh = next(r for r in quarantine if r["kafka_topic"] == "vehicle_data")
        assert "speed_kmh" in veh["reason"] and json.loads(veh["raw_value"])["speed_kmh"] == "fast"
        weather = next(r for r in quarantine if r["kafka_topic"] == "weather_data")
        assert "event_id=None: required field is missing" in weather["reason"]
        ops = [op for p in q.recentProgress for op in p["stateOperators"]]
        assert sum(op["numRowsDroppedByWatermark"] for op in ops) == 0
        assert sum(op["customMetrics"].get("numDroppedDuplicateRows", 0) for op in ops) >= len(good) // 2 - 5

        # Late copies. A new reading moves the watermark past the window, so the stream's dedup
        # state forgets every earlier event_id; then copies of ten readings per topic (the
        # two-days-late one among them) arrive, in both wire forms.
        produce(kafka.bootstrap, [(t, encode(t, record(t, now))) for t in TOPICS])
        wait_until(settled(42), 120, "the reading that moves the watermark")
        time.sleep(3)
        before = dict(q.lake_writer.totals)
        copies = [(t, encode(t, r) if i % 2 else json.dumps(r).encode())
                  for t in TOPICS for i, r in enumerate(sent[t][-10:])]
        produce(kafka.bootstrap, copies)
        wait_until(lambda: sum(q.lake_writer.totals.get(f"data/{t}", 0) - before.get(f"data/{t}", 0)
                               for t in TOPICS) >= len(copies), 120, "the copies to reach the writer")
        for topic in TOPICS:
            ids = lake_ids(s, topic)
            assert len(ids) == len(set(ids)) == 42, (topic, len(ids), len(set(ids)))
    finally:
        q.stop()


def test_a_bad_record_read_again_under_a_new_checkpoint_is_quarantined_once(kafka, spark, module_lake, tmp_path):
    """The quarantine holds each bad Kafka record once, however often the stream reads it: a second
    query with a new checkpoint (a deleted checkpoint: a new query id, so no batch key matches, as
    when a re-run batch's key expired with its snapshot) reads the topic from the start again, and
    the quarantine MERGE on the record's Kafka coordinates adds none of it twice."""
    from smartcity.spark_jobs.lake import build_query
    topic = "emergency_data"
    marker = f"read-again-{next(_ids)}"
    good = record(topic, datetime.now(timezone.utc), device=marker)
    produce(kafka.bootstrap, [(topic, f'{{"not json {marker} {i}'.encode()) for i in range(3)]
            + [(topic, encode(topic, good))])

    def quarantined() -> list[tuple]:
        t = read_table(module_lake, "quarantine", ["raw_value", "kafka_partition", "kafka_offset", "error_kind"])
        return sorted((r["kafka_partition"], r["kafka_offset"], r["error_kind"]) for r in t.to_pylist()
                      if marker in (r["raw_value"] or ""))

    seen = []
    for ckpt in ("first", "second"):
        s = dataclasses.replace(module_lake, bootstrap=kafka.bootstrap, trigger_s=1, topics=[topic],
                                starting_offsets="earliest", checkpoint=str(tmp_path / ckpt))
        q = build_query(spark, s)
        try:   # everything was in Kafka before the query started: its first batch reads it all
            wait_until(lambda: q.lake_writer.totals.get(f"quarantine/{topic}", 0) >= 3, 180,
                       f"the {ckpt} query's batch")
        finally:
            q.stop()
        seen.append(quarantined())
    assert len(seen[0]) == 3 and len(set(seen[0])) == 3 and {k for _, _, k in seen[0]} == {"bad_json"}, seen[0]
    assert seen[1] == seen[0]
    assert device_ids(module_lake, topic, marker) == [good["event_id"]]


def _new_catalog(spark, tmp_path, name: str, **settings) -> LakeSettings:
    """Settings of a lake on a new catalog `name`, known to the module's session, tables created."""
    from smartcity.catalog.location import Catalog, prepare_catalog
    from smartcity.spark_jobs.iceberg_tables import create_or_evolve
    from smartcity.spark_jobs.settings import catalog_spark_conf
    s = LakeSettings(lake=str(tmp_path / "lake"), catalog=Catalog(name=name), **settings)
    prepare_catalog(s)
    for k, v in catalog_spark_conf(s).items():
        if k != "spark.sql.extensions":   # static, the module session has it
            spark.conf.set(k, v)
    create_or_evolve(spark, s)
    return s


def _writer_on_a_new_catalog(spark, tmp_path, name: str):
    """A LakeWriter on a new catalog `name` (tables created) in the module's session, and a
    function making a DataFrame of a table's rows from records."""
    from smartcity.spark_jobs.lake import LakeWriter
    s = _new_catalog(spark, tmp_path, name)
    now = datetime.now(timezone.utc)

    def frame(topic: str, recs: list[dict]):
        schema = spark.table(f"{name}.smartcity.{topic}").schema
        rows = []
        for i, r in enumerate(recs):
            ts = _ts(r)
            lineage = {"kafka_topic": topic, "kafka_partition": 0, "kafka_offset": i,
                       "kafka_ts": ts, "ingest_ts": now}
            rows.append(tuple(ts if f.name == "ts" else {**r, **lineage}.get(f.name) for f in schema.fields))
        return spark.createDataFrame(rows, schema)
    return LakeWriter(spark, s), frame


def _ts(r: dict) -> datetime:
    return datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _micros(r: dict) -> int:
    ts = _ts(r)
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def _range(recs: list[dict]) -> tuple[int, int]:
    return min(map(_micros, recs)), max(map(_micros, recs))


def _keys(frames: dict):
    """The (table, event_id, ts) the lookup takes, from per-table frames."""
    from pyspark.sql import functions as F
    parts = [f.select(F.lit(t).alias("table"), "event_id", "ts") for t, f in frames.items()]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def test_rows_no_table_holds_are_appended_and_a_table_holding_a_copy_merges_it_away(spark, tmp_path):
    """The late-copy check of a batch is one lookup for all its tables (LakeWriter._held_copies,
    on event_id and ts inside each table's ts range): a table holding none of the batch's rows
    gets a plain append; a table holding one (a copy two days late, next to new rows) gets the
    MERGE, which does not add the copy."""
    w, frame = _writer_on_a_new_catalog(spark, tmp_path, "lake_held")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    gps_old = [record("gps_data", now - timedelta(days=2, minutes=k)) for k in range(3)]
    veh_old = [record("vehicle_data", now - timedelta(hours=3, minutes=k)) for k in range(3)]
    w._write_data(spark, "gps_data", frame("gps_data", gps_old), _range(gps_old), held=0)
    w._write_data(spark, "vehicle_data", frame("vehicle_data", veh_old), _range(veh_old), held=0)
    assert w._paths == {"gps_data": "append", "vehicle_data": "append"}

    gps_batch = [gps_old[1], *(record("gps_data", now + timedelta(seconds=k)) for k in range(2))]
    veh_batch = [record("vehicle_data", now + timedelta(seconds=k)) for k in range(2)]
    frames = {"gps_data": frame("gps_data", gps_batch), "vehicle_data": frame("vehicle_data", veh_batch)}
    ranges = {"gps_data": _range(gps_batch), "vehicle_data": _range(veh_batch)}
    held = w._held_copies(spark, _keys(frames), ranges)
    assert held == {"gps_data": 1, "vehicle_data": 0}
    w._paths = {}
    for t, f in frames.items():
        w._write_data(spark, t, f, ranges[t], held[t])
    assert w._paths == {"gps_data": "merge", "vehicle_data": "append"}
    gps = lake_ids(w.s, "gps_data")
    assert sorted(gps) == sorted(r["event_id"] for r in [*gps_old, *gps_batch[1:]])
    assert sorted(lake_ids(w.s, "vehicle_data")) == sorted(r["event_id"] for r in [*veh_old, *veh_batch])


def test_the_lookup_reads_a_table_only_where_the_stream_dedup_state_may_have_forgotten_a_row(spark, tmp_path):
    """A table can hold a copy of a batch's row only at that row's ts, and a copy whose event_id
    the stream's dedup state still remembers never reaches the writer. So the lookup
    (LakeWriter._lookup_ranges) reads a table only up to the greatest ts among rows committed
    before this run (read from the table once) or longer than one dedup window of ingest time
    ago: a catch-up batch reaching back into this run's recent commits is appended without a
    lookup; once those commits are a window old, or after a restart, the overlap is looked up;
    an empty table and a batch after everything are never looked up."""
    from smartcity.spark_jobs.lake import LakeWriter
    w, frame = _writer_on_a_new_catalog(spark, tmp_path, "lake_top")
    window_us = w.s.dedup_window_s * 1_000_000
    t0 = 1_000 * window_us                      # the first batch's ingest ts (µs)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    assert w._lookup_ranges(spark, {"gps_data": (1, 2)}, t0) == ({"gps_data": 0}, {})
    old = [record("gps_data", now - timedelta(minutes=k)) for k in range(3)]
    w._write_data(spark, "gps_data", frame("gps_data", old), _range(old), held=0)
    w._committed_ts("gps_data", _range(old), t0)
    top = _micros(old[0])
    later = [record("gps_data", now + timedelta(seconds=k)) for k in (1, 2)]
    reaching = [old[2], *later]        # a row at a ts the table has, among new ones
    lo, hi = _range(reaching)

    # Within the window the dedup state would have dropped a copy: no lookup.
    assert w._lookup_ranges(spark, {"gps_data": (lo, hi)}, t0 + window_us - 1) == ({"gps_data": 0}, {})
    # One window later it may have forgotten: the overlap is looked up, up to the table's top.
    assert w._lookup_ranges(spark, {"gps_data": (lo, hi)}, t0 + window_us) == ({}, {"gps_data": (lo, top)})
    assert w._lookup_ranges(spark, {"gps_data": _range(later)}, t0 + window_us) == ({"gps_data": 0}, {})

    fresh = LakeWriter(spark, w.s)     # a restart: it knows nothing and reads the table's greatest ts
    assert fresh._lookup_ranges(spark, {"gps_data": _range(later)}, t0) == ({"gps_data": 0}, {})
    assert fresh._lookup_ranges(spark, {"gps_data": (lo, hi), "vehicle_data": None}, t0) == (
        {}, {"gps_data": (lo, top)})
    fresh._committed_ts("gps_data", (lo, hi), t0)
    assert fresh._lookup_ranges(spark, {"gps_data": (lo, hi)}, t0 + 1) == ({}, {"gps_data": (lo, top)})
    fresh._committed_ts("gps_data", None, t0)   # full-path rows: range not known, read again
    assert "gps_data" not in fresh._old_top


def _dropped_duplicates(q) -> int:
    return sum(op["customMetrics"].get("numDroppedDuplicateRows", 0)
               for p in q.recentProgress for op in p["stateOperators"])


def test_a_copy_the_dedup_state_remembers_is_dropped_and_one_it_forgot_is_looked_up(kafka, spark, tmp_path):
    """The stream end to end, proven rows only (so nothing resets what the writer knows). The
    writer skips the lookup for rows the dedup state remembers: a copy sent within
    dedup_window_s must be dropped by that state before it reaches the writer; a copy sent once
    the state has forgotten the reading (two windows of ingest time, then a trigger) reaches it
    and must be found by the lookup and MERGEd away. A fresh catalog: its tables hold nothing
    else, so nothing but the age of this run's commits makes the writer look up."""
    from smartcity.spark_jobs.lake import build_query
    topic, window_s = "gps_data", 12
    s = _new_catalog(spark, tmp_path, "lake_remember", bootstrap=kafka.bootstrap, trigger_s=1,
                     topics=[topic], starting_offsets="latest", dedup_window_s=window_s,
                     checkpoint=str(tmp_path / "ckpt"))
    device = f"remember-{next(_ids)}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    sent = [record(topic, now - timedelta(hours=k % 3, seconds=k), device=device) for k in range(30)]
    q = build_query(spark, s)
    try:
        wait_until(lambda: q.lastProgress is not None, 120, "the query's first trigger (its offsets)")
        produce(kafka.bootstrap, [(topic, encode(topic, r)) for r in sent])
        wait_until(lambda: q.lake_writer.totals.get(f"data/{topic}", 0) >= 30, 120, "the readings")
        landed = time.monotonic()
        w = q.lake_writer
        produce(kafka.bootstrap, [(topic, encode(topic, r)) for r in sent[:10]])
        wait_until(lambda: _dropped_duplicates(q) >= 10, 60, "the state to drop the copies")
        assert w.totals[f"data/{topic}"] == 30, "a copy within the window reached the writer"

        # Forgotten: a reading ingested two windows after the first ones moves the watermark
        # past them, the next trigger evicts them; then the copies reach the writer.
        time.sleep(max(0.0, landed + 2 * window_s + 1 - time.monotonic()))
        produce(kafka.bootstrap, [(topic, encode(topic, record(topic, now, device=device)))])
        wait_until(lambda: w.totals[f"data/{topic}"] >= 31, 60, "the reading that moves the watermark")
        time.sleep(3)
        n_batches = len(w.timings)
        produce(kafka.bootstrap, [(topic, encode(topic, r)) for r in sent[:10]])
        wait_until(lambda: w.totals[f"data/{topic}"] >= 41, 60, "the copies to reach the writer")
        ids = device_ids(s, topic, device)
        assert len(ids) == len(set(ids)) == 31
        copies_batch = [t for t in w.timings[n_batches:] if t["paths"]]
        assert copies_batch and copies_batch[-1]["paths"] == {topic: "merge"}, w.timings[n_batches:]
    finally:
        q.stop()


def test_the_merge_reads_only_the_target_files_in_the_batch_ts_range(spark, tmp_path):
    """The MERGE's ON bounds the target's ts by the batch's min and max (LakeWriter._merge), so
    Iceberg skips the files outside that range: with the data file of an old day deleted from the
    disk, a batch of today's rows (one a copy) still MERGEs, and the copy is not added; a batch
    whose range reaches the old day reads that file (and fails without it). Both ways of getting
    the range: from the batch's counts (given) and computed from the rows (the full path). The
    lookup of _held_copies reads the same files as the MERGE: its range prunes the same way."""
    w, make = _writer_on_a_new_catalog(spark, tmp_path, "lake_prune")
    ident = "lake_prune.smartcity.gps_data"
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def frame(recs: list[dict]):
        return make("gps_data", recs)
    micros = _micros
    old = [record("gps_data", now - timedelta(days=3, minutes=k)) for k in range(3)]
    new = [record("gps_data", now - timedelta(minutes=k)) for k in range(3)]
    w._write_data(spark, "gps_data", frame(old))
    w._write_data(spark, "gps_data", frame(new))
    old_day = (now - timedelta(days=3)).date()
    old_files = [r["file_path"] for r in spark.sql(f"SELECT file_path, partition FROM {ident}.files").collect()
                 if r["partition"][0] == old_day]
    assert old_files
    for f in old_files:
        _local(f).unlink()

    later = [record("gps_data", now + timedelta(seconds=k)) for k in range(2)]
    batch = [new[1], *later]                      # a copy of a row already there, and two new rows
    w._write_data(spark, "gps_data", frame(batch), (min(map(micros, batch)), max(map(micros, batch))))
    batch = [new[0], record("gps_data", now + timedelta(seconds=5))]
    w._write_data(spark, "gps_data", frame(batch))  # the range computed from the rows
    got = [r["event_id"] for r in spark.sql(f"SELECT event_id FROM {ident} WHERE ts >= TIMESTAMP '{old_day + timedelta(days=1)}'").collect()]
    assert sorted(got) == sorted(r["event_id"] for r in [*new, *later, batch[1]])
    batch = [new[2], record("gps_data", now + timedelta(seconds=7))]
    assert w._held_copies(spark, _keys({"gps_data": frame(batch)}), {"gps_data": _range(batch)}) == {"gps_data": 1}
    reaching = [old[0], record("gps_data", now + timedelta(seconds=8))]
    with pytest.raises(Exception, match="(?i)not.?found|does not exist|No such file"):
        w._held_copies(spark, _keys({"gps_data": frame(reaching)}), {"gps_data": _range(reaching)})
    with pytest.raises(Exception, match="(?i)not.?found|does not exist|No such file"):
        w._write_data(spark, "gps_data", frame([old[0], record("gps_data", now + timedelta(seconds=9))]))


def _run_lake(args: list[str], env_extra: dict, log: Path) -> subprocess.Popen:
    """`python -m smartcity.spark_jobs ARGS` as its own process group (so a kill -9 of the group
    takes its JVM too), output to `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.Popen([sys.executable, "-m", "smartcity.spark_jobs", *args], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _run_stream(lake: Path, bootstrap: str, env_extra: dict, log: Path,
                topics: str = "gps_data,vehicle_data") -> subprocess.Popen:
    return _run_lake(["stream", "--lake", str(lake), "--bootstrap", bootstrap, "--trigger-s", "1",
                      "--topics", topics], env_extra, log)


def _run_maintain(lake: Path, tables: list[str], env_extra: dict, log: Path) -> subprocess.Popen:
    return _run_lake(["maintain", "--once", "--lake", str(lake), *[a for t in tables for a in ("--table", t)]],
                     env_extra, log)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the job and its JVM are gone already
        pass


def _alive(proc: subprocess.Popen, log: Path) -> bool:
    """True while the process runs; once it has exited, an AssertionError with its log's exception
    lines (a wait for something it should do then fails at once, saying why)."""
    if proc.poll() is not None:
        why = [ln[:300] for ln in log.read_text(errors="replace").splitlines() if "Exception" in ln]
        raise AssertionError(f"the process logging to {log} exited ({proc.returncode}):\n" + "\n".join(why[:12]))
    return True


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM to the job alone (to its whole group it would kill the JVM under the query's feet),
    which stops the query and exits 0; then SIGKILL to whatever of the group is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    _signal(proc, signal.SIGKILL)
    return proc.wait(10)


# Where the driver is killed: before any Iceberg commit of the batch; after the first table's
# commit and before the second's; after every table's commit and before Spark's commit log.
KILL_POINTS = {"before:gps_data": (0, 0), "after:gps_data": (30, 0), "end": (30, 30)}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_driver_kill_9_at_each_point_of_a_batch_then_one_restart_leaves_every_event_once(kafka, tmp_path, point):
    """kill -9 of the driver at `point` of a batch, then ONE restart (which re-runs the batch and
    keeps going: on pyspark 4.1.0-4.1.2 the V2 Kafka source threw NullPointerException right after
    a re-run, session.py): every event_id exactly once in each table, whatever was committed."""
    lake = tmp_path / "lake"
    topics = ["gps_data", "vehicle_data"]
    device = f"crash-{point.replace(':', '-')}"
    now = datetime.now(timezone.utc)
    first = {t: [record(t, now - timedelta(hours=k % 3), device=device) for k in range(30)] for t in topics}
    later = {t: [record(t, now, device=device) for _ in range(10)] for t in topics}
    produce(kafka.bootstrap, [(t, json.dumps(r).encode()) for t in topics for r in first[t]])
    flag = tmp_path / "paused"
    proc = _run_stream(lake, kafka.bootstrap, {"SMARTCITY_LAKE_TEST_PAUSE_AT": point,
                                               "SMARTCITY_LAKE_TEST_PAUSE_FILE": str(flag)}, tmp_path / "run1.log")
    try:
        wait_until(flag.exists, 180, f"the driver to pause at {point} ({tmp_path / 'run1.log'})")
    finally:
        _signal(proc, signal.SIGKILL)
        proc.wait(10)

    def mine(topic):
        return device_ids(lake, topic, device)

    # What the kill left visible: whole tables of the batch, never a part of one.
    assert tuple(len(mine(t)) for t in topics) == KILL_POINTS[point]
    ckpt = lake / "_checkpoints" / "lake-stream"
    batches = {d: {int(p.name) for p in (ckpt / d).glob("[0-9]*")} for d in ("offsets", "commits")}
    assert max(batches["offsets"]) not in batches["commits"], "Spark must have an unfinished batch to re-run"
    # Restart; a bridge retry re-sends some of the same events meanwhile.
    log2 = tmp_path / "run2.log"
    produce(kafka.bootstrap, [(t, json.dumps(r).encode()) for t in topics for r in first[t][:5]])
    proc = _run_stream(lake, kafka.bootstrap, {}, log2)

    try:
        wait_until(lambda: _alive(proc, log2) and all(len(mine(t)) >= len(first[t]) for t in topics), 180,
                   f"the restart to re-run the killed batch ({log2})")
        produce(kafka.bootstrap, [(t, encode(t, r)) for t in topics for r in later[t] + first[t][:5]])
        wait_until(lambda: _alive(proc, log2) and all(len(mine(t)) >= len(first[t]) + len(later[t]) for t in topics),
                   120, f"events sent after the restart ({log2})")
        time.sleep(3)  # a few more (empty) triggers: nothing may appear twice later either
    finally:
        rc = _stop(proc)
    out = log2.read_text(errors="replace")
    assert rc == 0 and '"totals"' in out, out[-3000:]
    assert "NullPointerException" not in out
    for t in topics:
        assert sorted(mine(t)) == sorted(r["event_id"] for r in first[t] + later[t]), t
    if point != "before:gps_data":
        assert "tables already committed are skipped" in out


def _table_files(lake: Path, table: str) -> set[Path]:
    """Every file in a table's folder (data, metadata, Hadoop's hidden .crc checksums)."""
    return {p for p in (lake / "warehouse" / "smartcity" / table).rglob("*") if p.is_file()}


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://").removeprefix("file:"))


def _referenced(s: LakeSettings, table: str) -> set[Path]:
    """The files the table's metadata reaches through the catalog: its current metadata file and
    the earlier ones it logs, every snapshot's manifest list, manifests and data files (and the
    .crc beside each, which Hadoop's local file system writes and deletes with its file)."""
    t = load_table(s, table)
    out = {_local(t.metadata_location)} | {_local(e.metadata_file) for e in t.metadata.metadata_log}
    for snap in t.metadata.snapshots:
        out.add(_local(snap.manifest_list))
        for m in snap.manifests(t.io):
            out.add(_local(m.manifest_path))
            out |= {_local(e.data_file.file_path) for e in m.fetch_manifest_entry(t.io, discard_deleted=False)}
    return out | {p.with_name(f".{p.name}.crc") for p in out}


def _results(log: Path) -> dict[str, dict]:
    """maintain's JSON line per table, by table name."""
    lines = [json.loads(ln) for ln in log.read_text(errors="replace").splitlines() if ln.startswith('{"')]
    return {d["table"].rsplit(".", 1)[1]: d for d in lines if "table" in d}


# Where `maintain` is killed, on gps_data, the first table it maintains:
# - "rewrite-commit-pending": inside the compaction's commit. Its sorted files, manifests and new
#   metadata file are written; the catalog's pointer swap is not done. To stop it exactly there,
#   the test holds the SQLite catalog's write lock (BEGIN IMMEDIATE) once maintain has reached
#   the rewrite: the commit's UPDATE waits for the lock (sqlite-jdbc's busy_timeout, 30 s), and a
#   new metadata file with a "replace" snapshot says it is waiting. The stream is idle meanwhile
#   (nothing produced), so it wants no lock.
# - "rewrite-committed": after the compaction's commit, before snapshot expiry (the pause hook).
MAINTAIN_KILLS = ["rewrite-commit-pending", "rewrite-committed"]


@pytest.mark.parametrize("point", MAINTAIN_KILLS)
def test_maintain_killed_9_next_to_the_stream_then_run_again_loses_and_duplicates_nothing(kafka, tmp_path, point):
    """The stream and `maintain` as two processes on one lake (two writers of one SQLite catalog).
    The stream lands records in many small files; `maintain --table gps_data` is killed with
    SIGKILL (its process group, JVM and all) at `point`; then it runs again to completion while
    the stream keeps landing new records. Every event_id is in each of the stream's tables exactly
    once for pyiceberg and DuckDB; the files the killed run left unreferenced (orphans) are removed
    by the later run once they are older than orphan_age_h."""
    started = time.monotonic()
    lake = tmp_path / "lake"
    s = LakeSettings(lake=str(lake))
    topics = ["gps_data", "vehicle_data"]
    device = f"maint-{point}"
    # One day partition (yesterday noon on): the rounds' small files are all candidates for one
    # rewrite group (min_input_files = 5).
    day = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    clock = itertools.count()
    sent: dict[str, list[str]] = {t: [] for t in topics}

    def send_round(n: int = 4) -> None:
        items = []
        for t in topics:
            for _ in range(n):
                r = record(t, day + timedelta(seconds=next(clock)), device=device)
                sent[t].append(r["event_id"])
                items.append((t, encode(t, r)))
        produce(kafka.bootstrap, items)

    def landed() -> bool:
        return all(len(device_ids(lake, t, device)) >= len(sent[t]) for t in topics)

    flag = tmp_path / "paused"
    hook = {"SMARTCITY_LAKE_TEST_PAUSE_FILE": str(flag), "SMARTCITY_LAKE_TEST_PAUSE_AT":
            "maintain:before-rewrite:gps_data" + (",maintain:after-rewrite:gps_data" if point == "rewrite-committed" else "")}
    stream_log, log1, log2 = tmp_path / "stream.log", tmp_path / "maintain1.log", tmp_path / "maintain2.log"
    stream = _run_stream(lake, kafka.bootstrap, {}, stream_log)
    maint = None

    try:
        # Many small files: each round is its own micro-batch (it lands before the next is sent).
        for i in range(6):
            send_round()
            wait_until(lambda: _alive(stream, stream_log) and landed(), 240, f"round {i} in the lake ({stream_log})")
            if maint is None:   # the tables exist now: maintain's JVM starts while the rounds land
                maint = _run_maintain(lake, ["gps_data"], hook, log1)
        wait_until(lambda: _alive(maint, log1) and flag.exists(), 240, f"maintain to reach gps_data's rewrite ({log1})")
        assert flag.read_text() == "maintain:before-rewrite:gps_data"
        time.sleep(2)  # a trigger or two with nothing new: the stream is idle, it commits nothing now
        before_files = _table_files(lake, "gps_data")
        before_pointer = load_table(s, "gps_data").metadata_location
        if point == "rewrite-commit-pending":
            lock = sqlite3.connect(lake / "_catalog" / "iceberg.sqlite", timeout=30, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")   # readers go on; a commit's UPDATE waits

            def commit_waiting() -> bool:
                for f in _table_files(lake, "gps_data") - before_files:
                    if f.name.endswith(".metadata.json"):
                        try:
                            m = json.loads(f.read_text())
                        except ValueError:   # still being written (Iceberg writes it in place)
                            continue
                        cur = [x for x in m["snapshots"] if x["snapshot-id"] == m["current-snapshot-id"]]
                        if cur and cur[0]["summary"]["operation"] == "replace":
                            return True
                return False
            flag.unlink()
            try:
                wait_until(lambda: _alive(maint, log1) and commit_waiting(), 120,
                           f"the compaction's commit to wait for the catalog ({log1})")
                _signal(maint, signal.SIGKILL)
                maint.wait(10)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
        else:
            flag.unlink()
            wait_until(lambda: _alive(maint, log1) and flag.exists(), 180, f"maintain to commit the compaction ({log1})")
            assert flag.read_text() == "maintain:after-rewrite:gps_data"
            _signal(maint, signal.SIGKILL)
            maint.wait(10)
        killed_at = time.monotonic()

        # What the kill left: the rows exactly as before; for a pending commit, the table exactly
        # as before and every file the run wrote unreferenced; for a landed one, the compaction.
        table = load_table(s, "gps_data")
        new_files = _table_files(lake, "gps_data") - before_files
        orphans = new_files - _referenced(s, "gps_data")
        visible_orphans = {f for f in orphans if not f.name.startswith(".")}   # what Iceberg lists
        for t in topics:
            assert sorted(device_ids(lake, t, device)) == sorted(sent[t]), t
        if point == "rewrite-commit-pending":
            assert table.metadata_location == before_pointer, "the compaction's commit must not have landed"
            assert orphans == new_files
            assert {f.suffix for f in visible_orphans} >= {".parquet", ".avro", ".json"}, sorted(visible_orphans)
        else:
            assert table.metadata_location != before_pointer
            assert table.current_snapshot().summary.operation.value == "replace"
            assert new_files and not orphans, sorted(orphans)
        assert _results(log1) == {}, "the killed run finished no table"
        # The killed run's files as a run days later finds them: older than orphan_age_h (72 h).
        days_ago = time.time() - 4 * 86400
        for f in orphans:
            os.utime(f, (days_ago, days_ago))

        # maintain again, to completion, while the stream lands new records.
        maint = _run_maintain(lake, ["gps_data"], {}, log2)
        while maint.poll() is None:
            send_round(2)
            _alive(stream, stream_log)
            time.sleep(2)
        assert maint.returncode == 0, log2.read_text(errors="replace")[-3000:]
        results = _results(log2)
        assert set(results) == {"gps_data"} and "error" not in results["gps_data"], results
        assert results["gps_data"]["orphans_removed"] == len(visible_orphans)
        left = sorted(str(f) for f in orphans if f.exists())
        assert not left, left
        if point == "rewrite-commit-pending":
            assert results["gps_data"]["rewritten_files"] >= 5, "the killed compaction is done now"
        send_round()
        wait_until(lambda: _alive(stream, stream_log) and landed(), 120, f"the last records ({stream_log})")
        time.sleep(3)   # a few more (empty) triggers: nothing may appear twice later either
    finally:
        if maint is not None and maint.poll() is None:
            _signal(maint, signal.SIGKILL)
            maint.wait(10)
        rc = _stop(stream)
    out = stream_log.read_text(errors="replace")
    assert rc == 0 and '"totals"' in out, out[-3000:]
    for t in topics:
        by_pyiceberg = device_ids(lake, t, device)
        d = read_table_duckdb(s, t, ["event_id", "device_id"]).to_pydict()
        by_duckdb = [e for e, dev in zip(d["event_id"], d["device_id"]) if dev == device]
        assert sorted(by_pyiceberg) == sorted(by_duckdb) == sorted(sent[t]), t
    print(f"{point}: {sum(map(len, sent.values()))} records, orphans of the killed run "
          f"{len(visible_orphans)} (+{len(orphans) - len(visible_orphans)} .crc), maintain again "
          f"{json.dumps({t: {k: r[k] for k in ('rewritten_files', 'orphans_removed', 'retries', 'seconds')} for t, r in results.items()})}, "
          f"kill at {killed_at - started:.0f} s, test {time.monotonic() - started:.0f} s")


def test_s3_lake_on_the_local_s3_server_lands_each_event_once(kafka, tmp_path, monkeypatch):
    """The same job with an s3a:// lake (checkpoint through s3a, Iceberg tables through S3FileIO)
    against the project's S3 server (S3Proxy) and a SQLite catalog on local disk: every event once,
    read back through the catalog with pyiceberg; the table's files in the bucket under the
    warehouse; credentials only in the standard AWS environment variables, never in the job's log;
    `maintain` (compaction, expiry, the orphan listing of the table's S3 prefix, manifests) run in
    its own process next to the running stream, while a third wave arrives, loses and doubles
    nothing; and the data still there after S3Proxy restarts on the same folder."""
    from deploy.local.s3 import S3Server
    from smartcity.catalog.location import S3, Catalog
    if not S3Server.available():
        pytest.skip("no S3 server: S3Proxy's jar is fetched by deploy/setup.d/36-s3proxy.sh and runs on Java 17")
    topic = "weather_data"
    now = datetime.now(timezone.utc)
    sent = [record(topic, now - timedelta(hours=k % 2), device="s3dev") for k in range(25)]
    produce(kafka.bootstrap, [(topic, json.dumps(r).encode()) for r in sent])
    catalog_file = tmp_path / "catalog.sqlite"
    with S3Server(tmp_path / "s3") as s3:
        client = s3.client()
        client.create_bucket(Bucket="lake")
        for k, v in s3.aws_env().items():      # the pyiceberg reader here: the same AWS chain
            monkeypatch.setenv(k, v)
        env = {**s3.aws_env(), "SMARTCITY_LAKE_S3__REGION": "us-east-1",
               "SMARTCITY_LAKE_CATALOG__URI": f"jdbc:sqlite:{catalog_file}", "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "smartcity.spark_jobs", "stream", "--lake", "s3a://lake/city",
               "--bootstrap", kafka.bootstrap, "--trigger-s", "1", "--topics", topic,
               "--s3-endpoint", s3.endpoint, "--s3-path-style"]
        log = tmp_path / "s3run.log"
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        s = LakeSettings(lake="s3a://lake/city", s3=S3(endpoint=s3.endpoint, path_style=True, region="us-east-1"),
                         catalog=Catalog(uri=f"jdbc:sqlite:{catalog_file}"))

        def keys(prefix):
            out = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix):
                out += [o["Key"] for o in page.get("Contents", [])]
            return out

        def mine():
            t = read_table(s, topic, ["event_id", "device_id"])
            return [] if t is None else [e for e, d in zip(*t.to_pydict().values()) if d == "s3dev"]

        def data_files():
            return [task.file.file_path for task in load_table(s, topic).scan().plan_files()]

        def wave(n: int) -> None:
            recs = [record(topic, now - timedelta(hours=k % 2), device="s3dev") for k in range(n)]
            produce(kafka.bootstrap, [(topic, json.dumps(r).encode()) for r in recs])
            sent.extend(recs)

        maint_log = tmp_path / "s3maintain.log"
        try:
            wait_until(lambda: proc.poll() is not None or len(mine()) >= 25, 240, f"events in the lake ({log})")
            wave(10)   # a later batch: more files in the same day partitions, for the compaction
            wait_until(lambda: proc.poll() is not None or len(mine()) >= len(sent), 120, f"the second wave ({log})")
            maint = subprocess.Popen(
                [sys.executable, "-m", "smartcity.spark_jobs", "maintain", "--once", "--table", topic,
                 "--lake", "s3a://lake/city", "--s3-endpoint", s3.endpoint, "--s3-path-style"],
                cwd=ROOT, env={**os.environ, **env, "SMARTCITY_LAKE_MAINTENANCE__MIN_INPUT_FILES": "2"},
                stdout=subprocess.PIPE, stderr=open(maint_log, "ab"), text=True, start_new_session=True)
            try:
                wave(10)   # lands while maintain runs (its JVM starts, plans, rewrites, commits)
                m_out, _ = maint.communicate(timeout=600)
            finally:
                _signal(maint, signal.SIGKILL)
            assert maint.returncode == 0, maint_log.read_text(errors="replace")[-3000:]
            (m_result,) = [json.loads(ln) for ln in m_out.splitlines() if ln.startswith('{"')]
            assert "error" not in m_result and m_result["rewritten_files"] >= 2, m_result
            wait_until(lambda: proc.poll() is not None or len(mine()) >= len(sent), 120, f"the third wave ({log})")
            assert proc.poll() is None, f"the job died: {log}"
            time.sleep(3)   # a few more (empty) triggers: nothing may appear twice later either
        finally:
            rc = _stop(proc)
        out = log.read_text(errors="replace")
        assert rc == 0, out[-3000:]
        got = mine()
        assert sorted(got) == sorted(r["event_id"] for r in sent)
        # The table's files are S3 objects under the warehouse, with the s3:// scheme Athena reads.
        files = data_files()
        assert files and all(f.startswith("s3://lake/city/warehouse/") and f.endswith(".parquet") for f in files), files
        objects = set(keys("city/warehouse/"))
        assert {f[len("s3://lake/"):] for f in files} <= objects
        assert any(k.endswith(".metadata.json") for k in objects)
        assert any(k.startswith("city/_checkpoints/lake-stream/offsets/") for k in keys("city/_checkpoints/"))
        assert s3.secret_key not in out and s3.secret_key not in s3.log_path.read_text()
        assert s3.secret_key not in m_out + maint_log.read_text(errors="replace")

        # The analysts' embedded engine reads the same tables on S3 (DuckDB httpfs, keys from the
        # AWS environment), through the same catalog.
        from smartcity.analytics.query import QuerySettings, run_named
        delay = run_named("ingest_delay", {"devices": "s3dev"}, QuerySettings(lake=s.lake, s3=s.s3, catalog=s.catalog))
        assert [(r[0], r[1]) for r in delay.rows] == [(topic, len(sent))]

        # S3Proxy keeps its objects in files under its data folder: a restart loses nothing.
        s3.stop()
        s3.start()
        assert sorted(mine()) == sorted(r["event_id"] for r in sent)
        assert set(keys("city/warehouse/")) == objects
