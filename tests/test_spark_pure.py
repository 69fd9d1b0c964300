"""Spark-free parts of the lake: schema generation from contracts, settings."""
from __future__ import annotations

import re

import pytest

from smartcity.catalog.tables import DERIVED
from smartcity.contracts import RECORD_TYPES
from smartcity.spark_jobs.schemas import LINEAGE, data_struct
from smartcity.spark_jobs.settings import LakeSettings, load


def test_data_schema_is_the_contract_plus_lineage_plus_derived_columns():
    for rt in RECORD_TYPES:
        names = data_struct(rt).fieldNames()
        assert names == list(rt.field_names) + [n for n, _, _ in LINEAGE] + [d.field.name for d in DERIVED]
        assert data_struct(rt)["boot_id"].nullable   # as Iceberg adds a column to an existing table
        assert dict((f.name, f.dataType.simpleString()) for f in data_struct(rt).fields)["ts"] == "timestamp"


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


def test_a_warehouse_on_s3_is_written_with_s3fileio_from_the_s3_settings_and_no_credentials(tmp_path, monkeypatch):
    """Either catalog: an s3a:// lake's warehouse is s3:// and S3FileIO reads [s3]; pyiceberg gets
    the same endpoint under its own property names and always a region for a local endpoint (else
    pyarrow asks AWS where the bucket is); no key or secret anywhere; the 69 MB AWS bundle of
    Iceberg only for such a catalog, first on the class path."""
    from smartcity.catalog.location import S3, Catalog, pyiceberg_properties
    from smartcity.spark_jobs.settings import catalog_spark_conf
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    pre = "spark.sql.catalog.lake"
    s3 = S3(endpoint="http://127.0.0.1:9000", path_style=True)
    s = LakeSettings(lake="s3a://lake/city", s3=s3, catalog=Catalog(uri=f"jdbc:sqlite:{tmp_path}/c.sqlite"))
    conf = catalog_spark_conf(s)
    assert conf[f"{pre}.warehouse"] == "s3://lake/city/warehouse"
    assert conf[f"{pre}.type"] == "jdbc"
    assert conf[f"{pre}.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert (conf[f"{pre}.s3.endpoint"], conf[f"{pre}.s3.path-style-access"]) == (s3.endpoint, "true")
    assert f"{pre}.client.region" not in conf            # the AWS provider chain's
    props = pyiceberg_properties(s)
    assert props == {"warehouse": "s3://lake/city/warehouse", "s3.endpoint": s3.endpoint,
                     "s3.region": "us-east-1", "s3.force-virtual-addressing": "false",
                     "type": "sql", "uri": f"sqlite:///{tmp_path}/c.sqlite"}
    glue = LakeSettings(lake="s3a://lake/city", s3=S3(region="eu-west-1"),
                        catalog=Catalog(type="glue", glue_endpoint="http://127.0.0.1:5000"))
    conf = catalog_spark_conf(glue)
    assert conf[f"{pre}.catalog-impl"] == "org.apache.iceberg.aws.glue.GlueCatalog"
    assert (conf[f"{pre}.io-impl"], conf[f"{pre}.client.region"]) == ("org.apache.iceberg.aws.s3.S3FileIO", "eu-west-1")
    assert f"{pre}.s3.endpoint" not in conf
    assert pyiceberg_properties(glue) == {
        "warehouse": "s3://lake/city/warehouse", "s3.region": "eu-west-1", "s3.force-virtual-addressing": "true",
        "type": "glue", "glue.endpoint": "http://127.0.0.1:5000", "client.region": "eu-west-1"}
    for c in (catalog_spark_conf(s), pyiceberg_properties(s), catalog_spark_conf(glue)):
        assert not [k for k in c if re.search(r"(?i)secret|access-key|credential|session-token", k)]
    local = LakeSettings(lake=str(tmp_path / "lake"))
    assert not [k for k in catalog_spark_conf(local) if ".s3." in k or k.endswith("io-impl")]
    assert not [k for k in pyiceberg_properties(local) if k.startswith("s3.")]

    pytest.importorskip("pyspark")
    from smartcity.spark_jobs.session import ICEBERG_S3_JARS, S3A_JARS, jar_list, jars_dir
    if not list(jars_dir(s).glob("iceberg-aws-bundle-*.jar")):
        pytest.skip("no jar cache: deploy/setup.d/35-spark-jars.sh")
    names = [j.rsplit("/", 1)[-1] for j in jar_list(s, iceberg=True)]
    assert names[0].startswith(ICEBERG_S3_JARS) and any(n.startswith(S3A_JARS) for n in names)
    assert not [n for n in jar_list(local, iceberg=True) if n.rsplit("/", 1)[-1].startswith(ICEBERG_S3_JARS + S3A_JARS)]
    assert not [n for n in jar_list(s) if n.rsplit("/", 1)[-1].startswith(ICEBERG_S3_JARS)]
