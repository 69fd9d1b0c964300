"""Spark types of the lake, generated from `contracts/` (nothing here retypes a field).

A data file of topic T holds T's contract fields (ts as a TIMESTAMP) followed by the Kafka lineage
columns. Quarantine files share one
schema for every topic: the raw value is kept so a fixed producer or rule can replay it.
"""
from __future__ import annotations

from pyspark.sql.types import (BinaryType, DataType, DoubleType, IntegerType, LongType, StringType,
                               StructField, StructType, TimestampType)

from smartcity.contracts import RecordType, record_type
from smartcity.contracts import schema as cs

SPARK_TYPES: dict[str, DataType] = {
    cs.STRING: StringType(),
    cs.INT: IntegerType(),
    cs.LONG: LongType(),
    cs.DOUBLE: DoubleType(),
    cs.TIMESTAMP: TimestampType(),
}

# (name, type, description): appended to every data file, in this order.
LINEAGE: tuple[tuple[str, DataType, str], ...] = (
    ("kafka_topic", StringType(), "Kafka topic the record was read from"),
    ("kafka_partition", IntegerType(), "Kafka partition"),
    ("kafka_offset", LongType(), "Kafka offset within the partition"),
    ("kafka_ts", TimestampType(), "Kafka record timestamp (broker/producer time), UTC"),
    ("ingest_ts", TimestampType(), "Spark micro-batch time that wrote the row, UTC"),
)
QUARANTINE_FIELDS: tuple[tuple[str, DataType, str], ...] = (
    ("raw_value", StringType(), "The Kafka value as text (UTF-8, invalid bytes replaced)"),
    ("raw_value_b64", StringType(), "The exact Kafka value bytes, base64"),
    ("error_kind", StringType(), "bad_json | not_object | contract | future_ts"),
    ("reason", StringType(), "Every violation, 'field=value: rule; ...'"),
    ("event_id", StringType(), "event_id when it could be read as a string, else null"),
) + LINEAGE


def spark_type(f: cs.Field) -> DataType:
    try:
        return SPARK_TYPES[f.type]
    except KeyError:
        raise ValueError(f"no Spark type for logical type {f.type!r} of field {f.name}") from None


def record_struct(rt: RecordType | str) -> StructType:
    """The contract's fields, with the contract's nullability."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    return StructType([StructField(f.name, spark_type(f), f.nullable) for f in rt.fields])


def wire_struct(rt: RecordType | str) -> StructType:
    """The contract's fields as from_json reads the canonical wire form: timestamps stay text, so
    the exact characters can be checked and written back unchanged (validation.conforms)."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    return StructType([StructField(f.name, StringType() if f.type == cs.TIMESTAMP else spark_type(f),
                                   True) for f in rt.fields])


def data_struct(rt: RecordType | str) -> StructType:
    """Columns of a data Parquet file of this record type (partition columns excluded)."""
    base = record_struct(rt)
    return StructType(base.fields + [StructField(n, t, False) for n, t, _ in LINEAGE])


def quarantine_struct() -> StructType:
    nullable = {"raw_value", "raw_value_b64", "event_id", "kafka_ts"}
    return StructType([StructField(n, t, n in nullable) for n, t, _ in QUARANTINE_FIELDS])
