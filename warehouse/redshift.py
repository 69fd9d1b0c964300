"""The load into Amazon Redshift through the Redshift Data API (boto3 `redshift-data`): no driver,
no network path to the cluster, IAM for everything.

    api = DataApi(settings.redshift)            # Serverless: workgroup; provisioned: cluster_id
    api.query("SELECT 1")                       # execute_statement, describe_statement polling,
                                                # get_statement_result (all pages) -> rows
    api.run_batch([sql, sql, ...])              # batch_execute_statement: ONE transaction

A table's load is one batch, so one transaction: LOCK the target, a temporary staging table,
`COPY staging FROM 's3://...' IAM_ROLE ... FORMAT AS PARQUET` per added data file (Redshift reads
the lake's files straight from S3), the insert of the rows whose event_id the target lacks, the
load-state rows. The plan (which files) is made here from the lake's catalog, as for PostgreSQL
(warehouse/lake.py), with each file's Parquet footer checked first: COPY matches Parquet columns
by position, so a file with a missing, retyped or reordered column is refused before any COPY.

A batch holds at most BATCH_LIMIT statements: a load with more files is split into several
batches, each its own transaction that inserts only missing event_ids, and only the last one
records the snapshot; a kill between two batches leaves rows without their state row, and the
re-run's anti-join skips them (exactly once per event_id still holds, "all in one transaction"
then holds per batch).

Tests run this against moto's server for the API's shape only (tests/test_warehouse.py): moto
records statements but runs no SQL, never finishes them and has no batch_execute_statement.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from smartcity.catalog.reader import load_table
from smartcity.catalog.tables import rollup_specs

from .lake import FileSchemaError, check_file_schema, plan
from .load import TableResult, fault_point, tables_to_load, with_retries
from .schema import WarehouseTable, warehouse_tables
from .settings import Redshift as RedshiftSettings, WarehouseSettings
from .sql import Redshift

log = logging.getLogger(__name__)

BATCH_LIMIT = 40            # the Data API's most statements per batch_execute_statement
DONE = {"FINISHED"}
FAILED = {"FAILED", "ABORTED"}


class DataApiError(RuntimeError):
    pass


class DataApi:
    def __init__(self, r: RedshiftSettings, client=None):
        r.check()
        self.r = r
        if client is None:
            import boto3
            client = boto3.client("redshift-data", region_name=r.region, endpoint_url=r.endpoint)
        self.client = client

    def _target(self) -> dict[str, str]:
        r = self.r
        kw = {"Database": r.database}
        kw.update({"WorkgroupName": r.workgroup} if r.workgroup else {"ClusterIdentifier": r.cluster_id})
        kw.update({"SecretArn": r.secret_arn} if r.secret_arn else {"DbUser": r.db_user})
        return kw

    def execute(self, sql: str) -> str:
        return self.client.execute_statement(Sql=sql, **self._target())["Id"]

    def batch(self, sqls: list[str]) -> str:
        if not 1 <= len(sqls) <= BATCH_LIMIT:
            raise ValueError(f"a batch holds 1 to {BATCH_LIMIT} statements, not {len(sqls)}")
        return self.client.batch_execute_statement(Sqls=sqls, **self._target())["Id"]

    def wait(self, statement_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """describe_statement until FINISHED; DataApiError on FAILED/ABORTED (with Redshift's error)
        or after the timeout (naming the statement and its last status)."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.r.statement_timeout_s)
        while True:
            d = self.client.describe_statement(Id=statement_id)
            status = d.get("Status")
            if status in DONE:
                return d
            if status in FAILED:
                raise DataApiError(f"statement {statement_id} {status.lower()}: {d.get('Error', '?')}")
            if time.monotonic() >= deadline:
                raise DataApiError(f"statement {statement_id} still {status} after the timeout")
            time.sleep(self.r.poll_s)

    def rows(self, statement_id: str) -> list[list[Any]]:
        """get_statement_result, every page, each field as a Python value (None for isNull)."""
        out, token = [], None
        while True:
            kw = {"Id": statement_id, **({"NextToken": token} if token else {})}
            page = self.client.get_statement_result(**kw)
            out += [[_value(f) for f in rec] for rec in page.get("Records", [])]
            token = page.get("NextToken")
            if not token:
                return out

    def query(self, sql: str) -> list[list[Any]]:
        sid = self.execute(sql)
        d = self.wait(sid)
        return self.rows(sid) if d.get("HasResultSet") else []

    def run_batch(self, sqls: list[str]) -> dict[str, Any]:
        return self.wait(self.batch(sqls))


def _value(f: dict[str, Any]) -> Any:
    if f.get("isNull"):
        return None
    for k in ("longValue", "doubleValue", "stringValue", "booleanValue", "blobValue"):
        if k in f:
            return f[k]
    return None


class RedshiftWarehouse:
    """The same load as PostgresWarehouse, in Redshift's SQL, through the Data API."""

    def __init__(self, s: WarehouseSettings, api: DataApi | None = None):
        if not s.redshift.iam_role:
            raise ValueError("redshift.iam_role: COPY needs a role that may read the lake on S3")
        self.s = s
        self.sql = Redshift(s.schema)
        self.api = api or DataApi(s.redshift)

    @staticmethod
    def is_transient(e: BaseException) -> bool:
        from botocore.exceptions import ConnectionError as BotoConnectionError, EndpointConnectionError
        return isinstance(e, (BotoConnectionError, EndpointConnectionError))

    def ddl(self) -> list[str]:
        return self.sql.ddl(warehouse_tables())

    def ensure_schema(self) -> None:
        # Each table's evolution one batch, so one transaction: its columns added and filled, or
        # neither (a column that exists is never filled again: Dialect.evolve).
        existing = self.api.query(self.sql.existing_columns())
        for stmts in self.sql.evolve(warehouse_tables(), existing):
            self.api.run_batch(stmts)
        stmts = self.ddl() + self.sql.rollups(rollup_specs(), existing)
        for i in range(0, len(stmts), BATCH_LIMIT):
            self.api.run_batch(stmts[i:i + BATCH_LIMIT])

    def spectrum(self) -> str:
        r = self.s.redshift
        return self.sql.spectrum_schema(r.glue_database, r.iam_role or "arn:aws:iam::ACCOUNT:role/ROLE",
                                        r.region, r.external_schema)

    def load(self, tables: Iterable[str] | None = None) -> list[TableResult]:
        self.ensure_schema()
        return [with_retries(f"load {t.name}", lambda t=t: self.load_table(t), self.is_transient)
                for t in tables_to_load(tables)]

    def statements(self, t: WarehouseTable, last: int | None) -> tuple[TableResult, list[list[str]]]:
        """The plan of one table as batches of SQL (the last one records the snapshot)."""
        r = TableResult(t.name, last_snapshot_id=last, snapshot_id=last, rows_loaded=None)
        lake_table = load_table(self.s, t.name)
        if lake_table is None:
            return r, []
        p = plan(lake_table, t.name, last)
        r.mode, r.snapshot_id, r.skipped_snapshots = p.mode, p.snapshot_id, p.skipped
        if p.mode == "none":
            return r, []
        copies, loaded, refused = [], [], []
        for f in p.files:
            try:
                check_file_schema(lake_table, f, t.lake_columns)
            except FileSchemaError as e:
                refused.append((f.snapshot_id, f.path, str(e)))
                r.refused.append({"file": e.path, "column": e.column, "error": str(e)})
                continue
            copies.append(self.sql.copy_parquet(t, f.path, self.s.redshift.iam_role))
            loaded.append((f.snapshot_id, f.path, f.record_count))
        r.files, r.rows_read = len(loaded), sum(n for _, _, n in loaded)
        head = [self.sql.lock(t), self.sql.create_staging(t)]
        merge = self.sql.merge(t, p.snapshot_id)
        record = self.sql.record(t, p.snapshot_id, p.mode, loaded, refused, r.rows_read, None)
        room = BATCH_LIMIT - len(head) - len(merge) - len(record)
        if room < 1:
            raise ValueError(f"{t.name}: the load-state statements alone exceed a batch ({len(record)})")
        batches = []
        for i in range(0, max(len(copies), 1), room):
            batches.append(head + copies[i:i + room] + merge)
        batches[-1] = batches[-1] + record
        return r, batches

    def load_table(self, t: WarehouseTable) -> TableResult:
        t0 = time.monotonic()
        rows = self.api.query(self.sql.read_state(t))
        last = int(rows[0][0]) if rows and rows[0][0] is not None else None
        r, batches = self.statements(t, last)
        for i, b in enumerate(batches):
            if i == len(batches) - 1:
                fault_point(f"before-commit:{t.name}")
            self.api.run_batch(b)
        r.seconds = round(time.monotonic() - t0, 3)
        log.info("warehouse: table loaded", extra={"result": r.as_dict(), "batches": len(batches)})
        return r
