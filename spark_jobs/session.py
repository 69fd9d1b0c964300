"""The SparkSession of the lake job: jars from the cache, UTC, s3a configuration.

The Kafka source and hadoop-aws come from $SMARTCITY_CACHE/spark-jars (deploy/spark/pom.xml) and are
passed with spark.jars: no ivy resolution at start-up, and spark-submit ships the same files to a
standalone cluster's executors. The 640 MB AWS SDK bundle is only added when a path is s3a://
(it costs ~3 s of start-up).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .settings import LakeSettings

log = logging.getLogger(__name__)
JAVA17 = "/usr/lib/jvm/java-17-openjdk-amd64"
S3_JARS = ("hadoop-aws-", "bundle-", "analyticsaccelerator-s3-", "wildfly-openssl-")


# hdfs (Spark's default) writes state through output streams and works on every store; rocksdb
# keeps large dedup state off the heap but uploads files in a way some S3-compatible servers
# reject (Expect: 100-continue), so it is opt-in.
STATE_STORES = {
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
}


class SparkSetupError(RuntimeError):
    pass


def jars_dir(settings: LakeSettings) -> Path:
    if settings.jars_dir:
        return Path(settings.jars_dir)
    cache = os.environ.get("SMARTCITY_CACHE") or str(Path(__file__).resolve().parents[1] / ".cache")
    return Path(cache) / "spark-jars"


def needs_s3(settings: LakeSettings) -> bool:
    return any(p.startswith(("s3a://", "s3://")) for p in (settings.lake, settings.checkpoint or ""))


def jar_list(settings: LakeSettings) -> list[str]:
    import pyspark
    d = jars_dir(settings)
    jars = sorted(d.glob("*.jar"))
    want = f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar"
    if not any(j.name == want for j in jars):
        raise SparkSetupError(f"{want} not in {d}: run deploy/setup.d/35-spark-jars.sh "
                              f"(resolves the jars matching pyspark {pyspark.__version__})")
    s3 = needs_s3(settings)
    return [str(j) for j in jars if s3 or not j.name.startswith(S3_JARS)]


def spark_conf(settings: LakeSettings) -> dict[str, str]:
    conf = {
        "spark.jars": ",".join(jar_list(settings)),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.driver.memory": settings.driver_memory,
        "spark.ui.enabled": str(settings.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # The generated validation code is deep; Janino compiles it recursively on the stream thread.
        # It is also long: HotSpot never JIT-compiles a method over 8,000 bytes of bytecode, and the
        # five topics' rules in one generated method exceed that (~1.5x slower triage without).
        "spark.driver.extraJavaOptions": "-Xss32m -XX:-DontCompileHugeMethods",
        "spark.executor.extraJavaOptions": "-XX:-DontCompileHugeMethods",  # on a cluster
        # ms is the contract's precision; INT64 millis reads in Athena, Glue, Redshift and pyarrow.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MILLIS",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[settings.state_store],
    }
    if needs_s3(settings):
        s3 = settings.s3
        if s3.endpoint:
            conf["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint
            conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s3.endpoint.startswith("https")).lower()
        conf["spark.hadoop.fs.s3a.path.style.access"] = str(s3.path_style).lower()
        # Some S3-compatible servers answer "Expect: 100-continue" badly (status 100 as an error).
        conf["spark.hadoop.fs.s3a.connection.expect.continue"] = str(s3.expect_continue).lower()
        if s3.region:
            conf["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
        conf["spark.hadoop.fs.s3a.impl"] = "org.apache.hadoop.fs.s3a.S3AFileSystem"
    return conf


def build_session(settings: LakeSettings, app_name: str = "smartcity-lake"):
    """SparkSession for `settings` (local master by default; spark-submit's --master wins)."""
    from pyspark.sql import SparkSession
    if not os.environ.get("JAVA_HOME") and Path(JAVA17).exists():
        os.environ["JAVA_HOME"] = JAVA17
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    b = SparkSession.builder.appName(app_name)
    # Under spark-submit the JVM already exists (PYSPARK_GATEWAY_PORT) and --master must win.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        b = b.master(settings.master)
    for k, v in spark_conf(settings).items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark_log_level)
    return spark
