"""`smartcity-catalog show|diff` (issue 12, section 1): what the lake's Iceberg catalog holds, and
where it has drifted from contracts/, read without Spark.

On a real catalog: one child process creates the tables the way the lake does (Spark's
create_or_evolve on a JDBC catalog on SQLite) and writes rows into gps_data, then exits (its JVM
with it: the only Spark of this module). Each drift case has a namespace of its own in that
catalog, which the test changes with pyiceberg on a *writable* catalog on the same SQLite file (as
another writer, or a person, would), then asks `diff`. The rules themselves are also checked
without a catalog, against the lake job's own plan (they must agree)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("pyiceberg")

from smartcity.catalog import inspect as CI  # noqa: E402
from smartcity.catalog import tables as CT  # noqa: E402
from smartcity.catalog.__main__ import main  # noqa: E402
from smartcity.catalog.location import LakeLocation, pyiceberg_properties  # noqa: E402
from smartcity.contracts import RECORD_TYPES  # noqa: E402
from smartcity.contracts import schema as cs  # noqa: E402
from smartcity.contracts.schema import GPS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UTC = timezone.utc
ROWS = 3
# Namespaces the child creates with only gps_data in them, one per drift case; "d_old_contract"
# gets the table an older contract made (see OLD_GPS).
DRIFT_NAMESPACES = ("d_dropped", "d_dropped_required", "d_added", "d_optional", "d_widened_in_table",
                    "d_partition", "d_missing_tables", "d_old_contract", "d_sorted")


def gps_with(*changes: tuple[str, cs.Field | None]) -> cs.RecordType:
    """The GPS record type with fields replaced (name -> Field, None removes it)."""
    by_name = dict(changes)
    return dataclasses.replace(GPS, fields=tuple(f for f in (by_name.get(f.name, f) for f in GPS.fields)
                                                 if f is not None))


def field(name: str) -> cs.Field:
    return next(f for f in GPS.fields if f.name == name)


# What an older contract defined: seq was an int, alt_m was required, heading_deg did not exist.
OLD_GPS = gps_with(("seq", dataclasses.replace(field("seq"), type=cs.INT)),
                   ("alt_m", dataclasses.replace(field("alt_m"), nullable=False)),
                   ("heading_deg", None))


def write_lake(lake: str) -> None:
    """In a child process: every table by create_or_evolve (namespace smartcity) with ROWS rows in
    gps_data; gps_data alone in each drift namespace."""
    sys.path.insert(0, str(REPO))   # run as a script: tests/ is not a package on its own path
    from smartcity.contracts import example
    from tests.support.lake_rows import table_frame
    from smartcity.spark_jobs import iceberg_tables as IT
    from smartcity.spark_jobs.session import build_session
    from smartcity.spark_jobs.settings import LakeSettings

    s = LakeSettings(lake=lake)
    spark = build_session(s, "test-catalog-cli", iceberg=True)
    IT.create_or_evolve(spark, s)
    td = IT.data_table(GPS)
    rows = []
    for i in range(ROWS):
        ts = datetime(2026, 3, 1, 8, i, tzinfo=UTC)
        rec = example("gps_data") | {"event_id": f"dev-1:0000abcd:{i}", "ts": ts, "seq": i, "lat": 13.75,
                                     "lon": 100.5, "kafka_topic": "gps_data", "kafka_partition": 0,
                                     "kafka_offset": i, "kafka_ts": ts, "ingest_ts": ts}
        rows.append(rec)
    table_frame(spark, td, rows).writeTo("lake.smartcity.gps_data").append()
    for ns in DRIFT_NAMESPACES:
        ns_s = dataclasses.replace(s, catalog=dataclasses.replace(s.catalog, namespace=ns))
        IT.create_or_evolve(spark, ns_s, [IT.data_table(OLD_GPS if ns == "d_old_contract" else GPS)])
    spark.stop()


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> LakeLocation:
    pytest.importorskip("pyspark")
    path = str(tmp_path_factory.mktemp("catalog") / "lake")
    r = subprocess.run([sys.executable, __file__, "write-lake", path], capture_output=True, text=True,
                       cwd=REPO, timeout=900)
    assert r.returncode == 0, f"spark writer failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return LakeLocation(lake=path)


@pytest.fixture(scope="module")
def writable(lake):
    """pyiceberg on the same catalog, writable: how a test changes a table behind the lake's back."""
    from pyiceberg.catalog import load_catalog
    return load_catalog(lake.catalog.name, **pyiceberg_properties(lake))


