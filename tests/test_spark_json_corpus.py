"""The lake's side of the shared JSON corpus (tests/json_corpus.py): Spark classifies every payload
as the bridge does (contracts.jsontext), on a static DataFrame, without Kafka; so a producer that
writes to Kafka directly gets the same verdict as one behind the bridge."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

pytest.importorskip("pyspark")

from smartcity.contracts import jsontext as J  # noqa: E402
from json_corpus import CASES, LAKE  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings  # noqa: E402

TOPICS = sorted({t for _, t, _, _ in CASES})


@pytest.fixture(scope="module")
def spark():
    from smartcity.spark_jobs.session import build_session
    s = build_session(LakeSettings(lake="/tmp/unused"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def kafka_rows(spark):
    from pyspark.sql import functions as F
    ingest = datetime(2026, 6, 1)
    rows = [(t, 0, i, ingest, bytearray(p)) for i, (_, t, p, _) in enumerate(CASES)]
    df = spark.createDataFrame(rows, "topic string, partition int, offset long, timestamp timestamp, value binary")
    return df.withColumn("ingest_ts", F.lit(ingest))


def test_the_lake_gives_each_corpus_payload_the_bridges_verdict(kafka_rows):
    from pyspark.sql import functions as F
    from smartcity.spark_jobs.lake import classify
    out = (classify(kafka_rows, TOPICS, 300)
           .select("kafka_offset", "kind", "error_kind", "reason", "event_id",
                   F.try_variant_get("v", "$.description", "string").alias("description"))
           .collect())
    got = {r["kafka_offset"]: r for r in out}
    assert sorted(got) == list(range(len(CASES)))
    wrong = []
    for i, (name, _, payload, reason) in enumerate(CASES):
        r = got[i]
        kind, error_kinds = LAKE[reason]
        ok = r["kind"] == kind and r["error_kind"] in error_kinds
        if reason in J.REASONS:
            ok = ok and r["reason"].startswith(f"{reason}: ") and r["event_id"] is None
        if reason is None:  # the lake keeps what the bridge's json decoded
            rec = json.loads(payload)
            ok = ok and r["event_id"] == rec["event_id"] and r["description"] == rec.get("description")
        if not ok:
            wrong.append((name, reason, r["kind"], r["error_kind"], (r["reason"] or "")[:120]))
    assert not wrong, "\n".join(map(str, wrong))


def test_the_fast_path_proves_only_canonical_valid_records(kafka_rows):
    """The typed parse + byte comparison (validation.conforms) must never let through what the
    JSON rules reject: every rejected payload takes the full path."""
    from smartcity.spark_jobs.lake import triage
    fast = {r["kafka_offset"]: r["fast_ok"] for r in triage(kafka_rows, TOPICS, 300)
            .select("kafka_offset", "fast_ok").collect()}
    proven = {CASES[i][0] for i, ok in fast.items() if ok}
    assert "canonical" in proven
    assert not {name for name, _, _, reason in CASES if reason is not None} & proven


def test_json_problem_says_too_deep_for_the_issues_nesting_without_a_stack_overflow(spark):
    """5,000 and 100,000 levels (the second beyond any recursive parser's stack) and a payload of
    one megabyte of escapes: the reasons come from linear scans."""
    from pyspark.sql import functions as F
    from smartcity.spark_jobs import validation as V
    rows = [(b"[" * 5000 + b"]" * 5000,), (b"[" * 100_000,), (b'{"a":"' + b"\\u0041" * 170_000 + b'"}',)]
    df = spark.createDataFrame(rows, "value binary")
    out = df.select(V.parse(F.col("value")).isNull().alias("rejected"),
                    V.json_problem(F.col("value")).alias("why")).collect()
    assert [r["rejected"] for r in out] == [True, True, False]
    assert out[0]["why"] == f"too_deep: nesting depth 5000 > limit {J.MAX_DEPTH}"
    assert out[1]["why"] == f"too_deep: nesting depth 100000 > limit {J.MAX_DEPTH}"
