"""The lake's Apache Iceberg tables, generated from `contracts/` (issue 11), and the one function
that creates or evolves them: `create_or_evolve(spark, settings)` (CLI: `smartcity-lake tables`).

Nothing here retypes a column. The tables' columns and partitioning are defined, in logical types,
in catalog/tables.py (where `smartcity-catalog diff` reads them too). A data table holds its record
type's contract fields, with the contract's types (schemas.SPARK_TYPES: string, int, bigint,
double, timestamp = Iceberg timestamptz) and nullability (a required field is a required Iceberg
column), followed by the Kafka lineage columns (kafka_topic, kafka_partition, kafka_offset,
kafka_ts, ingest_ts, all required); every column's doc is the contract field's description. The
quarantine table is one table for every topic (the raw value, error kind, reason, event_id when
readable, and the same lineage; `kafka_topic` says which topic). Format version 2.

Partitioning: data tables by `days(ts)` (event time, UTC), quarantine by `days(ingest_ts)` (a bad
record may have no usable event time). Day, not hour, because:
- Analysts filter on event time, by day or by hour. Iceberg's partitioning is hidden: a predicate
  on `ts` prunes day partitions, and inside a day each data file's min/max of `ts` (tight once
  maintenance compacts a day sorted by ts) prunes files and row groups, so an hour's query reads
  about an hour's data in Athena, Trino, Spark or DuckDB without an hour partition.
- Files. The stream writes at least one file per partition a batch touches: 60 per hour per topic
  at a 60 s trigger, 720 at 5 s. An hour partition can never hold more than an hour's rows, so a
  fleet's hour of GPS (86,400 rows per vehicle per day, a few MB of Parquet per vehicle-day) stays
  a handful of small files even after compaction, and every reader plans over 24x more partitions
  and manifest entries; a day compacts into files near Iceberg's 512 MB target.
- Late data. A Pi that was offline replays hours of its queue in one batch: that batch touches
  one or two day partitions, not one file per hour of the outage for every topic.
- A copy of an event_id has the same ts, hence the same day: a MERGE that removes late copies
  ("ON t.event_id = s.event_id AND t.ts = s.ts") stays within the days a batch touches, and the
  equality on ts lets Iceberg skip files by their ts range inside those days.
- Reversible: partition evolution is metadata-only (ALTER TABLE ... REPLACE PARTITION FIELD
  days(ts) WITH hours(ts)) if a topic ever grows to many GB per day; old files keep their spec.

Evolution rules (the contract is the truth, the table follows it; checked for every table first,
so a refused change leaves every table untouched):
- a new nullable field -> ADD COLUMN (after its predecessor in contract order, with its doc);
- a widened type (int -> bigint, float -> double) -> ALTER COLUMN ... TYPE;
- a required field made nullable -> ALTER COLUMN ... DROP NOT NULL; a changed description -> the
  column's doc; a changed record description -> the table comment;
- refused (IncompatibleSchema, naming table, column and what to do): a new required field,
  a narrowed or changed type, a nullable field made required, a column the contract no longer has.
- An existing table's partition spec is never changed here (partition evolution is a deliberate
  act): a difference is reported as a note.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from pyspark.sql.types import DataType, StructField, StructType

from smartcity.catalog import tables as lake_tables
from smartcity.catalog.location import prepare_catalog, table_identifier
from smartcity.catalog.tables import DATA_PARTITION_BY, QUARANTINE_PARTITION_BY, QUARANTINE_TABLE  # noqa: F401
from smartcity.catalog.tables import IncompatibleSchema
from smartcity.contracts import RECORD_TYPES, RecordType

from .schemas import spark_type
from .settings import LakeSettings

# Set at creation and kept so by create_or_evolve. Old metadata files are deleted by the commit
# that supersedes them beyond the last 100 (a stream at a 5 s trigger writes 17,280 a day);
# snapshots, hence time travel, are not affected (their expiry is maintenance's job).
TABLE_PROPERTIES = {
    "format-version": "2",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}
# Type changes Iceberg allows on existing data files (lake_tables.WIDENINGS), in Spark's
# simpleString names (Iceberg's long is Spark's bigint).
WIDENINGS = {tuple({"long": "bigint"}.get(t, t) for t in w) for w in lake_tables.WIDENINGS}


@dataclass(frozen=True)
class Column:
    name: str
    type: DataType
    nullable: bool
    doc: str

    @property
    def sql_type(self) -> str:
        return self.type.simpleString()


@dataclass(frozen=True)
class TableDef:
    """One Iceberg table as the contracts define it."""
    name: str                       # table name inside the namespace: gps_data, ..., quarantine
    comment: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...]   # Spark SQL transforms, e.g. ("days(ts)",)
    properties: dict[str, str] = field(default_factory=lambda: dict(TABLE_PROPERTIES))
    derived: dict[str, str] = field(default_factory=dict)   # column -> the SQL that computes it

    def struct(self) -> StructType:
        """The Spark schema, each column's doc as its comment (what Spark reports for the table)."""
        return StructType([StructField(c.name, c.type, c.nullable, {"comment": c.doc})
                           for c in self.columns])