@pytest.fixture
def env(monkeypatch):
    for var in [v for v in os.environ if v.startswith("SMARTCITY_LAKE_")]:
        monkeypatch.delenv(var)
    return monkeypatch


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    return code, capsys.readouterr().out.splitlines()


def diff(capsys, env, lake: LakeLocation, namespace: str, *args: str) -> tuple[int, list[dict]]:
    """`diff --format json` on a namespace of the lake: (exit status, findings)."""
    env.setenv("SMARTCITY_LAKE_CATALOG__NAMESPACE", namespace)
    code, out = run(capsys, "diff", "--lake", lake.lake, "--format", "json", *args)
    return code, [json.loads(line) for line in out]


def only(findings: list[dict]) -> dict:
    assert len(findings) == 1, findings
    return findings[0]


# ---- show ------------------------------------------------------------------------------------

def test_show_lists_every_table_the_lake_created_in_definition_order(lake, capsys, env):
    code, out = run(capsys, "show", "--lake", lake.lake, "--format", "json")
    assert code == 0
    tables = [json.loads(line) for line in out]
    assert [t["table"] for t in tables] == [f"lake.smartcity.{n}" for n in CT.table_names()]
    assert all(t["exists"] and t["format_version"] == 2 for t in tables)


def test_show_gives_columns_partitioning_snapshot_and_sizes_of_a_table_with_rows(lake, writable, capsys, env):
    code, out = run(capsys, "show", "--lake", lake.lake, "--table", "gps", "--format", "json")
    assert code == 0
    (t,) = [json.loads(line) for line in out]
    iceberg = writable.load_table("smartcity.gps_data")
    snap = iceberg.current_snapshot()
    assert t["table"] == "lake.smartcity.gps_data" and t["comment"] == GPS.description
    assert t["columns"] == [{"name": f.name, "type": CT.iceberg_type(f), "required": not f.nullable,
                             "doc": f.description} for f in CT.data_table(GPS).columns]
    assert t["columns"][2] == {"name": "ts", "type": "timestamptz", "required": True,
                               "doc": field("ts").description}
    assert (t["partition_by"], t["sort_order"]) == (["days(ts)"], [])
    assert (t["snapshot_id"], t["snapshot_operation"], t["snapshots"]) == (snap.snapshot_id, "append", 1)
    assert t["snapshot_time"] == datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")
    files = list(iceberg.scan().plan_files())
    assert (t["records"], t["data_files"]) == (ROWS, len(files))
    assert t["bytes"] == sum(f.file.file_size_in_bytes for f in files) > 0
    assert t["metadata_location"] == iceberg.metadata_location
    assert t["location"] == f"{lake.lake}/warehouse/smartcity/gps_data"


def test_show_as_text_is_a_block_per_table(lake, capsys, env):
    code, out = run(capsys, "show", "--lake", lake.lake, "--table", "gps_data", "--table", "quarantine")
    assert code == 0
    text = "\n".join(out)
    assert out[0] == f"lake.smartcity.gps_data  ({GPS.description})"
    assert re.search(rf"snapshot \d+ at 20\d\d-.*Z \(append\); 1 snapshot kept; \d+ data files?, {ROWS} records, "
                     r"[\d,]+ bytes", out[1]), out[1]
    assert "partitioned by days(ts); sort order none; format version 2" in out[2]
    assert re.search(r"^    event_id +string +required +Unique, deterministic id", text, re.M)
    assert re.search(r"^    alt_m +double +optional +Altitude", text, re.M)
    assert "lake.smartcity.quarantine" in text and "no snapshot yet" in text
    assert "partitioned by days(ingest_ts)" in text


def test_show_reports_the_sort_order_a_table_has(lake, writable, capsys, env):
    from pyiceberg.table.sorting import NullOrder
    from pyiceberg.transforms import IdentityTransform
    with writable.load_table("d_sorted.gps_data").update_sort_order() as u:
        u.asc("ts", IdentityTransform(), NullOrder.NULLS_FIRST)
    env.setenv("SMARTCITY_LAKE_CATALOG__NAMESPACE", "d_sorted")
    code, out = run(capsys, "show", "--lake", lake.lake, "--format", "json")
    assert code == 0
    (t,) = [json.loads(line) for line in out]   # the namespace holds gps_data only
    assert t["sort_order"] == ["ts ASC NULLS FIRST"]


def test_show_of_a_table_the_catalog_lacks_says_so(lake, capsys, env):
    env.setenv("SMARTCITY_LAKE_CATALOG__NAMESPACE", "d_missing_tables")
    code, out = run(capsys, "show", "--lake", lake.lake, "--table", "weather")
    assert (code, out) == (0, ["lake.d_missing_tables.weather_data: not in the catalog (run "
                               "`smartcity-lake tables` to create it)"])


