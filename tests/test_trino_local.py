"""The local Athena (issue 12): a real Trino reads the Iceberg tables Spark wrote through the same
JDBC catalog on SQLite, under the same names (lake.smartcity.*), in UTC, with Athena's geospatial
functions; a query error reaches the caller with Trino's message; setup says clearly when the
machine has no Java Trino can run on.

Spark and Trino never run at once (2 cores): a child process creates the tables with Spark's
create_or_evolve and inserts the rows, then exits (its JVM with it); only then does Trino start.
The stack's `up --athena` test runs first, with its own Trino, stopped by `down` before the
module's Trino starts."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # the child process (python tests/test_trino_local.py) imports deploy

from deploy.local.process import free_port, pid_alive  # noqa: E402
from deploy.local.trino import (MAIN_CLASS, MIN_JAVA, TRINO_VERSION, TrinoError,  # noqa: E402
                                TrinoServer, catalog_properties, find_java, lake_table_count)

UTC = timezone.utc
# (event_id, ts, lat, lon). The second is late in the UTC day: in Asia/Bangkok (UTC+7) it is the
# next morning, so reading it in any zone but UTC moves it to another day and another window.
ROWS = [
    ("dev-1:0000abcd:1", datetime(2026, 3, 1, 8, 15, 0, 250000, tzinfo=UTC), 13.7563, 100.5018),  # Bangkok
    ("dev-1:0000abcd:2", datetime(2026, 3, 1, 23, 30, 0, 500000, tzinfo=UTC), 12.9236, 100.8825),  # Pattaya
    ("dev-1:0000abcd:3", datetime(2026, 3, 2, 0, 10, 0, tzinfo=UTC), 12.9300, 100.8800),
]
TABLES = {"gps_data", "vehicle_data", "traffic_data", "weather_data", "emergency_data", "quarantine",
          "gps_spans", "vehicle_spans"}


def write_lake(lake: str) -> None:
    """In a child process: the catalog's tables by create_or_evolve, ROWS into gps_data by Spark."""
    from smartcity.contracts import example
    from tests.support.lake_rows import table_frame
    from smartcity.contracts.schema import GPS
    from smartcity.spark_jobs import iceberg_tables as IT
    from smartcity.spark_jobs.session import build_session
    from smartcity.spark_jobs.settings import LakeSettings

    s = LakeSettings(lake=lake)
    spark = build_session(s, "test-trino-local", iceberg=True)
    IT.create_or_evolve(spark, s)
    td = IT.data_table(GPS)
    rows = []
    for i, (event_id, ts, lat, lon) in enumerate(ROWS):
        rec = example("gps_data") | {"event_id": event_id, "ts": ts, "lat": lat, "lon": lon, "seq": i}
        rec |= {"kafka_topic": "gps_data", "kafka_partition": 0, "kafka_offset": i, "kafka_ts": ts,
                "ingest_ts": ts}
        rows.append(rec)
    table_frame(spark, td, rows).writeTo("lake.smartcity.gps_data").append()
    spark.stop()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    from smartcity.spark_jobs.settings import LakeSettings
    path = str(tmp_path_factory.mktemp("athena") / "lake")
    r = subprocess.run([sys.executable, __file__, "write-lake", path], capture_output=True, text=True,
                       cwd=REPO, timeout=600)
    assert r.returncode == 0, f"spark writer failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    s = LakeSettings(lake=path)
    assert lake_table_count(s) == len(TABLES)
    return s


@pytest.fixture(scope="module")
def trino(lake, tmp_path_factory):
    srv = TrinoServer(tmp_path_factory.mktemp("trino"), lake)
    srv.start()
    yield srv
    srv.stop()


# ---- the stack's `up --athena` (first: its Trino is down before the module's starts) -------------

