"""The Spark lake job on real services: a real Kafka (KRaft) broker and one real local Spark for the
module; the crash test runs the job as its own driver process so it can be killed with SIGKILL."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
from confluent_kafka import Producer  # noqa: E402

from smartcity.contracts import RECORD_TYPES, encode, example, format_ts, violations  # noqa: E402
from deploy.local.kafka import KafkaServer  # noqa: E402
from smartcity.spark_jobs.reader import read_table, visible_files  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPICS = [rt.name for rt in RECORD_TYPES]
_ids = itertools.count()


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    with KafkaServer(tmp_path_factory.mktemp("kafka")) as k:
        k.create_topics(partitions=2)
        yield k


@pytest.fixture(scope="module")
def spark():
    from smartcity.spark_jobs.session import build_session
    s = build_session(LakeSettings(lake="/tmp/unused"))
    yield s
    s.stop()


def record(topic: str, ts: datetime, device: str = "veh-1") -> dict:
    r = example(topic)
    n = next(_ids)
    r.update(event_id=f"{device}:0000abcd:{n}", device_id=device, seq=n, ts=format_ts(ts))
    return r


def produce(bootstrap: str, items: list[tuple[str, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for topic, value in items:
        p.produce(topic, value)
    assert p.flush(30) == 0


def lake_ids(lake: str, topic: str) -> list[str]:
    t = read_table(lake, "data", topic, ["event_id"])
    return [] if t is None else t.column("event_id").to_pylist()


def wait_until(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


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


def test_stream_lands_each_event_once_in_its_event_hour_and_quarantines_poison(kafka, spark, tmp_path):
    from smartcity.spark_jobs.lake import build_query
    s = LakeSettings(bootstrap=kafka.bootstrap, lake=str(tmp_path / "lake"), trigger_s=1,
                     starting_offsets="earliest")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    sent: dict[str, list[dict]] = {t: [] for t in TOPICS}
    for topic in TOPICS:
        for k in range(40):  # spread over four event hours, including data three hours late
            sent[topic].append(record(topic, now - timedelta(hours=k % 4, seconds=k)))
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
    try:
        wait_until(lambda: len(lake_ids(s.lake, "gps_data")) > 0, 120, "first batch in the lake")
        # A bridge retry: the first half again (already committed) plus the rest.
        produce(kafka.bootstrap, good)
        wait_until(lambda: all(len(lake_ids(s.lake, t)) >= 40 for t in TOPICS)
                   and q.lastProgress and q.lastProgress["numInputRows"] == 0, 120, "all events")
        time.sleep(2.5)
        assert q.isActive, "poison records must not stop the query"
        for topic in TOPICS:
            t = read_table(s.lake, "data", topic, ["event_id", "ts", "dt", "hour", "kafka_offset"])
            ids = t.column("event_id").to_pylist()
            assert sorted(ids) == sorted(r["event_id"] for r in sent[topic]), topic
            want = {r["event_id"]: r["ts"] for r in sent[topic]}
            for eid, dt, hour in zip(ids, t.column("dt").to_pylist(), t.column("hour").to_pylist()):
                assert (dt, hour) == (want[eid][:10], want[eid][11:13]), (topic, eid)
        q_rows = {t: (read_table(s.lake, "quarantine", t) or None) for t in TOPICS}
        kinds = {t: [r["error_kind"] for r in q_rows[t].to_pylist()] for t in TOPICS}
        assert kinds == {"gps_data": ["bad_json"], "vehicle_data": ["contract"], "weather_data": ["contract"],
                         "traffic_data": ["future_ts"], "emergency_data": ["not_object"]}
        veh = q_rows["vehicle_data"].to_pylist()[0]
        assert "speed_kmh" in veh["reason"] and json.loads(veh["raw_value"])["speed_kmh"] == "fast"
        assert "event_id=None: required field is missing" in q_rows["weather_data"].to_pylist()[0]["reason"]
        totals = q.lake_writer.totals
        assert sum(v for k, v in totals.items() if k.startswith("quarantine/")) == 5
        ops = [op for p in q.recentProgress for op in p["stateOperators"]]
        dropped = sum(op["customMetrics"].get("numDroppedDuplicateRows", 0) for op in ops)
        assert sum(op["numRowsDroppedByWatermark"] for op in ops) == 0
        assert dropped >= len(good) // 2 - 5  # the re-sent half (recentProgress may have rolled a little)
        assert not list((tmp_path / "lake" / "_staging").rglob("*.parquet")), "staging left behind"
    finally:
        q.stop()
    # Compaction of an hour with many small files: a concurrent pyarrow reader never sees the
    # count change (no duplicates, no gaps) and the files become one.
    from smartcity.spark_jobs.compact import compact_hour
    counts = {}
    for topic in TOPICS:
        for f in visible_files(s.lake, "data", topic):
            key = (topic,) + tuple(Path(f).parts[-3:-1])
            counts[key] = counts.get(key, 0) + 1
    (topic, dt_part, hour_part), nfiles = max(counts.items(), key=lambda kv: kv[1])
    assert nfiles >= 2
    dt, hour = dt_part[3:], hour_part[5:]
    before = sorted(lake_ids(s.lake, topic))
    seen, vanished, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                t = read_table(s.lake, "data", topic, ["event_id"])
            except FileNotFoundError as e:
                # Listed before the swap, opened after it: the read fails and is retried (as a
                # query engine's would be); it never returns a partial or doubled answer.
                vanished.append(str(e))
                continue
            seen.append(sorted(t.column("event_id").to_pylist()))

    th = threading.Thread(target=reader)
    th.start()
    try:
        res = compact_hour(spark, s, topic, dt, hour)
    finally:
        stop.set()
        th.join()
    assert res["files_before"] == nfiles and res["files_after"] == 1
    assert len(seen) >= 3 and all(ids == before for ids in seen)
    assert sorted(lake_ids(s.lake, topic)) == before


def _run_stream(lake: Path, bootstrap: str, env_extra: dict, log: Path,
                topics: str = "gps_data,vehicle_data") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    cmd = [sys.executable, "-m", "smartcity.spark_jobs", "stream", "--lake", str(lake), "--bootstrap", bootstrap,
           "--trigger-s", "1", "--topics", topics]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the job and its JVM are gone already
        pass


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


def test_driver_kill_9_mid_commit_then_restart_leaves_every_event_exactly_once(kafka, tmp_path):
    lake = tmp_path / "lake"
    topics = ["gps_data", "vehicle_data"]
    now = datetime.now(timezone.utc)
    sent = {t: [record(t, now - timedelta(hours=k % 3), device="crash") for k in range(30)] for t in topics}
    # Separate topics would mix with the other test's records; filter by device instead.
    produce(kafka.bootstrap, [(t, json.dumps(r).encode()) for t in topics for r in sent[t]])
    flag = tmp_path / "paused"
    proc = _run_stream(lake, kafka.bootstrap, {"SMARTCITY_LAKE_TEST_PAUSE_AFTER_MOVES": "2",
                                               "SMARTCITY_LAKE_TEST_PAUSE_FILE": str(flag)}, tmp_path / "run1.log")
    try:
        wait_until(flag.exists, 180, f"the driver to pause mid-commit ({tmp_path / 'run1.log'})")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    def mine(topic):
        t = read_table(f"file://{lake}", "data", topic, ["event_id", "device_id"])
        return [] if t is None else [e for e, d in zip(*t.to_pydict().values()) if d == "crash"]

    partial = [e for t in topics for e in mine(t)]
    assert len(partial) == len(set(partial)), "duplicates visible after the crash"
    assert 0 < len(partial) < 60, "the crash was meant to land mid-batch"
    pending = list((lake / "_checkpoints" / "lake-stream" / "lake_commits").glob("*.pending.json"))
    assert len(pending) == 1
    # Restart; a bridge retry re-sends some of the same events meanwhile.
    produce(kafka.bootstrap, [(t, json.dumps(r).encode()) for t in topics for r in sent[t][:5]])
    proc = _run_stream(lake, kafka.bootstrap, {}, tmp_path / "run2.log")
    try:
        wait_until(lambda: all(len(mine(t)) >= 30 for t in topics), 180,
                   f"restart to finish ({tmp_path / 'run2.log'})")
        time.sleep(4)  # a few more (empty) triggers: nothing may appear twice later either
        assert proc.poll() is None, f"the restarted job exited ({tmp_path / 'run2.log'})"
    finally:
        _stop(proc)
    for t in topics:
        assert sorted(mine(t)) == sorted(r["event_id"] for r in sent[t])
    commits = lake / "_checkpoints" / "lake-stream" / "lake_commits"
    assert not list(commits.glob("*.pending.json"))
    listed = {m for f in commits.glob("*.done.json") for _, m in json.loads(f.read_text())["moves"]}
    for t in topics:
        for f in visible_files(f"file://{lake}", "data", t):
            assert f"file://{f}" in listed, f"orphan file {f}"
    assert not list((lake / "_staging").rglob("*.parquet"))


def test_driver_kill_9_mid_batch_then_one_restart_keeps_processing(kafka, tmp_path):
    """Issue 9: after a driver killed mid-batch, ONE restart must resume for good. On pyspark
    4.1.0-4.1.2 the V2 Kafka source threw NullPointerException (KafkaMicroBatchStream.metrics)
    right after re-running the unfinished batch, so the restarted job exited (session.py)."""
    lake = tmp_path / "lake"
    topics = ["gps_data"]  # one topic: half the generated code to compile at each start
    now = datetime.now(timezone.utc)
    first = {t: [record(t, now - timedelta(minutes=k), device="restart") for k in range(20)] for t in topics}
    later = {t: [record(t, now, device="restart") for _ in range(10)] for t in topics}
    produce(kafka.bootstrap, [(t, encode(t, r)) for t in topics for r in first[t]])
    flag = tmp_path / "paused"
    # Paused once the first batch is in staging, before its manifest: killed mid-batch.
    proc = _run_stream(lake, kafka.bootstrap, {"SMARTCITY_LAKE_TEST_PAUSE_AFTER_MOVES": "0",
                                               "SMARTCITY_LAKE_TEST_PAUSE_FILE": str(flag)}, tmp_path / "run1.log",
                       ",".join(topics))
    try:
        wait_until(flag.exists, 180, f"the driver to pause mid-batch ({tmp_path / 'run1.log'})")
    finally:
        _signal(proc, signal.SIGKILL)
        proc.wait(10)

    def mine(topic):
        t = read_table(f"file://{lake}", "data", topic, ["event_id", "device_id"])
        return [] if t is None else [e for e, d in zip(*t.to_pydict().values()) if d == "restart"]

    ckpt = lake / "_checkpoints" / "lake-stream"
    assert not any(mine(t) for t in topics), "nothing of the killed batch may be visible"
    batches = {d: {int(p.name) for p in (ckpt / d).glob("[0-9]*")} for d in ("offsets", "commits")}
    assert max(batches["offsets"]) not in batches["commits"], "Spark must have an unfinished batch to re-run"
    log2 = tmp_path / "run2.log"
    proc = _run_stream(lake, kafka.bootstrap, {}, log2, ",".join(topics))

    def alive_and(pred):
        def check():
            if proc.poll() is not None:
                why = [ln[:300] for ln in log2.read_text(errors="replace").splitlines()
                       if "Exception" in ln or "kafka010" in ln]
                raise AssertionError(f"the restarted job exited ({proc.returncode}, {log2}):\n"
                                     + "\n".join(why[:12]))
            return pred()
        return check

    try:
        wait_until(alive_and(lambda: all(len(mine(t)) >= len(first[t]) for t in topics)), 180,
                   f"the restart to re-run the killed batch ({log2})")
        # It must keep going: new events and a bridge retry of old ones, in later batches.
        produce(kafka.bootstrap, [(t, encode(t, r)) for t in topics for r in later[t] + first[t][:5]])
        wait_until(alive_and(lambda: all(len(mine(t)) >= len(first[t]) + len(later[t]) for t in topics)),
                   120, f"events sent after the restart ({log2})")
        time.sleep(3)  # a few more (empty) triggers
        assert proc.poll() is None, log2.read_text(errors="replace")[-3000:]
    finally:
        rc = _stop(proc)
    out = log2.read_text(errors="replace")
    assert rc == 0 and '"totals"' in out, out[-3000:]
    assert "NullPointerException" not in out
    for t in topics:
        assert sorted(mine(t)) == sorted(r["event_id"] for r in first[t] + later[t]), t
    assert not list((ckpt / "lake_commits").glob("*.pending.json"))
    assert not list((lake / "_staging").rglob("*.parquet"))


def test_s3_lake_on_the_local_s3_server_lands_each_event_once(kafka, tmp_path):
    """The same job with an s3a:// lake and checkpoint against the project's S3-compatible server;
    credentials reach Spark only through the standard AWS environment variables."""
    boto3 = pytest.importorskip("boto3")
    from deploy.local.s3 import S3Server
    if not S3Server.available():
        pytest.skip("no S3-compatible server: moto[server] (the dev extra) is not installed and there "
                    "is no .cache/bin/weed (docs/bridge.md, \"Local stack\")")
    topics = ["weather_data"]
    now = datetime.now(timezone.utc)
    sent = [record("weather_data", now - timedelta(hours=k % 2), device="s3dev") for k in range(25)]
    produce(kafka.bootstrap, [("weather_data", json.dumps(r).encode()) for r in sent])
    with S3Server(tmp_path / "s3") as s3:
        client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                              aws_secret_access_key=s3.secret_key, region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        env = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
               "AWS_REGION": "us-east-1", "SMARTCITY_LAKE_S3__REGION": "us-east-1",
               "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "smartcity.spark_jobs", "stream", "--lake", "s3a://lake/city",
               "--bootstrap", kafka.bootstrap, "--trigger-s", "1", "--topics", ",".join(topics),
               "--s3-endpoint", s3.endpoint, "--s3-path-style"]
        log = tmp_path / "s3run.log"
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)

        def keys(prefix):
            out = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix):
                out += [o["Key"] for o in page.get("Contents", [])]
            return out

        def mine():
            ids = []
            for k in keys("city/data/weather_data/"):
                # Folder markers ("key/") are not files to any reader; hidden names are skipped as Athena does.
                if k.endswith("/") or any(part.startswith(("_", ".")) for part in k.split("/")[3:]):
                    continue
                local = tmp_path / "dl" / k
                local.parent.mkdir(parents=True, exist_ok=True)
                client.download_file("lake", k, str(local))
                import pyarrow.parquet as pq
                t = pq.read_table(local, columns=["event_id", "device_id"])
                ids += [e for e, d in zip(*t.to_pydict().values()) if d == "s3dev"]
            return ids

        try:
            wait_until(lambda: proc.poll() is not None or len(mine()) >= 25, 240, f"events in S3 ({log})")
            assert proc.poll() is None, f"the job died: {log}"
            time.sleep(3)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        got = mine()
        assert sorted(got) == sorted(r["event_id"] for r in sent)
        for k in keys("city/data/weather_data/"):
            assert k.endswith("/") or ("/dt=" in k and "/hour=" in k and k.endswith(".parquet")), k
        assert any(k.startswith("city/_checkpoints/lake-stream/offsets/") for k in keys("city/_checkpoints/"))
        assert not [k for k in keys("city/_staging/") if k.endswith(".parquet")]
        assert s3.secret_key not in log.read_text()
