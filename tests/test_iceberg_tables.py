"""The lake's Iceberg tables (issue 11, foundation): generated from contracts/, created and evolved in
a real JDBC catalog on SQLite by one local Spark for the module, checked through pyiceberg on the
same catalog file (a reader that is not Spark). The evolution rules are also checked without Spark
(plan_evolution is pure)."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pyiceberg")
from pyiceberg import types as it  # noqa: E402
from pyiceberg.catalog import load_catalog  # noqa: E402
from pyiceberg.transforms import DayTransform  # noqa: E402

from smartcity.contracts import RECORD_TYPES, example  # noqa: E402
from smartcity.contracts import schema as cs  # noqa: E402
from smartcity.contracts.schema import GPS  # noqa: E402
from smartcity.spark_jobs import iceberg_tables as IT  # noqa: E402
from smartcity.spark_jobs.schemas import LINEAGE, QUARANTINE_FIELDS  # noqa: E402
from smartcity.catalog.location import pyiceberg_properties, table_identifier  # noqa: E402
from smartcity.spark_jobs.settings import LakeSettings, catalog_spark_conf  # noqa: E402

PYICEBERG_TYPES = {"string": it.StringType(), "int": it.IntegerType(), "bigint": it.LongType(),
                   "double": it.DoubleType(), "timestamp": it.TimestamptzType()}


def gps_with(*changes: tuple[str, cs.Field | None], extra: tuple[cs.Field, ...] = ()) -> cs.RecordType:
    """A copy of the GPS record type with fields replaced (name -> Field) and `extra` appended
    after the last contract field: a contract change, simulated without editing contracts/."""
    by_name = dict(changes)
    fields = tuple(by_name.get(f.name, f) for f in GPS.fields) + extra
    return dataclasses.replace(GPS, fields=tuple(f for f in fields if f is not None))


# ---- without Spark ---------------------------------------------------------------------------

def test_table_definitions_come_from_contracts():
    defs = {td.name: td for td in IT.table_defs()}
    assert list(defs) == [rt.name for rt in RECORD_TYPES] + ["quarantine", "gps_spans", "vehicle_spans"]
    for rt in RECORD_TYPES:
        td = defs[rt.name]
        assert [c.name for c in td.columns] == [f.name for f in rt.fields] + [n for n, _, _ in LINEAGE] + ["boot_id"]
        assert td.derived == {"boot_id": "split_part(event_id, ':', 2)"}
        for c, f in zip(td.columns, rt.fields):
            assert (c.nullable, c.doc) == (f.nullable, f.description)
            assert c.sql_type == {"string": "string", "int": "int", "long": "bigint", "double": "double",
                                  "timestamp": "timestamp"}[f.type]
        assert all(not c.nullable for c in td.columns[len(rt.fields):-1])   # lineage is always there
        assert td.columns[-1].nullable   # as Iceberg adds a column to an existing table
        assert td.partition_by == ("days(ts)",) and td.comment == rt.description
        assert td.properties["format-version"] == "2"
    q = defs["quarantine"]
    assert [(c.name, c.doc) for c in q.columns] == [(n, d) for n, _, d in QUARANTINE_FIELDS]
    assert q.partition_by == ("days(ingest_ts)",) and q.derived == {}
    # A rollup's columns are its source's where they come from one (same type; never retyped).
    for rollup, source_table in (("gps_spans", "gps_data"), ("vehicle_spans", "vehicle_data")):
        spans, source = defs[rollup], {c.name: c for c in defs[source_table].columns}
        for c in spans.columns:
            name = c.name.removeprefix("first_").removeprefix("last_").removeprefix("max_")
            name = {"speed_sum_kmh": "speed_kmh"}.get(name, name)
            if name in source:
                assert c.sql_type == source[name].sql_type, (rollup, c.name)
        assert spans.partition_by == ("days(first_ts)",) and spans.derived == {}


def test_catalog_conf_names_one_catalog_and_the_iceberg_extensions(tmp_path):
    s = LakeSettings(lake=str(tmp_path / "lake"))
    conf = catalog_spark_conf(s)
    assert conf["spark.sql.extensions"] == "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    assert conf["spark.sql.catalog.lake"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.lake.type"] == "jdbc"
    assert conf["spark.sql.catalog.lake.uri"] == f"jdbc:sqlite:{tmp_path}/lake/_catalog/iceberg.sqlite"
    assert conf["spark.sql.catalog.lake.warehouse"] == f"file://{tmp_path}/lake/warehouse"
    assert pyiceberg_properties(s)["uri"] == f"sqlite:///{tmp_path}/lake/_catalog/iceberg.sqlite"
    assert table_identifier(s, "gps_data") == "lake.smartcity.gps_data"
    with pytest.raises(ValueError, match="catalog.uri"):
        catalog_spark_conf(LakeSettings(lake="s3a://bucket/city"))   # no SQLite on S3


def test_plan_refuses_incompatible_changes_naming_table_column_and_fix():
    ident = "lake.smartcity.gps_data"
    table = IT.data_table(GPS).struct()   # the table as Spark reports it
    cases = {
        "seq": (gps_with(("seq", cs.Field("seq", cs.INT, "narrowed"))), "only widens"),
        "fix_mode": (gps_with(("fix_mode", cs.Field("fix_mode", cs.STRING, "now text"))), "only widens"),
        "sats_used": (gps_with(("sats_used", cs.Field("sats_used", cs.INT, "now required"))), "Keep the field nullable"),
        "pdop": (gps_with(extra=(cs.Field("pdop", cs.DOUBLE, "required, new"),)), "nullable=True"),
        "hdop": (gps_with(("hdop", None)), "DROP COLUMN hdop"),
    }
    for column, (rt, fix) in cases.items():
        p = IT.plan_evolution(ident, IT.data_table(rt), table)
        assert len(p.problems) == 1 and not p.statements, (column, p)
        assert p.problems[0].startswith(f"{ident}: column {column} ") and fix in p.problems[0], p.problems


def test_plan_evolves_compatible_changes_and_leaves_an_equal_table_alone():
    ident = "lake.smartcity.gps_data"
    table = IT.data_table(GPS).struct()   # the table as Spark reports it
    assert IT.plan_evolution(ident, IT.data_table(GPS), table, dict(IT.TABLE_PROPERTIES),
                             GPS.description, ["days(ts)"]).action == "unchanged"
    rt = gps_with(("sats_used", cs.Field("sats_used", cs.LONG, "Satellites used in the fix", True)),
                  ("fix_mode", cs.Field("fix_mode", cs.INT, "1 no fix, 2 2D, 3 3D (may be unknown)", True)),
                  extra=(cs.Field("pdop", cs.DOUBLE, "Position dilution of precision", True),))
    p = IT.plan_evolution(ident, IT.data_table(rt), table, {"format-version": "1"}, "old", ["hours(ts)"])
    assert not p.problems and p.action == "evolve"
    sql = [s for _, s in p.statements]
    assert f"ALTER TABLE {ident} ALTER COLUMN `sats_used` TYPE bigint" in sql
    assert f"ALTER TABLE {ident} ALTER COLUMN `fix_mode` DROP NOT NULL" in sql
    assert f"ALTER TABLE {ident} ADD COLUMN `pdop` double COMMENT 'Position dilution of precision' AFTER `hdop`" in sql
    assert any("SET TBLPROPERTIES ('format-version'='2')" in s for s in sql)
    assert any(s.startswith(f"COMMENT ON TABLE {ident} IS") for s in sql)
    assert p.notes and "kept" in p.notes[0]   # the partition spec is never changed here


def test_sql_string_escapes_quotes_and_backslashes():
    assert IT.sql_string("adapter's \\ x") == "'adapter\\'s \\\\ x'"


# ---- against a real JDBC catalog on SQLite ---------------------------------------------------

@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    from smartcity.spark_jobs.session import build_session
    s = LakeSettings(lake=str(tmp_path_factory.mktemp("iceberg") / "lake"))
    spark = build_session(s, "test-iceberg-tables", iceberg=True)
    assert spark.conf.get("spark.sql.catalog.lake.type") == "jdbc", "a session without the catalog was reused"
    first = IT.create_or_evolve(spark, s)
    catalog = load_catalog(s.catalog.name, **pyiceberg_properties(s))
    yield s, spark, first, catalog
    spark.stop()


def test_tables_are_created_in_the_catalog_with_the_contracts_schema(lake):
    s, spark, first, catalog = lake
    assert [(d["table"], d["action"]) for d in first] == \
        [(f"lake.smartcity.{td.name}", "created") for td in IT.table_defs()]
    assert (s.catalog.name, s.catalog.namespace) == ("lake", "smartcity")
    assert sorted(t for _, t in catalog.list_tables("smartcity")) == sorted(td.name for td in IT.table_defs())
    for td in IT.table_defs():
        t = catalog.load_table(f"smartcity.{td.name}")
        assert t.metadata.format_version == 2
        assert t.location().startswith(f"{s.lake}/warehouse/smartcity/{td.name}")
        got = [(f.name, f.field_type, f.required, f.doc) for f in t.schema().fields]
        assert got == [(c.name, PYICEBERG_TYPES[c.sql_type], not c.nullable, c.doc) for c in td.columns]
        assert spark.table(f"lake.smartcity.{td.name}").schema == td.struct()   # docs included
        (pf,) = t.spec().fields
        source = t.schema().find_field(pf.source_id).name
        assert isinstance(pf.transform, DayTransform)
        assert f"days({source})" == td.partition_by[0]
        assert t.properties.get("comment") == td.comment
        assert t.properties["write.metadata.delete-after-commit.enabled"] == "true"


def test_running_twice_changes_nothing(lake):
    s, spark, _, catalog = lake
    before = {td.name: catalog.load_table(f"smartcity.{td.name}").metadata_location for td in IT.table_defs()}
    again = IT.create_or_evolve(spark, s)
    assert {d["action"] for d in again} == {"unchanged"} and not any(d["changes"] for d in again)
    after = {td.name: catalog.load_table(f"smartcity.{td.name}").metadata_location for td in IT.table_defs()}
    assert after == before


def test_a_row_written_by_spark_is_read_back_by_pyiceberg(lake):
    s, spark, _, catalog = lake
    td = IT.data_table(GPS)
    rec = example("gps_data") | {"event_id": "veh-9:0000abcd:7", "lat": 38.1, "lon": 23.7}
    ts = datetime(2026, 11, 28, 12, 43, 9, 123000, tzinfo=timezone.utc)
    row = {**rec, "ts": ts, "kafka_topic": "gps_data", "kafka_partition": 1, "kafka_offset": 42,
           "kafka_ts": ts, "ingest_ts": ts, "boot_id": "0000abcd"}
    spark.createDataFrame([tuple(row[c.name] for c in td.columns)], td.struct()) \
        .writeTo("lake.smartcity.gps_data").append()
    t = catalog.load_table("smartcity.gps_data")
    got = t.scan(row_filter="event_id == 'veh-9:0000abcd:7'").to_arrow().to_pylist()
    assert len(got) == 1
    assert {k: got[0][k] for k in ("event_id", "device_id", "lat", "lon", "fix_mode", "kafka_offset")} == \
        {"event_id": "veh-9:0000abcd:7", "device_id": "dev-1", "lat": 38.1, "lon": 23.7,
         "fix_mode": rec["fix_mode"], "kafka_offset": 42}
    assert got[0]["ts"] == ts and got[0]["alt_m"] is None
    (task,) = list(t.scan().plan_files())
    assert "/ts_day=2026-11-28/" in task.file.file_path   # the day partition of the event time


@pytest.fixture
def evolve_settings(lake, request):
    """Settings naming a namespace of its own in the same catalog, for tables a test may change."""
    s, spark, _, _ = lake
    ns = "t_" + request.node.name.removeprefix("test_")[:40]
    return dataclasses.replace(s, catalog=dataclasses.replace(s.catalog, namespace=ns))


def test_a_new_nullable_field_and_a_widened_type_evolve_the_table(lake, evolve_settings):
    _, spark, _, catalog = lake
    s = evolve_settings
    IT.create_or_evolve(spark, s, [IT.data_table(GPS)])
    ident = table_identifier(s, "gps_data")
    spark.sql(f"INSERT INTO {ident} SELECT * FROM VALUES ('a:0000abcd:1', 'a', TIMESTAMP'2026-01-01 00:00:00', "
              "'sim', 1L, 'sim', 1, NULL, NULL, NULL, NULL, NULL, 1, 7, NULL, 'gps_data', 0, 0L, "
              "TIMESTAMP'2026-01-01 00:00:00', TIMESTAMP'2026-01-01 00:00:00', '0000abcd')")
    pdop = cs.Field("pdop", cs.DOUBLE, "Position dilution of precision", True)
    rt = gps_with(("sats_used", cs.Field("sats_used", cs.LONG, "Satellites used in the fix", True)), extra=(pdop,))
    (done,) = IT.create_or_evolve(spark, s, [IT.data_table(rt)])
    assert done["action"] == "evolved"
    assert done["changes"] == ["widen column sats_used int -> bigint",
                               "add column pdop double (nullable) after hdop"]
    t = catalog.load_table(f"{s.catalog.namespace}.gps_data")
    fields = {f.name: f for f in t.schema().fields}
    assert (fields["pdop"].field_type, fields["pdop"].required, fields["pdop"].doc) == \
        (it.DoubleType(), False, pdop.description)
    assert fields["sats_used"].field_type == it.LongType()
    assert [f.name for f in t.schema().fields] == [c.name for c in IT.data_table(rt).columns]
    (old,) = t.scan().to_arrow().to_pylist()   # the row written before reads with the new schema
    assert old["pdop"] is None and old["sats_used"] == 7
    assert IT.create_or_evolve(spark, s, [IT.data_table(rt)])[0]["action"] == "unchanged"


def test_a_derived_column_is_added_to_a_table_without_it_and_filled_in_its_old_rows(lake, evolve_settings):
    _, spark, _, catalog = lake
    s = evolve_settings
    current = IT.data_table(GPS)
    before = dataclasses.replace(current, columns=current.columns[:-1], derived={})  # before boot_id
    IT.create_or_evolve(spark, s, [before])
    ident = table_identifier(s, "gps_data")
    rows = [(f"veh-{i}:{boot}:{seq}", f"veh-{i}", seq) for i, (boot, seq) in
            enumerate([("0000abcd", 1), ("ffff0001", 12), ("0000abcd", 3)])]
    values = ", ".join(f"('{e}', '{d}', TIMESTAMP'2026-01-01 00:00:00', 'sim', {q}L, 'sim', 1, NULL, NULL, NULL, "
                       "NULL, NULL, 1, 7, NULL, 'gps_data', 0, 0L, TIMESTAMP'2026-01-01 00:00:00', "
                       "TIMESTAMP'2026-01-01 00:00:00')" for e, d, q in rows)
    spark.sql(f"INSERT INTO {ident} VALUES {values}")

    (done,) = IT.create_or_evolve(spark, s, [current])
    assert done["changes"] == ["add column boot_id string (nullable) after ingest_ts",
                               "fill derived column boot_id = split_part(event_id, ':', 2) in the rows without it"]
    t = catalog.load_table(f"{s.catalog.namespace}.gps_data")
    assert [f.name for f in t.schema().fields] == [c.name for c in current.columns]
    got = sorted((r["event_id"], r["boot_id"]) for r in t.scan().to_arrow().to_pylist())
    assert got == sorted((e, e.split(":")[1]) for e, _, _ in rows)   # read by pyiceberg, not Spark
    assert IT.create_or_evolve(spark, s, [current])[0]["action"] == "unchanged"

    # A fill cut short (rows still without the value, the column there) is done by the next run.
    spark.sql(f"UPDATE {ident} SET boot_id = NULL WHERE event_id = 'veh-1:ffff0001:12'")
    (again,) = IT.create_or_evolve(spark, s, [current])
    assert again["changes"] == ["fill derived column boot_id = split_part(event_id, ':', 2) in the rows without it"]
    assert spark.sql(f"SELECT boot_id FROM {ident} WHERE event_id = 'veh-1:ffff0001:12'").first()[0] == "ffff0001"


def test_a_narrowing_change_is_refused_and_changes_no_table(lake, evolve_settings):
    _, spark, _, catalog = lake
    s = evolve_settings
    IT.create_or_evolve(spark, s, [IT.data_table(GPS), IT.quarantine_table()])
    before = catalog.load_table(f"{s.catalog.namespace}.quarantine").metadata_location
    narrowed = gps_with(("seq", cs.Field("seq", cs.INT, "Per-device sequence number", minimum=0)))
    # The quarantine table alone would be evolved (a new doc), but nothing is changed when any table is refused.
    q = IT.quarantine_table()
    q = dataclasses.replace(q, columns=(dataclasses.replace(q.columns[0], doc="changed"),) + q.columns[1:])
    with pytest.raises(IT.IncompatibleSchema) as e:
        IT.create_or_evolve(spark, s, [IT.data_table(narrowed), q])
    ident = table_identifier(s, "gps_data")
    assert e.value.problems == [
        f"{ident}: column seq is bigint in the table and int in contracts: Iceberg only widens int -> "
        "bigint and float -> double, and existing data files hold bigint. Keep the field's type, or add a "
        "new nullable field under a new name (and stop filling the old one), or create a new table and "
        "copy the data into it."]
    assert "no table was changed" in str(e.value)
    assert catalog.load_table(f"{s.catalog.namespace}.gps_data").schema().find_field("seq").field_type == it.LongType()
    assert catalog.load_table(f"{s.catalog.namespace}.quarantine").metadata_location == before


def test_cli_tables_creates_and_shows(lake, capsys, monkeypatch):
    """`smartcity-lake tables --show` in this process (the module's session is reused)."""
    import json
    from smartcity.spark_jobs.__main__ import main
    s, spark, _, _ = lake
    monkeypatch.setenv("SMARTCITY_LAKE_CATALOG__NAMESPACE", "t_cli")
    assert main(["tables", "--lake", s.lake, "--show"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    n = len(IT.table_defs())
    assert [(d["table"], d["action"]) for d in out[:n]] == \
        [(f"lake.t_cli.{td.name}", "created") for td in IT.table_defs()]
    shown = {d["table"]: d for d in out[n:]}
    gps = shown["lake.t_cli.gps_data"]
    assert gps["partitioning"] == ["days(ts)"]
    assert gps["columns"][0] == {"name": "event_id", "type": "string", "required": True,
                                 "doc": GPS.fields[0].description}


def test_todays_sessions_get_no_iceberg_jar_and_catalog_sessions_get_both(tmp_path):
    from smartcity.spark_jobs.session import ICEBERG_JARS, jar_list, spark_conf
    s = LakeSettings(lake=str(tmp_path / "lake"))
    assert not [j for j in jar_list(s) if j.rsplit("/", 1)[-1].startswith(ICEBERG_JARS)]
    with_iceberg = {j.rsplit("/", 1)[-1].split("-")[0] for j in jar_list(s, iceberg=True)}
    assert {"iceberg", "sqlite"} <= with_iceberg
    assert not any(k.startswith(("spark.sql.catalog.", "spark.sql.extensions")) for k in spark_conf(s, False))
    assert spark_conf(s, False, iceberg=True).items() >= catalog_spark_conf(s).items()
