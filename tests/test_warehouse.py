"""The warehouse load (warehouse/, docs/warehouse.md) against a REAL PostgreSQL 15 (Debian's server,
started by deploy/local/postgres.py) and a REAL lake written by the lake job's own Spark code
(tests/support/fleet_lake.py): 2 vehicles, 36 minutes of one day.

The tests of the load run in file order on one lake and one database, as a story: the first load,
a second one, the lake growing (late rows in an hour already loaded, late copies of loaded rows,
then a compaction), loaders killed with SIGKILL mid-load, a forgotten snapshot, new rows whose
parent snapshot maintenance expired, a refused file. Spark runs three times in child processes
(the fleet; the growth and the compaction; an append and the expiry).

The Redshift side cannot run here: its SQL is checked to parse as Redshift (sqlglot), its DDL is
checked in and kept current, and the Data API client is run against moto's server for the API's
shape (moto runs no SQL) and botocore's Stubber for batch_execute_statement (moto lacks it)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("pyiceberg")

from deploy.local import postgres as pgmod  # noqa: E402
from deploy.local.process import Process, free_port, http_answers  # noqa: E402
from smartcity.catalog.location import LakeLocation  # noqa: E402
from smartcity.catalog.reader import event_ids, read_table  # noqa: E402
from smartcity.contracts import schema as cs  # noqa: E402
from smartcity.contracts.schema import Field  # noqa: E402
from smartcity.warehouse import lake as wlake  # noqa: E402
from smartcity.warehouse import load as wload  # noqa: E402
from smartcity.warehouse.load import PostgresWarehouse  # noqa: E402
from smartcity.warehouse.schema import WarehouseTable, warehouse_table, warehouse_tables  # noqa: E402
from smartcity.warehouse.settings import Redshift as RedshiftSettings, WarehouseSettings  # noqa: E402
from smartcity.warehouse.sql import IncompatibleSchema, Postgres, Redshift  # noqa: E402
from tests.support.fleet_lake import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA_TABLES = [t.name for t in warehouse_tables()]
LATE_NEW, LATE_COPIES = 40, 6

pytestmark = pytest.mark.skipif(not pgmod.available(), reason="no PostgreSQL >= 15: deploy/setup.d/40-postgres.sh")


# ---- fixtures: one lake, one database ---------------------------------------------------------

@pytest.fixture(scope="module")
def workdir():
    # Not under pytest's tmp_path: as root the server runs as `postgres`, which may not enter
    # /tmp/pytest-of-root (0700). A folder of our own that it may pass through (0711).
    d = Path(tempfile.mkdtemp(prefix="smartcity-warehouse-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lake(workdir):
    counts = generate(workdir / "lake", devices=2, days=1, hours_per_day=0.6, staging=workdir / "staging")
    return workdir / "lake", counts


@pytest.fixture(scope="module")
def pg(workdir):
    with pgmod.PostgresServer(workdir / "pg") as server:
        yield server


def settings_for(lake_dir: Path, server) -> WarehouseSettings:
    s = WarehouseSettings(lake=str(lake_dir))
    s.postgres.port, s.postgres.password = server.port, server.password
    return s


def warehouse_ids(server, table: str) -> list[str]:
    with psycopg.connect(server.dsn()) as c:
        return [r[0] for r in c.execute(f"SELECT event_id FROM smartcity.{table}")]


def counts(server) -> dict[str, int]:
    with psycopg.connect(server.dsn()) as c:
        return {t: c.execute(f"SELECT count(*) FROM smartcity.{t}").fetchone()[0] for t in DATA_TABLES}


def cli_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    return {**env, "SMARTCITY_WAREHOUSE_POSTGRES__PORT": str(server.port),
            "SMARTCITY_WAREHOUSE_POSTGRES__PASSWORD": server.password}


# ---- the story --------------------------------------------------------------------------------

def test_the_first_load_holds_exactly_the_lake(lake, pg):
    lake_dir, generated = lake
    results = PostgresWarehouse(settings_for(lake_dir, pg)).load()
    assert [r.table for r in results] == DATA_TABLES
    assert all(r.mode == "full" and r.last_snapshot_id is None and not r.refused for r in results)
    s = LakeLocation(lake=str(lake_dir))
    for t in DATA_TABLES:
        in_lake = event_ids(s, t)
        assert sorted(warehouse_ids(pg, t)) == sorted(in_lake), t
        assert len(in_lake) == generated[t] > 0
    assert {r.table: r.rows_loaded for r in results} == {t: generated[t] for t in DATA_TABLES}


def test_quarantine_never_enters_the_warehouse(lake, pg):
    with psycopg.connect(pg.dsn()) as c:
        tables = {r[0] for r in c.execute("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema = 'smartcity'")}
    assert "quarantine" not in tables and set(DATA_TABLES) <= tables
    with pytest.raises(ValueError, match="quarantine is not loaded"):
        warehouse_table("quarantine")


def test_a_second_load_loads_nothing(lake, pg):
    before = counts(pg)
    results = PostgresWarehouse(settings_for(lake[0], pg)).load()
    assert all(r.mode == "none" and r.files == 0 and r.rows_loaded == 0 for r in results)
    assert counts(pg) == before


# The lake grows: late rows of an hour already loaded, late copies of loaded rows appended past
# the stream's MERGE (the lake itself then holds them twice), then a compaction of the day.
_GROW = """
import sys
from smartcity.catalog.location import table_identifier
from smartcity.spark_jobs import iceberg_tables as IT
from smartcity.spark_jobs.maintenance import maintain
from smartcity.spark_jobs.session import build_session
from smartcity.spark_jobs.settings import LakeSettings
s = LakeSettings(lake=sys.argv[1])
s.maintenance.min_input_files = 2
spark = build_session(s, "warehouse-test", iceberg=True)
td = next(t for t in IT.table_defs() if t.name == "gps_data")
df = spark.read.parquet(sys.argv[2])
df.select(*[df[c.name].cast(c.type) for c in td.columns]).writeTo(table_identifier(s, "gps_data")).append()
(r,) = maintain(spark, s, ["gps_data"])
assert r["rewritten_files"] >= 2, r
spark.stop()
"""


@pytest.fixture(scope="module")
def grown(lake, workdir):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    lake_dir, _ = lake
    s = LakeLocation(lake=str(lake_dir))
    gps = read_table(s, "gps_data").sort_by("event_id")
    new = gps.slice(100, LATE_NEW)
    # New readings of an hour the first load already covered: same devices and hour, new seqs.
    ids = [f"{e.rsplit(':', 1)[0]}:{int(e.rsplit(':', 1)[1]) + 10_000_000}" for e in new.column("event_id").to_pylist()]
    new = new.set_column(new.schema.get_field_index("event_id"), "event_id", pa.array(ids))
    new = new.set_column(new.schema.get_field_index("seq"), "seq",
                         pc.add(new.column("seq"), pa.scalar(10_000_000, pa.int64()))).cast(gps.schema)
    copies = gps.slice(500, LATE_COPIES)
    staged = workdir / "late-gps"
    staged.mkdir()
    pq.write_table(pa.concat_tables([new, copies]), staged / "late.parquet")
    p = subprocess.run([sys.executable, "-c", _GROW, str(lake_dir), str(staged)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return set(ids), set(copies.column("event_id").to_pylist())


def _killed_at(where: str, lake_dir: Path, server, flag: Path) -> None:
    env = {**cli_env(server), wload.PAUSE_ENV: where, wload.PAUSE_FILE_ENV: str(flag)}
    p = subprocess.Popen([str(BIN / "smartcity-warehouse"), "load", "--lake", str(lake_dir), "--table", "gps_data"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, f"the loader never reached {where}"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(10)


@pytest.mark.parametrize("where", ["after-copy:gps_data", "before-commit:gps_data"])
def test_a_loader_killed_mid_load_changes_nothing(lake, pg, grown, where, workdir):
    before = counts(pg)
    _killed_at(where, lake[0], pg, workdir / f"paused-{where.replace(':', '-')}")
    assert counts(pg) == before


def test_after_the_kills_the_rerun_loads_the_late_rows_once_and_the_compaction_adds_nothing(lake, pg, grown):
    late_ids, copied_ids = grown
    before = counts(pg)
    p = subprocess.run([str(BIN / "smartcity-warehouse"), "load", "--lake", str(lake[0])],
                       env=cli_env(pg), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    results = {r["table"]: r for r in map(json.loads, p.stdout.splitlines())}
    gps = results["gps_data"]
    # Only the appended file was read: the compaction's replace snapshot was skipped.
    assert gps["mode"] == "incremental" and gps["files"] == 1
    assert gps["rows_read"] == LATE_NEW + LATE_COPIES and gps["rows_loaded"] == LATE_NEW
    assert gps["skipped_snapshots"].get("replace", 0) >= 1
    assert all(r["rows_loaded"] == 0 for t, r in results.items() if t != "gps_data")
    ids = warehouse_ids(pg, "gps_data")
    assert len(ids) == len(set(ids)) == before["gps_data"] + LATE_NEW
    assert late_ids <= set(ids) and copied_ids <= set(ids)
    # The lake holds the late copies twice; the warehouse once each.
    lake_ids = event_ids(LakeLocation(lake=str(lake[0])), "gps_data")
    assert len(lake_ids) == len(ids) + LATE_COPIES and set(lake_ids) == set(ids)


def test_a_last_snapshot_gone_from_the_lake_means_a_full_reconciliation_that_adds_nothing(lake, pg):
    with psycopg.connect(pg.dsn()) as c:   # as if maintenance had expired the snapshot loaded last
        c.execute("UPDATE smartcity.load_state SET snapshot_id = 42 WHERE table_name = 'gps_data'")
    before = counts(pg)
    (r,) = PostgresWarehouse(settings_for(lake[0], pg)).load(["gps_data"])
    assert r.mode == "full" and r.last_snapshot_id == 42 and r.rows_read > 0 and r.rows_loaded == 0
    assert counts(pg) == before


# New rows appended, then every snapshot but the current one expired (Iceberg's expire_snapshots
# procedure, as `smartcity-lake maintain` runs it, with retain_last 1).
_APPEND_AND_EXPIRE = """
import sys
from smartcity.catalog.location import table_identifier
from smartcity.spark_jobs import iceberg_tables as IT
from smartcity.spark_jobs.session import build_session
from smartcity.spark_jobs.settings import LakeSettings
s = LakeSettings(lake=sys.argv[1])
spark = build_session(s, "warehouse-test", iceberg=True)
td = next(t for t in IT.table_defs() if t.name == "gps_data")
df = spark.read.parquet(sys.argv[2])
df.select(*[df[c.name].cast(c.type) for c in td.columns]).writeTo(table_identifier(s, "gps_data")).append()
spark.sql(f"CALL {s.catalog.name}.system.expire_snapshots(table => '{s.catalog.namespace}.gps_data', "
          "older_than => TIMESTAMP '2100-01-01 00:00:00', retain_last => 1)").collect()
