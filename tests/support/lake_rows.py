"""Rows for the lake's tables in tests, written by Spark the way the lake job writes them."""
from __future__ import annotations

from typing import Iterable


def table_frame(spark, td, records: Iterable[dict]):
    """A Spark DataFrame of `td`'s columns (spark_jobs.iceberg_tables.TableDef) from dicts holding
    every column but the derived ones (boot_id), which are computed by their SQL as the lake job
    computes them: a test never retypes a derivation."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    given = StructType([f for f in td.struct().fields if f.name not in td.derived])
    df = spark.createDataFrame([tuple(r[f.name] for f in given.fields) for r in records], given)
    return df.select(*[F.expr(td.derived[c.name]).alias(c.name) if c.name in td.derived else df[c.name]
                       for c in td.columns])
