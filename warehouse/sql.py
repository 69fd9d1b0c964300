"""Every SQL statement of the warehouse, one class per dialect: PostgreSQL (the local stand-in) and
Amazon Redshift. Both are generated from the same column lists (warehouse/schema.py, from
contracts/ through catalog/tables.py); what differs between them is here and nowhere else, and
docs/warehouse.md ("PostgreSQL and Redshift") lists it.

Identifiers are the contract's (lower-case [a-z_][a-z0-9_]*, checked) and are written unquoted;
the only values spliced into statements are integers and the quoted strings of `literal()`
(file paths, errors: Redshift's Data API batch takes no bind parameters), besides the derived
columns' SQL of catalog/tables.py (the project's own text).
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from smartcity.catalog.tables import IncompatibleSchema, TableSpec
from smartcity.contracts import schema as cs
from smartcity.contracts.schema import Field

from .schema import DIST_KEY, KEY_COLUMN, SORT_KEY, WAREHOUSE_LINEAGE, WarehouseTable

_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# The load's bookkeeping, in the target schema.
STATE_TABLE = "load_state"        # one row per table: the last lake snapshot loaded
FILES_TABLE = "load_files"        # every lake data file loaded, with the snapshot that added it
REFUSED_TABLE = "load_refused"    # files refused (schema mismatch), with the reason
# Staging order of the rows kept when one event_id comes twice in a load: the first ingested.
DEDUP_ORDER = "ingest_ts, kafka_partition, kafka_offset"
# What a person can always do with a target table the setup cannot evolve.
RECREATE = (f"drop the table and delete its {STATE_TABLE} row (the next load creates it and loads the lake's "
            "rows again in full)")
REDSHIFT_VARCHAR_MAX = 65535
UTF8_MAX_BYTES = 4
# column_type()'s other types as information_schema.columns.data_type names them (both dialects).
_CATALOG_TYPES = {"TEXT": "text", "INTEGER": "integer", "BIGINT": "bigint", "DOUBLE PRECISION": "double precision",
                  "TIMESTAMPTZ": "timestamp with time zone"}


def ident(name: str) -> str:
    if not _IDENT_RE.match(name):
        raise ValueError(f"not a plain lower-case SQL identifier: {name!r}")
    return name


def literal(value: str) -> str:
    """A SQL string literal, the same in both dialects ('' doubles a quote). Backslashes and NUL
    are refused: Redshift reads a backslash in a literal as an escape."""
    if "\\" in value or "\0" in value:
        raise ValueError(f"a backslash or NUL cannot go into a SQL literal here: {value[:200]!r}")
    return "'" + value.replace("'", "''") + "'"


def _state_columns() -> str:
    return ("table_name VARCHAR(128) NOT NULL, snapshot_id BIGINT, files INTEGER NOT NULL, "
            "rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL, mode VARCHAR(16) NOT NULL, "
            "loaded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (table_name)")


def columns_by_table(existing: Iterable[Sequence]) -> dict[str, dict[str, tuple[str, int | None, bool]]]:
    """Dialect.existing_columns()' rows as {table: {column: (data_type, length, nullable)}}."""
    have: dict[str, dict[str, tuple[str, int | None, bool]]] = {}
    for table, column, data_type, length, is_nullable in existing:
        have.setdefault(table, {})[column] = (data_type, None if length is None else int(length),
                                              is_nullable == "YES")
    return have


