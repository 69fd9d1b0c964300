"""The lake's outside readers (catalog/reader.py): what a reader that is not Spark sees of the
Iceberg tables, through the catalog only. One local Spark for the module writes real commits into
a JDBC catalog on SQLite; pyiceberg and DuckDB read them back, with no network."""
from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pyiceberg")
pytest.importorskip("duckdb")
import pyarrow as pa  # noqa: E402

from smartcity.contracts import example, record_type  # noqa: E402
from smartcity.contracts.schema import GPS  # noqa: E402
from smartcity.spark_jobs import iceberg_tables as IT  # noqa: E402
from smartcity.catalog import reader  # noqa: E402
from smartcity.catalog.reader import (duckdb_connection, event_ids, load_catalog, read_table,  # noqa: E402
                                         read_table_duckdb)
from smartcity.catalog.location import catalog_sqlite_file, table_identifier  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings  # noqa: E402
from tests.support.lake_rows import table_frame  # noqa: E402

UTC_US = pa.timestamp("us", tz="UTC")
DAY1 = datetime(2026, 11, 28, 12, 43, 9, 123000, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 29, 0, 0, 0, 1000, tzinfo=timezone.utc)


def gps_rows(device: str, start: datetime, n: int, offset: int = 0) -> list[dict]:
    """n realistic GPS rows (contracts' example) with their lineage columns, one second apart."""
    rows = []
    for i in range(n):
        ts = start + timedelta(seconds=i)
        rows.append(example("gps_data") | {
            "event_id": f"{device}:0000abcd:{offset + i}", "device_id": device, "ts": ts, "seq": offset + i,
            "lat": 38.0 + i / 1000, "lon": 23.7, "fix_mode": 3, "sats_used": 9,
            "kafka_topic": "gps_data", "kafka_partition": 1, "kafka_offset": offset + i,
            "kafka_ts": ts + timedelta(milliseconds=5), "ingest_ts": ts + timedelta(seconds=2),
            "boot_id": "0000abcd"})   # what the lake derives from event_id (table_frame computes it)
    return rows


def append(spark, s: LakeSettings, rows: list[dict]) -> None:
    """One Iceberg commit (a new snapshot) of `rows` into s's gps_data table."""
    td = IT.data_table(GPS)
    table_frame(spark, td, rows).writeTo(table_identifier(s, "gps_data")).append()


def by_event_id(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=lambda r: r["event_id"])


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """The lake's tables, created from contracts; gps_data holds two commits (3 rows on one day,
    2 on the next), every other table none."""
    from smartcity.spark_jobs.session import build_session
    s = LakeSettings(lake=str(tmp_path_factory.mktemp("readers") / "lake"))
    spark = build_session(s, "test-lake-readers", iceberg=True)
    assert spark.conf.get("spark.sql.catalog.lake.type") == "jdbc", "a session without the catalog was reused"
    IT.create_or_evolve(spark, s)
    first, second = gps_rows("bus-7", DAY1, 3), gps_rows("bus-9", DAY2, 2, offset=100)
    append(spark, s, first)
    append(spark, s, second)
    yield s, spark, first + second
    spark.stop()


# ---- no Spark --------------------------------------------------------------------------------

def test_a_lake_with_no_catalog_yet_reads_as_none_and_the_reader_creates_nothing(tmp_path):
    s = LakeSettings(lake=str(tmp_path / "lake"))
    assert read_table(s, "gps_data") is None
    assert read_table_duckdb(s, "gps_data") is None
    assert event_ids(s, "gps_data") == []
    assert not (tmp_path / "lake").exists()   # no folder, no catalog file: readers only read


def test_a_catalog_file_without_catalog_tables_yet_reads_as_none(tmp_path):
    """The moment between Spark's sqlite-jdbc creating the file and the catalog creating its tables."""
    s = LakeSettings(lake=str(tmp_path / "lake"))
    f = catalog_sqlite_file(s)
    f.parent.mkdir(parents=True)
    sqlite3.connect(f).close()
    assert read_table(s, "gps_data") is None and read_table_duckdb(s, "gps_data") is None
    assert f.stat().st_size == 0


# ---- against a real catalog ------------------------------------------------------------------

