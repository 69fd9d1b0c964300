"""What a lake table gained since the warehouse last loaded it, and its data files as rows.

`plan(table, last_snapshot_id)` walks the current snapshot's ancestry back to the last loaded
snapshot and collects the data files ADDED by each snapshot in between whose operation adds rows:

- append (the stream's MERGE ... WHEN NOT MATCHED INSERT and plain appends): new rows, late data
  in an old day partition included (the file is new whatever partition it lands in);
- overwrite (a copy-on-write MERGE/UPDATE/DELETE rewrote files): the rewritten files carry old
  rows again besides any new ones; loading them is harmless, the merge on event_id skips the rows
  the warehouse has;
- replace (compaction: rewrite_data_files, rewrite_manifests) adds files with exactly the rows of
  the files it removed: nothing new, skipped;
- delete: removes rows; the warehouse keeps them (it is append-only, like the stream).

When the last loaded snapshot is no longer in the ancestry (expired by maintenance, or the table
was replaced) the plan is a full reconciliation: every data file of the current snapshot, merged
on event_id, so nothing is loaded twice and nothing is missed. A table with no snapshot yet plans
nothing.

`read_file` reads one data file with pyarrow (through the table's FileIO: a local lake or S3),
checks its columns against the table's (catalog/tables.py: names, logical types, required), fills
identity-partition values the file lacks from the manifest entry and a missing optional column
with nulls (Iceberg's own rules), and returns the columns in the table's order and canonical
types. A file that does not fit raises FileSchemaError naming the file and the column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from smartcity.contracts import schema as cs
from smartcity.contracts.schema import Field

if TYPE_CHECKING:
    from pyiceberg.table import Table

ROW_OPERATIONS = ("append", "overwrite")
ARROW_TYPES: dict[str, pa.DataType] = {
    cs.STRING: pa.string(),
    cs.INT: pa.int32(),
    cs.LONG: pa.int64(),
    cs.DOUBLE: pa.float64(),
    cs.TIMESTAMP: pa.timestamp("us", tz="UTC"),
}
# What a file may hold for a logical type: the type itself or what Iceberg widens to it.
_ACCEPTED = {
    cs.STRING: (pa.types.is_string, pa.types.is_large_string),
    cs.INT: (lambda t: t == pa.int32() or t == pa.int16() or t == pa.int8(),),
    cs.LONG: (lambda t: t in (pa.int64(), pa.int32(), pa.int16(), pa.int8()),),
    cs.DOUBLE: (lambda t: t in (pa.float64(), pa.float32()),),
    cs.TIMESTAMP: (lambda t: pa.types.is_timestamp(t) and t.tz is not None,),
}


class FileSchemaError(ValueError):
    """A lake data file whose columns do not fit the table."""

    def __init__(self, path: str, column: str, problem: str):
        self.path, self.column, self.problem = path, column, problem
        super().__init__(f"{path}: column {column}: {problem}")


@dataclass(frozen=True)
class DataFile:
    path: str
    snapshot_id: int             # the snapshot that added it (full: the current one)
    record_count: int
    size_bytes: int
    partition: dict = field(default_factory=dict, hash=False, compare=False)   # identity values


@dataclass
class Plan:
    table: str
    last_snapshot_id: int | None     # what the warehouse had loaded
    snapshot_id: int | None          # what it will have loaded (the current snapshot)
    mode: str                        # "incremental" | "full" | "none"
    files: list[DataFile]
    skipped: dict[str, int] = field(default_factory=dict)   # operation -> snapshots skipped

    @property
    def records(self) -> int:
        return sum(f.record_count for f in self.files)


def _identity_partition(table: "Table", partition) -> dict:
    """Values of the spec's identity fields from a manifest entry's partition record."""
    out = {}
    spec = table.spec()
    for i, pf in enumerate(spec.fields):
        if str(pf.transform) == "identity":
            name = table.schema().find_field(pf.source_id).name
            try:
                out[name] = partition[i]
            except (IndexError, TypeError):
                continue
    return out


def added_data_files(table: "Table", snapshot) -> list[DataFile]:
    """The data files (not delete files) this snapshot ADDED, from its own manifests."""
    from pyiceberg.manifest import DataFileContent, ManifestContent, ManifestEntryStatus
    out = []
    for m in snapshot.manifests(table.io):
        if m.content != ManifestContent.DATA or m.added_snapshot_id != snapshot.snapshot_id:
            continue
        for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
            if e.status != ManifestEntryStatus.ADDED or e.data_file.content != DataFileContent.DATA:
                continue
            if e.snapshot_id is not None and e.snapshot_id != snapshot.snapshot_id:
                continue
            df = e.data_file
            out.append(DataFile(df.file_path, snapshot.snapshot_id, df.record_count,
                                df.file_size_in_bytes, _identity_partition(table, df.partition)))
    return out


def current_data_files(table: "Table") -> list[DataFile]:
    """Every data file of the current snapshot (a full reconciliation)."""
    snap = table.current_snapshot()
    if snap is None:
        return []
    return [DataFile(t.file.file_path, snap.snapshot_id, t.file.record_count, t.file.file_size_in_bytes,
                     _identity_partition(table, t.file.partition))
            for t in table.scan(snapshot_id=snap.snapshot_id).plan_files()]


def plan(table: "Table", name: str, last_snapshot_id: int | None) -> Plan:
    current = table.current_snapshot()
    if current is None:
        return Plan(name, last_snapshot_id, last_snapshot_id, "none", [])
    if current.snapshot_id == last_snapshot_id:
        return Plan(name, last_snapshot_id, last_snapshot_id, "none", [])
    if last_snapshot_id is None:
        # The first load: the current snapshot's files (older snapshots may have been expired,
        # and compaction has folded their files into fewer).
        return Plan(name, None, current.snapshot_id, "full", current_data_files(table))
    chain, snap = [], current
    while snap is not None and snap.snapshot_id != last_snapshot_id:
        chain.append(snap)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    if snap is None:
        # The last loaded snapshot left the ancestry (expired, or the table was rewritten).
        return Plan(name, last_snapshot_id, current.snapshot_id, "full", current_data_files(table))
    files: list[DataFile] = []
    skipped: dict[str, int] = {}
    for s in reversed(chain):        # oldest first
        op = s.summary.operation.value if s.summary is not None else "append"
        if op not in ROW_OPERATIONS:
            skipped[op] = skipped.get(op, 0) + 1
            continue
        files += added_data_files(table, s)
    return Plan(name, last_snapshot_id, current.snapshot_id, "incremental", files, skipped)


def _check_columns(path: str, schema: pa.Schema, columns: tuple[Field, ...], partition: dict) -> None:
    """FileSchemaError for a required column the file lacks (and no partition value fills) or a
    column whose type is neither the table's nor a widening of it."""
    for c in columns:
        if c.name not in schema.names:
            if c.name not in partition and not c.nullable:
                raise FileSchemaError(path, c.name, "missing (a required column of the table)")
            continue
        typ = schema.field(c.name).type
        if not any(ok(typ) for ok in _ACCEPTED[c.type]):
            raise FileSchemaError(path, c.name, f"type {typ}, the table's is {c.type} ({ARROW_TYPES[c.type]})")