def test_show_as_athena_ddl_parses_and_keeps_every_column_and_doc(lake, capsys, env):
    """What an Athena user would run: CREATE TABLE ... TBLPROPERTIES ('table_type'='ICEBERG'),
    string literals as Athena's (Hive's) lexer reads them (docs hold quotes: "The vehicle's ...")."""
    sqlglot = pytest.importorskip("sqlglot")
    from sqlglot import exp
    code, out = run(capsys, "show", "--lake", lake.lake, "--format", "ddl")
    assert code == 0
    ddl = "\n".join(out)
    statements = sqlglot.parse(ddl, read="athena")
    assert len(statements) == len(CT.table_names()) == ddl.count("CREATE TABLE ")
    athena = {"string": "TEXT", "int": "INT", "long": "BIGINT", "double": "DOUBLE", "timestamptz": "TIMESTAMP"}
    for spec, e, sql in zip(CT.table_specs(), statements, ddl.split("CREATE TABLE ")[1:]):
        assert isinstance(e, exp.Create) and e.this.this.name == spec.name
        cols = list(e.find_all(exp.ColumnDef))
        assert [c.name for c in cols] == [f.name for f in spec.columns]
        assert [c.args["kind"].this.name for c in cols] == [athena[CT.iceberg_type(f)] for f in spec.columns]
        docs = [c.find(exp.CommentColumnConstraint).this.this for c in cols]
        assert docs == [f.description for f in spec.columns]
        props = {p.name: p.text("value") for p in e.find_all(exp.Property) if p.name}
        assert props["table_type"] == "ICEBERG"
        assert f"PARTITIONED BY (day(`{spec.partition_by[0][5:-1]}`))" in sql
        assert f"LOCATION '{lake.lake}/warehouse/smartcity/{spec.name}'" in sql


# ---- diff ------------------------------------------------------------------------------------

def test_no_drift_after_the_lake_created_its_tables(lake, capsys, env):
    code, out = run(capsys, "diff", "--lake", lake.lake)
    assert (code, out) == (0, [f"no drift: {len(CT.table_names())} tables as contracts/ define"])


def test_a_table_contracts_define_and_the_catalog_lacks_and_one_it_does_not_define(lake, writable, capsys, env):
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType
    writable.create_table("d_missing_tables.old_gps", Schema(NestedField(1, "x", StringType(), required=False)))
    code, findings = diff(capsys, env, lake, "d_missing_tables")
    assert code == 1
    missing = [f for f in findings if f["kind"] == "missing_table"]
    assert [f["table"] for f in missing] == [f"lake.d_missing_tables.{n}" for n in CT.table_names()
                                             if n != "gps_data"]
    assert all(f["remedy"] == "evolve" and "run `smartcity-lake tables` to create it" in f["message"]
               for f in missing)
    (extra,) = [f for f in findings if f["kind"] == "extra_table"]
    assert extra["table"] == "lake.d_missing_tables.old_gps" and extra["remedy"] == "deliberate"
    assert "DROP TABLE lake.d_missing_tables.old_gps" in extra["message"]
    assert len(findings) == len(CT.table_names())    # the missing ones and the extra one


def test_a_nullable_column_the_table_lacks_is_added_by_the_lake_job(lake, writable, capsys, env):
    with writable.load_table("d_dropped.gps_data").update_schema() as u:
        u.delete_column("hdop")
    code, findings = diff(capsys, env, lake, "d_dropped", "--table", "gps_data")
    assert code == 1
    assert only(findings) == {
        "table": "lake.d_dropped.gps_data", "kind": "missing_column", "column": "hdop", "remedy": "evolve",
        "message": "column hdop (double, optional) is in contracts/ and not in the table: run "
                   "`smartcity-lake tables` to add it"}


def test_a_required_column_the_table_lacks_is_incompatible(lake, writable, capsys, env):
    with writable.load_table("d_dropped_required.gps_data").update_schema() as u:
        u.delete_column("fix_mode")
    code, findings = diff(capsys, env, lake, "d_dropped_required", "--table", "gps_data")
    f = only(findings)
    assert code == 1 and (f["kind"], f["column"], f["remedy"]) == ("missing_column", "fix_mode", "incompatible")
    assert f["message"].startswith("column fix_mode (int, required) is in contracts/ and not in the table; "
                                   "incompatible:") and "make the field nullable=True" in f["message"]


