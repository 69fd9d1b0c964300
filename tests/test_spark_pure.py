"""Spark-free parts of the lake: DDL and schema generation from contracts, settings."""
from __future__ import annotations

import pytest

from smartcity.contracts import RECORD_TYPES
from smartcity.spark_jobs.ddl import render
from smartcity.spark_jobs.schemas import LINEAGE, data_struct
from smartcity.spark_jobs.settings import LakeSettings, load


def test_data_schema_is_the_contract_plus_lineage():
    for rt in RECORD_TYPES:
        names = data_struct(rt).fieldNames()
        assert names == list(rt.field_names) + [n for n, _, _ in LINEAGE]
        assert dict((f.name, f.dataType.simpleString()) for f in data_struct(rt).fields)["ts"] == "timestamp"


def test_ddl_has_every_contract_column_for_every_dialect():
    sql = render("s3a://bucket/lake")
    for rt in RECORD_TYPES:
        assert f"`smartcity`.`{rt.name}`" in sql and f"smartcity_lake.{rt.name}" in sql
        assert f"LOCATION 's3://bucket/lake/data/{rt.name}/'" in sql
        for f in rt.fields:
            assert f"`{f.name}`" in sql
    assert "storage.location.template" in sql and "s3a://" not in sql


def test_settings_resolve_paths_and_default_the_checkpoint_next_to_the_lake(tmp_path):
    s = load(None, {"lake": str(tmp_path / "lake"), "trigger_s": 2},
             environ={"SMARTCITY_LAKE_MAX_OFFSETS_PER_TRIGGER": "1000"})
    assert s.lake == f"file://{tmp_path}/lake"
    assert s.checkpoint == f"file://{tmp_path}/lake/_checkpoints/lake-stream"
    assert (s.trigger_s, s.max_offsets_per_trigger) == (2.0, 1000)
    with pytest.raises(ValueError, match="unknown topics"):
        LakeSettings(topics=["nope"])


def test_the_v1_kafka_source_is_used_only_where_the_v2_one_dies_after_a_restart():
    """pyspark 4.1.0-4.1.2: NullPointerException in KafkaMicroBatchStream.metrics on the first
    trigger after a restart that re-runs an unfinished batch (session.py, issue 9)."""
    from smartcity.spark_jobs.session import KAFKA_V1_SOURCE, kafka_v2_restart_bug, spark_conf
    versions = ["4.0.1", "4.1.0", "4.1.1", "4.1.2", "4.1.3", "4.1.4", "4.2.0", "5.0.0.dev1"]
    assert [v for v in versions if kafka_v2_restart_bug(v)] == ["4.1.0", "4.1.1", "4.1.2"]
    pyspark = pytest.importorskip("pyspark")
    conf = spark_conf(LakeSettings(lake="/tmp/unused"), submitted=True)
    (key, value), = KAFKA_V1_SOURCE.items()
    assert (conf.get(key) == value) == kafka_v2_restart_bug(pyspark.__version__)