def _conform(batch: pa.RecordBatch, f: DataFile, columns: tuple[Field, ...]) -> pa.Table:
    n = batch.num_rows
    out = []
    for c in columns:
        want = ARROW_TYPES[c.type]
        if c.name not in batch.schema.names:
            out.append(pa.array([f.partition[c.name]] * n, want) if c.name in f.partition else pa.nulls(n, want))
            continue
        col = batch.column(c.name)
        if not c.nullable and col.null_count:
            raise FileSchemaError(f.path, c.name, f"{col.null_count} nulls in a required column")
        out.append(col.cast(want) if col.type != want else col)
    return pa.Table.from_arrays(out, names=[c.name for c in columns])


def read_batches(table: "Table", f: DataFile, columns: tuple[Field, ...],
                 batch_rows: int = 65536) -> Iterator[pa.Table]:
    """The file's rows as `columns` (names and canonical types, in order), batch_rows at a time,
    read with pyarrow through the table's FileIO. The footer is checked before the first batch
    (FileSchemaError: a required column missing, a type that is not the table's or a widening of
    it); a null in a required column raises when its batch is read."""
    with table.io.new_input(f.path).open() as fh:
        pf = pq.ParquetFile(fh)
        schema = pf.schema_arrow
        _check_columns(f.path, schema, columns, f.partition)
        present = [c.name for c in columns if c.name in schema.names]
        for batch in pf.iter_batches(batch_size=batch_rows, columns=present):
            yield _conform(batch, f, columns)


def read_file(table: "Table", f: DataFile, columns: tuple[Field, ...]) -> pa.Table:
    """read_batches, whole."""
    parts = list(read_batches(table, f, columns))
    if not parts:
        return pa.Table.from_arrays([pa.array([], ARROW_TYPES[c.type]) for c in columns],
                                    names=[c.name for c in columns])
    return pa.concat_tables(parts)


def check_file_schema(table: "Table", f: DataFile, columns: tuple[Field, ...]) -> None:
    """The footer-only check of read_file, plus the order Redshift's Parquet COPY relies on (it
    matches columns by position)."""
    with table.io.new_input(f.path).open() as fh:
        schema = pq.read_schema(fh)
    names = schema.names
    for c in columns:
        if c.name not in names:
            raise FileSchemaError(f.path, c.name, "missing (Redshift's COPY needs every column)")
        if not any(ok(schema.field(c.name).type) for ok in _ACCEPTED[c.type]):
            raise FileSchemaError(f.path, c.name, f"type {schema.field(c.name).type}, the table's is {c.type}")
    if names[:len(columns)] != [c.name for c in columns]:
        raise FileSchemaError(f.path, next(a for a, b in zip(names, [c.name for c in columns]) if a != b),
                              "out of the table's column order (Redshift's Parquet COPY is positional)")
