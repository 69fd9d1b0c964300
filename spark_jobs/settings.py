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

from smartcity.contracts import RECORD_TYPES
from smartcity.runtime.settings import SettingsError

ENV_PREFIX = "SMARTCITY_LAKE_"


@dataclass
class S3:
    endpoint: str | None = None      # e.g. http://127.0.0.1:9000 for an S3-compatible server
    path_style: bool = False         # True for most S3-compatible servers (no bucket DNS names)
    region: str | None = None
    expect_continue: bool = False    # True is AWS's default; off works with every local server


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


# Apache Iceberg (issue 11). The catalog name is stored in the JDBC catalog's rows (column
# catalog_name), so Spark, pyiceberg and Trino (iceberg.jdbc-catalog.catalog-name) must all use the
# same one: a reader configured with another name sees an empty catalog, not an error.
CATALOG_NAME = "lake"
# The namespace (a Glue database in AWS): tables are {CATALOG_NAME}.{CATALOG_NAMESPACE}.{table}.
CATALOG_NAMESPACE = "smartcity"
CATALOG_TYPES = ("jdbc", "glue")
ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
# Lower case only: Glue, Athena and Trino fold identifiers to lower case.
_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass
class Catalog:
    """`[catalog]`: where the lake's Apache Iceberg tables are registered (spark_jobs/iceberg_tables.py;
    the stream does not write through it yet: docs/lake.md, "Iceberg (in progress)").

    jdbc: Iceberg's JDBC catalog; `uri` defaults to a SQLite file under the lake folder
    ({lake}/_catalog/iceberg.sqlite: one writing process, local disk only; an s3a:// lake needs
    `uri` set, e.g. jdbc:sqlite:/local/path). glue: AWS Glue (GlueCatalog). Either way, a warehouse
    on S3 is written and read with S3FileIO (iceberg-aws-bundle), configured from `[s3]`
    (endpoint, path_style, region) with credentials from the AWS default provider chain only."""
    type: str = "jdbc"                # jdbc | glue
    name: str = CATALOG_NAME          # the same in Spark, pyiceberg and Trino (see CATALOG_NAME)
    namespace: str = CATALOG_NAMESPACE
    uri: str | None = None            # jdbc: jdbc:sqlite:/abs/file or jdbc:postgresql://...
    warehouse: str | None = None      # default {lake}/warehouse (an s3a:// one becomes s3://)
    glue_endpoint: str | None = None  # glue: e.g. the local Glue API (moto); None = AWS
    region: str | None = None         # client.region of Glue and S3FileIO (default: s3.region, then
                                      # the AWS provider chain's)

    def __post_init__(self) -> None:
        self.type = self.type.lower()
        if self.type not in CATALOG_TYPES:
            raise ValueError(f"type must be one of {', '.join(CATALOG_TYPES)}, not {self.type!r}")
        for what in ("name", "namespace"):
            if not _IDENTIFIER_RE.match(getattr(self, what)):
                raise ValueError(f"{what} must be a lower-case SQL identifier "
                                 f"([a-z_][a-z0-9_]*), not {getattr(self, what)!r}")
        if self.name == "spark_catalog":
            raise ValueError("name must not be spark_catalog (Spark's session catalog)")
        if self.uri is not None and not self.uri.startswith("jdbc:"):
            raise ValueError(f"uri must be a JDBC URL (jdbc:sqlite:/path, "
                             f"jdbc:postgresql://host/db), not {self.uri!r}")
        if self.uri is not None and self.type != "jdbc":
            raise ValueError("uri is for type = \"jdbc\" only")


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
class LakeSettings:
    bootstrap: str = "127.0.0.1:9092"
    topics: list[str] = field(default_factory=lambda: [rt.name for rt in RECORD_TYPES])
    lake: str = "lake"               # folder or URI (file:///..., s3a://bucket/prefix)
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
    # How a batch's data rows enter their table (lake.LakeWriter): "merge" (MERGE on event_id and ts:
    # one row per event_id however late a copy arrives) or "append" (a copy later than
    # dedup_window_s stays as a second row; cheaper, for measurements and throwaway lakes).
    dedup: str = "merge"
    state_store: str = "hdfs"        # hdfs | rocksdb (see session.STATE_STORES)
    shuffle_partitions: int = 2
    driver_memory: str = "1g"
    ui: bool = False
    spark_log_level: str = "ERROR"
    jars_dir: str | None = None      # default $SMARTCITY_CACHE/spark-jars
    local_dir: str | None = None     # spark.local.dir; default {lake}/_spark_local (session.local_dir)
    s3: S3 = field(default_factory=S3)
    kafka: Kafka = field(default_factory=Kafka)
    catalog: Catalog = field(default_factory=Catalog)
    maintenance: Maintenance = field(default_factory=Maintenance)

    def __post_init__(self) -> None:
        unknown = set(self.topics) - {rt.name for rt in RECORD_TYPES}
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}; known: {[r.name for r in RECORD_TYPES]}")
        self.lake = to_uri(self.lake)
        self.checkpoint = to_uri(self.checkpoint) if self.checkpoint else join(self.lake, "_checkpoints", "lake-stream")
        if self.state_store not in ("hdfs", "rocksdb"):
            raise ValueError(f"state_store must be hdfs or rocksdb, not {self.state_store!r}")
        if self.trigger_s <= 0:
            raise ValueError("trigger_s must be > 0")
        if self.dedup not in ("merge", "append"):
            raise ValueError(f"dedup must be merge or append, not {self.dedup!r}")


