"""Maintenance of the lake's Iceberg tables, safe while the stream writes to them:
`maintain(spark, settings)` (CLI: `smartcity-lake maintain [--table T ...] [--once | --every-s N]`).

Per table, through Iceberg's Spark procedures (`CALL lake.system.<procedure>(...)`), in this order:

0. A rollup only (gps_spans, vehicle_spans: spark_jobs/rollups.py): the spans whose count of
   source rows changed since their row was computed are recomputed and merged in (one commit,
   none if no span changed), then the steps below as for any table.
1. rewrite_data_files, strategy sort: a day partition's small stream files -> files near
   `target_file_mb`, sorted by the column the table is partitioned on (ts; quarantine: ingest_ts),
   so each file's min/max of ts is tight and an hour's query skips most files of its day. The sort
   is done here only: the tables have no write order, so the stream's commits stay cheap. A
   partition is rewritten once it has `min_input_files` small files (a compacted day with no new
   files is left alone, so a second run rewrites nothing and commits nothing).
   Partial progress: file groups commit separately (at most 10 commits), so a conflict with a
   concurrent commit loses one group's work, not the whole rewrite; failed groups are reported
   (failed_data_files_count), not raised, and maintain runs the rewrite again for them.
2. expire_snapshots older than now - `snapshot_retention_h`, keeping the last `retain_last`: the
   data files only the expired snapshots referenced (e.g. the inputs of an earlier compaction)
   are deleted then, never before, so a query that planned on an older snapshot keeps its files
   for the retention.
3. remove_orphan_files older than now - `orphan_age_h`: files in the table's folder that no
   snapshot references (left by a write that failed before its commit).
4. rewrite_manifests: the manifests the stream adds one commit at a time, regrouped by partition
   (a no-op, and no snapshot, when there is nothing to regroup).

Concurrency. Iceberg commits are optimistic: a commit whose base changed is retried by Iceberg
itself (commit.retry.num-retries) when it still applies, e.g. a rewrite or an expiry while the
stream appends. What cannot apply (a file group whose input files a concurrent MERGE or DELETE
replaced: ValidationException) fails that group only; its new files are never referenced and so
become orphans, removed by a later run. A procedure that fails with such a conflict is logged and
run again, up to `conflict_retries` times, counted in `retries`; if it still fails, the table's
result says `error` and the next table is maintained. No path loses or duplicates a row: a rewrite
commit replaces a set of files by files with exactly their rows, or does not happen.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from smartcity.catalog.location import table_identifier, warehouse_on_s3

from .iceberg_tables import TableDef, sql_string, table_defs
from .pause import pause_point
from .rollups import ROLLUPS, refresh
from .settings import LakeSettings, Maintenance

log = logging.getLogger(__name__)

# Iceberg's exceptions for a commit that lost a race with another commit (the Java class names
# appear in the Py4J error text, whichever Spark exception wraps them), and Spark's check that a
# scan read the snapshot the plan resolved (remove_orphan_files and expire_snapshots read the
# table's metadata tables: a commit landing in between fails them; seen here with a concurrent
# DELETE: "Failed to enforce scan consistency: resolved Spark table snapshot ... vs scan snapshot").
CONFLICT_RE = re.compile(r"\b(ValidationException|CommitFailedException|CommitStateUnknownException)\b"
                         r"|Failed to enforce scan consistency")
# rewrite_data_files: at most this many commits per run, and as many may fail without the
# procedure raising (maintain retries the failed groups instead).
REWRITE_MAX_COMMITS = 10


class MissingTables(ValueError):
    """Tables named for maintenance that the catalog does not have (yet)."""


def sort_column(td: TableDef) -> str:
    """The column of the table's partition transform: days(ts) -> ts, days(ingest_ts) -> ingest_ts."""
    m = re.fullmatch(r"\w+\((\w+)\)", td.partition_by[0])
    return m.group(1) if m else td.partition_by[0]


def sort_order(td: TableDef) -> str:
    return f"{sort_column(td)} ASC NULLS LAST"


