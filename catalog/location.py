"""Where the lake is and how any part of the project finds its Apache Iceberg tables: the lake's
location, the `[s3]` and `[catalog]` settings every reader and writer shares, and the catalog
properties derived from them (the SQLite file of the default JDBC catalog, the warehouse, table
identifiers, pyiceberg's properties). The lake job (spark_jobs), the analysts' queries
(analytics) and the tests read the same catalog through this one definition.

A settings object of any service that reads or writes the lake embeds these fields under the same
names (`lake`, `s3`, `catalog`): spark_jobs.settings.LakeSettings extends LakeLocation."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class S3:
    endpoint: str | None = None      # e.g. http://127.0.0.1:9000 for an S3-compatible server
    path_style: bool = False         # True for most S3-compatible servers (no bucket DNS names)
    region: str | None = None
    expect_continue: bool = False    # True is AWS's default; off works with every local server


# Apache Iceberg (issue 11). The catalog name is stored in the JDBC catalog's rows (column
# catalog_name), so Spark, pyiceberg and Trino (iceberg.jdbc-catalog.catalog-name) must all use the
# same one: a reader configured with another name sees an empty catalog, not an error.
CATALOG_NAME = "lake"
# The namespace (a Glue database in AWS): tables are {CATALOG_NAME}.{CATALOG_NAMESPACE}.{table}.
CATALOG_NAMESPACE = "smartcity"
CATALOG_TYPES = ("jdbc", "glue")
# Lower case only: Glue, Athena and Trino fold identifiers to lower case.
_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass
class Catalog:
    """`[catalog]`: where the lake's Apache Iceberg tables are registered (created and evolved by
    the lake job: spark_jobs/iceberg_tables.py).

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
class LakeLocation:
    """The lake: its folder or URI and how its catalog and object store are reached."""
    lake: str = "lake"               # folder or URI (file:///..., s3a://bucket/prefix)
    s3: S3 = field(default_factory=S3)
    catalog: Catalog = field(default_factory=Catalog)

    def __post_init__(self) -> None:
        self.lake = to_uri(self.lake)


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


def _local_path(uri: str) -> Path | None:
    return Path(uri[len("file://"):]) if uri.startswith("file://") else None


def catalog_sqlite_file(s: LakeLocation) -> Path | None:
    """The SQLite file of a jdbc:sqlite catalog (the default one: {lake}/_catalog/iceberg.sqlite),
    else None. Its folder must exist before the catalog is first used (prepare_catalog)."""
    if s.catalog.type != "jdbc":
        return None
    uri = catalog_uri(s)
    return Path(uri[len("jdbc:sqlite:"):]) if uri.startswith("jdbc:sqlite:") else None


def catalog_uri(s: LakeLocation) -> str:
    """The JDBC URL of a jdbc catalog: catalog.uri, else a SQLite file under a local lake."""
    if s.catalog.uri:
        return s.catalog.uri
    lake = _local_path(s.lake)
    if lake is None:
        raise ValueError(f"catalog.uri: a SQLite catalog must be on a local disk and the lake is "
                         f"{s.lake}; set catalog.uri (e.g. jdbc:postgresql://host/db) or "
                         "catalog.type = \"glue\"")
    return f"jdbc:sqlite:{lake / '_catalog' / 'iceberg.sqlite'}"


def catalog_warehouse(s: LakeLocation) -> str:
    """Where new tables' data and metadata go: catalog.warehouse, else {lake}/warehouse (beside
    today's data/ and quarantine/ folders, never inside them). On S3 always s3://: the scheme of
    S3FileIO, which writes the tables, and of the locations Athena and Glue read."""
    w = to_uri(s.catalog.warehouse) if s.catalog.warehouse else join(s.lake, "warehouse")
    if w.startswith("s3a://"):
        w = "s3://" + w[len("s3a://"):]
    return w


def table_identifier(s: LakeLocation, table: str) -> str:
    """`catalog.namespace.table`, as Spark SQL names it (lake.smartcity.gps_data)."""
    return f"{s.catalog.name}.{s.catalog.namespace}.{table}"


def prepare_catalog(s: LakeLocation) -> None:
    """Create the folder of a SQLite catalog file (SQLite creates the file, not its folder)."""
    f = catalog_sqlite_file(s)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)


def catalog_region(s: LakeLocation) -> str | None:
    """The AWS region of the catalog's clients (Glue, S3FileIO): catalog.region, else s3.region;
    None leaves it to the AWS provider chain (AWS_REGION, a profile)."""
    return s.catalog.region or s.s3.region


def warehouse_on_s3(s: LakeLocation) -> bool:
    """True when the catalog's warehouse is on S3 (s3:// or s3a://): S3FileIO reads and writes it."""
    return catalog_warehouse(s).startswith("s3://")


def pyiceberg_properties(s: LakeLocation) -> dict[str, str]:
    """Properties for pyiceberg.catalog.load_catalog(s.catalog.name, **these): the same catalog,
    under the same name, for readers that are not Spark (tests, the demo, a notebook)."""
    c = s.catalog
    props = {"warehouse": catalog_warehouse(s)}
    if warehouse_on_s3(s):
        # pyiceberg's own property names (pyiceberg/io/__init__.py), read by its pyarrow FileIO;
        # credentials come from the AWS default chain (AWS_ACCESS_KEY_ID, ...), never from here.
        # Without a region pyarrow asks AWS where the bucket is, so an S3-compatible server (an
        # endpoint) always gets one: s3.region, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
        region = (catalog_region(s) or os.environ.get("AWS_REGION")
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
        if catalog_region(s):
            props["client.region"] = catalog_region(s)
        return props
    f = catalog_sqlite_file(s)
    if f is None:
        raise ValueError(f"pyiceberg_properties: only SQLite JDBC catalogs so far, not {catalog_uri(s)}")
    return props | {"type": "sql", "uri": f"sqlite:///{f}"}
