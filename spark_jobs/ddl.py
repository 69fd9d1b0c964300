"""Athena (Glue/Hive) and Redshift DDL for the lake, generated from `contracts/` + schemas.LINEAGE.

Athena tables use partition projection on dt/hour, so new partitions are queryable without
MSCK REPAIR or a crawler. Redshift gets a Spectrum external table over the same files and a native
table for COPY ... FORMAT AS PARQUET.
"""
from __future__ import annotations

from smartcity.contracts import RECORD_TYPES, RecordType
from smartcity.contracts import schema as cs

from .schemas import LINEAGE, PARTITIONS, QUARANTINE_FIELDS, QUARANTINE_PARTITIONS
from .settings import join

_HIVE = {cs.STRING: "string", cs.INT: "int", cs.LONG: "bigint", cs.DOUBLE: "double", cs.TIMESTAMP: "timestamp"}


def _q(s: str) -> str:
    return s.replace("'", "''")


def _s3(location: str) -> str:
    # Athena and Redshift speak s3://; the job writes through Hadoop's s3a:// client.
    return "s3://" + location[len("s3a://"):] if location.startswith("s3a://") else location


def _varchar(f: cs.Field) -> str:
    n = f.max_length
    if f.enum and f.type == cs.STRING:
        n = max(len(str(e)) for e in f.enum)
    # Redshift VARCHAR counts bytes; contracts count characters (UTF-8: up to 4 bytes each).
    return f"VARCHAR({min(65535, 4 * n) if n else 256})"


def _redshift(t: str, f: cs.Field | None = None) -> str:
    return {cs.STRING: _varchar(f) if f else "VARCHAR(256)", cs.INT: "INTEGER", cs.LONG: "BIGINT",
            cs.DOUBLE: "DOUBLE PRECISION", cs.TIMESTAMP: "TIMESTAMP"}[t]


def _lineage_logical() -> list[tuple[str, str, str]]:
    m = {"string": cs.STRING, "int": cs.INT, "bigint": cs.LONG, "timestamp": cs.TIMESTAMP}
    return [(n, m[t.simpleString()], d) for n, t, d in LINEAGE]


def _columns(rt: RecordType) -> list[tuple[str, str, str, cs.Field | None]]:
    cols = [(f.name, f.type, f.description, f) for f in rt.fields]
    return cols + [(n, t, d, None) for n, t, d in _lineage_logical()]


def athena(rt: RecordType, lake: str, database: str = "smartcity") -> str:
    loc = _s3(join(lake, "data", rt.name)) + "/"
    cols = ",\n".join(f"  `{n}` {_HIVE[t]} COMMENT '{_q(d)}'" for n, t, d, _ in _columns(rt))
    parts = ", ".join(f"`{n}` string COMMENT '{_q(d)}'" for n, d in PARTITIONS)
    return (f"CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{rt.name}` (\n{cols}\n)\n"
            f"COMMENT '{_q(rt.description)}'\nPARTITIONED BY ({parts})\nSTORED AS PARQUET\n"
            f"LOCATION '{loc}'\nTBLPROPERTIES (\n  'parquet.compression'='SNAPPY',\n"
            "  'projection.enabled'='true',\n"
            "  'projection.dt.type'='date', 'projection.dt.format'='yyyy-MM-dd',\n"
            "  'projection.dt.range'='2024-01-01,NOW', 'projection.dt.interval'='1',\n"
            "  'projection.dt.interval.unit'='DAYS',\n"
            "  'projection.hour.type'='integer', 'projection.hour.range'='0,23', 'projection.hour.digits'='2',\n"
            f"  'storage.location.template'='{loc}dt=${{dt}}/hour=${{hour}}/'\n);")


def athena_quarantine(lake: str, topic: str, database: str = "smartcity") -> str:
    loc = _s3(join(lake, "quarantine", topic)) + "/"
    m = {"string": "string", "int": "int", "bigint": "bigint", "timestamp": "timestamp"}
    cols = ",\n".join(f"  `{n}` {m[t.simpleString()]} COMMENT '{_q(d)}'" for n, t, d in QUARANTINE_FIELDS)
    parts = ", ".join(f"`{n}` string" for n, _ in QUARANTINE_PARTITIONS)
    return (f"CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`quarantine_{topic}` (\n{cols}\n)\n"
            f"PARTITIONED BY ({parts})\nSTORED AS PARQUET\nLOCATION '{loc}'\nTBLPROPERTIES (\n"
            "  'projection.enabled'='true', 'projection.dt.type'='date', 'projection.dt.format'='yyyy-MM-dd',\n"
            "  'projection.dt.range'='2024-01-01,NOW',\n"
            f"  'storage.location.template'='{loc}dt=${{dt}}/'\n);")


def redshift_spectrum(rt: RecordType, lake: str, schema: str = "smartcity_lake") -> str:
    loc = _s3(join(lake, "data", rt.name)) + "/"
    cols = ",\n".join(f"  {n} {_redshift(t, f)}" for n, t, _, f in _columns(rt))
    parts = ", ".join(f"{n} VARCHAR(10)" for n, _ in PARTITIONS)
    return (f"CREATE EXTERNAL TABLE {schema}.{rt.name} (\n{cols}\n)\nPARTITIONED BY ({parts})\n"
            f"STORED AS PARQUET\nLOCATION '{loc}';")


def redshift_table(rt: RecordType, schema: str = "smartcity") -> str:
    cols = [f"  {n} {_redshift(t, f)}{'' if (f is None or f.nullable) and n != 'event_id' else ' NOT NULL'}"
            for n, t, _, f in _columns(rt)]
    cols += [f"  {n} VARCHAR(10) NOT NULL" for n, _ in PARTITIONS]
    return (f"CREATE TABLE IF NOT EXISTS {schema}.{rt.name} (\n" + ",\n".join(cols) +
            ",\n  PRIMARY KEY (event_id)\n)\nDISTKEY (device_id)\nSORTKEY (ts);")


def render(lake: str, dialect: str = "all") -> str:
    out = []
    for rt in RECORD_TYPES:
        if dialect in ("athena", "all"):
            out += [f"-- Athena / Glue: {rt.name}", athena(rt, lake), athena_quarantine(lake, rt.name)]
        if dialect in ("redshift", "all"):
            out += [f"-- Redshift Spectrum: {rt.name}", redshift_spectrum(rt, lake),
                    f"-- Redshift table (COPY {rt.name} FROM '<s3 prefix>' IAM_ROLE '<role>' FORMAT AS PARQUET)",
                    redshift_table(rt)]
    return "\n\n".join(out) + "\n"