def table_def(spec: lake_tables.TableSpec) -> TableDef:
    """The Spark side of a table's definition (catalog/tables.py): each column's Spark type."""
    cols = tuple(Column(f.name, spark_type(f), f.nullable, f.description) for f in spec.columns)
    return TableDef(spec.name, spec.comment, cols, spec.partition_by, derived=spec.derived_sql())


def data_table(rt: RecordType) -> TableDef:
    return table_def(lake_tables.data_table(rt))


def quarantine_table() -> TableDef:
    return table_def(lake_tables.quarantine_table())


def table_defs(record_types: Iterable[RecordType] = RECORD_TYPES) -> list[TableDef]:
    """The five data tables (contract order), the quarantine table and the rollups."""
    return [table_def(spec) for spec in lake_tables.table_specs(record_types)]


# ---- SQL -------------------------------------------------------------------------------------

def sql_string(s: str) -> str:
    """A Spark SQL string literal (Spark's parser reads backslash escapes)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _transform(t: str) -> str:
    """days(ts) -> days(`ts`)."""
    m = re.fullmatch(r"(\w+)\((\w+)\)", t)
    return f"{m.group(1)}({_q(m.group(2))})" if m else _q(t)


def create_sql(ident: str, td: TableDef) -> str:
    cols = ",\n".join(f"  {_q(c.name)} {c.sql_type}{'' if c.nullable else ' NOT NULL'} COMMENT {sql_string(c.doc)}"
                      for c in td.columns)
    props = ", ".join(f"{sql_string(k)}={sql_string(v)}" for k, v in td.properties.items())
    return (f"CREATE TABLE IF NOT EXISTS {ident} (\n{cols}\n) USING iceberg\n"
            f"PARTITIONED BY ({', '.join(_transform(t) for t in td.partition_by)})\n"
            f"COMMENT {sql_string(td.comment)}\nTBLPROPERTIES ({props})")


@dataclass
class Plan:
    """What create_or_evolve will do to one table: SQL statements with a line each saying why."""
    ident: str
    action: str                                     # create | evolve | unchanged
    statements: list[tuple[str, str]] = field(default_factory=list)   # (what, sql)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _norm_transform(t: str) -> str:
    return t.replace("`", "").replace(" ", "").lower()


def fill_sql(ident: str, column: str, sql: str) -> str:
    """Computes a derived column in the rows that lack it (written before the column existed, or
    before a fill was cut short): idempotent, and a no-op once every row has it."""
    return f"UPDATE {ident} SET {_q(column)} = {sql} WHERE {_q(column)} IS NULL"


def plan_evolution(ident: str, td: TableDef, current: StructType, properties: dict[str, str] | None = None,
                   comment: str | None = None, partitioning: Sequence[str] | None = None,
                   unfilled: Iterable[str] = ()) -> Plan:
    """Compare an existing table (its Spark schema, properties, comment and partition transforms)
    with the definition; pure, so every rule is testable without Spark. unfilled: the derived
    columns the table has but some of its rows lack (a null: a derived value never is one)."""
    p = Plan(ident, "unchanged")
    have = {f.name: f for f in current.fields}
    unfilled = set(unfilled)
    fills = [c for c in td.derived if c not in have or c in unfilled]
    want = {c.name for c in td.columns}
    prev: str | None = None
    for c in td.columns:
        f = have.get(c.name)
        if f is None:
            if not c.nullable:
                p.problems.append(
                    f"{ident}: column {c.name} ({c.sql_type}) is required in contracts but the table has "
                    "no such column: existing rows have no value for it. Add the field with "
                    "nullable=True (Iceberg adds an optional column), or create a new table and copy the "
                    "data into it.")
            else:
                where = f"AFTER {_q(prev)}" if prev else "FIRST"
                p.statements.append((f"add column {c.name} {c.sql_type} (nullable) "
                                     f"{f'after {prev}' if prev else 'first'}",
                                     f"ALTER TABLE {ident} ADD COLUMN {_q(c.name)} {c.sql_type} "
                                     f"COMMENT {sql_string(c.doc)} {where}"))
            prev = c.name
            continue
        prev = c.name
        old_t, new_t = f.dataType.simpleString(), c.sql_type
        if old_t != new_t:
            if (old_t, new_t) in WIDENINGS:
                p.statements.append((f"widen column {c.name} {old_t} -> {new_t}",
                                     f"ALTER TABLE {ident} ALTER COLUMN {_q(c.name)} TYPE {new_t}"))
            else:
                p.problems.append(
                    f"{ident}: column {c.name} is {old_t} in the table and {new_t} in contracts: Iceberg "
                    f"only widens int -> bigint and float -> double, and existing data files hold "
                    f"{old_t}. Keep the field's type, or add a new nullable field under a new name "
                    "(and stop filling the old one), or create a new table and copy the data into it.")
        if f.nullable and not c.nullable:
            p.problems.append(
                f"{ident}: column {c.name} is nullable in the table and required in contracts: existing "
                "rows may hold nulls. Keep the field nullable=True in contracts.")
        elif not f.nullable and c.nullable:
            p.statements.append((f"column {c.name} becomes nullable",
                                 f"ALTER TABLE {ident} ALTER COLUMN {_q(c.name)} DROP NOT NULL"))
        if f.metadata.get("comment") != c.doc:
            p.statements.append((f"doc of column {c.name}",
                                 f"ALTER TABLE {ident} ALTER COLUMN {_q(c.name)} COMMENT {sql_string(c.doc)}"))
    for name in have:
        if name not in want:
            p.problems.append(
                f"{ident}: column {name} is in the table but not in contracts: columns are not dropped "
                "automatically (queries and readers use them). Put the field back (nullable), or drop "
                f"it deliberately: ALTER TABLE {ident} DROP COLUMN {name} (old data files stay readable).")
    if properties is not None:
        for k, v in td.properties.items():
            cur = properties.get(k)
            if k == "format-version":
                if cur is None or int(cur) < int(v):
                    p.statements.append((f"format-version {cur} -> {v}",
                                         f"ALTER TABLE {ident} SET TBLPROPERTIES ('format-version'={sql_string(v)})"))
            elif cur != v:
                p.statements.append((f"property {k}: {cur} -> {v}",
                                     f"ALTER TABLE {ident} SET TBLPROPERTIES ({sql_string(k)}={sql_string(v)})"))
    if comment is not None and comment != td.comment:
        p.statements.append(("table comment", f"COMMENT ON TABLE {ident} IS {sql_string(td.comment)}"))
    # After the columns exist. A copy-on-write UPDATE rewrites the files holding such rows, once.
    p.statements += [(f"fill derived column {c} = {td.derived[c]} in the rows without it",
                      fill_sql(ident, c, td.derived[c])) for c in fills]
    if partitioning is not None and [_norm_transform(t) for t in partitioning] != \
            [_norm_transform(t) for t in td.partition_by]:
        p.notes.append(f"partitioned by {', '.join(partitioning) or 'nothing'}, defined as "
                       f"{', '.join(td.partition_by)}: kept (partition evolution is deliberate: "
                       "ALTER TABLE ... REPLACE PARTITION FIELD)")
    if p.problems:
        p.statements.clear()
    if p.statements:
        p.action = "evolve"
    return p


# ---- against the catalog ---------------------------------------------------------------------

def _describe(spark, ident: str) -> tuple[str | None, dict[str, str], list[str], str | None]:
    """(comment, properties, partition transforms, location) of an existing table."""
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {ident}").collect()
    comment = location = None
    parts: list[str] = []
    section = None
    for r in rows:
        name, value = (r.col_name or "").strip(), (r.data_type or "").strip()
        if name.startswith("#"):
            section = name
            continue
        if section == "# Partitioning" and name.startswith("Part "):
            parts.append(value)
        elif section == "# Detailed Table Information":
            if name == "Comment":
                comment = value
            elif name == "Location":
                location = value
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {ident}").collect()}
    return comment, props, parts, location


def _existing_tables(spark, settings: LakeSettings) -> set[str]:
    ns = f"{settings.catalog.name}.{settings.catalog.namespace}"
    return {r.tableName for r in spark.sql(f"SHOW TABLES IN {ns}").collect()}


def plan(spark, settings: LakeSettings, tables: Sequence[TableDef] | None = None) -> list[Plan]:
    """What create_or_evolve would do, without doing it (the namespace must exist)."""
    tables = table_defs() if tables is None else tables
    existing = _existing_tables(spark, settings)
    out: list[Plan | None] = []
    found = []                       # (index in out, ident, definition, schema, describe())
    for td in tables:
        ident = table_identifier(settings, td.name)
        if td.name not in existing:
            out.append(Plan(ident, "create", [(f"create ({len(td.columns)} columns, partitioned by "
                                               f"{', '.join(td.partition_by)})", create_sql(ident, td))]))
            continue
        spark.sql(f"REFRESH TABLE {ident}")  # another process (pyiceberg, a 2nd job) may have changed it
        found.append((len(out), ident, td, spark.table(ident).schema, _describe(spark, ident)))
        out.append(None)
    unfilled = _unfilled(spark, [(ident, c) for _, ident, td, schema, _ in found
                                 for c in td.derived if c in schema.fieldNames()])
    for i, ident, td, schema, (comment, props, parts, _) in found:
        out[i] = plan_evolution(ident, td, schema, props, comment, parts,
                                [c for t, c in unfilled if t == ident])
    return out


def _unfilled(spark, columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Those (table, derived column) that some row lacks (a null), in one Spark job for all of
    them (a job each cost the stream's start ~0.15 s per table). Iceberg's per-file null counts
    let each scan skip every file that has the column filled, so it reads manifests only."""
    if not columns:
        return []
    probes = [f"SELECT {i} AS k FROM (SELECT 1 FROM {ident} WHERE {_q(c)} IS NULL LIMIT 1)"
              for i, (ident, c) in enumerate(columns)]
    return [columns[r.k] for r in spark.sql(" UNION ALL ".join(probes)).collect()]