def rewrite_options(m: Maintenance) -> dict[str, str]:
    return {
        "partial-progress.enabled": "true",
        "partial-progress.max-commits": str(REWRITE_MAX_COMMITS),
        "partial-progress.max-failed-commits": str(REWRITE_MAX_COMMITS),
        "min-input-files": str(m.min_input_files),
        "target-file-size-bytes": str(m.target_file_mb * 1024 * 1024),
    }


def timestamp_sql(t: datetime) -> str:
    """A Spark SQL TIMESTAMP literal of an aware datetime, in UTC whatever the session time zone."""
    t = t.astimezone(timezone.utc)
    return f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S.%f}+00:00'"


def _map_sql(d: dict[str, str]) -> str:
    return "map(" + ", ".join(f"{sql_string(k)}, {sql_string(v)}" for k, v in d.items()) + ")"


def _one_line(e: BaseException) -> str:
    """The line of the error that names Iceberg's exception (a Py4J error's first line only says
    which Java call failed), else its first line."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    hit = next((x for x in lines if CONFLICT_RE.search(x)), lines[0] if lines else type(e).__name__)
    return hit.removeprefix(": ")[:500]


def _existing(spark, s: LakeSettings) -> set[str]:
    return {r.tableName for r in
            spark.sql(f"SHOW TABLES IN {s.catalog.name}.{s.catalog.namespace}").collect()}


class _Conflict(Exception):
    """A procedure still conflicted after its retries."""


def maintain(spark, s: LakeSettings, tables: Iterable[str] | None = None, now: datetime | None = None,
             stop: threading.Event | None = None,
             on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Maintain `tables` (names in the namespace; default: every table of iceberg_tables that the
    catalog has) one after the other; `now` (aware, default the current time) is what the
    retention and orphan ages count back from. Stops between tables once `stop` is set. Returns
    (and passes to `on_result` as each is done) one dict per table: procedure counts, retries,
    seconds per step and in all, and `error` when a conflict outlasted its retries.
    Raises MissingTables (before any change) for a named table the catalog does not have."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    defs = {td.name: td for td in table_defs()}
    existing = _existing(spark, s)
    if tables is None:
        names = [n for n in defs if n in existing and (n not in ROLLUPS or ROLLUPS[n][0] in existing)]
    else:
        names = list(dict.fromkeys(tables))
        unknown = [n for n in names if n not in defs]
        if unknown:
            raise ValueError(f"unknown tables {unknown}; known: {list(defs)}")
        missing = [table_identifier(s, n) for n in names if n not in existing]
        if missing:
            raise MissingTables(f"no table {', '.join(missing)} in the catalog "
                                "(create the tables first: smartcity-lake tables)")
    out = []
    for name in names:
        if stop is not None and stop.is_set():
            break
        r = maintain_table(spark, s, defs[name], now)
        out.append(r)
        if on_result is not None:
            on_result(r)
    return out


def maintain_table(spark, s: LakeSettings, td: TableDef, now: datetime) -> dict:
    m = s.maintenance
    ident = table_identifier(s, td.name)
    proc = f"{s.catalog.name}.system"
    table_arg = f"table => {sql_string(f'{s.catalog.namespace}.{td.name}')}"
    r: dict = {"table": ident, "rewritten_files": 0, "added_files": 0, "rewritten_bytes": 0,
               "failed_files": 0, "snapshots_expired": 0, "expired_files_deleted": 0,
               "orphans_removed": 0, "manifests_rewritten": 0, "manifests_added": 0, "retries": 0,
               "step_s": {}}
    t0 = time.monotonic()

    def call(step: str, sql: str | Callable[[], Any]) -> Any:
        """Run one procedure (or a function); a conflict with a concurrent commit is logged and
        retried."""
        started = time.monotonic()
        run = sql if callable(sql) else lambda: spark.sql(sql).collect()
        try:
            for attempt in range(m.conflict_retries + 1):
                try:
                    return run()
                except Exception as e:  # Py4JJavaError or a Spark exception wrapping Iceberg's
                    if not CONFLICT_RE.search(str(e)):
                        raise
                    if attempt == m.conflict_retries:
                        raise _Conflict(f"{step}: {_one_line(e)}") from e
                    r["retries"] += 1
                    log.warning("maintenance: conflict with a concurrent commit, retrying",
                                extra={"table": ident, "step": step, "attempt": attempt + 1,
                                       "error": _one_line(e)})
            raise AssertionError("unreachable")
        finally:
            r["step_s"][step] = round(r["step_s"].get(step, 0.0) + time.monotonic() - started, 3)

    try:
        # 0. A rollup first takes in what its source gained (a MERGE of the stale spans), so the
        # compaction below sorts its new files too.
        if td.name in ROLLUPS:
            r["spans_refreshed"] = call("refresh", lambda: refresh(spark, s, td.name))["spans_refreshed"]
        # 1. Sorted compaction; groups that failed to commit (a conflict) are rewritten again.
        pause_point(f"maintain:before-rewrite:{td.name}")   # the crash tests' hook (pause.py)
        rewrite = (f"CALL {proc}.rewrite_data_files({table_arg}, strategy => 'sort', "
                   f"sort_order => {sql_string(sort_order(td))}, options => {_map_sql(rewrite_options(m))})")
        for attempt in range(m.conflict_retries + 1):
            (row,) = call("rewrite_data_files", rewrite)
            r["rewritten_files"] += row.rewritten_data_files_count
            r["added_files"] += row.added_data_files_count
            r["rewritten_bytes"] += row.rewritten_bytes_count
            failed = row.failed_data_files_count
            if not failed:
                r["failed_files"] = 0
                break
            r["failed_files"] = failed
            if attempt < m.conflict_retries:
                r["retries"] += 1
                log.warning("maintenance: rewrite groups conflicted with a concurrent commit, retrying",
                            extra={"table": ident, "failed_files": failed, "attempt": attempt + 1})
        pause_point(f"maintain:after-rewrite:{td.name}")
        # 2. Snapshots beyond the retention (and the files only they referenced).
        snapshots = f"SELECT snapshot_id FROM {ident}.snapshots"   # a read may race a commit too
        before = {x.snapshot_id for x in call("expire_snapshots", snapshots)}
        older = timestamp_sql(now - timedelta(hours=m.snapshot_retention_h))
        (row,) = call("expire_snapshots", f"CALL {proc}.expire_snapshots({table_arg}, older_than => {older}, "
                                          f"retain_last => {int(m.retain_last)})")
        r["snapshots_expired"] = len(before - {x.snapshot_id for x in call("expire_snapshots", snapshots)})
        r["expired_files_deleted"] = row.deleted_data_files_count
        # 3. Orphans. A data file is written first and referenced by the table only once its
        # commit lands: until then (a long batch of the stream catching up, a rewrite group, a
        # commit waiting out Iceberg's retries, a driver stalled in GC, a clock between hosts that
        # differs) it is an "orphan" by definition, and deleting it would make the commit that
        # follows reference a missing file: the table would fail to read. Only files far older
        # than the longest write can be orphans for good, hence days, not minutes.
        # On S3 the table's folder is listed through its own FileIO (S3FileIO's prefix listing):
        # by default the procedure lists it through Hadoop's file system for the location's
        # scheme, and Hadoop has none for s3:// ("No FileSystem for scheme s3": the lake's
        # s3a:// is for Spark's checkpoint; the tables' locations are s3://, Iceberg's own).
        older = timestamp_sql(now - timedelta(hours=m.orphan_age_h))
        listing = ", prefix_listing => true" if warehouse_on_s3(s) else ""
        rows = call("remove_orphan_files",
                    f"CALL {proc}.remove_orphan_files({table_arg}, older_than => {older}{listing})")
        r["orphans_removed"] = len(rows)
        # 4. Manifests regrouped.
        (row,) = call("rewrite_manifests", f"CALL {proc}.rewrite_manifests({table_arg})")
        r["manifests_rewritten"] = row.rewritten_manifests_count
        r["manifests_added"] = row.added_manifests_count
    except _Conflict as e:
        r["error"] = str(e)
        log.error("maintenance: a conflict outlasted its retries; the table is left as it is",
                  extra={"table": ident, "error": str(e)})
    r["seconds"] = round(time.monotonic() - t0, 3)
    log.info("maintenance: table done", extra={"result": r})
    return r
