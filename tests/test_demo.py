"""The README's main command (`deploy/demo.sh` = setup + `python -m deploy.demo`), end to end on
real Mosquitto, Kafka, bridge, Spark and agent: every published event_id lands in the lake once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_lands_every_published_record_in_the_lake_exactly_once(tmp_path):
    run_dir = tmp_path / "demo"
    # A faster trip than the README's 60x keeps CI short; everything else is the embedded default.
    p = subprocess.run([sys.executable, "-m", "deploy.demo", "--run-dir", str(run_dir),
                        "--speedup", "240", "--lake-timeout-s", "240"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
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
