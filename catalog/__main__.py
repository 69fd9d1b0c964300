"""smartcity-catalog: what the lake's Iceberg catalog holds, and its drift from contracts/.

  smartcity-catalog show [--table T ...] [--format text|json|ddl] [--lake DIR|URI] [--config TOML]
  smartcity-catalog diff [--table T ...] [--format text|json]     [--lake DIR|URI] [--config TOML]

show: per table, its columns (name, Iceberg type, required, doc), partition spec, sort order,
current snapshot (id, time), snapshots kept, data files, records and bytes (the snapshot's
summary) and metadata file; --format ddl prints the CREATE TABLE an Athena user would run.
diff: one line per difference between contracts/ and the catalog, each saying what to do; exit
status 0 when there is none, 1 when there is drift, 2 for a usage or settings mistake.

Read-only, no Spark: pyiceberg on the catalog (a SQLite catalog file is opened read-only).
Settings: the lake job's (one file serves both): defaults < --config TOML (its lake, [s3] and
[catalog]; the job's other keys are ignored) < SMARTCITY_LAKE_* environment < flags.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
import logging
import sys

from smartcity.runtime.cli import ArgumentParser, UsageError, cli
from smartcity.runtime.obs import configure_logging
from smartcity.runtime.settings import load

from .location import LakeLocation, _local_path, pyiceberg_properties
from .tables import table_name, table_names

PROG = "smartcity-catalog"
# The lake job's prefix (spark_jobs/settings.py): one configuration for the job and this command.
ENV_PREFIX = "SMARTCITY_LAKE_"
DOC_WIDTH = 72
REMEDY_LABELS = {"evolve": "fixed by `smartcity-lake tables`", "incompatible": "incompatible",
                 "deliberate": "deliberate"}

log = logging.getLogger(__name__)


def _table(value: str) -> str:
    try:
        return table_name(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def settings(config: str | None, lake: str | None, environ=None) -> LakeLocation:
    """The lake's location: defaults < TOML (the lake job's file: keys it alone has are
    skipped) < SMARTCITY_LAKE_* < --lake. A local lake folder that does not exist, or a catalog
    pyiceberg cannot open, is a UsageError."""
    s = load(LakeLocation, config, ENV_PREFIX, {"lake": lake}, environ, known_only=True)
    folder = _local_path(s.lake)
    if folder is not None and not folder.is_dir():
        raise UsageError(f"lake: {folder} is not a folder (set --lake, `lake` in the settings file "
                         "or SMARTCITY_LAKE_LAKE)")
    try:
        pyiceberg_properties(s)
    except ValueError as e:
        raise UsageError(e) from None
    return s


def _column_lines(columns: list[dict]) -> list[str]:
    w = max(len(c["name"]) for c in columns)
    tw = max(len(c["type"]) for c in columns)
    out = []
    for c in columns:
        doc = c["doc"] or ""
        if len(doc) > DOC_WIDTH:
            doc = doc[:DOC_WIDTH - 3] + "..."
        out.append(f"    {c['name']:<{w}}  {c['type']:<{tw}}  {'required' if c['required'] else 'optional'}"
                   f"  {doc}".rstrip())
    return out


def _plural(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def show_text(t: dict) -> str:
    if not t["exists"]:
        return f"{t['table']}: not in the catalog (run `smartcity-lake tables` to create it)"
    if t["snapshot_id"] is None:
        snap = "no snapshot yet (no commit since it was created)"
    else:
        snap = (f"snapshot {t['snapshot_id']} at {t['snapshot_time']} ({t['snapshot_operation'] or '?'}); "
                f"{_plural(t['snapshots'], 'snapshot')} kept; {_plural(t['data_files'], 'data file')}, "
                f"{_plural(t['records'], 'record')}, {_plural(t['bytes'], 'byte')}")
    lines = [f"{t['table']}" + (f"  ({t['comment']})" if t["comment"] else ""),
             f"  {snap}",
             f"  partitioned by {', '.join(t['partition_by']) or 'nothing'}; "
             f"sort order {', '.join(t['sort_order']) or 'none'}; format version {t['format_version']}",
             f"  location  {t['location']}",
             f"  metadata  {t['metadata_location']}",
             f"  {len(t['columns'])} columns:",
             *_column_lines(t["columns"])]
    return "\n".join(lines)


@cli(PROG)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, formats, help_ in (
            ("show", ("text", "json", "ddl"), "what the catalog holds: tables, columns, partitions, snapshots, sizes"),
            ("diff", ("text", "json"), "drift between contracts/ and the catalog (exit 1 when there is some)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="TOML settings file (the lake job's)")
        p.add_argument("--lake", help="lake folder or URI (file://, s3a://bucket/prefix)")
        p.add_argument("--table", dest="tables", action="append", type=_table,
                       help="a table: gps_data (or gps), ..., quarantine (repeatable; default: all)")
        p.add_argument("--format", choices=formats, default="text",
                       help="text (default), json (one object per line)"
                       + (", ddl (Athena CREATE TABLE)" if "ddl" in formats else ""))
        p.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    configure_logging(logging.INFO if a.verbose else logging.WARNING, json=False)
    s = settings(a.config, a.lake)
    try:
        from . import inspect
        import pyiceberg  # noqa: F401  (the `lake` extra)
    except ImportError as e:
        raise UsageError(f"{e.name} is not installed: pip install 'smartcity[lake]'") from None
    log.info("reading catalog", extra={"cmd": a.cmd, "catalog": s.catalog.name, "type": s.catalog.type,
                                        "namespace": s.catalog.namespace, "lake": s.lake})
    if a.cmd == "show" and a.format == "ddl":
        found = inspect.states(s, a.tables)
        for ident, _ in (x for x in found if x[1] is None):
            print(f"-- {ident}: not in the catalog")
        print("\n\n".join(inspect.athena_ddl(st, s.catalog.namespace) for _, st in found if st is not None))
        return 0
    if a.cmd == "show":
        tables = inspect.show(s, a.tables)
        if a.format == "json":
            for t in tables:
                print(json.dumps(t, sort_keys=True))
        else:
            print("\n\n".join(show_text(t) for t in tables) if tables else
                  f"{s.catalog.name}.{s.catalog.namespace}: no tables (run `smartcity-lake tables` to create them)")
        return 0
    findings = inspect.diff(s, a.tables)
    for f in findings:
        print(json.dumps(asdict(f), sort_keys=True) if a.format == "json" else f.line())
    if a.format == "text":
        if findings:
            by = {r: sum(1 for f in findings if f.remedy == r) for r in REMEDY_LABELS}
            print(f"drift: {_plural(len(findings), 'finding')} in "
                  f"{_plural(len({f.table for f in findings}), 'table')} ("
                  + ", ".join(f"{n} {REMEDY_LABELS[r]}" for r, n in by.items() if n) + ")")
        else:
            print(f"no drift: {_plural(len(a.tables or table_names()), 'table')} as contracts/ define")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