def to_uri(path: str | os.PathLike) -> str:
    """Plain paths become absolute file: URIs, so Spark never resolves them against a cwd."""
    s = str(path)
    if "://" in s:
        return s.rstrip("/")
    if s.startswith("file:"):
        s = s[len("file:"):]
    return "file://" + str(Path(s).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


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


# ---- the Iceberg catalog (issue 11) ----------------------------------------------------------

def _local_path(uri: str) -> Path | None:
    return Path(uri[len("file://"):]) if uri.startswith("file://") else None


def catalog_sqlite_file(s: LakeSettings) -> Path | None:
    """The SQLite file of a jdbc:sqlite catalog (the default one: {lake}/_catalog/iceberg.sqlite),
    else None. Its folder must exist before the catalog is first used (prepare_catalog)."""
    if s.catalog.type != "jdbc":
        return None
    uri = catalog_uri(s)
    return Path(uri[len("jdbc:sqlite:"):]) if uri.startswith("jdbc:sqlite:") else None


def catalog_uri(s: LakeSettings) -> str:
    """The JDBC URL of a jdbc catalog: catalog.uri, else a SQLite file under a local lake."""
    if s.catalog.uri:
        return s.catalog.uri
    lake = _local_path(s.lake)
    if lake is None:
        raise ValueError(f"catalog.uri: a SQLite catalog must be on a local disk and the lake is "
                         f"{s.lake}; set catalog.uri (e.g. jdbc:postgresql://host/db) or "
                         "catalog.type = \"glue\"")
    return f"jdbc:sqlite:{lake / '_catalog' / 'iceberg.sqlite'}"


def catalog_warehouse(s: LakeSettings) -> str:
    """Where new tables' data and metadata go: catalog.warehouse, else {lake}/warehouse (beside
    today's data/ and quarantine/ folders, never inside them). On S3 always s3://: the scheme of
    S3FileIO, which writes the tables, and of the locations Athena and Glue read."""
    w = to_uri(s.catalog.warehouse) if s.catalog.warehouse else join(s.lake, "warehouse")
    if w.startswith("s3a://"):
        w = "s3://" + w[len("s3a://"):]
    return w


def table_identifier(s: LakeSettings, table: str) -> str:
    """`catalog.namespace.table`, as Spark SQL names it (lake.smartcity.gps_data)."""
    return f"{s.catalog.name}.{s.catalog.namespace}.{table}"


def prepare_catalog(s: LakeSettings) -> None:
    """Create the folder of a SQLite catalog file (SQLite creates the file, not its folder)."""
    f = catalog_sqlite_file(s)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)


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
    region = c.region or s.s3.region
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


def warehouse_on_s3(s: LakeSettings) -> bool:
    """True when the catalog's warehouse is on S3 (s3:// or s3a://): S3FileIO reads and writes it."""
    return catalog_warehouse(s).startswith("s3://")


def pyiceberg_properties(s: LakeSettings) -> dict[str, str]:
    """Properties for pyiceberg.catalog.load_catalog(s.catalog.name, **these): the same catalog,
    under the same name, for readers that are not Spark (tests, the demo, a notebook)."""
    c = s.catalog
    props = {"warehouse": catalog_warehouse(s)}
    if warehouse_on_s3(s):
        # pyiceberg's own property names (pyiceberg/io/__init__.py), read by its pyarrow FileIO;
        # credentials come from the AWS default chain (AWS_ACCESS_KEY_ID, ...), never from here.
        # Without a region pyarrow asks AWS where the bucket is, so an S3-compatible server (an
        # endpoint) always gets one: s3.region, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
        region = (c.region or s.s3.region or os.environ.get("AWS_REGION")
                  or os.environ.get("AWS_DEFAULT_REGION") or ("us-east-1" if s.s3.endpoint else None))
        if s.s3.endpoint:
            props["s3.endpoint"] = s.s3.endpoint
        if region:
            props["s3.region"] = region
        # No "path-style" property: pyarrow addresses buckets by path whenever an endpoint is set,
        # unless virtual addressing is forced.
        props["s3.force-virtual-addressing"] = str(not s.s3.path_style).lower()
    if c.type == "glue":
        props |= {"type": "glue"}
        if c.glue_endpoint:
            props["glue.endpoint"] = c.glue_endpoint
        if c.region or s.s3.region:
            props["client.region"] = c.region or s.s3.region
        return props
    f = catalog_sqlite_file(s)
    if f is None:
        raise ValueError(f"pyiceberg_properties: only SQLite JDBC catalogs so far, not {catalog_uri(s)}")
    return props | {"type": "sql", "uri": f"sqlite:///{f}"}
