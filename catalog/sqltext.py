"""Standard SQL text shared by the lake's readers and the analysts' engines.

DuckDB, Trino (Athena) and PostgreSQL read a string literal the same way: single quotes, a quote
doubled, no backslash escapes. Spark SQL does not (its parser reads backslash escapes), so the lake
job keeps its own `sql_string`; Redshift reads backslashes too, so the warehouse refuses them in
its literals."""
from __future__ import annotations


def sql_string(value: str) -> str:
    """A standard SQL string literal of `value`."""
    return "'" + value.replace("'", "''") + "'"


def sql_name(name: str) -> str:
    """A standard SQL quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def iceberg_scan(metadata_location: str) -> str:
    """DuckDB's table function reading one Iceberg table at the snapshot its metadata file names."""
    return f"iceberg_scan({sql_string(metadata_location)})"
