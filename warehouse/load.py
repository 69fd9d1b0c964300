"""The incremental, idempotent load of the lake's data tables into the warehouse.

Per table, in ONE database transaction:

1. lock the target table (loaders of one table queue; readers are not blocked) and read the last
   loaded lake snapshot id from the load-state table;
2. plan what the lake table gained since then (warehouse/lake.py: the data files added by append
   and overwrite snapshots in the current snapshot's ancestry; a full reconciliation when that
   snapshot has left the ancestry);
3. fill a temporary staging table: PostgreSQL, each file read with pyarrow and streamed with
   COPY ... FROM STDIN (CSV written by pyarrow, never row-by-row INSERTs); Redshift, COPY ...
   FORMAT AS PARQUET of each file on S3 (warehouse/redshift.py);
4. merge staging into the target on event_id (a row whose event_id the target has is not
   inserted; an event_id twice in staging goes in once);
5. record the snapshot id, the files loaded and the files refused, then commit.

Before the tables, the setup (`ensure_schema`, one transaction) creates what is missing and
evolves target tables created before a column existed (warehouse/sql.py, Dialect.evolve).

So a second run loads nothing, a kill -9 anywhere before the commit leaves the warehouse as it was
(the next run does the same work again), and a kill after it leaves nothing to redo. A file whose
columns do not fit the table is refused (FileSchemaError names file and column), recorded in
load_refused, reported, and the rest of the table loads. A database that is down or drops the
connection gets RETRIES attempts with doubling back-off, then WarehouseDown; a transaction cut
short is rolled back by the server, never half-applied.
"""
from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from smartcity.catalog.reader import load_table
from smartcity.catalog.tables import rollup_specs
from smartcity.runtime.postgres import connect

from .lake import FileSchemaError, Plan, plan, read_batches
from .schema import WarehouseTable, warehouse_tables
from .settings import WarehouseSettings
from .sql import Postgres

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

RETRIES = 4                 # attempts in all for a database that is down or drops the connection
BACKOFF_S = 1.0             # doubled after each failed attempt
COPY_BATCH_ROWS = 65536     # rows per CSV chunk written to COPY
PAUSE_ENV, PAUSE_FILE_ENV = "SMARTCITY_WAREHOUSE_TEST_PAUSE_AT", "SMARTCITY_WAREHOUSE_TEST_PAUSE_FILE"


class WarehouseDown(RuntimeError):
    """The warehouse could not be reached (or kept dropping the connection) after the retries."""


