"""python -m bench warehouse [--devices N] [--days N] [--hours-per-day H] [--lake DIR] [--keep]:
the warehouse load (warehouse/load.py) of a generated fleet lake into a real local PostgreSQL 15
(deploy/local/postgres.py). Defaults: 100 vehicles x 2 days x 9.2 h, ~10.1 million rows over the
five data tables (GPS 1 Hz, OBD 0.5 Hz, ...), written by the lake job's own Spark code
(tests/support/fleet_lake.py) in a child process; `--devices 4 --days 1 --hours-per-day 1` is the
quick run.

- rows: rows the first load put into the warehouse (every data table, a full load);
- load_s, load_rows_per_s: its wall time and rate (each file read with pyarrow, written as CSV,
  COPY ... FROM STDIN into staging, MERGE on event_id, the state rows, one transaction per table);
- rerun_s: the second load, which finds nothing new (reads each table's snapshot, plans nothing);
- per_table: rows and seconds of the first load per table;
- lake_write_s: the Spark child that wrote the lake (not part of the load).
The lake and the database live in a temporary folder, removed at the end unless --keep.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from smartcity.runtime.cli import ArgumentParser


def run(argv: list[str]) -> dict:
    ap = ArgumentParser(prog="python -m bench warehouse")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--hours-per-day", type=float, default=9.2)
    ap.add_argument("--lake", type=Path, help="load this lake instead of generating one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (lake, database)")
    a = ap.parse_args(argv)
    from deploy.local.postgres import PostgresServer
    from smartcity.warehouse.load import PostgresWarehouse
    from smartcity.warehouse.settings import WarehouseSettings
    from tests.support.fleet_lake import generate

    work = Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    os.chmod(work, 0o711)   # as root the server runs as `postgres`, which must pass through
    out: dict = {"devices": a.devices, "days": a.days, "hours_per_day": a.hours_per_day}
    try:
        lake = a.lake
        if lake is None:
            t0 = time.monotonic()
            lake = work / "lake"
            out["generated"] = generate(lake, devices=a.devices, days=a.days, hours_per_day=a.hours_per_day,
                                        staging=work / "staging")
            out["lake_write_s"] = round(time.monotonic() - t0, 1)
            shutil.rmtree(work / "staging", ignore_errors=True)
        with PostgresServer(work / "pg") as pg:
            s = WarehouseSettings(lake=str(lake))
            s.postgres.port, s.postgres.password = pg.port, pg.password
            wh = PostgresWarehouse(s)
            t0 = time.monotonic()
            first = wh.load()
            load_s = time.monotonic() - t0
            t0 = time.monotonic()
            second = wh.load()
            rerun_s = time.monotonic() - t0
            rows = sum(r.rows_loaded or 0 for r in first)
            out.update(rows=rows, load_s=round(load_s, 2), load_rows_per_s=round(rows / load_s),
                       rerun_s=round(rerun_s, 2), rerun_rows=sum(r.rows_loaded or 0 for r in second),
                       per_table={r.table: {"rows": r.rows_loaded, "files": r.files, "seconds": r.seconds}
                                  for r in first},
                       warehouse_counts=wh.counts())
        for k, v in out.items():
            if k not in ("per_table", "generated", "warehouse_counts"):
                print(f"{k}: {v}", flush=True)
        return out
    finally:
        if a.keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
