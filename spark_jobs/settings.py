"""Settings of the lake job: dataclass defaults < TOML file < SMARTCITY_LAKE_* environment < flags
(loaded with smartcity.runtime.settings, e.g. SMARTCITY_LAKE_TRIGGER_S=2, SMARTCITY_LAKE_S3__ENDPOINT=...).

Credentials are deliberately not settings: s3a takes them from the standard AWS provider chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, instance role), never from code or a file here.

Kafka security is the `[kafka]` section, with the bridge's field names (bridge/config.py), e.g.

    bootstrap = "kafka-1:9093"
    [kafka]
    security_protocol = "SASL_SSL"
    sasl_mechanism = "SCRAM-SHA-512"
    sasl_username = "lake"
    sasl_password_file = "/run/secrets/kafka_password"   # or SMARTCITY_LAKE_KAFKA__SASL_PASSWORD
    ssl_ca_file = "/etc/smartcity/kafka-ca.pem"

`kafka_options()` turns it into the Spark Kafka source's `kafka.*` options; the password is read
from its file when the stream starts and appears only inside `kafka.sasl.jaas.config`, which no
repr, log line or Spark plan shows (KafkaOptions, spark.sql.redaction.options.regex).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from smartcity.catalog.location import (S3, Catalog, LakeLocation, catalog_region, catalog_uri,
                                        catalog_warehouse, join, prepare_catalog, to_uri, warehouse_on_s3)
from smartcity.contracts import RECORD_TYPES
from smartcity.runtime.settings import SettingsError

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"

ENV_PREFIX = "SMARTCITY_LAKE_"


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# JAAS login module per SASL mechanism (GSSAPI and OAUTHBEARER need more than a password: extra).
SASL_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


@dataclass
class Kafka:
    """How the lake job connects to Kafka: the bridge's [kafka] security fields, same names."""
    security_protocol: str = "PLAINTEXT"    # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None       # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    # Prefer sasl_password_file; a password given directly never shows in repr() either.
    sasl_password: str | None = field(default=None, repr=False)
    sasl_password_file: Path | None = None
    ssl_ca_file: Path | None = None         # PEM CA certificate(s) that signed the brokers'
    ssl_cert_file: Path | None = None       # PEM client certificate (chain), for mutual TLS
    ssl_key_file: Path | None = None        # its unencrypted PKCS#8 PEM private key
    # Further Kafka consumer properties, "name=value" each (not for secrets: use the fields above).
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.security_protocol = self.security_protocol.upper()
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"kafka.security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                             f"not {self.security_protocol!r}")
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism not in SASL_LOGIN_MODULES:
                raise ValueError(f"kafka.sasl_mechanism must be one of {', '.join(SASL_LOGIN_MODULES)} "
                                 f"with {self.security_protocol}, not {self.sasl_mechanism!r}")
            if not self.sasl_username or (self.sasl_password is None and self.sasl_password_file is None):
                raise ValueError(f"kafka: {self.security_protocol} needs sasl_username and "
                                 "sasl_password_file (or sasl_password)")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("kafka: ssl_cert_file and ssl_key_file go together")
        for item in self.extra:
            k, sep, _ = item.partition("=")
            if not sep or not k.strip():
                raise ValueError(f"kafka.extra: {item!r} is not name=value")


@dataclass
class Maintenance:
    """`[maintenance]`: Iceberg table maintenance (spark_jobs/maintenance.py, CLI `smartcity-lake
    maintain`); the reasons for each default are in docs/lake.md, "Maintenance"."""
    # `maintain --every-s` default: hourly keeps a day partition at <= one hour of stream files
    # (720 at a 5 s trigger) and costs one re-sort of the day so far per run.
    interval_s: float = 3600.0
    # rewrite_data_files' target-file-size-bytes: Iceberg's own default (write.target-file-size-bytes).
    target_file_mb: int = 512
    # A partition's small files are rewritten once there are this many (Iceberg's default, 5).
    min_input_files: int = 5
    # Snapshots (time travel, rollback) older than this are expired: longer than any query runs
    # (a query reads the files of the snapshot it planned), shorter than Kafka's retention (7 days:
    # a bad write is replayed from Kafka), and every commit rewrites metadata.json with every kept
    # snapshot (17,280 a day per table at a 5 s trigger).
    snapshot_retention_h: float = 24.0
    retain_last: int = 10            # ... but the last N snapshots are kept however old
    # Files in the table folder that no snapshot references, older than this, are deleted. A file
    # the stream is writing is such an "orphan" until its commit: see maintenance.py. Iceberg's
    # procedure refuses less than 24 h.
    orphan_age_h: float = 72.0
    conflict_retries: int = 3        # a procedure that conflicts with a concurrent commit is re-run

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self.target_file_mb < 1:
            raise ValueError("target_file_mb must be >= 1")
        if self.min_input_files < 2:
            raise ValueError("min_input_files must be >= 2 (one file is never rewritten into one)")
        if self.snapshot_retention_h <= 0:
            raise ValueError("snapshot_retention_h must be > 0")
        if self.retain_last < 1:
            raise ValueError("retain_last must be >= 1 (the current snapshot is always kept)")
        if self.orphan_age_h < 24:
            raise ValueError("orphan_age_h must be >= 24: a file being written is an orphan until "
                             "its commit (Iceberg's remove_orphan_files refuses less)")
        if self.conflict_retries < 0:
            raise ValueError("conflict_retries must be >= 0")


