"""smartcity-lake: the Spark side of smartcity.

  smartcity-lake stream  [--bootstrap H:P] [--lake DIR|URI] [--trigger-s S] [--max-offsets N] ...
  smartcity-lake maintain [--table T ...] [--once | --every-s [N]] [--lake ...]   Iceberg table maintenance
  smartcity-lake tables  [--lake ...] [--show]   create/evolve the Iceberg tables from contracts

Settings: defaults < --config TOML < SMARTCITY_LAKE_* environment < flags (see settings.py).
On a standalone cluster spark-submit needs a file, not a module: deploy/spark/submit_lake.py
takes the same arguments, with the project zipped into --py-files (the command is in docs/lake.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import sys
import time

from smartcity.runtime.cli import ArgumentParser, UsageError, cli
from smartcity.runtime.obs import configure_logging

from .settings import catalog_spark_conf, kafka_options, load


def _checked(parse, what: str):
    """An argparse type from a parser that raises ValueError: the message names the problem,
    argparse prints it with the usage and exits 2, before any Spark session starts."""
    def check(value: str) -> str:
        try:
            return parse(value)
        except (KeyError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e.args[0] if e.args else e)) from None
    check.__name__ = what
    return check


def _table(value: str) -> str:
    """A table of the lake: a record type (name or stream, e.g. gps) or quarantine."""
    from smartcity.contracts import RECORD_TYPES, record_type
    if value == "quarantine":
        return value
    try:
        return record_type(value).name
    except KeyError:
        raise ValueError(f"unknown table {value!r}; known: "
                         f"{', '.join([rt.name for rt in RECORD_TYPES] + ['quarantine'])}") from None


def _positive(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not n > 0 or n == float("inf"):
        raise ValueError(f"must be a number of seconds > 0, not {value!r}")
    return n


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--lake", help="lake folder or URI (file://, s3a://bucket/prefix)")
    p.add_argument("--checkpoint", help="checkpoint URI (default {lake}/_checkpoints/lake-stream)")
    p.add_argument("--master", help="Spark master (default local[2]; spark-submit's --master wins)")
    p.add_argument("--s3-endpoint", dest="s3_endpoint")
    p.add_argument("--s3-path-style", dest="s3_path_style", action="store_true", default=None)
    p.add_argument("-v", "--verbose", action="store_true")


def _check_catalog(s) -> None:
    """The catalog settings as Spark would get them, checked before Spark starts: e.g. an s3a://
    lake with the default SQLite catalog (which must be on a local disk) and no catalog.uri is a
    settings mistake, one line and exit 2 (runtime.cli), not a traceback from inside the session."""
    try:
        catalog_spark_conf(s)
    except ValueError as e:
        raise UsageError(e) from None


def _settings(a: argparse.Namespace):
    ov = {"lake": a.lake, "checkpoint": a.checkpoint, "master": a.master,
          "s3.endpoint": a.s3_endpoint, "s3.path_style": a.s3_path_style}
    for k in ("bootstrap", "trigger_s", "max_offsets_per_trigger", "starting_offsets", "dedup_window_s"):
        if hasattr(a, k):
            ov[k] = getattr(a, k)
    if getattr(a, "topics", None):
        ov["topics"] = a.topics.split(",")
    return load(a.config, ov)


@cli("smartcity-lake")
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="smartcity-lake", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stream", help="run the Kafka -> lake streaming job")
    _common(st)
    st.add_argument("--bootstrap")
    st.add_argument("--topics", help="comma-separated (default: all five)")
    st.add_argument("--trigger-s", dest="trigger_s", type=float)
    st.add_argument("--max-offsets", dest="max_offsets_per_trigger", type=int)
    st.add_argument("--starting-offsets", dest="starting_offsets")
    st.add_argument("--dedup-window-s", dest="dedup_window_s", type=int)
    st.add_argument("--duration-s", type=float, help="stop after this long (default: run until signalled)")
    mt = sub.add_parser("maintain", help="compact, expire snapshots, remove orphans, rewrite manifests "
                        "of the Iceberg tables ([maintenance])")
    _common(mt)
    mt.add_argument("--table", dest="tables", action="append", type=_checked(_table, "table"),
                    help="a table (repeatable; default: every table the catalog has)")
    when = mt.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one run, then exit (the default)")
    when.add_argument("--every-s", dest="every_s", nargs="?", const=0.0, type=_checked(_positive, "every-s"),
                      metavar="N", help="a run every N s (default [maintenance] interval_s) until SIGTERM/SIGINT")
    tb = sub.add_parser("tables", help="create or evolve the Iceberg tables from contracts (catalog: [catalog])")
    _common(tb)
    tb.add_argument("--show", action="store_true", help="then print each table as the catalog has it")
    a = ap.parse_args(argv)
    configure_logging(logging.INFO if a.verbose else logging.WARNING, json=False)
    s = _settings(a)   # a settings error: one line, exit 2 (runtime.cli), before Spark starts
    _check_catalog(s)  # e.g. no catalog.uri for an s3a:// lake: one line, exit 2, before Spark starts
    if a.cmd == "tables":
        return _tables(s, a.show)
    if a.cmd == "stream":
        kafka_options(s)   # an unreadable secret file or key: one line, exit 2, before Spark starts
        from .lake import run
        # SIGTERM/SIGINT only set a flag; the query stops between batches (a kill -9 is also safe).
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        totals = run(s, a.duration_s, stop)
        print(json.dumps({"totals": totals}, sort_keys=True))
        return 0
    return _maintain(s, a.tables, a.every_s)


def _maintain(s, tables: list[str] | None, every_s: float | None) -> int:
    """`maintain`: one JSON line per table per run. --every-s: runs every N s (start to start; at
    once when a run took longer) until SIGTERM/SIGINT, which only set a flag: the run in progress
    finishes its table and the loop ends (never an exception inside a Py4J call). Exit 1 when a
    table's maintenance ended in an unresolved conflict (--once), 2 for a table the catalog lacks."""
    from . import maintenance
    from .session import build_session
    interval = (every_s or s.maintenance.interval_s) if every_s is not None else None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    errors = 0
    try:
        spark = build_session(s, "smartcity-lake-maintain", iceberg=True)
        while not stop.is_set():
            started = time.monotonic()
            try:
                done = maintenance.maintain(spark, s, tables, stop=stop,
                                            on_result=lambda r: print(json.dumps(r, sort_keys=True), flush=True))
            except maintenance.MissingTables as e:
                raise UsageError(e) from None
            errors = sum(1 for r in done if "error" in r)
            if interval is None:
                break
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if errors and interval is None else 0


def _tables(s, show_tables: bool) -> int:
    """`tables`: one JSON line per table saying what was done (then, with --show, one per table
    as the catalog has it); an incompatible contract change: its problems on stderr, exit 1."""
    from .iceberg_tables import IncompatibleSchema, create_or_evolve, show
    from .session import build_session
    spark = build_session(s, "smartcity-lake-tables", iceberg=True)
    try:
        done = create_or_evolve(spark, s)
    except IncompatibleSchema as e:
        print(f"smartcity-lake tables: {e}", file=sys.stderr)
        return 1
    for d in done:
        print(json.dumps(d, sort_keys=True))
    if show_tables:
        for t in show(spark, s):
            print(json.dumps(t, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