spark.stop()
"""


def test_new_rows_whose_parent_snapshot_was_expired_load_once_through_a_full_reconciliation(lake, pg, workdir):
    """The last loaded snapshot expired by the lake's maintenance: the next load cannot walk back
    to it, reconciles fully and adds exactly the new rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from smartcity.catalog.reader import load_table
    s = LakeLocation(lake=str(lake[0]))
    with psycopg.connect(pg.dsn()) as c:
        (last,) = c.execute("SELECT snapshot_id FROM smartcity.load_state WHERE table_name = 'gps_data'").fetchone()
    rows = read_table(s, "gps_data").sort_by("event_id").slice(200, 10)
    ids = [f"bus-exp:0000000a:{i}" for i in range(10)]
    staged = workdir / "expire-gps"
    staged.mkdir()
    pq.write_table(rows.set_column(0, "event_id", pa.array(ids)).cast(rows.schema), staged / "new.parquet")
    p = subprocess.run([sys.executable, "-c", _APPEND_AND_EXPIRE, str(lake[0]), str(staged)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    table = load_table(s, "gps_data")
    assert [x.snapshot_id for x in table.metadata.snapshots] == [table.current_snapshot().snapshot_id] != [last]
    before = counts(pg)
    (r,) = PostgresWarehouse(settings_for(lake[0], pg)).load(["gps_data"])
    assert (r.mode, r.last_snapshot_id, r.rows_loaded) == ("full", last, 10)
    got = warehouse_ids(pg, "gps_data")
    assert len(got) == len(set(got)) == before["gps_data"] + 10 and set(ids) <= set(got)


def test_a_file_that_does_not_fit_the_table_is_refused_named_and_the_rest_loads(lake, pg, workdir, monkeypatch):
    """A data file whose column `speed_kmh` is text and another without `device_id`, planned beside
    a good one (the lake job never writes such files: a file from another writer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    s = LakeLocation(lake=str(lake[0]))
    rows = read_table(s, "gps_data").sort_by("event_id").slice(0, 3)
    good = rows.set_column(0, "event_id", pa.array([f"bus-new:00000000:{i}" for i in range(3)]))
    retyped = rows.set_column(rows.schema.get_field_index("speed_kmh"), "speed_kmh", pa.array(["fast"] * 3))
    retyped = retyped.set_column(0, "event_id", pa.array([f"bus-bad:00000000:{i}" for i in range(3)]))
    good, retyped = good.cast(rows.schema), retyped.cast(retyped.schema.set(0, rows.schema.field(0)))
    missing = good.drop_columns(["device_id"])
    # A null in a required column, in the file's second batch: found after the first went to COPY.
    nulled = good.set_column(0, "event_id", pa.array([f"bus-nul:00000000:{i}" for i in range(3)]))
    nulled = nulled.set_column(1, "device_id", pa.array(["bus-nul", "bus-nul", None]))
    monkeypatch.setattr(wload, "COPY_BATCH_ROWS", 2)
    files = []
    for name, data in (("good", good), ("retyped", retyped), ("missing", missing), ("nulled", nulled)):
        pq.write_table(data, workdir / f"{name}.parquet")
        files.append(wlake.DataFile(f"file://{workdir / name}.parquet", 7, data.num_rows, 1))
    real_plan = wlake.plan

    def with_foreign_files(table, name, last):
        p = real_plan(table, name, last)
        return wlake.Plan(name, last, 4242, "incremental", files) if name == "gps_data" else p
    monkeypatch.setattr(wload, "plan", with_foreign_files)
    (r,) = PostgresWarehouse(settings_for(lake[0], pg)).load(["gps_data"])
    assert (r.files, r.rows_loaded) == (1, 3)
    assert [(Path(x["file"]).name, x["column"]) for x in r.refused] == [
        ("retyped.parquet", "speed_kmh"), ("missing.parquet", "device_id"), ("nulled.parquet", "device_id")]
    assert "type string" in r.refused[0]["error"] and "missing" in r.refused[1]["error"]
    assert "1 nulls in a required column" in r.refused[2]["error"]
    with psycopg.connect(pg.dsn()) as c:
        refused = c.execute("SELECT file_path, error FROM smartcity.load_refused ORDER BY file_path").fetchall()
        assert [Path(f).name for f, _ in refused] == ["missing.parquet", "nulled.parquet", "retyped.parquet"]
        for prefix in ("bus-bad:%", "bus-nul:%"):   # nothing of a refused file, not even its first batch
            assert c.execute("SELECT count(*) FROM smartcity.gps_data WHERE event_id LIKE %s", (prefix,)).fetchone()[0] == 0


def test_a_lake_file_written_before_boot_id_existed_loads_with_boot_id_computed(lake, pg, workdir, monkeypatch):
    """A data file without the derived column boot_id (written before the lake had it; Iceberg
    reads it as nulls): the merge computes it by the column's SQL. Redshift's Parquet COPY is
    positional and cannot take such a file: it is refused there, named (docs/warehouse.md)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from smartcity.catalog.reader import load_table
    s = LakeLocation(lake=str(lake[0]))
    rows = read_table(s, "gps_data").sort_by("event_id").slice(0, 3)
    ids = [f"bus-old:0000beef:{i}" for i in range(3)]
    old = rows.set_column(0, rows.schema.field(0), pa.array(ids)).drop_columns(["boot_id"])
    pq.write_table(old, workdir / "before-boot-id.parquet")
    f = wlake.DataFile(f"file://{workdir / 'before-boot-id.parquet'}", 8, old.num_rows, 1)
    real_plan = wlake.plan
    monkeypatch.setattr(wload, "plan", lambda table, name, last: wlake.Plan(name, last, 4343, "incremental", [f])
                        if name == "gps_data" else real_plan(table, name, last))
    (r,) = PostgresWarehouse(settings_for(lake[0], pg)).load(["gps_data"])
    assert (r.files, r.rows_loaded, r.refused) == (1, 3, [])
    with psycopg.connect(pg.dsn()) as c:
        assert c.execute("SELECT event_id, boot_id FROM smartcity.gps_data WHERE event_id LIKE 'bus-old:%' "
                         "ORDER BY event_id").fetchall() == [(i, "0000beef") for i in ids]
    with pytest.raises(wlake.FileSchemaError, match="column boot_id: missing"):
        wlake.check_file_schema(load_table(s, "gps_data"), f, warehouse_table("gps").lake_columns)


def test_a_database_that_is_down_is_retried_with_back_off_then_named(lake):
    s = WarehouseSettings(lake=str(lake[0]))
    s.postgres.port, s.postgres.password, s.postgres.connect_timeout_s = free_port(), "x", 2
    waits = []
    with pytest.raises(wload.WarehouseDown, match="unreachable after 3 attempts"):
        wload.with_retries("load gps_data", lambda: PostgresWarehouse(s).load_table(warehouse_table("gps")),
                           PostgresWarehouse.is_transient, retries=3, backoff_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]


# ---- an existing warehouse: its tables evolved to the contracts' columns ------------------------

def _made_before_derived(t: WarehouseTable, drop: tuple[str, ...] = ()) -> WarehouseTable:
    """The table as a warehouse made before the derived columns (boot_id) existed, less `drop`."""
    gone = set(t.spec.derived_sql()) | set(drop)
    return WarehouseTable(dataclasses.replace(
        t.spec, columns=tuple(f for f in t.spec.columns if f.name not in gone), derived=()))


def _warehouse_made_with(tables: list[WarehouseTable], database: str, lake_dir: Path, server) -> WarehouseSettings:
    """A database of its own holding a warehouse made by the DDL of `tables`; settings for it."""
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {database}")
    with psycopg.connect(server.dsn(database), autocommit=True) as c:
        for stmt in Postgres().ddl(tables):
            c.execute(stmt)
    s = settings_for(lake_dir, server)
    s.postgres.database = database
    return s


def _columns(c) -> list[tuple]:
    """What the setup reads of the tables: (table, column, data_type, length, is_nullable)."""
    return c.execute(Postgres().existing_columns()).fetchall()


def _catalog_rows(d, tables: list[WarehouseTable]) -> list[tuple]:
    """The rows information_schema.columns holds for `tables` made by the dialect's DDL."""
    return [(t.name, f.name, *d.catalog_type(f), "YES" if f.nullable else "NO") for t in tables for f in t.columns]


def test_setup_adds_boot_id_to_tables_made_before_it_and_computes_it_in_their_rows_once(lake, pg):
    """A warehouse whose tables were created by the column list before boot_id, holding rows: the
    setup adds the column to every table and computes it in the old rows (the middle part of
    event_id); a second setup changes nothing (no row rewritten); the next load brings the rest
    with the lake's boot_id."""
    assert "boot_id" in warehouse_table("gps").spec.derived_sql()
    old = [_made_before_derived(t) for t in warehouse_tables()]
    s = _warehouse_made_with(old, "evolve_check", lake[0], pg)
    gps = next(t for t in old if t.name == "gps_data")
    names = [f.name for f in gps.lake_columns]
    rows = read_table(LakeLocation(lake=str(lake[0])), "gps_data").sort_by("event_id").slice(0, 5).to_pylist()
    with psycopg.connect(pg.dsn("evolve_check")) as c:
        c.cursor().executemany(f"INSERT INTO smartcity.gps_data ({', '.join(names)}, lake_snapshot_id, loaded_at) "
                               f"VALUES ({', '.join(['%s'] * len(names))}, 1, now())",
                               [tuple(r[n] for n in names) for r in rows])

    PostgresWarehouse(s).ensure_schema()
    with psycopg.connect(pg.dsn("evolve_check")) as c:
        have = _columns(c)
        assert all((t.name, "boot_id") in {r[:2] for r in have} for t in warehouse_tables())
        assert Postgres().evolve(warehouse_tables(), have) == []
        evolved = c.execute("SELECT event_id, boot_id, xmin::text FROM smartcity.gps_data ORDER BY event_id").fetchall()
    assert [b for _, b, _ in evolved] == [e.split(":")[1] for e, _, _ in evolved] and len(evolved) == 5

    PostgresWarehouse(s).ensure_schema()
    with psycopg.connect(pg.dsn("evolve_check")) as c:
        assert _columns(c) == have
        assert c.execute("SELECT event_id, boot_id, xmin::text FROM smartcity.gps_data ORDER BY event_id").fetchall() \
            == evolved    # the same row versions: nothing was updated

    (r,) = PostgresWarehouse(s).load(["gps_data"])
    lake_rows = read_table(LakeLocation(lake=str(lake[0])), "gps_data")
    in_lake = dict(zip(lake_rows.column("event_id").to_pylist(), lake_rows.column("boot_id").to_pylist()))
    with psycopg.connect(pg.dsn("evolve_check")) as c:
        assert dict(c.execute("SELECT event_id, boot_id FROM smartcity.gps_data").fetchall()) == in_lake
    assert r.rows_loaded == len(in_lake) - 5


def test_an_existing_table_without_a_required_column_is_refused_naming_table_and_column(lake, pg):
    """gps_data made without the required ingest_ts: the setup cannot add it (its rows have no
    value for it) and refuses, naming table and column, before changing any table; the command
    says so and exits 1."""
    old = [_made_before_derived(t, ("ingest_ts",) if t.name == "gps_data" else ()) for t in warehouse_tables()]
    s = _warehouse_made_with(old, "evolve_refused", lake[0], pg)
    with pytest.raises(IncompatibleSchema) as e:
        PostgresWarehouse(s).ensure_schema()
    (problem,) = e.value.problems
    assert problem.startswith("smartcity.gps_data: column ingest_ts (TIMESTAMPTZ NOT NULL) is required but the "
                              "table has no such column")
    assert str(e.value).startswith("refused, no table was changed:\n")
    with psycopg.connect(pg.dsn("evolve_refused")) as c:
        assert not any(r[1] == "boot_id" for r in _columns(c))
    p = subprocess.run([str(BIN / "smartcity-warehouse"), "load", "--lake", str(lake[0])],
                       env={**cli_env(pg), "SMARTCITY_WAREHOUSE_POSTGRES__DATABASE": "evolve_refused"},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stdout == ""
    assert "smartcity.gps_data: column ingest_ts" in p.stderr


def test_the_redshift_setup_adds_only_the_columns_information_schema_lacks():
    """Redshift has no ADD COLUMN IF NOT EXISTS: the statements come from the columns read first."""
    r, t = Redshift(), warehouse_table("gps")
    have = _catalog_rows(r, [t])
    assert r.evolve([t], have) == []
    assert r.evolve([t], [x for x in have if x[1] != "boot_id"]) == [[
        "ALTER TABLE smartcity.gps_data ADD COLUMN boot_id VARCHAR(32) ENCODE ZSTD",
        f"UPDATE smartcity.gps_data SET boot_id = {t.spec.derived_sql()['boot_id']} WHERE boot_id IS NULL"]]


def _retyped(t: WarehouseTable, **fields) -> WarehouseTable:
    """The table as a warehouse made when some of its fields were typed otherwise: name=Field
    changes (dataclasses.replace arguments) or name=Field itself for a column the contracts lack."""
    cols = [dataclasses.replace(f, **fields[f.name]) if f.name in fields else f for f in t.spec.columns]
    cols += [v for k, v in fields.items() if k not in {f.name for f in t.spec.columns}]
    return WarehouseTable(dataclasses.replace(t.spec, columns=tuple(cols)))


def test_setup_widens_columns_the_contracts_widened_and_lets_a_nullable_field_take_nulls(lake, pg):
    """gps_data made when seq was an INTEGER, device_id a VARCHAR(16) and speed_kmh required,
    holding rows: the setup widens seq to BIGINT and device_id to VARCHAR(64) and drops the NOT
    NULL, keeping the rows; the table then reads as a new one does, a second setup changes
    nothing, and the next load brings the rest."""
    gps = warehouse_table("gps")
    old = [_retyped(t, seq={"type": cs.INT}, device_id={"max_length": 16}, speed_kmh={"nullable": False})
           if t.name == "gps_data" else t for t in warehouse_tables()]
    s = _warehouse_made_with(old, "evolve_widen", lake[0], pg)
    names = [f.name for f in gps.lake_columns]
    rows = [r for r in read_table(LakeLocation(lake=str(lake[0])), "gps_data").sort_by("event_id").to_pylist()
            if r["speed_kmh"] is not None][:5]
    with psycopg.connect(pg.dsn("evolve_widen")) as c:
        c.cursor().executemany(f"INSERT INTO smartcity.gps_data ({', '.join(names)}, lake_snapshot_id, loaded_at) "
                               f"VALUES ({', '.join(['%s'] * len(names))}, 1, now())",
                               [tuple(r[n] for n in names) for r in rows])
        before = _columns(c)
    assert ("gps_data", "seq", "integer", None, "NO") in before
    assert Postgres().evolve(warehouse_tables(), before) == [[
        "ALTER TABLE smartcity.gps_data ALTER COLUMN device_id TYPE VARCHAR(64)",
        "ALTER TABLE smartcity.gps_data ALTER COLUMN seq TYPE BIGINT",
        "ALTER TABLE smartcity.gps_data ALTER COLUMN speed_kmh DROP NOT NULL"]]

    PostgresWarehouse(s).ensure_schema()
    with psycopg.connect(pg.dsn("evolve_widen")) as c:
        after = _columns(c)
        kept = c.execute("SELECT event_id, device_id, seq, speed_kmh FROM smartcity.gps_data ORDER BY event_id").fetchall()
    assert sorted(r for r in after if r[0] == "gps_data") == sorted(_catalog_rows(Postgres(), [gps]))
    assert kept == [(r["event_id"], r["device_id"], r["seq"], r["speed_kmh"]) for r in rows]
    assert Postgres().evolve(warehouse_tables(), after) == []

    (r,) = PostgresWarehouse(s).load(["gps_data"])
    assert r.rows_loaded == len(set(event_ids(LakeLocation(lake=str(lake[0])), "gps_data"))) - 5


def test_a_type_change_the_setup_cannot_make_and_a_required_column_the_contracts_lack_are_refused(lake, pg):
    """gps_data made with speed_kmh as text and a required column the contracts do not have, and
    vehicle_data with a shorter device_id: both problems of gps_data are named, with what to do,
    and no table is changed (not even the widening vehicle_data could have had)."""
    old = [_retyped(t, speed_kmh={"type": cs.STRING}, legacy_code=Field("legacy_code", cs.INT, "gone"))
           if t.name == "gps_data" else _retyped(t, device_id={"max_length": 16}) if t.name == "vehicle_data" else t
           for t in warehouse_tables()]
    s = _warehouse_made_with(old, "evolve_retype", lake[0], pg)
    with psycopg.connect(pg.dsn("evolve_retype")) as c:
        before = _columns(c)
    with pytest.raises(IncompatibleSchema) as e:
        PostgresWarehouse(s).ensure_schema()
    retyped, extra = e.value.problems
    assert retyped.startswith("smartcity.gps_data: column speed_kmh is text in the table and DOUBLE PRECISION in "
                              "contracts: the setup only widens")
    assert "add a new nullable field under a new name" in retyped
    assert extra.startswith("smartcity.gps_data: column legacy_code is in the table, NOT NULL, and not in contracts")
    assert "ALTER TABLE smartcity.gps_data DROP COLUMN legacy_code" in extra
    with psycopg.connect(pg.dsn("evolve_retype")) as c:
        assert _columns(c) == before
    assert ("vehicle_data", "device_id", "character varying", 16, "NO") in before


def test_the_redshift_setup_refuses_widenings_it_cannot_make_in_a_transaction():
    """Redshift changes a column's type only for a longer VARCHAR and only outside a transaction
    block, and cannot drop NOT NULL: the setup names each and what to do instead."""
    r, t = Redshift(), warehouse_table("gps")
    old = _retyped(t, seq={"type": cs.INT}, device_id={"max_length": 16}, speed_kmh={"nullable": False})
    with pytest.raises(IncompatibleSchema) as e:
        r.evolve([t], _catalog_rows(r, [old]))
    device, seq, speed = e.value.problems
    assert device.startswith("smartcity.gps_data: column device_id is character varying(64) in the table and "
                             "VARCHAR(256) in contracts, a widening redshift cannot make in the setup's transaction: "
                             "run ALTER TABLE smartcity.gps_data ALTER COLUMN device_id TYPE VARCHAR(256) outside a "
                             "transaction, then the setup again; or drop the table")
    assert seq.startswith("smartcity.gps_data: column seq is integer in the table and BIGINT in contracts, a widening "
                          "redshift cannot make in the setup's transaction: Redshift changes no other type in place; "
                          "or drop the table")
    assert speed.startswith("smartcity.gps_data: column speed_kmh is NOT NULL in the table and nullable in "
                            "contracts: redshift cannot drop NOT NULL")
    # A wider VARCHAR or a nullable column where the contracts want a required one: nothing to do.
    wider = _retyped(t, device_id={"max_length": 100}, event_id={"nullable": True})
    assert r.evolve([t], _catalog_rows(r, [wider])) == []


# ---- the SQL of both dialects -----------------------------------------------------------------

def _redshift_statements() -> list[str]:
    r = Redshift()
    out = r.ddl(warehouse_tables()) + [r.existing_columns()]
    out += [x for stmts in r.evolve(warehouse_tables(), [x for x in _catalog_rows(r, warehouse_tables())
                                                         if x[1] != "boot_id"]) for x in stmts]
    for t in warehouse_tables():
        out += [r.create_staging(t), r.copy_parquet(t, f"s3://lake/warehouse/{t.name}/data/x.parquet",
                                                    "arn:aws:iam::123456789012:role/load"),
                r.read_state(t), *r.merge(t, 7),
                *r.record(t, 7, "incremental", [(7, "s3://lake/x.parquet", 3)], [(7, "s3://lake/y", "bad")], 3, None)]
    return out


def test_the_redshift_sql_parses_as_redshift():
    import sqlglot
    from sqlglot import exp
    for stmt in _redshift_statements():
        tree = sqlglot.parse_one(stmt, read="redshift")
        assert not isinstance(tree, exp.Command), stmt
    # sqlglot has no grammar for these two: kept as commands, checked by hand (docs/warehouse.md).
    r = Redshift()
    for stmt in (r.lock(warehouse_table("gps")), r.spectrum_schema("smartcity", "arn:aws:iam::1:role/x", "eu-west-1")):
        assert isinstance(sqlglot.parse_one(stmt, read="redshift"), exp.Command)


def test_the_target_tables_carry_the_contract_columns_keys_and_encodings():
    ddl = Redshift().create_target(warehouse_table("gps"))[0]
    assert "DISTKEY (device_id)" in ddl and "COMPOUND SORTKEY (device_id, ts)" in ddl
    assert "device_id VARCHAR(256) NOT NULL ENCODE RAW" in ddl     # 64 characters, 4 bytes each
    assert "clock VARCHAR(8) NOT NULL ENCODE BYTEDICT" in ddl and "ts TIMESTAMPTZ NOT NULL ENCODE AZ64" in ddl
    cols = [f.name for f in warehouse_table("gps").columns]
    assert cols[:3] == ["event_id", "device_id", "ts"] and cols[-2:] == ["lake_snapshot_id", "loaded_at"]


@pytest.mark.parametrize("dialect", ["postgres", "redshift"])
def test_the_checked_in_ddl_is_current(dialect):
    """warehouse/ddl/*.sql are what `smartcity-warehouse ddl --dialect D` prints (regenerate:
    smartcity-warehouse ddl --dialect D > warehouse/ddl/D.sql)."""
    p = subprocess.run([str(BIN / "smartcity-warehouse"), "ddl", "--dialect", dialect],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == (ROOT / "warehouse" / "ddl" / f"{dialect}.sql").read_text(), \
        f"warehouse/ddl/{dialect}.sql is stale: regenerate it"


def test_the_postgres_ddl_runs_twice_on_postgres(pg):
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as c:
        c.execute("CREATE DATABASE ddl_check")
    with psycopg.connect(pg.dsn("ddl_check"), autocommit=True) as c:
        for _ in range(2):
            for stmt in Postgres().ddl(warehouse_tables()):
                c.execute(stmt)


# ---- Redshift's Data API: the shape of the calls ----------------------------------------------

@pytest.fixture(scope="module")
def moto_server(workdir):
    pytest.importorskip("moto.server")
    port = free_port()
    proc = Process("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                   workdir / "moto.log").start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        proc.wait_for(lambda: http_answers(endpoint + "/moto-api/"), f"moto on {endpoint}", 60, step=0.2)
        yield endpoint
    finally:
        proc.terminate(20)


@pytest.fixture
def aws_env(monkeypatch):
    """Dummy credentials only: nothing here may reach AWS."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


def test_the_data_api_client_against_moto(moto_server, aws_env):
    from smartcity.warehouse.redshift import DataApi, DataApiError
    r = RedshiftSettings(cluster_id="smartcity", database="dev", region="us-east-1", endpoint=moto_server,
                         secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:wh", poll_s=0.05)
    api = DataApi(r)
    sql = Redshift().read_state(warehouse_table("gps"))
    sid = api.execute(sql)
    d = api.client.describe_statement(Id=sid)
    assert (d["QueryString"], d["ClusterIdentifier"], d["Database"], d["SecretArn"]) == \
        (sql, "smartcity", "dev", r.secret_arn)
    # moto never finishes a statement: the poller gives up naming it and its status.
    with pytest.raises(DataApiError, match=f"statement {sid} still STARTED"):
        api.wait(sid, timeout_s=0.3)
    # get_statement_result's records (moto's fixed ones) become Python rows.
    assert api.rows(sid)[0] == [10, "Alpha st", "Vancouver"]


def test_the_load_batches_have_the_shape_batch_execute_statement_takes(lake, aws_env, monkeypatch):
    """Checked against the service model by botocore's Stubber (moto has no batch_execute_statement).
    60 files on S3 (the plan stubbed: this lake is on a local disk) make two batches, each one
    transaction that inserts only missing event_ids; only the last records the snapshot."""
    import boto3
    from botocore.stub import Stubber
    from smartcity.warehouse import redshift as R
    s = WarehouseSettings(lake=str(lake[0]), target="redshift")
    s.redshift = RedshiftSettings(workgroup="smartcity", database="dev", region="us-east-1",
                                  secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:wh",
                                  iam_role="arn:aws:iam::123456789012:role/load", poll_s=0.01)
    files = [wlake.DataFile(f"s3://lake/warehouse/weather_data/data/{i}.parquet", 9, 10, 1000) for i in range(60)]
    monkeypatch.setattr(R, "plan", lambda table, name, last: wlake.Plan(name, last, 9, "incremental", files))
    monkeypatch.setattr(R, "check_file_schema", lambda table, f, columns: None)
    client = boto3.client("redshift-data", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    wh = R.RedshiftWarehouse(s, R.DataApi(s.redshift, client))
    result, batches = wh.statements(warehouse_table("weather"), 8)
    assert (result.files, result.rows_read, len(batches)) == (60, 600, 2)
    assert all(len(b) <= R.BATCH_LIMIT and b[0].startswith("LOCK") for b in batches)
    assert sum(x.startswith("COPY") for b in batches for x in b) == 60
    assert not any("load_state" in x for x in batches[0]) and any("load_state" in x for x in batches[1])
    with Stubber(client) as stub:
        for b in batches:
            stub.add_response("batch_execute_statement", {"Id": "0" * 8 + "-0000-0000-0000-" + "0" * 12},
                              {"Sqls": b, "WorkgroupName": "smartcity", "Database": "dev",
                               "SecretArn": s.redshift.secret_arn})
            wh.api.batch(b)
        stub.assert_no_pending_responses()
    with pytest.raises(ValueError, match="S3 only"):
        R.Redshift().copy_parquet(warehouse_table("gps"), "file:///lake/x.parquet", "arn:aws:iam::1:role/x")


# ---- the local stack ----------------------------------------------------------------------------

def test_the_stack_starts_postgres_on_loopback_with_its_password_in_credentials(workdir):
    from deploy.local.stack import Stack
    stack = Stack(workdir / "run")
    try:
        st = stack.up(mqtt_port=free_port(), with_kafka=False, with_s3=False, mqtt_tls_port=None,
                      warehouse=True, postgres_port=free_port())
        pg = st["postgres"]
        creds = json.loads(stack.creds_path.read_text())
        assert oct(stack.creds_path.stat().st_mode & 0o777) == "0o600"
        assert "password" not in json.dumps(st) and pg["host"] == "127.0.0.1"
        dsn = (f"host=127.0.0.1 port={pg['port']} dbname={pg['database']} user={pg['user']} "
               f"password={creds['postgres']['password']}")
        with psycopg.connect(dsn) as c:
            assert c.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn.replace(creds["postgres"]["password"], "wrong"))
        assert stack.up(mqtt_port=st["mosquitto"]["port"], with_kafka=False, with_s3=False, mqtt_tls_port=None,
                        warehouse=True, postgres_port=pg["port"])["postgres"]["pid"] == pg["pid"]   # idempotent
        assert stack.status()["postgres"] == {"port": pg["port"], "running": True, "answering": True}
        assert stack.pg_password_path.read_text().strip() == creds["postgres"]["password"]
        assert oct(stack.pg_password_path.stat().st_mode & 0o777) == "0o600"
    finally:
        assert stack.down().get("postgres") is True
    # The cluster keeps the password it was made with: another one is refused, saying so.
    with pytest.raises(pgmod.PostgresError, match="made with another password"):
        pgmod.PostgresServer(workdir / "run" / "postgres", password="not-the-one").start()


def test_spectrum_prints_the_external_schema_over_the_glue_database():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    env.update(SMARTCITY_WAREHOUSE_REDSHIFT__IAM_ROLE="arn:aws:iam::123456789012:role/spectrum",
               SMARTCITY_WAREHOUSE_REDSHIFT__REGION="eu-west-1")
    p = subprocess.run([str(BIN / "smartcity-warehouse"), "spectrum"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ("CREATE EXTERNAL SCHEMA IF NOT EXISTS smartcity_lake FROM DATA CATALOG DATABASE "
                                "'smartcity' IAM_ROLE 'arn:aws:iam::123456789012:role/spectrum' REGION "
                                "'eu-west-1';").split()