def test_a_column_only_the_table_has_blocks_the_lake_job_until_resolved(lake, writable, capsys, env):
    from pyiceberg.types import DoubleType
    with writable.load_table("d_added.gps_data").update_schema() as u:
        u.add_column("pdop", DoubleType(), doc="Position dilution of precision")
    code, findings = diff(capsys, env, lake, "d_added", "--table", "gps_data")
    f = only(findings)
    assert code == 1 and (f["kind"], f["column"], f["remedy"]) == ("extra_column", "pdop", "incompatible")
    assert "put the field back in contracts/" in f["message"]
    assert "ALTER TABLE lake.d_added.gps_data DROP COLUMN pdop" in f["message"]


def test_a_required_field_the_table_holds_as_optional_is_incompatible(lake, writable, capsys, env):
    with writable.load_table("d_optional.gps_data").update_schema() as u:
        u.make_column_optional("fix_mode")
    code, findings = diff(capsys, env, lake, "d_optional", "--table", "gps_data")
    f = only(findings)
    assert (f["kind"], f["column"], f["remedy"]) == ("nullability", "fix_mode", "incompatible")
    assert f["message"] == ("column fix_mode is optional in the table and required in contracts/; incompatible: "
                            "existing rows may hold nulls: keep the field nullable=True in contracts/")


def test_a_type_wider_in_the_table_than_in_contracts_is_incompatible(lake, writable, capsys, env):
    from pyiceberg.types import LongType
    with writable.load_table("d_widened_in_table.gps_data").update_schema() as u:
        u.update_column("sats_used", LongType())
    code, findings = diff(capsys, env, lake, "d_widened_in_table", "--table", "gps_data")
    f = only(findings)
    assert (f["kind"], f["column"], f["remedy"]) == ("type", "sats_used", "incompatible")
    assert f["message"].startswith("column sats_used is long in the table and int in contracts/; incompatible: "
                                   "Iceberg only widens float -> double and int -> long")


def test_a_table_an_older_contract_made_lists_what_the_lake_job_will_evolve(lake, capsys, env):
    """seq int -> long (a widening), alt_m required -> optional, heading_deg new and nullable:
    all three are changes `smartcity-lake tables` applies itself."""
    code, findings = diff(capsys, env, lake, "d_old_contract", "--table", "gps_data")
    assert code == 1
    assert {(f["kind"], f["column"], f["remedy"]) for f in findings} == {
        ("type", "seq", "evolve"), ("nullability", "alt_m", "evolve"),
        ("missing_column", "heading_deg", "evolve")}
    (seq,) = [f for f in findings if f["column"] == "seq"]
    assert seq["message"] == ("column seq is int in the table and long in contracts/, a widening: run "
                              "`smartcity-lake tables` to widen it")


def test_a_partition_spec_other_than_the_lake_jobs_is_reported_as_kept(lake, writable, capsys, env):
    from pyiceberg.transforms import HourTransform
    with writable.load_table("d_partition.gps_data").update_spec() as u:
        u.remove_field("ts_day")
        u.add_field("ts", HourTransform(), "ts_hour")
    code, findings = diff(capsys, env, lake, "d_partition", "--table", "gps_data")
    f = only(findings)
    assert (code, f["kind"], f["remedy"]) == (1, "partition", "deliberate")
    assert f["message"].startswith("partitioned by hours(ts), and the lake job defines days(ts): "
                                   "`smartcity-lake tables` keeps a table's partition spec;")


def test_diff_as_text_is_one_line_per_finding_and_a_summary(lake, capsys, env):
    env.setenv("SMARTCITY_LAKE_CATALOG__NAMESPACE", "d_old_contract")
    code, out = run(capsys, "diff", "--lake", lake.lake, "--table", "gps")
    assert code == 1 and len(out) == 4
    assert all(line.startswith("lake.d_old_contract.gps_data: column ") for line in out[:3])
    assert out[3] == "drift: 3 findings in 1 table (3 fixed by `smartcity-lake tables`)"


# ---- the rules, without a catalog ------------------------------------------------------------

def state_of(spec: CT.TableSpec, ident: str) -> CI.TableState:
    """A table exactly as the lake job creates it from `spec`."""
    return CI.TableState(ident, tuple(CI.ColumnState(f.name, CT.iceberg_type(f), not f.nullable, f.description)
                                      for f in spec.columns), spec.partition_by, comment=spec.comment)


