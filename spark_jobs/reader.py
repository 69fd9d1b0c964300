"""Read the lake as a non-Spark reader does (pyarrow, Hive partitions, `_`/`.` files ignored, no
`_spark_metadata`): what the tests, the benchmark and the demo summary trust."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds


def _local(lake: str) -> Path:
    return Path(lake[len("file://"):] if lake.startswith("file://") else lake)


def visible_files(lake: str, area: str, topic: str) -> list[str]:
    """Files a Hive/Athena reader would read under {lake}/{area}/{topic}/."""
    root = _local(lake) / area / topic
    out = []
    # Hidden (`.`/`_`) folders are pruned, not descended into: compaction's temporary folders
    # appear and vanish while readers list (os.walk skips a folder that is gone).
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        out += [os.path.join(folder, f) for f in files if not f.startswith(("_", "."))]
    return sorted(out)


def read_table(lake: str, area: str, topic: str, columns: list[str] | None = None) -> pa.Table | None:
    files = visible_files(lake, area, topic)
    if not files:
        return None
    part = ["dt", "hour"] if area == "data" else ["dt"]
    dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(
        pa.schema([(p, pa.string()) for p in part]), flavor="hive"),
        partition_base_dir=str(_local(lake) / area / topic))
    return dataset.to_table(columns=columns)
