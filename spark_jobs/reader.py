"""Read the lake as a non-Spark reader does (pyarrow, Hive partitions, `_`/`.` files ignored, no
`_spark_metadata`): what the tests, the benchmark and the demo summary trust."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds


def _local(lake: str) -> Path:
    return Path(lake[len("file://"):] if lake.startswith("file://") else lake)


def visible_files(lake: str, area: str, topic: str) -> list[str]:
    """Files a Hive/Athena reader would read under {lake}/{area}/{topic}/."""
    root = _local(lake) / area / topic
    if not root.exists():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith(("_", ".")) for part in rel):
            out.append(str(p))
    return out


def read_table(lake: str, area: str, topic: str, columns: list[str] | None = None) -> pa.Table | None:
    files = visible_files(lake, area, topic)
    if not files:
        return None
    part = ["dt", "hour"] if area == "data" else ["dt"]
    dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(
        pa.schema([(p, pa.string()) for p in part]), flavor="hive"),
        partition_base_dir=str(_local(lake) / area / topic))
    return dataset.to_table(columns=columns)