def create_or_evolve(spark, settings: LakeSettings, tables: Sequence[TableDef] | None = None) -> list[dict]:
    """Create the missing tables (and the namespace), evolve the others to the contracts.

    Every table is planned before anything changes: if any change is incompatible, raises
    IncompatibleSchema listing each problem and leaves every table as it was. Returns one dict per
    table: {"table", "action": created | evolved | unchanged, "changes": [...], "notes": [...]}."""
    prepare_catalog(settings)
    ns = f"{settings.catalog.name}.{settings.catalog.namespace}"
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    plans = plan(spark, settings, tables)
    problems = [x for p in plans for x in p.problems]
    if problems:
        raise IncompatibleSchema(problems)
    done = []
    for p in plans:
        for _, sql in p.statements:
            spark.sql(sql)
        action = {"create": "created", "evolve": "evolved"}.get(p.action, p.action)
        done.append({"table": p.ident, "action": action, "changes": [w for w, _ in p.statements],
                     "notes": p.notes})
    return done


def show(spark, settings: LakeSettings, tables: Sequence[TableDef] | None = None) -> list[dict]:
    """Each table as the catalog has it: columns (name, type, required, doc), partitioning,
    location and properties."""
    tables = table_defs() if tables is None else tables
    out = []
    for td in tables:
        ident = table_identifier(settings, td.name)
        comment, props, parts, location = _describe(spark, ident)
        cols = [{"name": f.name, "type": f.dataType.simpleString(), "required": not f.nullable,
                 "doc": f.metadata.get("comment")} for f in spark.table(ident).schema.fields]
        out.append({"table": ident, "comment": comment, "partitioning": parts, "location": location,
                    "properties": props, "columns": cols})
    return out
