"""smartcity-lake: the Spark side of smartcity.

  smartcity-lake stream  [--bootstrap H:P] [--lake DIR|URI] [--trigger-s S] [--max-offsets N] ...
  smartcity-lake compact --topic T (--dt YYYY-MM-DD --hour HH | --all) [--lake ...]
  smartcity-lake ddl     [--lake URI] [--dialect athena|redshift|all]
  smartcity-lake tables  [--lake ...] [--show]   create/evolve the Iceberg tables (issue 11, in progress)

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

from smartcity.runtime.cli import ArgumentParser, cli
from smartcity.runtime.obs import configure_logging

from .partitions import partition_dt, partition_hour
from .settings import kafka_options, load


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


def _topic(value: str) -> str:
    from smartcity.contracts import record_type
    return record_type(value).name


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--lake", help="lake folder or URI (file://, s3a://bucket/prefix)")
    p.add_argument("--checkpoint", help="checkpoint URI (default {lake}/_checkpoints/lake-stream)")
    p.add_argument("--master", help="Spark master (default local[2]; spark-submit's --master wins)")
    p.add_argument("--s3-endpoint", dest="s3_endpoint")
    p.add_argument("--s3-path-style", dest="s3_path_style", action="store_true", default=None)
    p.add_argument("-v", "--verbose", action="store_true")


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
    co = sub.add_parser("compact", help="rewrite hour partitions into fewer files")
    _common(co)
    co.add_argument("--topic", required=True, type=_checked(_topic, "topic"))
    co.add_argument("--dt", type=_checked(partition_dt, "dt"), help="YYYY-MM-DD (UTC)")
    co.add_argument("--hour", type=_checked(partition_hour, "hour"), help="00-23 (UTC)")
    co.add_argument("--all", action="store_true", help="every hour partition of the topic")
    dd = sub.add_parser("ddl", help="print Athena/Glue and Redshift DDL generated from contracts")
    _common(dd)
    dd.add_argument("--dialect", choices=("athena", "redshift", "all"), default="all")
    tb = sub.add_parser("tables", help="create or evolve the Iceberg tables from contracts (catalog: [catalog])")
    _common(tb)
    tb.add_argument("--show", action="store_true", help="then print each table as the catalog has it")
    a = ap.parse_args(argv)
    if a.cmd == "compact" and not ((a.all and not (a.dt or a.hour)) or (not a.all and a.dt and a.hour)):
        co.error("compact needs --dt and --hour, or --all (not both)")
    configure_logging(logging.INFO if a.verbose else logging.WARNING, json=False)
    s = _settings(a)   # a settings error: one line, exit 2 (runtime.cli), before Spark starts
    if a.cmd == "ddl":
        from .ddl import render
        sys.stdout.write(render(s.lake, a.dialect))
        return 0
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
    from .compact import compact_hour, hours
    from .session import build_session
    spark = build_session(s, "smartcity-lake-compact")
    todo = hours(s, a.topic) if a.all else [(a.dt, a.hour)]
    for dt, hour in todo:
        print(json.dumps(compact_hour(spark, s, a.topic, dt, hour), sort_keys=True))
    return 0


def _tables(s, show_tables: bool) -> int:
    """`tables`: one JSON line per table saying what was done (then, with --show, one per table
    as the catalog has it); an incompatible contract change: its problems on stderr, exit 1."""
    from .iceberg_tables import IncompatibleSchema, create_or_evolve, show
    from .session import build_session
    from .settings import catalog_spark_conf
    try:
        catalog_spark_conf(s)  # e.g. no catalog.uri for an s3a:// lake: say so before Spark starts
    except ValueError as e:
        print(f"smartcity-lake: {e}", file=sys.stderr)
        return 2
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