class Dialect:
    name = "?"
    now = "now()"

    def __init__(self, schema: str = "smartcity"):
        self.schema = ident(schema)

    def q(self, table: str) -> str:
        return f"{self.schema}.{ident(table)}"

    # types -------------------------------------------------------------------------------------
    def column_type(self, f: Field) -> str:
        raise NotImplementedError

    def _column(self, f: Field, extra: str = "") -> str:
        null = "" if f.nullable else " NOT NULL"
        return f"{ident(f.name)} {self.column_type(f)}{null}{extra}"

    def target_column(self, f: Field) -> str:
        """A column of a target table, as CREATE TABLE and ADD COLUMN write it."""
        return self._column(f)

    # DDL ---------------------------------------------------------------------------------------
    def create_schema(self) -> str:
        return f"CREATE SCHEMA IF NOT EXISTS {self.schema}"

    def create_target(self, t: WarehouseTable) -> list[str]:
        raise NotImplementedError

    def comments(self, t: WarehouseTable) -> list[str]:
        out = [f"COMMENT ON TABLE {self.q(t.name)} IS {literal(t.comment)}"]
        out += [f"COMMENT ON COLUMN {self.q(t.name)}.{ident(f.name)} IS {literal(f.description)}"
                for f in t.columns]
        return out

    def create_state(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.q(STATE_TABLE)} ({_state_columns()})",
            f"CREATE TABLE IF NOT EXISTS {self.q(FILES_TABLE)} (table_name VARCHAR(128) NOT NULL, "
            "snapshot_id BIGINT NOT NULL, file_path VARCHAR(4096) NOT NULL, record_count BIGINT NOT NULL, "
            "loaded_at TIMESTAMPTZ NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.q(REFUSED_TABLE)} (table_name VARCHAR(128) NOT NULL, "
            "snapshot_id BIGINT NOT NULL, file_path VARCHAR(4096) NOT NULL, error VARCHAR(4096) NOT NULL, "
            "refused_at TIMESTAMPTZ NOT NULL)",
        ]

    def ddl(self, tables: Iterable[WarehouseTable]) -> list[str]:
        """Everything a new warehouse needs, idempotent (IF NOT EXISTS). A target table that exists
        is left as it is: evolve() first brings it to the columns this creates."""
        out = [self.create_schema()]
        for t in tables:
            out += self.create_target(t) + self.comments(t)
        return out + self.create_state()

    def rollups(self, specs: Iterable[TableSpec], existing: Iterable[Sequence]) -> list[str]:
        """The lake's rollups (catalog/tables.py: gps_spans, vehicle_spans), created EMPTY: the
        named queries read them, and with no row to take they compute every span from the loaded
        rows, the same answer (trip_summary.sql, harsh_events.sql). Empty, a rollup is re-created
        whenever its columns differ from the spec's (no rows to keep); else nothing. existing:
        existing_columns()' rows."""
        have = columns_by_table(existing)
        out = []
        for spec in specs:
            want = {f.name: (*self.catalog_type(f), f.nullable) for f in spec.columns}
            if have.get(spec.name, {}) == want:
                continue
            cols = ",\n  ".join(self._column(f) for f in spec.columns)
            out += [f"DROP TABLE IF EXISTS {self.q(spec.name)}",
                    f"CREATE TABLE {self.q(spec.name)} (\n  {cols}\n)",
                    f"COMMENT ON TABLE {self.q(spec.name)} IS {literal(spec.comment + ' (empty in the warehouse: the queries compute every span from its rows)')}"]
        return out

    # evolution of existing target tables ---------------------------------------------------------
    def existing_columns(self) -> str:
        """(table, column, data_type, character_maximum_length, is_nullable) of every table in the
        schema, what evolve() compares with: information_schema.columns, which both dialects answer."""
        return ("SELECT table_name, column_name, data_type, character_maximum_length, is_nullable "
                f"FROM information_schema.columns WHERE table_schema = {literal(self.schema)}")

    def catalog_type(self, f: Field) -> tuple[str, int | None]:
        """The column's type as information_schema.columns names it: (data_type, length)."""
        t = self.column_type(f)
        m = re.fullmatch(r"VARCHAR\((\d+)\)", t)
        if m:
            return "character varying", int(m.group(1))
        return _CATALOG_TYPES[t], None

    def add_column(self, t: WarehouseTable, f: Field) -> str:
        raise NotImplementedError

    def fill(self, t: WarehouseTable, column: str, sql: str) -> str:
        """A derived column computed in the rows that lack it."""
        return f"UPDATE {self.q(t.name)} SET {ident(column)} = {sql} WHERE {ident(column)} IS NULL"

    def widen(self, t: WarehouseTable, f: Field) -> str | None:
        """The statement that widens an existing column to f's type inside a transaction (its rows
        kept); None: the dialect cannot, and evolve() refuses, saying widen_refusal()."""
        return None

    def widen_refusal(self, t: WarehouseTable, f: Field) -> str:
        """What a person can do instead where widen() gives no statement; the refusal goes on with
        "or drop the table ..." (RECREATE)."""
        return ""

    def drop_not_null(self, t: WarehouseTable, f: Field) -> str | None:
        """The statement that lets an existing NOT NULL column take nulls; None: the dialect cannot."""
        return None

    def _column_changes(self, t: WarehouseTable, f: Field, data_type: str, length: int | None,
                        nullable: bool) -> tuple[list[str], list[str]]:
        """(statements, problems) that bring one existing column to the contracts' field."""
        stmts, problems = [], []
        col = f"{self.q(t.name)}: column {f.name}"
        want_type, want_len = self.catalog_type(f)
        have = f"{data_type}({length})" if length is not None else data_type
        want = self.column_type(f)
        holds = (data_type == want_type and (want_len is None or (length or 0) >= want_len)
                 or data_type == "text" and want_type == "character varying")
        widening = (data_type, want_type) == ("integer", "bigint") or (
            data_type == "character varying" and want_type in ("character varying", "text"))
        if not holds:
            if not widening:
                problems.append(
                    f"{col} is {have} in the table and {want} in contracts: the setup only widens "
                    "(integer -> BIGINT, a longer VARCHAR) and the rows hold the old type. Keep the field's "
                    f"type in contracts, or add a new nullable field under a new name, or {RECREATE}.")
            elif (stmt := self.widen(t, f)) is None:
                problems.append(f"{col} is {have} in the table and {want} in contracts, a widening "
                                f"{self.name} cannot make in the setup's transaction: {self.widen_refusal(t, f)}"
                                f"or {RECREATE}.")
            else:
                stmts.append(stmt)
        if not nullable and f.nullable:
            if (stmt := self.drop_not_null(t, f)) is None:
                problems.append(f"{col} is NOT NULL in the table and nullable in contracts: {self.name} "
                                f"cannot drop NOT NULL from a column; {RECREATE}.")
            else:
                stmts.append(stmt)
        return stmts, problems

    def evolve(self, tables: Iterable[WarehouseTable], existing: Iterable[Sequence]) -> list[list[str]]:
        """Per existing target table that differs from `t.columns`, its statements, to run in one
        transaction before ddl(): ADD COLUMN for each missing one (they are nullable), the fill of
        each derived one added (catalog/tables.py's SQL), then the widenings (integer -> BIGINT, a
        longer VARCHAR) and dropped NOT NULLs the contracts ask for, where the dialect can make
        them. existing: the rows of existing_columns(); a table not there is created whole by
        ddl(). What cannot follow raises IncompatibleSchema for every table, before anything is
        run: a missing required column, another type change, a column the contracts lack that is
        NOT NULL (the load could not insert a row; a nullable one is left to hold nulls).

        A derived column is filled only with its ADD COLUMN, in the same transaction: rows loaded
        since have it from the merge (`_staged`), so a column that exists has no row to fill, and
        a second setup reads information_schema and adds or fills nothing (no scan of the tables)."""
        have = columns_by_table(existing)
        out, problems = [], []
        for t in tables:
            if t.name not in have:
                continue
            cols = have[t.name]
            missing = [f for f in t.columns if f.name not in cols]
            problems += [
                f"{self.q(t.name)}: column {f.name} ({self.column_type(f)} NOT NULL) is required but the "
                "table has no such column: its rows have no value for it. Make the field nullable=True in "
                f"contracts (the setup then adds it), or {RECREATE}."
                for f in missing if not f.nullable]
            changes: list[str] = []
            for f in t.columns:
                if f.name in cols:
                    stmts, wrong = self._column_changes(t, f, *cols[f.name])
                    changes += stmts
                    problems += wrong
            known = {f.name for f in t.columns}
            problems += [
                f"{self.q(t.name)}: column {name} is in the table, NOT NULL, and not in contracts: the load "
                f"cannot insert a row into it. Drop it (ALTER TABLE {self.q(t.name)} DROP COLUMN {name}), "
                "or let it take nulls, or put the field back in contracts."
                for name, (_, _, nullable) in cols.items() if name not in known and not nullable]
            derived = t.spec.derived_sql()
            stmts = ([self.add_column(t, f) for f in missing]
                     + [self.fill(t, f.name, derived[f.name]) for f in missing if f.name in derived] + changes)
            if stmts:
                out.append(stmts)
        if problems:
            raise IncompatibleSchema(problems)
        return out

    def staging_name(self, t: WarehouseTable) -> str:
        return f"stage_{t.name}"

    def create_staging(self, t: WarehouseTable) -> str:
        raise NotImplementedError

    # the load ----------------------------------------------------------------------------------
    def lock(self, t: WarehouseTable) -> str:
        raise NotImplementedError

    def read_state(self, t: WarehouseTable) -> str:
        return f"SELECT snapshot_id FROM {self.q(STATE_TABLE)} WHERE table_name = {literal(t.name)}"

    def merge(self, t: WarehouseTable, snapshot_id: int) -> list[str]:
        raise NotImplementedError

    def record(self, t: WarehouseTable, snapshot_id: int, mode: str, files: list[tuple[int, str, int]],
               refused: list[tuple[int, str, str]], rows_read: int, rows_loaded: int | None) -> list[str]:
        """The load-state row (replaced), the loaded files and the refused ones. files:
        (adding snapshot id, path, records); refused: (snapshot id, path, error). rows_loaded None:
        counted by the statement itself (Redshift: the rows of the target carrying snapshot_id and
        this transaction's time)."""
        name = literal(t.name)
        loaded = str(int(rows_loaded)) if rows_loaded is not None else (
            f"(SELECT count(*) FROM {self.q(t.name)} WHERE lake_snapshot_id = {int(snapshot_id)} "
            f"AND loaded_at = {self.now})")
        out = [f"DELETE FROM {self.q(STATE_TABLE)} WHERE table_name = {name}",
               f"INSERT INTO {self.q(STATE_TABLE)} (table_name, snapshot_id, files, rows_read, rows_loaded, "
               f"mode, loaded_at) SELECT {name}, {int(snapshot_id)}, {len(files)}, {int(rows_read)}, {loaded}, "
               f"{literal(mode)}, {self.now}"]
        for chunk in _chunks(files, 500):
            out.append(f"INSERT INTO {self.q(FILES_TABLE)} (table_name, snapshot_id, file_path, record_count, "
                       "loaded_at) VALUES " + ", ".join(
                           f"({name}, {int(s)}, {literal(p)}, {int(n)}, {self.now})" for s, p, n in chunk))
        for s, p, err in refused:
            out.append(f"INSERT INTO {self.q(REFUSED_TABLE)} (table_name, snapshot_id, file_path, error, "
                       f"refused_at) VALUES ({name}, {int(s)}, {literal(p)}, {literal(err[:4000])}, {self.now})")
        return out

    def _insert_columns(self, t: WarehouseTable) -> str:
        return ", ".join(ident(f.name) for f in t.columns)

    def _staged(self, t: WarehouseTable, alias: str = "") -> str:
        """The lake columns read from staging for the merge, a derived one computed where staging
        has it null (a lake file written before the column existed: warehouse/lake.py reads it as
        nulls). The derived SQL names its columns unqualified: use this where staging is the only
        relation that has them."""
        derived = t.spec.derived_sql()
        a = f"{alias}." if alias else ""
        return ", ".join(f"coalesce({a}{ident(f.name)}, {derived[f.name]}) AS {ident(f.name)}"
                         if f.name in derived else f"{a}{ident(f.name)}" for f in t.lake_columns)

    def _select_columns(self, t: WarehouseTable, alias: str, snapshot_id: int) -> str:
        return ", ".join([f"{alias}.{ident(f.name)}" for f in t.lake_columns]
                         + [str(int(snapshot_id)), self.now])


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class Postgres(Dialect):
    """PostgreSQL 15+: the local stand-in. The load streams rows into a temporary staging table
    with COPY ... FROM STDIN (CSV) and MERGEs them in; event_id is the primary key (enforced)."""
    name = "postgres"
    now = "now()"    # the transaction's start: one value for the whole load

    def column_type(self, f: Field) -> str:
        if f.type == cs.STRING:
            return f"VARCHAR({f.max_length})" if f.max_length else "TEXT"
        return {cs.INT: "INTEGER", cs.LONG: "BIGINT", cs.DOUBLE: "DOUBLE PRECISION",
                cs.TIMESTAMP: "TIMESTAMPTZ"}[f.type]

    def create_target(self, t: WarehouseTable) -> list[str]:
        cols = ",\n  ".join(self._column(f) for f in t.columns)
        # No index for Redshift's sort key: maintaining one costs as much as the rows' own insert
        # (bench warehouse), and the stand-in is for the load, not for query speed.
        return [f"CREATE TABLE IF NOT EXISTS {self.q(t.name)} (\n  {cols},\n  PRIMARY KEY ({KEY_COLUMN})\n)"]

    def add_column(self, t: WarehouseTable, f: Field) -> str:
        # IF NOT EXISTS: a setup that ran meanwhile (its ALTER waited for the other's lock) skips it.
        return f"ALTER TABLE {self.q(t.name)} ADD COLUMN IF NOT EXISTS {self.target_column(f)}"

    def widen(self, t: WarehouseTable, f: Field) -> str:
        # integer -> bigint rewrites the table under its lock; a longer VARCHAR only its catalog.
        return f"ALTER TABLE {self.q(t.name)} ALTER COLUMN {ident(f.name)} TYPE {self.column_type(f)}"

    def drop_not_null(self, t: WarehouseTable, f: Field) -> str:
        return f"ALTER TABLE {self.q(t.name)} ALTER COLUMN {ident(f.name)} DROP NOT NULL"

    def session(self) -> list[str]:
        """Once per connection, before any temporary table: UTC (COPY's CSV carries timestamps as
        UTC wall time), and room for the staging table in memory (temp_buffers can only be set
        before the session's first temporary table)."""
        return ["SET TIME ZONE 'UTC'", "SET temp_buffers = '256MB'", "SET jit = off"]

    def load_settings(self) -> list[str]:
        """At the start of a load's transaction: sorts and hashes of the merge in memory."""
        return ["SET LOCAL work_mem = '512MB'"]

    def create_staging(self, t: WarehouseTable) -> str:
        cols = ", ".join(self._column(f) for f in t.lake_columns)
        return f"CREATE TEMPORARY TABLE {self.staging_name(t)} ({cols}) ON COMMIT DROP"

    def copy(self, t: WarehouseTable) -> str:
        cols = ", ".join(ident(f.name) for f in t.lake_columns)
        return f"COPY {self.staging_name(t)} ({cols}) FROM STDIN (FORMAT csv)"

    def lock(self, t: WarehouseTable) -> str:
        # Loaders of one table queue here (SHARE ROW EXCLUSIVE conflicts with itself); readers don't.
        return f"LOCK TABLE {self.q(t.name)} IN SHARE ROW EXCLUSIVE MODE"

    def merge(self, t: WarehouseTable, snapshot_id: int) -> list[str]:
        stage = self.staging_name(t)
        # One row per event_id, chosen on a narrow sort (the key, the order, the row's ctid) and
        # joined back: sorting whole staged rows costs more. k has no column but `keep`, so the
        # derived SQL's unqualified names are staging's.
        return [f"MERGE INTO {self.q(t.name)} t\n"
                f"USING (SELECT {self._staged(t, 'st')} FROM {stage} st "
                f"JOIN (SELECT DISTINCT ON ({KEY_COLUMN}) ctid AS keep "
                f"FROM {stage} ORDER BY {KEY_COLUMN}, {DEDUP_ORDER}) k ON st.ctid = k.keep) s\n"
                f"ON t.{KEY_COLUMN} = s.{KEY_COLUMN}\n"
                f"WHEN NOT MATCHED THEN INSERT ({self._insert_columns(t)})\n"
                f"VALUES ({self._select_columns(t, 's', snapshot_id)})"]


