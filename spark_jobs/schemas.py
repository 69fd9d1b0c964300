"""Spark types of the lake, generated from `contracts/` and the lake's own columns
(catalog/tables.py); nothing here retypes a field.

A data table of topic T holds T's contract fields (ts as a TIMESTAMP, Iceberg's timestamptz)
followed by the Kafka lineage columns. The quarantine table has one schema for every topic: the
raw value is kept so a fixed producer or rule can replay it.
"""
from __future__ import annotations

from pyspark.sql.types import (BinaryType, DataType, DoubleType, IntegerType, LongType, StringType,
                               StructField, StructType, TimestampType)

from smartcity.catalog import tables as lake_tables
from smartcity.contracts import RecordType, record_type
from smartcity.contracts import schema as cs

SPARK_TYPES: dict[str, DataType] = {
    cs.STRING: StringType(),
    cs.INT: IntegerType(),
    cs.LONG: LongType(),
    cs.DOUBLE: DoubleType(),
    cs.TIMESTAMP: TimestampType(),
}


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


def _struct(columns: tuple[cs.Field, ...]) -> StructType:
    return StructType([StructField(f.name, spark_type(f), f.nullable) for f in columns])


def data_struct(rt: RecordType | str) -> StructType:
    """The columns of this record type's data table: the contract's fields, then the lineage."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    return _struct(lake_tables.data_table(rt).columns)


def quarantine_struct() -> StructType:
    return _struct(lake_tables.quarantine_table().columns)


# (name, Spark type, description) of the lake's columns beyond the contract (defined, with their
# nullability, in catalog/tables.py): the lineage every data table ends with, in this order, and
# the quarantine table's columns.
LINEAGE: tuple[tuple[str, DataType, str], ...] = tuple(
    (f.name, spark_type(f), f.description) for f in lake_tables.LINEAGE)
QUARANTINE_FIELDS: tuple[tuple[str, DataType, str], ...] = tuple(
    (f.name, spark_type(f), f.description) for f in lake_tables.QUARANTINE_FIELDS)
