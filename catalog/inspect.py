"""What the lake's Iceberg catalog holds, and where it has drifted from `contracts/`
(CLI: `smartcity-catalog show|diff`, catalog/__main__.py). Read-only, without Spark or a JVM:
pyiceberg through catalog/reader.py.

Two steps, so the rules are testable on plain values:

- `table_state(ident, t)`: a pyiceberg Table as a TableState (columns with Iceberg types,
  partition spec and sort order as Spark SQL transforms, the current snapshot and its summary);
- `diff_table(ident, spec, state)`: the TableSpec of catalog/tables.py (what the lake job
  creates from contracts/) against it, one Finding per difference, each with what to do.

A finding's `remedy` says who resolves it:

- `evolve`: `smartcity-lake tables` applies it (so does the stream when it starts): a column
  contracts/ added as nullable, a widened type, a required field made nullable, a doc or comment;
- `incompatible`: a change the table cannot follow (a new required column, a narrowed or changed
  type, a nullable column made required, a column contracts/ no longer has). The lake job refuses
  to change ANY table while one exists, and the stream does not start: a person decides (the
  message says how);
- `deliberate`: kept as it is by the lake job (a partition spec other than catalog/tables.py's,
  a table contracts/ does not define): change it on purpose, or leave it.

The rules are the lake job's (spark_jobs/iceberg_tables.py, plan_evolution), in Iceberg's terms;
tests/test_catalog_cli.py checks that the two agree.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Sequence

from .location import LakeLocation, catalog_sqlite_file
from .tables import WIDENINGS, TableSpec, iceberg_type, table_specs

if TYPE_CHECKING:
    from pyiceberg.table import Table

EVOLVE, INCOMPATIBLE, DELIBERATE = "evolve", "incompatible", "deliberate"
REMEDIES = (EVOLVE, INCOMPATIBLE, DELIBERATE)
LAKE_TABLES = "`smartcity-lake tables`"
# pyiceberg's transform names -> Spark SQL's (what the lake job writes in PARTITIONED BY).
_SPARK_TRANSFORMS = {"year": "years", "month": "months", "day": "days", "hour": "hours"}


@dataclass(frozen=True)
class ColumnState:
    name: str
    type: str                  # Iceberg's name: string, int, long, double, timestamptz, ...
    required: bool
    doc: str | None


@dataclass(frozen=True)
class TableState:
    """A table as the catalog has it now."""
    table: str                                  # catalog.namespace.table
    columns: tuple[ColumnState, ...]
    partition_by: tuple[str, ...]               # Spark SQL transforms: days(ts), bucket(16, id)
    sort_order: tuple[str, ...] = ()            # e.g. "ts ASC NULLS FIRST"; () = unsorted
    comment: str | None = None
    format_version: int | None = None
    location: str | None = None
    metadata_location: str | None = None
    snapshot_id: int | None = None              # the current snapshot; None before the first commit
    snapshot_time: str | None = None            # UTC, ISO-8601 with milliseconds and Z
    snapshot_operation: str | None = None       # append, overwrite, replace, delete
    snapshots: int = 0                          # snapshots the metadata keeps (time travel)
    data_files: int = 0                         # of the current snapshot (its summary's totals)
    records: int = 0
    bytes: int = 0

    def to_dict(self) -> dict:
        return {"exists": True, **asdict(self)}


@dataclass(frozen=True)
class Finding:
    """One difference between contracts/ and the catalog, and what to do about it."""
    table: str                       # catalog.namespace.table
    kind: str                        # missing_table, missing_column, type, nullability, extra_column,
                                     # doc, comment, partition, extra_table
    remedy: str                      # evolve | incompatible | deliberate
    message: str                     # one line, ends with what to do
    column: str | None = None

    def line(self) -> str:
        return f"{self.table}: {self.message}"


# ---- the catalog's side ----------------------------------------------------------------------

def _transform(transform, column: str) -> str | None:
    """A pyiceberg transform on `column` in Spark SQL's form; None for a void (dropped) field."""
    name = str(transform)
    if name == "identity":
        return column
    if name == "void":
        return None
    if name in _SPARK_TRANSFORMS:
        return f"{_SPARK_TRANSFORMS[name]}({column})"
    m = re.fullmatch(r"(bucket|truncate)\[(\d+)\]", name)
    if m:
        return f"{m.group(1)}({m.group(2)}, {column})"
    return f"{name}({column})"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def table_state(ident: str, t: "Table") -> TableState:
    """The catalog's view of table `t` (named `ident`), read from its current metadata."""
    schema = t.schema()

    def name(source_id: int) -> str:
        return schema.find_column_name(source_id) or f"<field {source_id}>"

    parts = tuple(p for p in (_transform(f.transform, name(f.source_id)) for f in t.spec().fields)
                  if p is not None)
    order = tuple(f"{_transform(f.transform, name(f.source_id))} {f.direction} {f.null_order}"
                  for f in t.sort_order().fields)
    snap = t.current_snapshot()
    summary = snap.summary if snap is not None else None
    totals = summary.additional_properties if summary is not None else {}   # the snapshot's totals
    return TableState(
        table=ident,
        columns=tuple(ColumnState(f.name, str(f.field_type), f.required, f.doc) for f in schema.fields),
        partition_by=parts, sort_order=order,
        comment=t.properties.get("comment"), format_version=t.format_version,
        location=t.location(), metadata_location=t.metadata_location,
        snapshot_id=snap.snapshot_id if snap else None,
        snapshot_time=_utc(snap.timestamp_ms) if snap else None,
        snapshot_operation=summary.operation.value if summary is not None else None,
        snapshots=len(t.metadata.snapshots),
        data_files=int(totals.get("total-data-files", 0)),
        records=int(totals.get("total-records", 0)),
        bytes=int(totals.get("total-files-size", 0)),
    )