@pytest.mark.parametrize("contract", [
    gps_with(("seq", dataclasses.replace(field("seq"), type=cs.INT))),                 # narrowed
    gps_with(("fix_mode", dataclasses.replace(field("fix_mode"), type=cs.STRING))),    # changed
    gps_with(("sats_used", dataclasses.replace(field("sats_used"), nullable=False))),  # made required
    gps_with(("sats_used", dataclasses.replace(field("sats_used"), type=cs.LONG))),    # widened
    gps_with(("fix_mode", dataclasses.replace(field("fix_mode"), nullable=True))),     # made nullable
    gps_with(("hdop", None)),                                                          # removed
    gps_with(("hdop", dataclasses.replace(field("hdop"), description="HDOP"))),        # new doc
    dataclasses.replace(GPS, fields=GPS.fields + (cs.Field("pdop", cs.DOUBLE, "PDOP", True),)),
    dataclasses.replace(GPS, fields=GPS.fields + (cs.Field("vdop", cs.DOUBLE, "VDOP"),)),
], ids=["narrowed", "changed", "made-required", "widened", "made-nullable", "removed", "new-doc",
       "new-nullable", "new-required"])
def test_diff_agrees_with_the_lake_jobs_own_plan(contract):
    """A table made by today's contract, and a changed contract: what diff calls incompatible is
    what the lake job refuses, and what it calls evolve is what the lake job changes."""
    pytest.importorskip("pyspark")
    from smartcity.spark_jobs import iceberg_tables as IT
    ident = "lake.smartcity.gps_data"
    findings = CI.diff_table(ident, CT.data_table(contract), state_of(CT.data_table(GPS), ident))
    plan = IT.plan_evolution(ident, IT.data_table(contract), IT.data_table(GPS).struct())
    refused = {re.match(rf"{ident}: column (\w+) ", p).group(1) for p in plan.problems}
    changed = {re.search(r"column (\w+)", what).group(1) for what, _ in plan.statements}
    assert findings and {f.column for f in findings if f.remedy == CI.INCOMPATIBLE} == refused
    if not refused:   # (a refused plan lists no statement)
        assert {f.column for f in findings if f.remedy == CI.EVOLVE} == changed


def test_a_table_as_the_lake_creates_it_has_no_drift():
    for spec in CT.table_specs():
        assert CI.diff_table("t", spec, state_of(spec, "t")) == []
    assert [s.name for s in CT.table_specs()] == [rt.name for rt in RECORD_TYPES] + ["quarantine", "gps_spans", "vehicle_spans"]


# ---- settings --------------------------------------------------------------------------------

def test_the_lake_jobs_settings_file_serves_the_catalog_command_too(lake, tmp_path, capsys, env):
    """Its keys the catalog does not need ([kafka], [maintenance], trigger_s ...) are skipped;
    lake and [catalog] are read; the environment wins over the file and --lake over both."""
    cfg = tmp_path / "lake.toml"
    cfg.write_text(f'lake = "{tmp_path}/elsewhere"\ntrigger_s = 2.0\nbootstrap = "k:9092"\n'
                   '[catalog]\nnamespace = "d_old_contract"\n[kafka]\nsecurity_protocol = "SSL"\n'
                   '[maintenance]\nretain_last = 5\n')
    code, out = run(capsys, "diff", "--config", str(cfg), "--lake", lake.lake, "--table", "gps")
    assert code == 1 and out[0].startswith("lake.d_old_contract.gps_data: ")
    env.setenv("SMARTCITY_LAKE_CATALOG__NAMESPACE", "smartcity")
    assert run(capsys, "diff", "--config", str(cfg), "--lake", lake.lake)[0] == 0


def test_a_mistake_in_a_section_it_reads_is_still_one_line_and_exit_2(tmp_path, capsys, env):
    cfg = tmp_path / "lake.toml"
    cfg.write_text('[catalog]\nnamspace = "x"\n')
    assert main(["diff", "--config", str(cfg), "--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smartcity-catalog: catalog.namspace: unknown setting") and "\n" not in err


def test_a_lake_folder_that_is_not_there_is_a_usage_error(tmp_path, capsys, env):
    assert main(["show", "--lake", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (f"smartcity-catalog: lake: {tmp_path}/nope is not a folder (set --lake, "
                                       "`lake` in the settings file or SMARTCITY_LAKE_LAKE)\n")


def test_an_empty_lake_has_every_table_missing(tmp_path, capsys, env):
    code, out = run(capsys, "diff", "--lake", str(tmp_path))
    n = len(CT.table_names())
    assert code == 1 and len(out) == n + 1 and f"{n} findings in {n} tables" in out[-1]
    assert run(capsys, "show", "--lake", str(tmp_path)) == \
        (0, ["lake.smartcity: no tables (run `smartcity-lake tables` to create them)"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["write-lake"]:
        write_lake(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} write-lake LAKE")
