"""smartcity-warehouse: the lake's data tables loaded into the warehouse, incrementally, once.

  smartcity-warehouse load [--table T ...] [--lake DIR|URI] [--config TOML] [--target postgres|redshift] [--dsn CONNINFO]
  smartcity-warehouse ddl [--dialect postgres|redshift]     the warehouse's tables (from contracts/)
  smartcity-warehouse spectrum                              Redshift Spectrum's external schema over Glue

load: per table, what the lake's Iceberg table gained since the last load (the files added by its
append/overwrite snapshots; a full reconciliation when the last loaded snapshot was expired),
staged and merged on event_id with the snapshot id recorded, in one transaction. One JSON object
per table on stdout. Exit 0: loaded (or nothing to load); 1: a file was refused (its name and
column are in the output and in load_refused), the warehouse stayed unreachable, or an existing
table lacks a required column (the setup adds missing nullable ones itself); 2: usage or
settings.

Settings: defaults < --config TOML < SMARTCITY_WAREHOUSE_* < flags (warehouse/settings.py). The
password: postgres.password_file, or libpq's PGPASSWORD / ~/.pgpass; never on the command line.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from smartcity.catalog.tables import rollup_specs
from smartcity.runtime.cli import ArgumentParser, UsageError, cli
from smartcity.runtime.obs import configure_logging
from smartcity.runtime.settings import load as load_settings

from .schema import warehouse_table, warehouse_tables
from .settings import WarehouseSettings
from .sql import dialect

PROG = "smartcity-warehouse"
ENV_PREFIX = "SMARTCITY_WAREHOUSE_"

log = logging.getLogger(__name__)


def _table(value: str) -> str:
    try:
        return warehouse_table(value).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def settings(a: argparse.Namespace, environ=None, check_lake: bool = False) -> WarehouseSettings:
    """defaults < TOML < SMARTCITY_WAREHOUSE_* < flags. check_lake: a local lake folder that does
    not exist is a UsageError (a typo would otherwise load nothing, successfully)."""
    s = load_settings(WarehouseSettings, a.config, ENV_PREFIX,
                      {"lake": getattr(a, "lake", None), "target": getattr(a, "target", None)}, environ)
    if check_lake and s.lake.startswith("file://") and not Path(s.lake[len("file://"):]).is_dir():
        raise UsageError(f"lake: {s.lake[len('file://'):]} is not a folder (set --lake, `lake` in the "
                         "settings file or SMARTCITY_WAREHOUSE_LAKE)")
    return s


@cli(PROG)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load", help="load what the lake gained since the last load")
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--lake", help="lake folder or URI (file://, s3a://bucket/prefix)")
    p.add_argument("--target", choices=("postgres", "redshift"))
    p.add_argument("--dsn", help="postgres: a libpq connection string without the password "
                                 "(host=... port=... dbname=... user=...)")
    p.add_argument("--table", dest="tables", action="append", type=_table,
                   help="gps_data (or gps), ... (repeatable; default every data table; never quarantine)")
    p.add_argument("-v", "--verbose", action="store_true")
    d = sub.add_parser("ddl", help="print the warehouse's CREATE statements")
    d.add_argument("--dialect", choices=("postgres", "redshift"), default="redshift")
    d.add_argument("--schema", default="smartcity")
    sp = sub.add_parser("spectrum", help="print Redshift Spectrum's CREATE EXTERNAL SCHEMA over the Glue catalog")
    sp.add_argument("--config", help="TOML settings file ([redshift] iam_role, glue_database, region)")
    a = ap.parse_args(argv)
    if a.cmd == "ddl":
        d = dialect(a.dialect, a.schema)
        print(";\n\n".join(d.ddl(warehouse_tables()) + d.rollups(rollup_specs(), [])) + ";")
        return 0
    if a.cmd == "spectrum":
        s = settings(a)
        r = s.redshift
        print(dialect("redshift").spectrum_schema(r.glue_database, r.iam_role or "arn:aws:iam::ACCOUNT:role/ROLE",
                                                  r.region, r.external_schema) + ";")
        return 0
    configure_logging(logging.INFO if a.verbose else logging.WARNING, json=False)
    s = settings(a, check_lake=True)
    try:
        if s.target == "postgres":
            import psycopg  # noqa: F401  (the `warehouse` extra)
            from .load import PostgresWarehouse
            wh = PostgresWarehouse(s, a.dsn)
        else:
            import boto3  # noqa: F401
            from .redshift import RedshiftWarehouse
            wh = RedshiftWarehouse(s)
    except ImportError as e:
        raise UsageError(f"{e.name} is not installed: pip install 'smartcity[warehouse]'") from None
    except ValueError as e:
        raise UsageError(e) from None
    from .load import WarehouseDown
    from .sql import IncompatibleSchema
    try:
        results = wh.load(a.tables)
    except (WarehouseDown, IncompatibleSchema) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(json.dumps(r.as_dict(), sort_keys=True))
    refused = [x for r in results for x in r.refused]
    for x in refused:
        print(f"{PROG}: refused {x['file']}: column {x['column']}: {x['error']}", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
