"""Read the lake's Apache Iceberg tables as a reader that is not Spark does: through the catalog,
never by listing folders. What the tests, the benchmark and the demo summary trust.

Two readers of the same tables, each reading the table's current snapshot:

- `read_table` / `event_ids`: pyiceberg (the catalog of `pyiceberg_properties`, scan -> pyarrow);
- `read_table_duckdb`: DuckDB's `iceberg_scan` on the metadata file the catalog names now.

The readers only READ the catalog: a SQLite catalog file is opened read-only (never created, no
catalog table created), and waits up to CATALOG_BUSY_TIMEOUT_S for a lock the writer (Spark's
sqlite-jdbc) holds instead of failing with SQLITE_BUSY. A table the stream has not created yet
reads as None.

DuckDB loads its iceberg and avro extensions from the PyPI packages duckdb-extension-iceberg and
duckdb-extension-avro (avro first: iceberg needs it for manifests and would otherwise fetch it), by
file path, with auto-install off: it never downloads anything.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pyarrow as pa

from .location import LakeLocation, catalog_sqlite_file, pyiceberg_properties
from .sqltext import iceberg_scan, sql_name, sql_string

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

# How long a catalog read waits for the writer's lock on the SQLite file (Spark's side waits 30 s
# too: settings.catalog_spark_conf, jdbc.busy_timeout).
CATALOG_BUSY_TIMEOUT_S = 30.0
# A read that finds a file gone (metadata or data removed by a commit that expired it between the
# catalog lookup and the scan) starts again from the catalog, this many times in all.
READ_ATTEMPTS = 3
# Loaded in this order: iceberg's LOAD would try to download avro if it were not loaded already.
DUCKDB_EXTENSIONS = ("avro", "iceberg")

_catalogs: dict[tuple, "Catalog"] = {}
_lock = threading.Lock()
_duckdb: "duckdb.DuckDBPyConnection | None" = None


def reader_properties(s: LakeLocation) -> dict[str, str]:
    """pyiceberg_properties(s) for a reader: a SQLite catalog opened read-only (SQLite URI
    mode=ro: the file is never created or written) with a busy timeout, and pyiceberg told not to
    create the catalog's tables."""
    props = dict(pyiceberg_properties(s))
    f = catalog_sqlite_file(s)
    if f is not None:
        # SQLAlchemy hands uri= and timeout= to sqlite3.connect and the rest to SQLite's URI. The
        # path is quoted twice: SQLAlchemy unquotes it once, SQLite's URI parser once more.
        props["uri"] = (f"sqlite:///file:{quote(quote(str(f)))}?mode=ro&uri=true"
                        f"&timeout={CATALOG_BUSY_TIMEOUT_S:g}")
        props["init_catalog_tables"] = "false"
    return props


def load_catalog(s: LakeLocation) -> "Catalog":
    """The pyiceberg catalog of `s` (read-only for a SQLite catalog: reader_properties), one per
    catalog configuration in this process. Loading a table from it always asks the catalog again."""
    from pyiceberg.catalog import load_catalog as _load_catalog
    props = reader_properties(s)
    key = (s.catalog.name, tuple(sorted(props.items())))
    with _lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            catalog = _load_catalog(s.catalog.name, **props)
            f = catalog_sqlite_file(s)
            if f is None or f.exists():   # not before the file exists: pyiceberg probes it once
                _catalogs[key] = catalog
    return catalog


def load_table(s: LakeLocation, table: str) -> "Table | None":
    """The table `table` of s.catalog.namespace as the catalog has it now, or None when it does
    not exist yet (no catalog file, no catalog tables, no namespace or no such table)."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    from sqlalchemy.exc import OperationalError
    f = catalog_sqlite_file(s)
    if f is not None and not f.exists():
        return None
    try:
        return load_catalog(s).load_table((s.catalog.namespace, table))
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    except OperationalError as e:
        # A catalog file whose tables Spark has not created yet (it creates them on first use).
        if "no such table" in str(e.orig):
            return None
        raise


def arrow_schema(t: "Table", columns: list[str] | None = None) -> pa.Schema:
    """What both readers return for `t`: the table's columns (those of `columns`, in the table's
    order), its required columns not null, its docs as field metadata, string (never
    large_string: pyiceberg reads string from a data file but large_string for no rows), and
    timestamps as timestamp[us, tz=UTC]. Raises ValueError naming a column the table lacks."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    schema = t.schema() if columns is None else t.schema().select(*columns)
    plain = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    if not schema.fields:
        raise ValueError("columns: name at least one column (None reads them all)")
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    return pa.schema([f.with_type(plain.get(f.type, f.type)) for f in arrow])


def read_table(s: LakeLocation, table: str, columns: list[str] | None = None,
               row_filter: str | None = None) -> pa.Table | None:
    """The rows of `table` ("gps_data", ..., "quarantine") in its current snapshot, read by
    pyiceberg: `columns` (default all, in the table's order), `row_filter` a pyiceberg filter
    expression ("event_id == 'x' and lat > 38"). None when the table does not exist yet; an empty
    table with the table's schema when it has no snapshot or no matching row. Timestamps are
    timestamp[us, tz=UTC]."""
    for attempt in range(READ_ATTEMPTS):
        t = load_table(s, table)   # fresh each call: another process commits
        if t is None:
            return None
        schema = arrow_schema(t, columns)
        scan = t.scan(selected_fields=tuple(schema.names), **({"row_filter": row_filter} if row_filter else {}))
        try:
            return scan.to_arrow().cast(schema)
        except FileNotFoundError:
            if attempt + 1 == READ_ATTEMPTS:
                raise
            time.sleep(0.1)


