"""The SparkSession of the lake job: jars from the cache, UTC, s3a configuration.

The Kafka source and hadoop-aws come from $SMARTCITY_CACHE/spark-jars (deploy/spark/pom.xml) and are
passed with spark.jars: no ivy resolution at start-up. The 640 MB AWS SDK bundle is only added when
a path is s3a:// (it costs ~3 s of start-up).

Under spark-submit (a cluster) the driver JVM is already running when this code runs, so whatever
must be known at JVM launch belongs to spark-submit and is left alone here: the master, the jars
(--jars: they must be on the driver's class path, which spark.jars set now would not do), the
driver's memory, Java options and host/bind address (SPARK_LOCAL_IP / --conf spark.driver.host).
The session warns when the Kafka source did not come with --jars.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from smartcity.catalog.location import prepare_catalog, warehouse_on_s3

from .settings import SECRET_OPTIONS_RE, LakeSettings, catalog_spark_conf

log = logging.getLogger(__name__)
JAVA17 = "/usr/lib/jvm/java-17-openjdk-amd64"
# s3a (Hadoop's S3 file system and the AWS SDK bundle it was built with): for s3a:// lakes and
# checkpoints.
S3A_JARS = ("hadoop-aws-", "bundle-", "analyticsaccelerator-s3-", "wildfly-openssl-")
# Iceberg's S3FileIO and GlueCatalog need the AWS SDK of iceberg-aws-bundle (69 MB): only for a
# catalog whose warehouse is on S3.
ICEBERG_S3_JARS = ("iceberg-aws-bundle-",)
# Every jar that only S3 needs (a cluster without S3 leaves them out: tests/test_spark_cluster.py).
S3_JARS = S3A_JARS + ICEBERG_S3_JARS
# Apache Iceberg and the SQLite JDBC driver of its local catalog: only for sessions that use the
# catalog (build_session(..., iceberg=True)).
ICEBERG_JARS = ("iceberg-spark-runtime-", "sqlite-jdbc-")


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


def jar_list(settings: LakeSettings, iceberg: bool = False) -> list[str]:
    import pyspark
    d = jars_dir(settings)
    jars = sorted(d.glob("*.jar"))
    want = f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar"
    if not any(j.name == want for j in jars):
        raise SparkSetupError(f"{want} not in {d}: run deploy/setup.d/35-spark-jars.sh "
                              f"(resolves the jars matching pyspark {pyspark.__version__})")
    if iceberg:
        minor = ".".join(pyspark.__version__.split(".")[:2])
        runtime = f"iceberg-spark-runtime-{minor}_2.13-"
        if not any(j.name.startswith(runtime) for j in jars):
            raise SparkSetupError(f"{runtime}*.jar not in {d}: run deploy/setup.d/35-spark-jars.sh")
    s3a = needs_s3(settings)
    iceberg_s3 = iceberg and warehouse_on_s3(settings)
    if iceberg_s3 and not any(j.name.startswith(ICEBERG_S3_JARS) for j in jars):
        raise SparkSetupError(f"iceberg-aws-bundle-*.jar not in {d} (S3FileIO for the warehouse on S3): "
                              "run deploy/setup.d/35-spark-jars.sh")
    keep = [j for j in jars if (s3a or not j.name.startswith(S3A_JARS))
            and (iceberg_s3 or not j.name.startswith(ICEBERG_S3_JARS))
            and (iceberg or not j.name.startswith(ICEBERG_JARS))]
    # iceberg-aws-bundle first: it holds the AWS SDK Iceberg 1.12 was built with (2.54), newer than
    # hadoop-aws's bundle (2.29); both have the SDK's classes unshaded, and the first jar that has
    # a class wins, so S3FileIO never runs on a mix of the two. s3a runs on the newer SDK's
    # classes where the two overlap (the SDK keeps its public API compatible within 2.x).
    keep.sort(key=lambda j: not j.name.startswith(ICEBERG_S3_JARS))
    return [str(j) for j in keep]


# Spark 4.1.0-4.1.2 bug (SPARK-55271; fixed in 4.1.3 and 4.2.0 by the change of SPARK-57438): a
# restart that re-runs an unfinished batch from the offset log (after a kill -9, a crash or a
# disk-full stop mid-batch) runs it without calling the Kafka source's latestOffset(), so its
# latestPartitionOffsets is still null; 4.1's metrics() wraps it in Some() instead of checking for
# null (a regression of SPARK-54027), and progress reporting after the batch (finishTrigger ->
# extractSourceProgress -> metrics, KafkaMicroBatchStream.scala:520) throws NullPointerException:
# the query fails right after committing that batch, so one restart always dies and a second one
# works. Spark's V1 Kafka source (KafkaSource: same options, offsets and checkpoint layout, so
# existing checkpoints resume either way) reports no source metrics and so never takes that path.
# The cost: no min/max/avgOffsetsBehindLatest in the query progress. 4.1.3's Kafka token-provider
# jar is not on Maven Central (like 4.0.1's), so upgrading is not an option yet; from 4.1.3 on,
# this falls back to the default V2 source by itself.
KAFKA_V1_SOURCE = {"spark.sql.streaming.disabledV2MicroBatchReaders":
                   "org.apache.spark.sql.kafka010.KafkaSourceProvider"}


def kafka_v2_restart_bug(spark_version: str) -> bool:
    """True for the Spark versions whose V2 Kafka source fails the first trigger after a restart."""
    nums = tuple(int(n) for n in re.findall(r"\d+", spark_version)[:3])
    return (4, 1, 0) <= nums < (4, 1, 3)


# The generated validation code is deep; Janino compiles it recursively (on the stream thread in
# the driver, on task threads in executors). It is also long: HotSpot never JIT-compiles a method
# over 8,000 bytes of bytecode, and the five topics' rules in one generated method exceed that
# (~1.5x slower triage without). Under spark-submit: --driver-java-options (docs/lake.md).
DRIVER_JAVA_OPTIONS = "-Xss32m -XX:-DontCompileHugeMethods"
EXECUTOR_JAVA_OPTIONS = "-Xss32m -XX:-DontCompileHugeMethods"


def local_dir(settings: LakeSettings) -> str:
    """settings.local_dir, else {lake}/_spark_local for a local lake, else the system's temp."""
    if settings.local_dir:
        return settings.local_dir
    if settings.lake.startswith("file://"):
        return settings.lake[len("file://"):] + "/_spark_local"
    import tempfile
    return tempfile.gettempdir()