def stack(run_dir, *args):
    r = subprocess.run([sys.executable, "-m", "deploy.local.stack", *args, "--run-dir", str(run_dir)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, f"stack {args} rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_stack_up_athena_serves_the_lake_and_down_stops_it(lake, tmp_path):
    from deploy.local.trino import query
    run_dir = tmp_path / "run"
    port = free_port()
    up = stack(run_dir, "up", "--athena", "--lake", lake.lake, "--trino-port", str(port),
               "--mqtt-port", str(free_port()), "--no-mqtt-tls", "--no-kafka", "--no-s3")
    try:
        t = json.loads((run_dir / "stack.json").read_text())["trino"]
        assert json.loads(up.stdout)["trino"]["endpoint"] == t["endpoint"] == f"127.0.0.1:{port}"
        assert (t["catalog"], t["schema"], t["lake"]) == ("lake", "smartcity", lake.lake)
        assert query(t["endpoint"], "SELECT count(*) FROM gps_data") == [(len(ROWS),)]
        status = json.loads(stack(run_dir, "status").stdout)
        assert status["trino"]["running"] and status["trino"]["answering"]
        again = stack(run_dir, "up", "--athena", "--lake", lake.lake, "--trino-port", str(port),
                      "--mqtt-port", str(free_port()), "--no-mqtt-tls", "--no-kafka", "--no-s3")
        assert json.loads(again.stdout)["trino"]["pid"] == t["pid"]   # idempotent: the same server
    finally:
        down = json.loads(stack(run_dir, "down").stdout)
    assert down["trino"] is True
    assert not pid_alive(t["pid"], MAIN_CLASS)
    assert "trino" not in json.loads((run_dir / "stack.json").read_text())


# ---- the module's Trino ------------------------------------------------------------------------------

def test_startup_time_and_memory_are_reported(trino, capsys):
    """Printed, not asserted: the wall time depends on what else the 2 cores run (the load average
    says how busy they were); the CPU time the server took to get ready hardly does."""
    rss, cpu = trino.rss_bytes(), trino.cpu_seconds()
    assert rss and cpu and trino.last_start_s
    with capsys.disabled():
        print(f"\ntrino {TRINO_VERSION}: ready (a tpch scan answered) in {trino.last_start_s:.1f}s wall, "
              f"{cpu:.1f}s CPU so far, RSS {rss / 2**30:.2f} GiB, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def test_trino_reads_exactly_the_rows_spark_wrote(trino):
    rows = trino.query("SELECT event_id, ts FROM lake.smartcity.gps_data ORDER BY event_id")
    assert rows == [(e, ts) for e, ts, _, _ in ROWS]
    assert all(ts.utcoffset() == timedelta(0) for _, ts in rows)   # shown in the session's zone: UTC


def test_show_tables_lists_the_six_tables(trino):
    assert {t for (t,) in trino.query("SHOW TABLES FROM lake.smartcity")} == TABLES


def test_a_time_window_is_read_in_utc(trino):
    window = ("SELECT event_id FROM smartcity.gps_data "      # unqualified: catalog lake by default
              "WHERE ts >= TIMESTAMP '2026-03-01 23:00:00' AND ts < TIMESTAMP '2026-03-02 00:00:00'")
    assert trino.query(window) == [(ROWS[1][0],)]
    by_day = "SELECT event_id FROM gps_data WHERE date(ts) = DATE '2026-03-01' ORDER BY event_id"
    assert trino.query(by_day) == [(ROWS[0][0],), (ROWS[1][0],)]
    # Why every session is pinned: the same text in a Bangkok session is another window.
    assert trino.query(window, timezone="Asia/Bangkok") == []


def test_geospatial_functions_measure_on_the_sphere(trino):
    (a, b) = ROWS[0], ROWS[1]
    (dist,), = trino.query(
        "SELECT ST_Distance(to_spherical_geography(ST_Point(?, ?)), to_spherical_geography(ST_Point(?, ?)))",
        [a[3], a[2], b[3], b[2]])
    # great circle, mean Earth radius 6371.01 km (what Trino uses)
    la1, lo1, la2, lo2 = map(math.radians, (a[2], a[3], b[2], b[3]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    expected = 2 * 6371010 * math.asin(math.sqrt(h))
    assert dist == pytest.approx(expected, rel=1e-3) and 90_000 < dist < 110_000   # metres


def test_a_query_error_raises_with_trinos_message(trino):
    from trino.exceptions import TrinoUserError
    with pytest.raises(TrinoUserError) as e:
        trino.query("SELECT * FROM lake.smartcity.no_such_table")
    assert e.value.error_name == "TABLE_NOT_FOUND"
    assert "Table 'lake.smartcity.no_such_table' does not exist" in e.value.message
    assert "does not exist" in str(e.value)


def test_the_cli_runs_with_the_same_session(trino):
    """`python -m deploy.local.trino --cli`: Trino's own CLI, catalog lake, schema smartcity, UTC."""
    sql = ("SELECT event_id FROM gps_data "
           "WHERE ts >= TIMESTAMP '2026-03-01 23:00:00' AND ts < TIMESTAMP '2026-03-02 00:00:00'")
    r = subprocess.run([sys.executable, "-m", "deploy.local.trino", "--cli", "--server", trino.endpoint,
                        "--execute", sql], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f'"{ROWS[1][0]}"'


def test_the_server_listens_on_loopback_only(trino):
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    mine = [line for line in out.splitlines() if f"pid={trino.proc.pid}," in line]
    assert mine, out
    for line in mine:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")), line


# ---- without a server ------------------------------------------------------------------------------

def fake_java(folder: Path, version: str) -> Path:
    """An executable `java` that answers -version like OpenJDK does (on stderr)."""
    folder.mkdir(parents=True, exist_ok=True)
    j = folder / "java"
    j.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2025-01-21\' >&2\n')
    j.chmod(0o755)
    return j


def test_find_java_takes_a_new_enough_java_and_names_what_it_found_otherwise(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_java(bin_dir, "17.0.15")
    fake_java(tmp_path / "jvm" / "jdk-21" / "bin", "21.0.7")
    env = {"PATH": str(bin_dir)}
    with pytest.raises(TrinoError) as e:
        find_java(env=env, jvm_dirs=[tmp_path / "jvm"])
    msg = str(e.value)
    want = ".".join(map(str, MIN_JAVA))
    assert f"Trino {TRINO_VERSION} needs Java {want} or newer" in msg
    assert "(17.0.15)" in msg and "(21.0.7)" in msg and "SMARTCITY_TRINO_JAVA" in msg
    with pytest.raises(TrinoError, match="no Java at all"):
        find_java(env={"PATH": ""}, jvm_dirs=[])
    # 24.0.0 is still too old for 476 (24.0.1); a 25 under the JDK folders is found
    fake_java(tmp_path / "jvm" / "jdk-24" / "bin", "24")
    with pytest.raises(TrinoError):
        find_java(env=env, jvm_dirs=[tmp_path / "jvm"])
    j25 = fake_java(tmp_path / "jvm" / "jdk-25" / "bin", "25.0.3")
    assert find_java(env=env, jvm_dirs=[tmp_path / "jvm"]) == str(j25)
    # an explicit choice comes first, a JDK folder or the binary
    j26 = fake_java(tmp_path / "own" / "bin", "26")
    assert find_java(env={**env, "SMARTCITY_TRINO_JAVA": str(tmp_path / "own")},
                     jvm_dirs=[tmp_path / "jvm"]) == str(j26)


def test_setup_fails_clearly_without_a_java_trino_can_run_on(tmp_path):
    """The real setup step, on a PATH whose java is 17 and no JDK folders: it fails before any
    download, saying why; never a silent skip."""
    bin_dir = tmp_path / "bin"
    fake_java(bin_dir, "17.0.15")
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SMARTCITY_TRINO_JAVA")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", SMARTCITY_JVM_DIRS=str(tmp_path / "no-jdks"),
               SMARTCITY_CACHE=str(tmp_path / "cache"))
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(REPO / "deploy" / "setup.d" / "60-trino.sh")], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode != 0
    assert re.search(rf"Trino {TRINO_VERSION} needs Java [\d.]+ or newer", r.stderr), r.stderr
    assert "(17.0.15)" in r.stderr
    assert not (tmp_path / "cache" / f"trino-{TRINO_VERSION}").exists()
    assert time.monotonic() - t0 < 60


def test_the_pom_resolves_the_version_the_code_runs():
    pom = (REPO / "deploy" / "trino" / "pom.xml").read_text()
    assert f"<trino.version>{TRINO_VERSION}</trino.version>" in pom


def test_catalog_properties_local_and_s3(tmp_path):
    from smartcity.catalog.location import S3, Catalog
    from smartcity.spark_jobs.settings import LakeSettings
    s = LakeSettings(lake=str(tmp_path / "lake"))
    p = catalog_properties(s)
    assert p["iceberg.jdbc-catalog.catalog-name"] == "lake"          # the name in Spark's rows
    assert p["iceberg.jdbc-catalog.connection-url"] == f"jdbc:sqlite:{tmp_path}/lake/_catalog/iceberg.sqlite"
    assert p["iceberg.jdbc-catalog.driver-class"] == "org.sqlite.JDBC"
    assert p["iceberg.jdbc-catalog.default-warehouse-dir"] == f"file://{tmp_path}/lake/warehouse"
    assert (p["fs.native-local.enabled"], p["local.location"]) == ("true", "/")
    # An S3 warehouse (not run here): Trino's native S3 client, path-style for a local server, the
    # keys from Trino's environment, never written into the file.
    s3 = LakeSettings(lake="s3a://city/lake", s3=S3(endpoint="http://127.0.0.1:9000", path_style=True),
                      catalog=Catalog(uri="jdbc:postgresql://127.0.0.1/iceberg"))
    p = catalog_properties(s3, s3_credentials_from_env=True)
    assert re.fullmatch(r"s3a?://city/lake/warehouse", p["iceberg.jdbc-catalog.default-warehouse-dir"])
    assert p["iceberg.jdbc-catalog.driver-class"] == "org.postgresql.Driver"
    assert (p["fs.native-s3.enabled"], p["s3.endpoint"], p["s3.path-style-access"]) == \
        ("true", "http://127.0.0.1:9000", "true")
    assert p["s3.aws-access-key"] == "${ENV:AWS_ACCESS_KEY_ID}" and "fs.native-local.enabled" not in p
    # A Glue catalog (what Athena reads): Trino's Glue client at the catalog's endpoint and region,
    # with the same keys from the environment. Run against the local Glue API in test_lake_glue.
    glue = LakeSettings(lake="s3a://city/lake", s3=S3(endpoint="http://127.0.0.1:9000", region="eu-west-1"),
                        catalog=Catalog(type="glue", glue_endpoint="http://127.0.0.1:5000"))
    p = catalog_properties(glue, s3_credentials_from_env=True)
    assert (p["iceberg.catalog.type"], p["hive.metastore.glue.endpoint-url"], p["hive.metastore.glue.region"]) == \
        ("glue", "http://127.0.0.1:5000", "eu-west-1")
    assert p["hive.metastore.glue.aws-secret-key"] == "${ENV:AWS_SECRET_ACCESS_KEY}"
    assert not any(k.startswith("iceberg.jdbc-catalog") for k in p) and p["fs.native-s3.enabled"] == "true"
    assert "hive.metastore.glue.endpoint-url" not in catalog_properties(
        LakeSettings(lake="s3a://city/lake", catalog=Catalog(type="glue")))     # AWS's own endpoint


if __name__ == "__main__":
    if sys.argv[1:2] == ["write-lake"]:
        write_lake(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} write-lake LAKE")