def test_read_table_returns_exactly_the_committed_rows_with_utc_timestamps(lake):
    s, _, written = lake
    assert len(load_catalog(s).load_table(("smartcity", "gps_data")).snapshots()) == 2
    t = read_table(s, "gps_data")
    assert t.column_names == [c.name for c in IT.data_table(GPS).columns]
    assert by_event_id(t) == sorted(written, key=lambda r: r["event_id"])
    for name in ("ts", "kafka_ts", "ingest_ts"):
        assert t.schema.field(name).type == UTC_US
    got_ts = sorted(t.column("ts").to_pylist())
    assert got_ts[0] == DAY1 and got_ts[0].utcoffset() == timedelta(0)
    assert got_ts[0].isoformat() == "2026-11-28T12:43:09.123000+00:00"
    assert sorted(event_ids(s, "gps_data")) == sorted(r["event_id"] for r in written)


def test_columns_come_in_the_tables_order_and_row_filter_is_pyicebergs(lake):
    s, _, _ = lake
    t = read_table(s, "gps_data", ["ts", "event_id"], row_filter="device_id == 'bus-9'")
    assert t.column_names == ["event_id", "ts"]
    assert by_event_id(t) == [{"event_id": "bus-9:0000abcd:100", "ts": DAY2},
                              {"event_id": "bus-9:0000abcd:101", "ts": DAY2 + timedelta(seconds=1)}]
    assert read_table_duckdb(s, "gps_data", ["ts", "event_id"]).column_names == ["event_id", "ts"]
    with pytest.raises(ValueError, match="no_such_column"):
        read_table(s, "gps_data", ["event_id", "no_such_column"])


def test_a_table_that_does_not_exist_is_none(lake):
    s, _, _ = lake
    assert read_table(s, "no_such_table") is None
    assert read_table_duckdb(s, "no_such_table") is None
    assert event_ids(s, "no_such_table") == []
    other = dataclasses.replace(s, catalog=dataclasses.replace(s.catalog, namespace="no_such_namespace"))
    assert read_table(other, "gps_data") is None


def test_an_existing_empty_table_is_an_empty_table_with_its_columns(lake):
    s, _, _ = lake
    for table, td in (("weather_data", IT.data_table(record_type("weather_data"))), ("quarantine", IT.quarantine_table())):
        t, d = read_table(s, table), read_table_duckdb(s, table)
        assert t.num_rows == d.num_rows == 0
        assert t.column_names == d.column_names == [c.name for c in td.columns]
        assert t.schema == d.schema
        assert event_ids(s, table) == []
    ts = read_table(s, "weather_data").schema.field("ts")
    assert ts.type == UTC_US and not ts.nullable


def test_pyiceberg_and_duckdb_readers_agree_row_for_row(lake):
    s, _, written = lake
    a = read_table(s, "gps_data").sort_by("event_id")
    b = read_table_duckdb(s, "gps_data").sort_by("event_id")
    assert a.num_rows == len(written)
    assert a.schema == b.schema   # types, not-null columns and docs
    assert a.equals(b, check_metadata=True)
    assert b.schema.field("ts").type == UTC_US and b.column("ts")[0].as_py().utcoffset() == timedelta(0)


def test_duckdb_loads_its_extensions_from_the_packages_and_never_downloads(lake, tmp_path):
    """Avro first, then iceberg, each by the path of its file in its PyPI package; auto-install
    off; an extension directory of the test's own stays empty: nothing was installed or fetched."""
    s, _, written = lake
    ext_dir = tmp_path / "duckdb-extensions"
    con = duckdb_connection(config={"extension_directory": str(ext_dir)})
    assert read_table_duckdb(s, "gps_data", ["event_id"], con=con).num_rows == len(written)
    paths = reader.duckdb_extension_paths()
    assert list(paths) == ["avro", "iceberg"]
    for name, path in paths.items():
        assert path.is_file() and f"duckdb_extension_{name}" in path.parts
    loaded = {r[0]: r[1:] for r in con.execute(
        "SELECT extension_name, loaded, installed, install_mode FROM duckdb_extensions() "
        "WHERE extension_name IN ('avro', 'iceberg')").fetchall()}
    assert loaded == {"avro": (True, False, "NOT_INSTALLED"), "iceberg": (True, False, "NOT_INSTALLED")}
    assert con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                       "current_setting('allow_unsigned_extensions'), current_setting('TimeZone')"
                       ).fetchone() == (False, False, "UTC")
    assert not ext_dir.exists() or not any(ext_dir.rglob("*"))
    con.close()


