"""The lake's tables as the contracts define them, in logical types (no Spark, no pyiceberg): what
the lake job creates and evolves (spark_jobs/iceberg_tables.py turns these into Spark types and
SQL) and what `smartcity-catalog diff` compares the catalog with (catalog/inspect.py).

A data table is its record type's contract fields followed by the Kafka lineage columns (LINEAGE,
all required) and the columns the lake derives from a contract field (DERIVED, each with the one
SQL expression that computes it). The quarantine table is one table for every topic: QUARANTINE_FIELDS (the raw
value, the error kind and reason, event_id when readable) and the same lineage, with `kafka_ts`
optional there. Columns are `contracts.schema.Field`s: name, logical type, description (the
column's doc) and nullability; contracts/ itself stays the records on the wire.

Partitioning (the reasons are in spark_jobs/iceberg_tables.py): data tables by `days(ts)` (event
time, UTC), quarantine by `days(ingest_ts)` (a bad record may have no usable event time). The
transforms are written as Spark SQL writes them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from smartcity.contracts import RECORD_TYPES, RecordType, record_type
from smartcity.contracts import schema as cs
from smartcity.contracts.schema import Field

QUARANTINE_TABLE = "quarantine"
QUARANTINE_COMMENT = ("Records of every topic that the lake refused (kafka_topic says which), with "
                      "the exact Kafka value and every reason, for replay once fixed")
DATA_PARTITION_BY: tuple[str, ...] = ("days(ts)",)
QUARANTINE_PARTITION_BY: tuple[str, ...] = ("days(ingest_ts)",)

# Appended to every data table's contract fields, in this order; required.
LINEAGE: tuple[Field, ...] = (
    Field("kafka_topic", cs.STRING, "Kafka topic the record was read from"),
    Field("kafka_partition", cs.INT, "Kafka partition"),
    Field("kafka_offset", cs.LONG, "Kafka offset within the partition"),
    Field("kafka_ts", cs.TIMESTAMP, "Kafka record timestamp (broker/producer time), UTC"),
    Field("ingest_ts", cs.TIMESTAMP, "Spark micro-batch time that wrote the row, UTC"),
)
# The quarantine table's columns: what was refused and why, then the lineage.
QUARANTINE_FIELDS: tuple[Field, ...] = (
    Field("raw_value", cs.STRING, "The Kafka value as text (UTF-8, invalid bytes replaced)", True),
    Field("raw_value_b64", cs.STRING, "The exact Kafka value bytes, base64", True),
    Field("error_kind", cs.STRING, "bad_json | not_object | contract | future_ts"),
    Field("reason", cs.STRING, "Every violation, 'field=value: rule; ...'"),
    Field("event_id", cs.STRING, "event_id when it could be read as a string, else null", True),
) + tuple(replace(f, nullable=True) if f.name == "kafka_ts" else f for f in LINEAGE)

# Logical type -> Iceberg type, as Iceberg (and pyiceberg's str()) names it. TIMESTAMP is UTC:
# Spark's TIMESTAMP, which the lake job writes, is Iceberg's timestamptz.
ICEBERG_TYPES: dict[str, str] = {
    cs.STRING: "string",
    cs.INT: "int",
    cs.LONG: "long",
    cs.DOUBLE: "double",
    cs.TIMESTAMP: "timestamptz",
}
# Type changes Iceberg allows on existing data files (Iceberg type names), which the lake job
# (`smartcity-lake tables`) applies itself; any other type change is refused.
WIDENINGS: frozenset[tuple[str, str]] = frozenset({("int", "long"), ("float", "double")})


class IncompatibleSchema(ValueError):
    """Contracts changed in a way an existing table cannot follow (a lake table, refused by
    `smartcity-lake tables`, or a warehouse table, by the warehouse's setup); `problems` has one
    line each, naming the table, the column and what to do."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("refused, no table was changed:\n" + "\n".join(self.problems))


@dataclass(frozen=True)
class Derived:
    """A column computed from the row's other columns."""
    field: Field
    sql: str        # over the table's columns; one expression every engine of the project reads
    # What the lake job computes per row when Spark has a cheaper expression for the same value on
    # every row the table can hold (a test checks they agree); None: `sql`.
    spark_sql: str | None = None


# Appended after LINEAGE: a contract field's part that queries group by, kept as a column of its
# own so that they read a few dictionary-encoded values instead of every event_id (seq_gaps on a
# 10 M-row lake, DuckDB: 1.08 -> 0.47 s). The SQL reads the same in Spark, Trino/Athena, DuckDB,
# PostgreSQL and Redshift; the lake job writes it into every row, and `smartcity-lake tables`
# (and the warehouse's setup) fill the rows written before the column existed. Optional, as
# Iceberg adds every new column to an existing table: a table created with the column and one
# evolved to it are then the same. Last, so that a table evolved to it has the column where a
# new table has it (Iceberg, Redshift and PostgreSQL add a column at the end).
DERIVED: tuple[Derived, ...] = (
    Derived(Field("boot_id", cs.STRING, "The agent's boot id of this reading, the middle part of "
                  "event_id ({device_id}:{boot_id}:{seq}); seq counts on within one boot id",
                  True, max_length=8), "split_part(event_id, ':', 2)",
            # Spark 4.1's split_part costs ~0.85 us of CPU a row (2 M event_ids: 1.7-2.3 s vs
            # 0.5 s with this); equal wherever event_id has two colons, as its contract pattern
            # requires of every row of a data table.
            spark_sql="substring_index(substring_index(event_id, ':', 2), ':', -1)"),
)


@dataclass(frozen=True)
class TableSpec:
    """One table of the lake as the contracts define it."""
    name: str                        # inside the namespace: gps_data, ..., quarantine
    comment: str
    columns: tuple[Field, ...]
    partition_by: tuple[str, ...]    # Spark SQL transforms, e.g. ("days(ts)",)
    derived: tuple[Derived, ...] = ()   # those of `columns` the lake computes (DERIVED)

    def derived_sql(self) -> dict[str, str]:
        """{column: SQL expression} of the derived columns."""
        return {d.field.name: d.sql for d in self.derived}


def iceberg_type(f: Field) -> str:
    try:
        return ICEBERG_TYPES[f.type]
    except KeyError:
        raise ValueError(f"no Iceberg type for logical type {f.type!r} of field {f.name}") from None


def data_table(rt: RecordType) -> TableSpec:
    return TableSpec(rt.name, rt.description, rt.fields + LINEAGE + tuple(d.field for d in DERIVED),
                     DATA_PARTITION_BY, DERIVED)


def quarantine_table() -> TableSpec:
    return TableSpec(QUARANTINE_TABLE, QUARANTINE_COMMENT, QUARANTINE_FIELDS, QUARANTINE_PARTITION_BY)


# ---- rollups: tables the lake computes from a data table, for queries that would read millions of
# rows in time order (docs/analytics.md, "Speed, and what the lake keeps for it") --------------

GPS_SPANS_TABLE = "gps_spans"
GPS_SPANS_SOURCE = "gps_data"
# The defaults of trip_summary's parameters, the only ones the rollup is computed for: a query
# with other values computes every span from the fixes (the rows say which values they hold).
GPS_SPANS_WIDTH_S = 600.0
GPS_SPANS_MOVING_KMH = 3.0


def _from(rt: RecordType, name: str, new_name: str, description: str, nullable: bool | None = None) -> Field:
    """A rollup column of a data table's field: the field's type (never retyped), a new name and
    doc; bounds and patterns are the contract's business, not a rollup's."""
    f = next(f for f in rt.fields if f.name == name)
    return Field(new_name, f.type, description, f.nullable if nullable is None else nullable,
                 max_length=f.max_length)


def gps_spans_table() -> TableSpec:
    """One row per device and span of `span_s` seconds of event time (span = floor(epoch s of ts /
    span_s)), over the fixes with a position: what those fixes contribute to a trip, computed
    from that span's fixes alone, so a fix that lands late changes its own span's row and no
    other. `fixes` is how many fixes the row was computed from: a reader takes the row only where
    the table holds exactly that many fixes for the span (the lake only adds fixes, one row per
    event_id), and computes the others from the fixes. Refreshed by `smartcity-lake maintain`."""
    gps = record_type(GPS_SPANS_SOURCE)
    steps = "steps between this span's own fixes (in ts, seq order)"
    cols = (
        _from(gps, "device_id", "device_id", "The vehicle's edge device"),
        Field("span_s", cs.DOUBLE, "Span width, seconds: trip_summary's trip_gap_s the row holds"),
        Field("moving_kmh", cs.DOUBLE, "trip_summary's moving_kmh the row holds: a step counts as "
              "moving at this GPS speed or more"),
        Field("span", cs.LONG, "floor(epoch seconds of ts / span_s)"),
        Field("fixes", cs.LONG, "Fixes with a position in the span when the row was computed"),
        _from(gps, "ts", "first_ts", "Event time of the span's first fix (ts, seq order), UTC"),
        _from(gps, "lat", "first_lat", "Latitude of the span's first fix", False),
        _from(gps, "lon", "first_lon", "Longitude of the span's first fix", False),
        _from(gps, "speed_kmh", "first_speed_kmh", "Speed of the span's first fix, km/h"),
        _from(gps, "ts", "last_ts", "Event time of the span's last fix (ts, seq order), UTC"),
        _from(gps, "lat", "last_lat", "Latitude of the span's last fix", False),
        _from(gps, "lon", "last_lon", "Longitude of the span's last fix", False),
        Field("km", cs.DOUBLE, f"Great-circle length of the {steps}, km; null for one fix", True),
        Field("moving_s", cs.DOUBLE, f"Time of the {steps} that end at a fix at moving_kmh or more, s", True),
        Field("idle_s", cs.DOUBLE, f"Time of the other {steps}, s", True),
        _from(gps, "speed_kmh", "speed_sum_kmh", "Sum of the fixes' speeds, km/h", True),
        Field("speeds", cs.LONG, "Fixes with a speed"),
        _from(gps, "speed_kmh", "max_speed_kmh", "Highest speed of a fix, km/h", True),
        Field("refreshed_ts", cs.TIMESTAMP, "When smartcity-lake maintain computed the row, UTC"),
    )
    return TableSpec(GPS_SPANS_TABLE, "trip_summary's rollup of gps_data: per device and span of event "
                     "time, what its fixes contribute to a trip (rows are used where their fix count "
                     "is current)", cols, ("days(first_ts)",))


VEHICLE_SPANS_TABLE = "vehicle_spans"
VEHICLE_SPANS_SOURCE = "vehicle_data"
VEHICLE_SPANS_WIDTH_S = 600.0
# harsh_events' defaults, the only thresholds the rollup is computed for.
VEHICLE_SPANS_BRAKE_KMH_PER_S = 10.0
VEHICLE_SPANS_ACCEL_KMH_PER_S = 8.0
VEHICLE_SPANS_MAX_STEP_S = 5.0


def vehicle_spans_table() -> TableSpec:
    """One row per device and span of `span_s` seconds of event time over the OBD readings with a
    speed: how many harsh pairs (harsh_events' rule at the row's thresholds) lie between the
    span's own readings, and its first and last reading for the pair across the span's start.
    `readings` is how many readings the row was computed from: a reader skips a span whose row
    says 0 harsh pairs only where the table holds exactly that many readings for the span, and
    computes the others from the readings. Refreshed by `smartcity-lake maintain`."""
    obd = record_type(VEHICLE_SPANS_SOURCE)
    first = "the span's first reading (ts, seq order)"
    cols = (
        _from(obd, "device_id", "device_id", "The vehicle's edge device"),
        Field("span_s", cs.DOUBLE, "Span width, seconds"),
        Field("brake_kmh_per_s", cs.DOUBLE, "harsh_events' brake_kmh_per_s the row holds"),
        Field("accel_kmh_per_s", cs.DOUBLE, "harsh_events' accel_kmh_per_s the row holds"),
        Field("max_step_s", cs.DOUBLE, "harsh_events' max_step_s the row holds"),
        Field("span", cs.LONG, "floor(epoch seconds of ts / span_s)"),
        Field("readings", cs.LONG, "Readings with a speed in the span when the row was computed"),
        Field("harsh_pairs", cs.LONG, "Harsh pairs of consecutive readings, both in the span"),
        _from(obd, "ts", "first_ts", f"Event time of {first}, UTC"),
        _from(obd, "event_id", "first_event_id", f"event_id of {first}"),
        _from(obd, "speed_kmh", "first_speed_kmh", f"Speed of {first}, km/h", False),
        _from(obd, "lat", "first_lat", f"Latitude of {first}"),
        _from(obd, "lon", "first_lon", f"Longitude of {first}"),
        _from(obd, "ts", "last_ts", "Event time of the span's last reading (ts, seq order), UTC"),
        _from(obd, "speed_kmh", "last_speed_kmh", "Speed of the span's last reading, km/h", False),
        Field("refreshed_ts", cs.TIMESTAMP, "When smartcity-lake maintain computed the row, UTC"),
    )
    return TableSpec(VEHICLE_SPANS_TABLE, "harsh_events' rollup of vehicle_data: per device and span of "
                     "event time, its harsh pairs and first and last reading (rows are used where "
                     "their reading count is current)", cols, ("days(first_ts)",))


def rollup_specs() -> list[TableSpec]:
    return [gps_spans_table(), vehicle_spans_table()]


def table_specs(record_types=RECORD_TYPES) -> list[TableSpec]:
    """The five data tables (contract order), the quarantine table and the rollups."""
    return [data_table(rt) for rt in record_types] + [quarantine_table()] + rollup_specs()


def table_names() -> list[str]:
    return [rt.name for rt in RECORD_TYPES] + [QUARANTINE_TABLE] + [r.name for r in rollup_specs()]


def table_name(value: str) -> str:
    """A table of the lake from a person's word for it: a record type's name or stream (gps) or
    quarantine. Raises ValueError naming the known tables."""
    if value == QUARANTINE_TABLE or value in {r.name for r in rollup_specs()}:
        return value
    try:
        return record_type(value).name
    except KeyError:
        raise ValueError(f"unknown table {value!r}; known: {', '.join(table_names())}") from None