@dataclass
class LakeSettings(LakeLocation):
    """The lake job's settings: where the lake is (LakeLocation: lake, [s3], [catalog]) and how
    the stream reads Kafka and writes it."""
    bootstrap: str = "127.0.0.1:9092"
    topics: list[str] = field(default_factory=lambda: [rt.name for rt in RECORD_TYPES])
    # Default {lake}/_checkpoints/lake-stream: next to the data it describes, on the same durable
    # storage, so a restart anywhere (another host, spark://) resumes exactly where the lake is.
    checkpoint: str | None = None
    master: str = "local[2]"
    trigger_s: float = 5.0
    max_offsets_per_trigger: int | None = 500_000
    starting_offsets: str = "earliest"
    fail_on_data_loss: bool = True
    # Duplicate event_ids are dropped when the copy arrives within this window (ingest time).
    dedup_window_s: int = 3600
    # Event times further than this ahead of the ingest time go to quarantine (future_ts).
    future_tolerance_s: int = 300
    # How a batch's rows enter their table (lake.LakeWriter): "merge" (checked against the table
    # on event_id and ts, then appended, or MERGEd where the table holds a copy: one row per
    # event_id however late a copy arrives; quarantine rows MERGEd on their Kafka record) or
    # "append" (a copy later than dedup_window_s, or a record read again, stays as a second row;
    # cheaper, for measurements and throwaway lakes).
    dedup: str = "merge"
    state_store: str = "hdfs"        # hdfs | rocksdb (see session.STATE_STORES)
    shuffle_partitions: int = 2
    driver_memory: str = "1g"
    ui: bool = False
    spark_log_level: str = "ERROR"
    jars_dir: str | None = None      # default $SMARTCITY_CACHE/spark-jars
    local_dir: str | None = None     # spark.local.dir; default {lake}/_spark_local (session.local_dir)
    kafka: Kafka = field(default_factory=Kafka)
    maintenance: Maintenance = field(default_factory=Maintenance)

    def __post_init__(self) -> None:
        unknown = set(self.topics) - {rt.name for rt in RECORD_TYPES}
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}; known: {[r.name for r in RECORD_TYPES]}")
        super().__post_init__()
        self.checkpoint = to_uri(self.checkpoint) if self.checkpoint else join(self.lake, "_checkpoints", "lake-stream")
        if self.state_store not in ("hdfs", "rocksdb"):
            raise ValueError(f"state_store must be hdfs or rocksdb, not {self.state_store!r}")
        if self.trigger_s <= 0:
            raise ValueError("trigger_s must be > 0")
        if self.dedup not in ("merge", "append"):
            raise ValueError(f"dedup must be merge or append, not {self.dedup!r}")