def test_a_read_waits_for_the_writers_lock_on_the_catalog_file_instead_of_failing(lake):
    """Spark's sqlite-jdbc holds the catalog file's lock while it commits: a read waits (busy
    timeout) rather than failing with SQLITE_BUSY ('database is locked')."""
    s, _, written = lake
    writer = sqlite3.connect(catalog_sqlite_file(s), isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")   # no reader may read now
    threading.Timer(1.5, writer.execute, ("COMMIT",)).start()
    t0 = time.monotonic()
    ids = event_ids(s, "gps_data")
    waited = time.monotonic() - t0
    writer.close()
    assert sorted(ids) == sorted(r["event_id"] for r in written)
    assert waited >= 1.0, waited
    with load_catalog(s).engine.connect() as c:   # as long as Spark's side waits (30 s)
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_the_readers_never_write_the_catalog(lake):
    s, _, _ = lake
    f: Path = catalog_sqlite_file(s)
    before = hashlib.sha256(f.read_bytes()).hexdigest()
    read_table(s, "gps_data"), read_table_duckdb(s, "gps_data"), read_table(s, "no_such_table")
    assert hashlib.sha256(f.read_bytes()).hexdigest() == before
    with pytest.raises(Exception, match="readonly"):
        load_catalog(s).create_namespace("made_by_a_reader")


def test_after_deletes_both_readers_see_the_new_snapshot(lake):
    """A copy-on-write DELETE (data file rewritten) then a merge-on-read one (a delete file):
    each reader, called again, reads the table's new current snapshot."""
    s, spark, _ = lake
    s = dataclasses.replace(s, catalog=dataclasses.replace(s.catalog, namespace="t_deletes"))
    IT.create_or_evolve(spark, s, [IT.data_table(GPS)])
    append(spark, s, gps_rows("bus-3", DAY1, 4))
    ident = table_identifier(s, "gps_data")
    assert sorted(event_ids(s, "gps_data")) == [f"bus-3:0000abcd:{i}" for i in range(4)]
    before = load_catalog(s).load_table((s.catalog.namespace, "gps_data")).metadata_location

    spark.sql(f"DELETE FROM {ident} WHERE event_id = 'bus-3:0000abcd:1'")
    assert sorted(event_ids(s, "gps_data")) == ["bus-3:0000abcd:0", "bus-3:0000abcd:2", "bus-3:0000abcd:3"]
    assert sorted(read_table_duckdb(s, "gps_data", ["event_id"]).column("event_id").to_pylist()) == \
        ["bus-3:0000abcd:0", "bus-3:0000abcd:2", "bus-3:0000abcd:3"]

    spark.sql(f"ALTER TABLE {ident} SET TBLPROPERTIES ('write.delete.mode'='merge-on-read')")
    spark.sql(f"DELETE FROM {ident} WHERE event_id = 'bus-3:0000abcd:2'")
    t = load_catalog(s).load_table((s.catalog.namespace, "gps_data"))
    assert t.metadata_location != before
    assert int(t.current_snapshot().summary["added-position-delete-files"]) == 1
    a = read_table(s, "gps_data").sort_by("event_id")
    b = read_table_duckdb(s, "gps_data").sort_by("event_id")
    assert a.column("event_id").to_pylist() == ["bus-3:0000abcd:0", "bus-3:0000abcd:3"]
    assert a.equals(b, check_metadata=True)


@pytest.mark.parametrize("text", ["plain", "O'Neil", "''", "back\\slash", 'a "quoted" name', "ไทย", ""])
def test_sql_text_round_trips_through_duckdb_as_literal_and_identifier(text):
    """The readers' and the analysts' engines' one quoting (catalog/sqltext.py): whatever a value
    holds, DuckDB reads back exactly it, as a string and as a column name."""
    from smartcity.catalog.sqltext import sql_name, sql_string
    con = duckdb_connection()
    assert con.execute(f"SELECT {sql_string(text)}").fetchone()[0] == text
    if text:
        assert con.execute(f"SELECT 1 AS {sql_name(text)}").description[0][0] == text