def _catalog_tables(s: LakeLocation) -> list[str]:
    """The tables of s.catalog.namespace (names only), [] when there is no catalog yet."""
    from pyiceberg.exceptions import NoSuchNamespaceError
    from sqlalchemy.exc import OperationalError

    from .reader import load_catalog
    f = catalog_sqlite_file(s)
    if f is not None and not f.exists():
        return []
    try:
        return sorted(ident[-1] for ident in load_catalog(s).list_tables((s.catalog.namespace,)))
    except NoSuchNamespaceError:
        return []
    except OperationalError as e:
        if "no such table" in str(e.orig):   # a catalog file Spark has not initialised yet
            return []
        raise


def _ident(s: LakeLocation, table: str) -> str:
    return f"{s.catalog.name}.{s.catalog.namespace}.{table}"


def _order(names: Iterable[str]) -> list[str]:
    """The lake's tables in definition order, then any others by name."""
    known = [spec.name for spec in table_specs()]
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


def states(s: LakeLocation, tables: Sequence[str] | None = None) -> list[tuple[str, TableState | None]]:
    """(catalog.namespace.table, its TableState or None when the catalog lacks it) for each table
    named (default: every table of the namespace), the lake's tables in definition order first."""
    from .reader import load_table
    out = []
    for name in _order(tables if tables else _catalog_tables(s)):
        t = load_table(s, name)
        ident = _ident(s, name)
        out.append((ident, None if t is None else table_state(ident, t)))
    return out


def show(s: LakeLocation, tables: Sequence[str] | None = None) -> list[dict]:
    """states() as JSON-ready dicts: TableState's fields and "exists": True, or
    {"table", "exists": False} for a named table the catalog lacks."""
    return [{"table": ident, "exists": False} if st is None else st.to_dict() for ident, st in states(s, tables)]


# ---- contracts/ against the catalog ---------------------------------------------------------

def _norm(transform: str) -> str:
    return transform.replace("`", "").replace(" ", "").lower()


def diff_table(ident: str, spec: TableSpec, state: TableState | None) -> list[Finding]:
    """Every difference between the table contracts/ defines (`spec`) and the catalog's
    (`state`, None when the catalog has no such table). Pure."""
    if state is None:
        return [Finding(ident, "missing_table", EVOLVE,
                        f"not in the catalog: run {LAKE_TABLES} to create it (the stream also does "
                        "when it starts)")]
    out: list[Finding] = []

    def add(kind: str, remedy: str, column: str | None, message: str) -> None:
        out.append(Finding(ident, kind, remedy, message, column))

    have = {c.name: c for c in state.columns}
    for f in spec.columns:
        want_type, c = iceberg_type(f), have.get(f.name)
        if c is None:
            if f.nullable:
                add("missing_column", EVOLVE, f.name,
                    f"column {f.name} ({want_type}, optional) is in contracts/ and not in the table: "
                    f"run {LAKE_TABLES} to add it")
            else:
                add("missing_column", INCOMPATIBLE, f.name,
                    f"column {f.name} ({want_type}, required) is in contracts/ and not in the table; "
                    f"incompatible: existing rows have no value for it and {LAKE_TABLES} refuses it: "
                    "make the field nullable=True in contracts/ (then it is added as an optional "
                    "column), or create a new table and copy the data into it")
            continue
        if c.type != want_type:
            if (c.type, want_type) in WIDENINGS:
                add("type", EVOLVE, f.name,
                    f"column {f.name} is {c.type} in the table and {want_type} in contracts/, a "
                    f"widening: run {LAKE_TABLES} to widen it")
            else:
                add("type", INCOMPATIBLE, f.name,
                    f"column {f.name} is {c.type} in the table and {want_type} in contracts/; "
                    f"incompatible: Iceberg only widens {_widenings()} and existing data files hold "
                    f"{c.type}: keep the field's type in contracts/, or add a new nullable field "
                    "under a new name, or create a new table and copy the data into it")
        if c.required and f.nullable:
            add("nullability", EVOLVE, f.name,
                f"column {f.name} is required in the table and optional in contracts/: run "
                f"{LAKE_TABLES} to make it optional")
        elif not c.required and not f.nullable:
            add("nullability", INCOMPATIBLE, f.name,
                f"column {f.name} is optional in the table and required in contracts/; incompatible: "
                "existing rows may hold nulls: keep the field nullable=True in contracts/")
        if c.doc != f.description:
            add("doc", EVOLVE, f.name,
                f"the doc of column {f.name} differs from its description in contracts/: run "
                f"{LAKE_TABLES} to update it")
    want = {f.name for f in spec.columns}
    for c in state.columns:
        if c.name not in want:
            add("extra_column", INCOMPATIBLE, c.name,
                f"column {c.name} ({c.type}) is in the table and not in contracts/; {LAKE_TABLES} "
                "refuses to evolve any table until it is resolved: put the field back in contracts/ "
                f"(nullable), or drop the column deliberately: ALTER TABLE {ident} DROP COLUMN "
                f"{c.name} (old data files stay readable)")
    if state.comment != spec.comment:
        add("comment", EVOLVE, None,
            f"the table comment differs from the record type's description in contracts/: run "
            f"{LAKE_TABLES} to update it")
    if [_norm(p) for p in state.partition_by] != [_norm(p) for p in spec.partition_by]:
        add("partition", DELIBERATE, None,
            f"partitioned by {', '.join(state.partition_by) or 'nothing'}, and the lake job defines "
            f"{', '.join(spec.partition_by)}: {LAKE_TABLES} keeps a table's partition spec; change "
            f"it deliberately (ALTER TABLE {ident} REPLACE PARTITION FIELD ... WITH "
            f"{spec.partition_by[0]}), or keep it and change catalog/tables.py")
    return out


