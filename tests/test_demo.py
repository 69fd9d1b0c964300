"""The README's main command (`deploy/demo.sh` = setup + `python -m deploy.demo`), end to end on
real Mosquitto, Kafka, bridge, Spark and agent: every published event_id lands in the lake once,
and the run ends with the analysts' named queries answered from the trip's tables. On the same
tables every named query gives the same rows on the local Athena (Trino) as on DuckDB."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.query_parity import approx_bounds, assert_same_rows  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "demo"
    # A faster trip than the README's 60x keeps CI short; everything else is the embedded default.
    p = subprocess.run([sys.executable, "-m", "deploy.demo", "--run-dir", str(run_dir),
                        "--speedup", "240", "--lake-timeout-s", "240"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    return run_dir, p


def test_the_demo_lands_every_published_record_in_the_lake_exactly_once(demo):
    run_dir, p = demo
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert "bridge subscribed" in out
    assert "published records are in the lake, each exactly once" in out
    assert "WARNING" not in p.stdout
    # The summary is computed from the Iceberg tables the run left behind, read through the catalog.
    from smartcity.catalog.reader import event_ids
    from smartcity.spark_jobs.settings import LakeSettings
    s = LakeSettings(lake=str(run_dir / "lake"))
    for topic in ("vehicle_data", "gps_data", "traffic_data", "weather_data", "emergency_data"):
        ids = event_ids(s, topic)
        assert ids and len(ids) == len(set(ids)), topic
    assert "incidents" in out and "quarantined     0 records" in out


def test_the_demo_ends_with_the_named_queries_answers(demo):
    _, p = demo
    from deploy.demo import DEMO_QUERIES
    out = p.stdout
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    for name in DEMO_QUERIES:
        assert f"=== smartcity-query {name}:" in out
    trip = out.split("=== smartcity-query trip_summary:")[1].splitlines()
    assert trip[1].split()[:3] == ["device_id", "trip_no", "trip_start"]
    assert trip[3].startswith("demo-bus-01 ")                 # the trip, measured along its fixes
    assert "FAILED" not in out and "local Athena:" in out


@pytest.fixture(scope="module")
def trino(demo, tmp_path_factory):
    from deploy.local.trino import TrinoServer
    from smartcity.spark_jobs.settings import LakeSettings
    run_dir, p = demo
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    srv = TrinoServer(tmp_path_factory.mktemp("trino"), LakeSettings(lake=str(run_dir / "lake")))
    srv.start()
    yield srv
    srv.stop()


def test_every_named_query_gives_the_same_rows_on_trino_and_duckdb_over_the_trip(demo, trino):
    from smartcity.analytics import named
    from smartcity.analytics.engines import DuckDBEngine, TrinoEngine
    from smartcity.analytics.query import QuerySettings
    run_dir, _ = demo
    duck = DuckDBEngine(QuerySettings(lake=str(run_dir / "lake")))
    answered = set()
    try:
        for name, q in named.load_all().items():
            sql = named.render(q).sql
            on_trino, on_duckdb = TrinoEngine(trino.endpoint).run(sql), duck.run(sql)
            assert_same_rows(on_trino, on_duckdb, approx_bounds(duck, sql))
            if on_trino.rows:
                answered.add(name)
    finally:
        duck.close()
    # The trip has no quarantined record (asserted above), so that query compares empty answers.
    assert answered >= set(named.load_all()) - {"quarantine_by_reason", "harsh_events"}, answered
