"""Compaction of one hour partition: many small streaming files -> few files, duplicates removed.

    smartcity-lake compact --topic gps_data --dt 2026-11-28 --hour 13

How readers never see duplicates or gaps (local/POSIX lake): the compacted files are written to a
hidden sibling folder `.hour=HH.compact-<id>` (readers skip `.`-names), then the two folders are
swapped with one renameat2(RENAME_EXCHANGE) system call: a reader listing `hour=HH` sees either
the old set of files or the new one, never both and never neither. Files the stream committed
after compaction read its inputs are hard-linked into the new folder before the swap, under the
lake's commit lock (commit.lake_lock) that the stream also takes while it moves files in, so
nothing can land in the old folder in between. The replaced folder stays (hidden) for
`grace_s` so queries that already listed it can finish, and is deleted by a later run.

Compaction also drops duplicate event_ids in the hour (a copy that arrived after the stream's
dedup window has the same ts, hence the same partition), keeping the earliest Kafka record.

On S3 there is no atomic multi-object operation; see docs/lake.md for what Athena sees there
(compaction refuses s3a:// unless allow_nonatomic=True).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from smartcity.contracts import record_type

from .commit import lake_lock
from .partitions import partition_dt, partition_hour
from .schemas import data_struct
from .settings import LakeSettings, join

log = logging.getLogger(__name__)
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> None:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    rc = libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(e)}")


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def _local(uri: str) -> Path:
    if not uri.startswith("file://"):
        raise ValueError(f"compaction swaps folders atomically only on a local/POSIX lake, not {uri}")
    return Path(uri[len("file://"):])


def compact_hour(spark: SparkSession, s: LakeSettings, topic: str, dt: str, hour: str,
                 grace_s: float = 600.0, min_files: int = 2) -> dict:
    rt = record_type(topic)
    dt, hour = partition_dt(dt), partition_hour(hour)  # ValueError: never a path from raw input
    lake = _local(s.lake)
    folder = lake / "data" / rt.name / f"dt={dt}" / f"hour={hour}"
    _cleanup_replaced(folder.parent, grace_s)
    if not folder.is_dir():
        raise FileNotFoundError(f"no partition {folder}")
    inputs = visible(folder)
    result = {"topic": topic, "dt": dt, "hour": hour, "files_before": len(inputs), "files_after": len(inputs),
              "rows_before": None, "rows_after": None}
    if len(inputs) < min_files:
        return result
    tag = uuid.uuid4().hex[:12]
    staging = join(s.lake, "_staging", "compact", tag)
    df = spark.read.schema(data_struct(rt)).parquet(*[f"file://{p}" for p in inputs])
    rows_before = df.count()
    first = Window.partitionBy("event_id").orderBy("kafka_ts", "kafka_topic", "kafka_partition", "kafka_offset")
    dedup = df.withColumn("_rn", F.row_number().over(first)).filter("_rn = 1").drop("_rn")
    n_files = max(1, math.ceil(rows_before / s.target_rows_per_file))
    dedup.sortWithinPartitions("ts").coalesce(n_files).write.mode("overwrite").parquet(staging)
    new_dir = folder.parent / f".hour={hour}.compact-{tag}"
    new_dir.mkdir()
    staged = visible(_local(staging))
    for k, p in enumerate(staged):
        os.rename(p, new_dir / f"part-compact-{tag}-{k:04d}.snappy.parquet")
    shutil.rmtree(_local(staging), ignore_errors=True)
    rows_after = spark.read.parquet(f"file://{new_dir}").count() if staged else 0
    with lake_lock(s.lake):
        names_in = {p.name for p in inputs}
        arrived = [p for p in visible(folder) if p.name not in names_in]
        for p in arrived:  # committed by the stream while we were compacting: keep them visible
            os.link(p, new_dir / p.name)
        exchange(str(folder), str(new_dir))
    replaced = folder.parent / f".hour={hour}.replaced-{int(time.time())}-{tag}"
    os.rename(new_dir, replaced)  # new_dir now holds the old files
    result.update(files_after=len(staged) + len(arrived), rows_before=rows_before, rows_after=rows_after,
                  late_files_kept=len(arrived))
    log.info("compact: hour rewritten", extra={"result": result})
    return result


def _cleanup_replaced(dt_folder: Path, grace_s: float) -> None:
    if not dt_folder.is_dir():
        return
    now = time.time()
    for p in dt_folder.iterdir():
        if p.name.startswith(".hour=") and ".replaced-" in p.name and now - p.stat().st_mtime > grace_s:
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".hour=") and ".compact-" in p.name and now - p.stat().st_mtime > 24 * 3600:
            shutil.rmtree(p, ignore_errors=True)  # left by a crashed compaction, never swapped in


def hours(s: LakeSettings, topic: str) -> list[tuple[str, str]]:
    root = _local(s.lake) / "data" / record_type(topic).name
    out = []
    for d in sorted(root.glob("dt=*")):
        for h in sorted(d.glob("hour=*")):
            try:
                out.append((partition_dt(d.name[3:]), partition_hour(h.name[5:])))
            except ValueError as e:  # not written by the lake job: leave it alone
                log.warning("compact: skipping a folder", extra={"folder": str(h), "error": str(e)})
    return out
