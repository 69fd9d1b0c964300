"""The one definition of smartcity's record types.

Everything else (JSON Schema, validation, the wire encoding, the lake's Iceberg tables: see
catalog/tables.py) is generated from the `Field` lists below; nothing downstream retypes a field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

SCHEMA_VERSION = 1

# Logical types. Generators map these to JSON Schema / Spark / SQL types.
STRING = "string"
INT = "int"        # 32-bit signed is enough for every int field below
LONG = "long"      # 64-bit (seq)
DOUBLE = "double"
TIMESTAMP = "timestamp"  # ISO-8601 UTC with milliseconds and Z: 2026-11-28T12:43:09.123Z
# The lake's integer columns are 32- and 64-bit (Spark int/bigint): an integer beyond them is a
# contract violation everywhere, rather than an overflow or a null downstream.
INT_RANGE = {INT: (-2**31, 2**31 - 1), LONG: (-2**63, 2**63 - 1)}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | tuple[int, ...] | None = None
    max_length: int | None = None
    # The WHOLE value must match (re.fullmatch: with re.search a final "$" also accepts a trailing
    # newline, "bus-1\n"). Written with ^ and $ so engines that search (JSON Schema, Spark rlike)
    # read the same rule.
    pattern: str | None = None


@dataclass(frozen=True)
class RecordType:
    name: str          # also the Kafka topic: gps_data, vehicle_data, ...
    stream: str        # MQTT topic segment: gps, vehicle, ...
    description: str
    fields: tuple[Field, ...] = field(default_factory=tuple)

    @cached_property  # read per record by the encoder and validators; fields never change
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _lat(nullable: bool = False) -> Field:
    return Field("lat", DOUBLE, "Latitude, WGS84 degrees, north positive", nullable, -90, 90)


def _lon(nullable: bool = False) -> Field:
    return Field("lon", DOUBLE, "Longitude, WGS84 degrees, east positive", nullable, -180, 180)


ENVELOPE: tuple[Field, ...] = (
    Field("event_id", STRING,
          "Unique, deterministic id of this reading: {device_id}:{boot_id}:{seq}. A replay of the "
          "same queued reading carries the same id; downstream deduplicates on it.",
          max_length=200, pattern=r"^[A-Za-z0-9_.\-]+:[0-9a-f]{8}:[0-9]+$"),
    Field("device_id", STRING, "The vehicle's edge device", max_length=64,
          pattern=r"^[A-Za-z0-9_.\-]+$"),
    Field("ts", TIMESTAMP, "Event time, UTC, ISO-8601 with milliseconds and Z"),
    Field("clock", STRING,
          "Which clock stamped ts: system (kernel says NTP-synchronised), gps (receiver time carried "
          "forward on the monotonic clock: the Pi has no RTC), unsynced (system clock, not known to be "
          "synchronised and no GPS time yet: treat ts with suspicion) or sim (the simulator's clock)",
          enum=("system", "gps", "unsynced", "sim")),
    Field("seq", LONG, "Per-device sequence number, strictly increasing across restarts", minimum=0),
    Field("source", STRING, "hw: real sensors; sim: simulation backend", enum=("hw", "sim")),
    Field("schema_version", INT, "Version of this contract", minimum=1, maximum=SCHEMA_VERSION),
)

GPS = RecordType("gps_data", "gps", "One position fix per receiver reporting cycle", ENVELOPE + (
    _lat(nullable=True),
    _lon(nullable=True),
    Field("alt_m", DOUBLE, "Altitude above mean sea level, metres", True, -1000, 20000),
    Field("speed_kmh", DOUBLE, "Speed over ground, km/h", True, 0, 2000),
    Field("heading_deg", DOUBLE, "Course over ground, degrees true, 0..360", True, 0, 360),
    Field("fix_mode", INT, "1 no fix, 2 2D, 3 3D", enum=(1, 2, 3)),
    Field("sats_used", INT, "Satellites used in the fix", True, 0, 255),
    Field("hdop", DOUBLE, "Horizontal dilution of precision", True, 0.01, 99.99),
))

VEHICLE = RecordType("vehicle_data", "vehicle", "OBD-II readings plus static vehicle facts", ENVELOPE + (
    Field("make", STRING, "Vehicle make (configuration)", True, max_length=64),
    Field("model", STRING, "Vehicle model (configuration)", True, max_length=64),
    Field("year", INT, "Model year (configuration)", True, 1950, 2100),
    Field("fuel_type", STRING, "Fuel type (configuration)", True, max_length=32),
    Field("vin", STRING, "Vehicle identification number from OBD mode 09 PID 02 or configuration",
          True, max_length=17, pattern=r"^[A-HJ-NPR-Z0-9]{17}$"),
    Field("speed_kmh", DOUBLE, "Vehicle speed (PID 0D), km/h", True, 0, 255),
    Field("rpm", DOUBLE, "Engine speed (PID 0C), rev/min", True, 0, 16383.75),
    Field("coolant_c", DOUBLE, "Engine coolant temperature (PID 05), degC", True, -40, 215),
    Field("fuel_level_pct", DOUBLE, "Fuel tank level (PID 2F), percent", True, 0, 100),
    Field("throttle_pct", DOUBLE, "Throttle position (PID 11), percent", True, 0, 100),
    Field("engine_load_pct", DOUBLE, "Calculated engine load (PID 04), percent", True, 0, 100),
    Field("battery_v", DOUBLE, "Control module voltage (PID 42), or the adapter's supply voltage (ATRV) "
          "where PID 42 is unsupported: both are the battery as the car sees it; volts", True, 0, 65.535),
    _lat(nullable=True),
    _lon(nullable=True),
))

WEATHER = RecordType("weather_data", "weather", "Cabin/ambient conditions at the vehicle", ENVELOPE + (
    Field("temperature_c", DOUBLE, "Air temperature (DHT), degC", True, -40, 80),
    Field("humidity_pct", DOUBLE, "Relative humidity (DHT), percent", True, 0, 100),
    Field("precipitation_mm", DOUBLE, "Precipitation in the last hour, mm (simulator only)", True, 0, 500),
    Field("wind_speed_kmh", DOUBLE, "Wind speed, km/h (simulator only)", True, 0, 400),
    Field("air_quality_index", INT, "Air quality index, US EPA scale (simulator only)", True, 0, 500),
    Field("weather_condition", STRING, "Condition (simulator only)", True,
          enum=("clear", "cloudy", "rain", "storm", "fog", "haze")),
    _lat(nullable=True),
    _lon(nullable=True),
))

TRAFFIC = RecordType("traffic_data", "traffic", "A roadside camera's observation", ENVELOPE + (
    Field("camera_id", STRING, "Roadside camera", max_length=64),
    _lat(),
    _lon(),
    Field("vehicle_count", INT, "Vehicles counted in the last interval", minimum=0, maximum=100000),
    Field("avg_speed_kmh", DOUBLE, "Mean speed of counted vehicles, km/h", True, 0, 300),
    Field("snapshot_uri", STRING, "Reference to the snapshot image (never an inline blob)", True,
          max_length=1024, pattern=r"^[a-z][a-z0-9+.\-]*://.*$"),
))

EMERGENCY = RecordType("emergency_data", "emergency", "An incident and its lifecycle", ENVELOPE + (
    Field("incident_id", STRING, "Stable across the incident's updates", max_length=128),
    Field("type", STRING, "Incident kind", enum=("crash", "accident", "fire", "medical", "police",
                                                 "flood", "roadworks")),
    Field("status", STRING, "Active until Resolved", enum=("Active", "Resolved")),
    Field("severity", STRING, "Severity", enum=("low", "medium", "high", "critical")),
    Field("description", STRING, "Human-readable description", True, max_length=1024),
    _lat(nullable=True),
    _lon(nullable=True),
))

RECORD_TYPES: tuple[RecordType, ...] = (VEHICLE, GPS, TRAFFIC, WEATHER, EMERGENCY)
BY_NAME: dict[str, RecordType] = {r.name: r for r in RECORD_TYPES}
BY_STREAM: dict[str, RecordType] = {r.stream: r for r in RECORD_TYPES}
STREAMS: tuple[str, ...] = tuple(r.stream for r in RECORD_TYPES)


def record_type(name_or_stream: str) -> RecordType:
    try:
        return BY_NAME.get(name_or_stream) or BY_STREAM[name_or_stream]
    except KeyError:
        raise KeyError(f"unknown record type {name_or_stream!r}; known: {sorted(BY_NAME)}") from None


def example(name_or_stream: str) -> dict[str, Any]:
    """A minimal valid record, for tests and docs."""
    rt = record_type(name_or_stream)
    out: dict[str, Any] = {}
    for f in rt.fields:
        if f.nullable:
            out[f.name] = None
        elif f.enum:
            out[f.name] = f.enum[0]
        elif f.type == TIMESTAMP:
            out[f.name] = "2026-01-01T00:00:00.000Z"
        elif f.type in (INT, LONG):
            out[f.name] = int(f.minimum or 0)
        elif f.type == DOUBLE:
            out[f.name] = float(f.minimum or 0)
        else:
            out[f.name] = "x"
    out.update(event_id="dev-1:0000abcd:0", device_id="dev-1", schema_version=SCHEMA_VERSION,
               source="sim", clock="sim")
    if rt is TRAFFIC:
        out.update(camera_id="cam-1", snapshot_uri="s3://bucket/cam-1/0.jpg")
    if rt is EMERGENCY:
        out.update(incident_id="inc-1")
    return out