def under_spark_submit() -> bool:
    """True when spark-submit started the driver JVM (and then runs this Python as its app)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_conf(settings: LakeSettings, submitted: bool | None = None,
               iceberg: bool = False) -> dict[str, str]:
    """The session's configuration; `submitted` (default: under_spark_submit()) leaves out what only
    takes effect at driver JVM launch, which spark-submit's own flags decide. `iceberg` adds the
    Iceberg jars and the catalog of settings.catalog (settings.catalog_spark_conf)."""
    if submitted is None:
        submitted = under_spark_submit()
    conf = {} if submitted else {
        "spark.jars": ",".join(jar_list(settings, iceberg)),
        "spark.driver.memory": settings.driver_memory,
        # Local mode: everything on loopback. A cluster's executors must reach the driver at an
        # address of its host, so under spark-submit that is SPARK_LOCAL_IP / spark.driver.host.
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.extraJavaOptions": DRIVER_JAVA_OPTIONS,
    }
    conf |= {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.ui.enabled": str(settings.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.executor.extraJavaOptions": EXECUTOR_JAVA_OPTIONS,  # on a cluster
        # ms is the contract's precision; INT64 millis reads in Athena, Glue, Redshift and pyarrow.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MILLIS",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[settings.state_store],
        # Data source options whose name matches are redacted in plans and the UI: the Kafka
        # source's JAAS line and PEM private key (Spark's default redacts only *url* names).
        "spark.sql.redaction.options.regex": f"(?i)url|{SECRET_OPTIONS_RE.removeprefix('(?i)')}",
    }
    import pyspark
    if kafka_v2_restart_bug(pyspark.__version__):
        conf |= KAFKA_V1_SOURCE
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
    if iceberg:
        conf |= catalog_spark_conf(settings)
    return conf


def build_session(settings: LakeSettings, app_name: str = "smartcity-lake", iceberg: bool = False):
    """SparkSession for `settings` (local master by default; spark-submit's --master wins);
    `iceberg`: with the Iceberg catalog of settings.catalog (spark_jobs/iceberg_tables.py)."""
    from pyspark.sql import SparkSession
    submitted = under_spark_submit()
    b = SparkSession.builder.appName(app_name)
    # Under spark-submit the JVM already exists (PYSPARK_GATEWAY_PORT) and --master must win.
    if not submitted:
        if not os.environ.get("JAVA_HOME") and Path(JAVA17).exists():
            os.environ["JAVA_HOME"] = JAVA17
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Shuffle files and local checkpoints: beside the run's data, not in /tmp, where a killed
        # driver's blockmgr-* folders would pile up (only a clean stop deletes them). The
        # environment variable, not spark.local.dir, which Spark answers with a warning that a
        # cluster manager may override it. The JVM starts once per process: the first session's
        # folder holds.
        os.environ.setdefault("SPARK_LOCAL_DIRS", local_dir(settings))
        b = b.master(settings.master)
    for k, v in spark_conf(settings, submitted, iceberg).items():
        b = b.config(k, v)
    if iceberg:
        prepare_catalog(settings)  # SQLite creates its file but not the folder
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark_log_level)
    if submitted:
        import pyspark
        want = f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar"
        jars = spark.sparkContext.getConf().get("spark.jars", "")
        if want not in jars:  # compaction does not need it; the Kafka source would fail obscurely
            log.warning("the Kafka source's jar was not passed to spark-submit: the stream needs "
                        '--jars "$(ls .cache/spark-jars/*.jar | paste -sd,)" (docs/lake.md)',
                        extra={"jar": want})
    return spark