def fault_point(where: str) -> None:
    """Test hook of the crash tests: SMARTCITY_WAREHOUSE_TEST_PAUSE_AT=WHERE makes the loader
    announce itself (the file SMARTCITY_WAREHOUSE_TEST_PAUSE_FILE, holding its pid) and hang there,
    so a test can kill -9 it at exactly that point. WHERE: `after-copy:<table>` (staging filled,
    nothing merged), `before-commit:<table>` (merged and recorded, not committed). Unset in
    production."""
    at, flag = os.environ.get(PAUSE_ENV), os.environ.get(PAUSE_FILE_ENV)
    if at == where and flag and not os.path.exists(flag):
        with open(flag, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(3600)


@dataclass
class TableResult:
    table: str
    mode: str = "none"                  # none | incremental | full
    last_snapshot_id: int | None = None
    snapshot_id: int | None = None
    files: int = 0                      # files loaded
    rows_read: int = 0                  # rows staged (what the files held)
    rows_loaded: int | None = 0         # rows the merge inserted (None: not counted here)
    skipped_snapshots: dict[str, int] = field(default_factory=dict)
    refused: list[dict] = field(default_factory=list)   # {"file", "column", "error"}
    attempts: int = 1
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def tables_to_load(names: Iterable[str] | None) -> list[WarehouseTable]:
    tables = warehouse_tables()
    if names is None:
        return tables
    wanted = list(dict.fromkeys(names))
    return [t for t in tables if t.name in wanted]


def with_retries(what: str, fn: Callable[[], TableResult], is_transient: Callable[[BaseException], bool],
                 retries: int = RETRIES, backoff_s: float = BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep) -> TableResult:
    """fn() again after a transient failure (the database down, the connection dropped), waiting
    backoff_s, 2*backoff_s, ...; WarehouseDown after `retries` attempts in all."""
    delay = backoff_s
    for attempt in range(1, retries + 1):
        try:
            r = fn()
            r.attempts = attempt
            return r
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == retries:
                raise WarehouseDown(f"{what}: the warehouse is unreachable after {retries} attempts: "
                                    f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e
            log.warning("warehouse: unreachable, retrying", extra={"what": what, "attempt": attempt,
                                                                  "retry_in_s": delay, "error": str(e)[:300]})
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


# ---- PostgreSQL -------------------------------------------------------------------------------

def _csv_chunks(data) -> Iterable[bytes]:
    """pyarrow's CSV of the rows (no header; every non-null value quoted, so an empty string stays
    one and an unquoted empty field is NULL for COPY's CSV format). Timestamps are written without
    their zone, as UTC wall time (the loader's session is in UTC): pyarrow formats a zoned
    timestamp some 20 times slower."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    opts = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    schema = pa.schema([f.with_type(pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) else f
                        for f in data.schema])
    for batch in data.cast(schema).to_batches():
        buf = io.BytesIO()
        pacsv.write_csv(batch, buf, opts)
        yield buf.getvalue()


def _prefetch(items: Iterable, depth: int = 4) -> Iterator:
    """items, produced by a worker thread up to `depth` ahead (reading a file and writing its CSV,
    in pyarrow without the GIL, overlap the server's COPY of the previous chunk). A consumer that
    stops early (an error) makes the worker stop too: it never blocks on a full queue for good."""
    q: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in items:
                if not put(x):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()     # a generator's files are closed in this thread, where it runs
    threading.Thread(target=work, name="warehouse-csv", daemon=True).start()
    try:
        while True:
            x = q.get()
            if x is done:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()


class PostgresWarehouse:
    """The load into PostgreSQL 15+ (psycopg 3)."""

    def __init__(self, s: WarehouseSettings, conninfo: str | None = None):
        self.s = s
        self.sql = Postgres(s.schema)
        self.conninfo = conninfo or s.postgres.conninfo()
        self.password = s.postgres.secret()

    def connect(self) -> "psycopg.Connection":
        return connect(self.conninfo, self.password, self.sql.session())

    @staticmethod
    def is_transient(e: BaseException) -> bool:
        import psycopg
        return isinstance(e, psycopg.OperationalError)

    def ensure_schema(self) -> None:
        """The schema, target and load-state tables (IF NOT EXISTS), existing target tables first
        evolved to the contracts' columns (Dialect.evolve: IncompatibleSchema for a missing
        required one), in one transaction."""
        def run() -> TableResult:
            tables = warehouse_tables()
            with self.connect() as conn:
                with conn.transaction():
                    existing = conn.execute(self.sql.existing_columns()).fetchall()
                    evolve = self.sql.evolve(tables, existing)
                    for stmt in ([s for stmts in evolve for s in stmts] + self.sql.ddl(tables)
                                 + self.sql.rollups(rollup_specs(), existing)):
                        conn.execute(stmt)
            return TableResult("(schema)")
        with_retries("create the warehouse schema", run, self.is_transient)

    def load(self, tables: Iterable[str] | None = None) -> list[TableResult]:
        self.ensure_schema()
        out = []
        for t in tables_to_load(tables):
            r = with_retries(f"load {t.name}", lambda t=t: self.load_table(t), self.is_transient)
            out.append(r)
            log.info("warehouse: table loaded", extra={"result": r.as_dict()})
        return out

    def load_table(self, t: WarehouseTable) -> TableResult:
        t0 = time.monotonic()
        r = TableResult(t.name)
        try:
            return self._load_table(t, r)
        finally:
            r.seconds = round(time.monotonic() - t0, 3)

    def _load_table(self, t: WarehouseTable, r: TableResult) -> TableResult:
        lake_table = load_table(self.s, t.name)
        loaded: list = []
        with self.connect() as conn:
            with conn.transaction():
                for stmt in self.sql.load_settings():
                    conn.execute(stmt)
                conn.execute(self.sql.lock(t))
                row = conn.execute(self.sql.read_state(t)).fetchone()
                last = row[0] if row else None
                if lake_table is None:   # the lake job has not created it yet
                    r.last_snapshot_id = r.snapshot_id = last
                    return r
                p = plan(lake_table, t.name, last)
                r.mode, r.last_snapshot_id, r.snapshot_id = p.mode, p.last_snapshot_id, p.snapshot_id
                r.skipped_snapshots = p.skipped
                if p.mode == "none":
                    return r
                loaded, refused = self._stage(conn, lake_table, t, p, r)
                fault_point(f"after-copy:{t.name}")
                cur = conn.execute(self.sql.merge(t, p.snapshot_id)[0])
                r.rows_loaded = cur.rowcount
                for stmt in self.sql.record(t, p.snapshot_id, p.mode, loaded, refused, r.rows_read, r.rows_loaded):
                    conn.execute(stmt)
                fault_point(f"before-commit:{t.name}")
        r.files = len(loaded)
        return r

    def _stage(self, conn, lake_table, t: WarehouseTable, p: Plan, r: TableResult):
        """Each planned file into staging, batch by batch, under a savepoint of its own: a file
        refused part-way (a null in a required column found in a later batch) leaves nothing."""
        conn.execute(self.sql.create_staging(t))
        loaded, refused = [], []
        with conn.cursor() as cur:
            for f in p.files:
                rows = 0
                try:
                    with conn.transaction():      # SAVEPOINT
                        with cur.copy(self.sql.copy(t)) as copy:
                            parts = ((part.num_rows, list(_csv_chunks(part)))
                                     for part in read_batches(lake_table, f, t.lake_columns, COPY_BATCH_ROWS))
                            for n, chunks in _prefetch(parts):
                                for chunk in chunks:
                                    copy.write(chunk)
                                rows += n
                except FileSchemaError as e:
                    refused.append((f.snapshot_id, f.path, str(e)))
                    r.refused.append({"file": e.path, "column": e.column, "error": str(e)})
                    log.error("warehouse: lake file refused", extra={"table": t.name, "file": e.path,
                                                                     "column": e.column, "problem": e.problem})
                    continue
                r.rows_read += rows
                loaded.append((f.snapshot_id, f.path, rows))
        return loaded, refused

    def counts(self) -> dict[str, int]:
        """Rows per target table (tests, the benchmark)."""
        with self.connect() as conn:
            return {t.name: conn.execute(f"SELECT count(*) FROM {self.sql.q(t.name)}").fetchone()[0]
                    for t in warehouse_tables()}