def event_ids(s: LakeLocation, table: str) -> list[str]:
    """The event_id column of `table`'s current snapshot, in no particular order (duplicates
    kept; quarantine rows may hold None); [] when the table does not exist."""
    t = read_table(s, table, ["event_id"])
    return [] if t is None else t.column("event_id").to_pylist()


# ---- DuckDB ----------------------------------------------------------------------------------

def duckdb_extension_paths(names: tuple[str, ...] = DUCKDB_EXTENSIONS) -> dict[str, Path]:
    """The extension files this process's DuckDB loads, from their PyPI packages (one file per
    DuckDB release: extensions/v<duckdb version>/<name>.duckdb_extension), in load order."""
    import importlib

    import duckdb
    paths = {}
    for name in names:
        package = importlib.import_module(f"duckdb_extension_{name}")
        path = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: duckdb-extension-{name} must have the version of "
                               f"duckdb ({duckdb.__version__}); see pyproject.toml, `lake` extra")
        paths[name] = path
    return paths


def duckdb_connection(database: str = ":memory:", config: dict[str, str] | None = None,
                      extensions: tuple[str, ...] = DUCKDB_EXTENSIONS,
                      location: LakeLocation | None = None) -> "duckdb.DuckDBPyConnection":
    """A new DuckDB connection able to `SELECT ... FROM iceberg_scan('<metadata.json>')`: the
    avro and iceberg extensions (and any other of `extensions`, e.g. "spatial", whose package is
    installed) loaded from their packages' files, extension auto-install off (a missing extension
    is an error, never a download), TimeZone UTC (timestamps with time zone come out as
    timestamp[us, tz=UTC]). `config` is added to DuckDB's connect config. Its cursor()s share the
    extensions and the time zone. With a `location` whose warehouse is on S3, also httpfs and an
    S3 secret for it (duckdb_s3_secret_sql)."""
    import duckdb
    s3_sql = duckdb_s3_secret_sql(location) if location is not None else None
    if s3_sql:
        extensions = tuple(extensions) + ("httpfs",) + (("aws",) if "credential_chain" in s3_sql else ())
    con = duckdb.connect(database, config={"autoinstall_known_extensions": "false", **(config or {})})
    try:
        # GLOBAL: cursor()s are connections of their own. (Not a connect config: the TimeZone
        # setting needs ICU, built in, but only loaded once the connection exists.)
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        for path in duckdb_extension_paths(extensions).values():
            con.execute(f"LOAD {sql_string(str(path))}")
        if s3_sql:
            con.execute(s3_sql)
    except BaseException:
        con.close()
        raise
    return con


def duckdb_s3_secret_sql(location: LakeLocation) -> str | None:
    """`CREATE SECRET` giving DuckDB's httpfs the lake's S3 (None when the warehouse is not on S3):
    the endpoint, URL style and region of `[s3]` (as pyiceberg gets them), and credentials never
    from settings: those of the standard AWS environment variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) when they are set; otherwise, with DuckDB's aws
    extension installed (the analytics extra), the AWS SDK's own chain, as boto3 and pyiceberg
    search it: a profile of ~/.aws (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, SSO), a web identity,
    the container's or the instance's role (not validated: with none found, unsigned requests);
    without the extension, DuckDB's unsigned requests. The statement may hold the keys: it is
    executed, never logged."""
    import importlib.util
    import os
    from urllib.parse import urlparse

    from .location import warehouse_on_s3
    if not warehouse_on_s3(location):
        return None
    props = pyiceberg_properties(location)
    parts = ["TYPE s3", f"URL_STYLE {sql_string('path' if location.s3.path_style else 'vhost')}"]
    if props.get("s3.region"):
        parts.append(f"REGION {sql_string(props['s3.region'])}")
    if location.s3.endpoint:
        u = urlparse(location.s3.endpoint)
        parts += [f"ENDPOINT {sql_string(u.netloc or u.path)}",
                  f"USE_SSL {'true' if u.scheme == 'https' else 'false'}"]
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        for var, name in (("AWS_ACCESS_KEY_ID", "KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "SECRET"),
                          ("AWS_SESSION_TOKEN", "SESSION_TOKEN")):
            if os.environ.get(var):
                parts.append(f"{name} {sql_string(os.environ[var])}")
    elif importlib.util.find_spec("duckdb_extension_aws") is not None:
        parts += ["PROVIDER credential_chain", "VALIDATION 'none'"]
    return f"CREATE OR REPLACE SECRET lake_s3 ({', '.join(parts)})"


def _shared_duckdb() -> "duckdb.DuckDBPyConnection":
    global _duckdb
    with _lock:
        if _duckdb is None:
            _duckdb = duckdb_connection()
        return _duckdb.cursor()   # one per read: cursors may be used by different threads


def read_table_duckdb(s: LakeLocation, table: str, columns: list[str] | None = None,
                      con: "duckdb.DuckDBPyConnection | None" = None) -> pa.Table | None:
    """read_table through DuckDB: `iceberg_scan` of the metadata file the catalog names now (the
    current snapshot), returned with read_table's schema (arrow_schema). None when the table does
    not exist yet; an empty table when it has no snapshot or no rows. `con`: a connection made by
    duckdb_connection() (default: one per process, a cursor of it per read)."""
    import duckdb
    for attempt in range(READ_ATTEMPTS):
        t = load_table(s, table)
        if t is None:
            return None
        schema = arrow_schema(t, columns)
        sql = (f"SELECT {', '.join(sql_name(c) for c in schema.names)} "
               f"FROM {iceberg_scan(t.metadata_location)}")
        cur = con if con is not None else _shared_duckdb()
        try:
            return cur.execute(sql).to_arrow_table().cast(schema)
        except duckdb.IOException:
            if attempt + 1 == READ_ATTEMPTS:
                raise
            time.sleep(0.1)
        finally:
            if con is None:
                cur.close()