class Redshift(Dialect):
    """Amazon Redshift (provisioned or Serverless) through the Data API: staging is filled by
    COPY ... FORMAT AS PARQUET straight from the lake's data files on S3; the merge is an insert
    of the rows whose event_id the target lacks (Redshift's MERGE needs a WHEN MATCHED action and
    a plain table as source; primary keys are not enforced, so this anti-join is what keeps
    event_id unique)."""
    name = "redshift"
    now = "SYSDATE"   # the transaction's start, like PostgreSQL's now()

    def column_type(self, f: Field) -> str:
        if f.type == cs.STRING:
            # VARCHAR lengths are bytes in Redshift: a contract length in characters can take 4
            # bytes each in UTF-8; an enum's values are ASCII.
            if f.enum:
                return f"VARCHAR({max(len(str(v)) for v in f.enum)})"
            if f.max_length:
                return f"VARCHAR({min(REDSHIFT_VARCHAR_MAX, f.max_length * UTF8_MAX_BYTES)})"
            return f"VARCHAR({REDSHIFT_VARCHAR_MAX})"
        return {cs.INT: "INTEGER", cs.LONG: "BIGINT", cs.DOUBLE: "DOUBLE PRECISION",
                cs.TIMESTAMP: "TIMESTAMPTZ"}[f.type]

    @staticmethod
    def encoding(f: Field) -> str:
        """RAW for the leading sort key column (zone maps work on uncompressed values there, as
        AWS advises); AZ64 for integers and timestamps; BYTEDICT for enums (few distinct values);
        ZSTD for other strings and for doubles (AZ64 does not take DOUBLE PRECISION)."""
        if f.name == SORT_KEY[0]:
            return "RAW"
        if f.type in (cs.INT, cs.LONG, cs.TIMESTAMP):
            return "AZ64"
        if f.type == cs.STRING and f.enum:
            return "BYTEDICT"
        return "ZSTD"

    def target_column(self, f: Field) -> str:
        return self._column(f, f" ENCODE {self.encoding(f)}")

    def create_target(self, t: WarehouseTable) -> list[str]:
        cols = ",\n  ".join(self.target_column(f) for f in t.columns)
        return [f"CREATE TABLE IF NOT EXISTS {self.q(t.name)} (\n  {cols},\n  PRIMARY KEY ({KEY_COLUMN})\n)\n"
                f"DISTSTYLE KEY DISTKEY ({DIST_KEY})\nCOMPOUND SORTKEY ({', '.join(SORT_KEY)})"]

    def create_staging(self, t: WarehouseTable) -> str:
        cols = ", ".join(self._column(f) for f in t.lake_columns)
        return f"CREATE TEMPORARY TABLE {self.staging_name(t)} ({cols}) DISTSTYLE KEY DISTKEY ({DIST_KEY})"

    def add_column(self, t: WarehouseTable, f: Field) -> str:
        # Redshift has no ADD COLUMN IF NOT EXISTS: evolve() adds only what information_schema lacks.
        return f"ALTER TABLE {self.q(t.name)} ADD COLUMN {self.target_column(f)}"

    def widen_refusal(self, t: WarehouseTable, f: Field) -> str:
        # Redshift changes a column's type only to a longer VARCHAR, and not inside a transaction
        # block (a Data API batch is one): left to a person.
        if f.type != cs.STRING:
            return "Redshift changes no other type in place; "
        return (f"run ALTER TABLE {self.q(t.name)} ALTER COLUMN {ident(f.name)} TYPE {self.column_type(f)} "
                "outside a transaction, then the setup again; ")

    def copy_parquet(self, t: WarehouseTable, s3_uri: str, iam_role: str) -> str:
        """One lake data file into staging. Parquet columns are matched by position: the file's
        columns were checked against the table's order first (warehouse/lake.py)."""
        if not s3_uri.startswith("s3://"):
            raise ValueError(f"Redshift COPY reads from S3 only, not {s3_uri}")
        return (f"COPY {self.staging_name(t)} FROM {literal(s3_uri)} IAM_ROLE {literal(iam_role)} "
                "FORMAT AS PARQUET")

    def lock(self, t: WarehouseTable) -> str:
        return f"LOCK {self.q(t.name)}"

    def merge(self, t: WarehouseTable, snapshot_id: int) -> list[str]:
        lake = ", ".join(ident(f.name) for f in t.lake_columns)
        src = f"src_{t.name}"
        return [f"CREATE TEMPORARY TABLE {src} DISTSTYLE KEY DISTKEY ({DIST_KEY}) AS\n"
                f"SELECT {self._staged(t)} FROM (SELECT {lake}, ROW_NUMBER() OVER (PARTITION BY {KEY_COLUMN} "
                f"ORDER BY {DEDUP_ORDER}) AS rn FROM {self.staging_name(t)}) x WHERE rn = 1",
                f"INSERT INTO {self.q(t.name)} ({self._insert_columns(t)})\n"
                f"SELECT {self._select_columns(t, 's', snapshot_id)}\n"
                f"FROM {src} s LEFT JOIN {self.q(t.name)} t ON t.{KEY_COLUMN} = s.{KEY_COLUMN}\n"
                f"WHERE t.{KEY_COLUMN} IS NULL"]

    def spectrum_schema(self, glue_database: str, iam_role: str, region: str | None = None,
                        external_schema: str = "smartcity_lake") -> str:
        """The lake's Glue database as an external schema: Spectrum reads its Iceberg tables in
        place (SELECT ... FROM smartcity_lake.gps_data), without loading them."""
        reg = f"\nREGION {literal(region)}" if region else ""
        return (f"CREATE EXTERNAL SCHEMA IF NOT EXISTS {ident(external_schema)}\n"
                f"FROM DATA CATALOG DATABASE {literal(glue_database)}\n"
                f"IAM_ROLE {literal(iam_role)}{reg}")


DIALECTS = {"postgres": Postgres, "redshift": Redshift}


def dialect(name: str, schema: str = "smartcity") -> Dialect:
    try:
        return DIALECTS[name](schema)
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}") from None


__all__ = ["Dialect", "Postgres", "Redshift", "dialect", "literal", "ident", "IncompatibleSchema",
           "STATE_TABLE", "FILES_TABLE", "REFUSED_TABLE", "WAREHOUSE_LINEAGE"]
