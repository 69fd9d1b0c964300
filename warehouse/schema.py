"""The warehouse's tables, derived from contracts/ through catalog/tables.py (never retyped).

One target table per data topic (gps_data, ...): the lake table's columns (the record type's
contract fields, then the Kafka lineage) in the same order, plus two columns of the load's own
lineage (WAREHOUSE_LINEAGE: the lake snapshot whose files brought the row, and when it was
loaded). The quarantine table never enters the warehouse: its rows failed the contract.

Each column carries its logical type; warehouse/sql.py turns the one list into PostgreSQL and
Redshift DDL (types, Redshift encodings, keys), so the two dialects cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from smartcity.catalog.tables import TableSpec, data_table
from smartcity.contracts import RECORD_TYPES, record_type
from smartcity.contracts import schema as cs
from smartcity.contracts.schema import Field

# Added by the load to every target table, after the lake's columns; not in staging.
WAREHOUSE_LINEAGE: tuple[Field, ...] = (
    Field("lake_snapshot_id", cs.LONG, "Iceberg snapshot of the lake table whose data files brought "
          "this row (the snapshot the load read up to, for a full reconciliation)"),
    Field("loaded_at", cs.TIMESTAMP, "When the warehouse load committed this row, UTC"),
)
# Distribution and sort keys (the reasons are in docs/warehouse.md, "Keys"): rows of one vehicle on
# one slice, sorted by vehicle then event time.
DIST_KEY = "device_id"
SORT_KEY: tuple[str, ...] = ("device_id", "ts")
KEY_COLUMN = "event_id"


@dataclass(frozen=True)
class WarehouseTable:
    """One target table: the lake table's spec and the warehouse's additions."""
    spec: TableSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def lake_columns(self) -> tuple[Field, ...]:
        """The lake table's columns, in its order: what staging holds and what a file must have."""
        return self.spec.columns

    @property
    def columns(self) -> tuple[Field, ...]:
        return self.spec.columns + WAREHOUSE_LINEAGE

    @property
    def comment(self) -> str:
        return self.spec.comment


def warehouse_tables() -> list[WarehouseTable]:
    """The five data tables, in contract order (no quarantine)."""
    return [WarehouseTable(data_table(rt)) for rt in RECORD_TYPES]


def warehouse_table(value: str) -> WarehouseTable:
    """A data table from a person's word for it (gps or gps_data). Raises ValueError otherwise,
    also for quarantine (never loaded)."""
    if value == "quarantine":
        raise ValueError("quarantine is not loaded into the warehouse (its rows failed the contract)")
    try:
        return WarehouseTable(data_table(record_type(value)))
    except KeyError:
        raise ValueError(f"unknown table {value!r}; known: "
                         f"{', '.join(rt.name for rt in RECORD_TYPES)}") from None