def _widenings() -> str:
    return " and ".join(f"{a} -> {b}" for a, b in sorted(WIDENINGS))


def diff(s: LakeLocation, tables: Sequence[str] | None = None) -> list[Finding]:
    """contracts/ against the catalog: for each table catalog/tables.py defines (or those named),
    diff_table; without `tables`, also each table of the namespace that contracts/ does not
    define. [] when there is no drift."""
    from .reader import load_table
    specs = {spec.name: spec for spec in table_specs()}
    names = list(tables) if tables else list(specs)
    out: list[Finding] = []
    for name in names:
        ident = _ident(s, name)
        t = load_table(s, name)
        out += diff_table(ident, specs[name], None if t is None else table_state(ident, t))
    if not tables:
        for name in _catalog_tables(s):
            if name not in specs:
                out.append(Finding(_ident(s, name), "extra_table", DELIBERATE,
                                   "in the catalog's namespace and not defined by contracts/: the lake "
                                   "job does not write it; drop it deliberately "
                                   f"(DROP TABLE {_ident(s, name)}) if nothing else does"))
    return out


# ---- Athena DDL ------------------------------------------------------------------------------

# Iceberg type -> Athena's (Hive DDL) name, for the types the lake has and their simple relatives.
_ATHENA_TYPES = {"string": "string", "int": "int", "long": "bigint", "double": "double",
                 "float": "float", "boolean": "boolean", "date": "date", "binary": "binary",
                 "timestamptz": "timestamp", "timestamp": "timestamp"}
# Spark SQL transform -> Athena's partition transform.
_ATHENA_TRANSFORMS = {"years": "year", "months": "month", "days": "day", "hours": "hour"}


def _athena_string(value: str) -> str:
    """A string literal of Athena's DDL (Hive's lexer: backslash escapes; '' would end the
    literal and start another, silently dropping the quote)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _athena_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _athena_type(t: str) -> str:
    if t in _ATHENA_TYPES:
        return _ATHENA_TYPES[t]
    if re.fullmatch(r"decimal\(\d+, ?\d+\)", t):
        return t.replace(" ", "")
    raise ValueError(f"no Athena DDL for Iceberg type {t}")


def _athena_transform(p: str) -> str:
    m = re.fullmatch(r"(\w+)\((?:(\d+), ?)?(\w+)\)", p)
    if m is None:
        return _athena_name(p)
    fn, arg, col = m.groups()
    fn = _ATHENA_TRANSFORMS.get(fn, fn)
    return f"{fn}({arg + ', ' if arg else ''}{_athena_name(col)})"


def athena_ddl(state: TableState, database: str) -> str:
    """The CREATE TABLE an Athena user would run for this Iceberg table, at the table's own
    location (Athena reads the lake's tables from Glue without it: for reference, or to register a
    copy elsewhere). Athena's Iceberg DDL has no NOT NULL: which columns are required is lost."""
    table = state.table.rsplit(".", 1)[-1]
    cols = ",\n".join(f"  {_athena_name(c.name)} {_athena_type(c.type)}"
                      + (f" COMMENT {_athena_string(c.doc)}" if c.doc else "") for c in state.columns)
    parts = (f"\nPARTITIONED BY ({', '.join(_athena_transform(p) for p in state.partition_by)})"
             if state.partition_by else "")
    return (f"CREATE TABLE {_athena_name(database)}.{_athena_name(table)} (\n{cols}\n){parts}\n"
            f"LOCATION {_athena_string(state.location or '')}\n"
            "TBLPROPERTIES ('table_type'='ICEBERG', 'format'='parquet');")