def load(toml_path: str | None = None, overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> LakeSettings:
    from smartcity.runtime.settings import load as _load
    return _load(LakeSettings, toml_path, ENV_PREFIX, overrides, environ)


# Option names whose values are secret: never shown by KafkaOptions, and redacted by Spark in plans
# and the UI (session.spark_conf sets spark.sql.redaction.options.regex from this).
SECRET_OPTIONS_RE = r"(?i)jaas|password|ssl\.keystore\.key"


class KafkaOptions(dict):
    """The Kafka source's options; repr()/str() show every secret value as ***."""

    def redacted(self) -> dict[str, str]:
        return {k: "***" if re.search(SECRET_OPTIONS_RE, k) else v for k, v in self.items()}

    def __repr__(self) -> str:
        return f"KafkaOptions({self.redacted()!r})"

    __str__ = __repr__


def _read(path: Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:  # the path is named, never the content
        raise SettingsError(f"kafka.{what}: cannot read {path}: {e.strerror}") from None


def _jaas_quote(value: str, what: str) -> str:
    """A JAAS option value in double quotes (Kafka parses it with java.io.StreamTokenizer)."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise SettingsError(f"kafka.{what} contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kafka_options(s: LakeSettings) -> KafkaOptions:
    """`kafka.*` options of Spark's Kafka source: bootstrap servers and security.

    SASL: kafka.sasl.mechanism and a kafka.sasl.jaas.config line built from the user name and
    the password, read from sasl_password_file now (a rotated secret is picked up at the next
    start). TLS: the CA as a PEM truststore file (kafka.ssl.truststore.type=PEM, .location: on a
    cluster the file must be at that path on every executor); a client certificate and key are
    passed as PEM text (kafka.ssl.keystore.certificate.chain/.key), so executors need no copy.
    Raises SettingsError (a ValueError) naming the setting when a file is missing or unusable."""
    k = s.kafka
    opts = KafkaOptions()
    for item in k.extra:
        name, _, value = item.partition("=")
        opts[f"kafka.{name.strip()}"] = value.strip()
    opts["kafka.bootstrap.servers"] = s.bootstrap
    opts["kafka.security.protocol"] = k.security_protocol
    if k.security_protocol.startswith("SASL_"):
        password = k.sasl_password
        if k.sasl_password_file is not None:
            password = _read(k.sasl_password_file, "sasl_password_file").strip()
        if not password:
            raise SettingsError("kafka: the SASL password is empty")
        opts["kafka.sasl.mechanism"] = k.sasl_mechanism
        opts["kafka.sasl.jaas.config"] = (
            f"{SASL_LOGIN_MODULES[k.sasl_mechanism]} required "
            f"username={_jaas_quote(k.sasl_username, 'sasl_username')} "
            f"password={_jaas_quote(password, 'sasl_password')};")
    if k.security_protocol in ("SSL", "SASL_SSL"):
        if k.ssl_ca_file is not None:
            if "-----BEGIN CERTIFICATE-----" not in _read(k.ssl_ca_file, "ssl_ca_file"):
                raise SettingsError(f"kafka.ssl_ca_file: {k.ssl_ca_file} holds no PEM certificate")
            opts["kafka.ssl.truststore.type"] = "PEM"
            opts["kafka.ssl.truststore.location"] = str(k.ssl_ca_file)
        if k.ssl_cert_file is not None:
            chain = _read(k.ssl_cert_file, "ssl_cert_file")
            key = _read(k.ssl_key_file, "ssl_key_file")
            if "-----BEGIN CERTIFICATE-----" not in chain:
                raise SettingsError(f"kafka.ssl_cert_file: {k.ssl_cert_file} holds no PEM certificate")
            if "-----BEGIN PRIVATE KEY-----" not in key:  # what Kafka's PEM keystore reads
                raise SettingsError(f"kafka.ssl_key_file: {k.ssl_key_file} is not an unencrypted PKCS#8 "
                                 "PEM key (convert: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY8)")
            opts["kafka.ssl.keystore.type"] = "PEM"
            opts["kafka.ssl.keystore.certificate.chain"] = chain
            opts["kafka.ssl.keystore.key"] = key
    return opts


def catalog_spark_conf(s: LakeSettings) -> dict[str, str]:
    """Spark configuration of the Iceberg catalog `s.catalog.name` and Iceberg's SQL extensions
    (MERGE INTO, CALL ... procedures, ALTER TABLE ... WRITE ORDERED BY). The jars come with
    session.build_session(..., iceberg=True) (session.ICEBERG_JARS)."""
    c = s.catalog
    pre = f"spark.sql.catalog.{c.name}"
    conf = {
        "spark.sql.extensions": ICEBERG_EXTENSIONS,
        pre: "org.apache.iceberg.spark.SparkCatalog",
        f"{pre}.warehouse": catalog_warehouse(s),
    }
    if c.type == "jdbc":
        uri = catalog_uri(s)
        conf |= {
            f"{pre}.type": "jdbc",
            f"{pre}.uri": uri,
            # V1: the catalog's own tables can hold views too (V0 is the legacy layout).
            f"{pre}.jdbc.schema-version": "V1",
            # A table must be created in a namespace that exists (no silent implicit namespace).
            f"{pre}.jdbc.strict-mode": "true",
        }
        if uri.startswith("jdbc:sqlite:"):
            # jdbc.* are driver properties: sqlite-jdbc waits this long (ms) for a lock another
            # connection holds (a pyiceberg reader, the catalog's second pooled connection)
            # instead of failing at once with SQLITE_BUSY.
            conf[f"{pre}.jdbc.busy_timeout"] = "30000"
    else:
        conf[f"{pre}.catalog-impl"] = "org.apache.iceberg.aws.glue.GlueCatalog"
        if c.glue_endpoint:
            conf[f"{pre}.glue.endpoint"] = c.glue_endpoint
    region = catalog_region(s)
    if region:   # Glue's and S3FileIO's; else the AWS provider chain's (AWS_REGION, profile)
        conf[f"{pre}.client.region"] = region
    if warehouse_on_s3(s):
        # S3FileIO (iceberg-aws-bundle; session.ICEBERG_S3_JARS), not Hadoop's s3a: Iceberg's own
        # S3 client, the one Glue and Athena users run. Credentials: the AWS default provider chain
        # (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, role), never a property here.
        conf[f"{pre}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        if s.s3.endpoint:
            conf[f"{pre}.s3.endpoint"] = s.s3.endpoint
        conf[f"{pre}.s3.path-style-access"] = str(s.s3.path_style).lower()
    return conf
