"""The fault matrix of issue 9, short: `bench.faults` cases with two agents and short phases,
against real processes (simulated agents, Mosquitto, bridges, Kafka, the Spark lake job as its own
driver). Each case must end with every seq the agents allocated in the lake exactly once, read as
an outside reader (pyarrow) sees it. `python -m bench faults` runs the same cases with a bigger
fleet and longer phases."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bench.faults import (Rig, case_bad_payload_corpus, case_bridge_restart_default_id,
                          case_broker_kill9_agent_first, case_one_of_two_bridges_killed,
                          case_spark_driver_kill9_one_restart)


@pytest.fixture(scope="module")
def rig():
    work = Path(tempfile.mkdtemp(prefix="smartcity-fault-matrix-"))
    r = Rig(work, agents=2, seconds=8.0, ack_timeout_s=3.0).start()
    yield r
    r.stop()
    shutil.rmtree(work, ignore_errors=True)


def assert_exactly_once(result: dict) -> None:
    assert "error" not in result, result.get("error")
    assert result["published"] > 50, result
    assert result["lost"] == 0 and result["in_lake"] == result["published"], result
    assert result["duplicates"] == 0 and result["invented"] == 0, result
    assert result["recovery_s"] is not None, result


def test_broker_kill_9_with_the_agents_back_before_the_bridges(rig):
    r = case_broker_kill9_agent_first(rig)
    assert_exactly_once(r)
    assert r["not_delivered"] > 0, "the race was not forced: no PUBACK 0x10 seen"


def test_bridge_restarted_with_default_settings(rig):
    r = case_bridge_restart_default_id(rig)
    assert_exactly_once(r)
    assert r["bridge_exit_code"] == 0


def test_one_of_two_bridges_killed_and_never_restarted(rig):
    r = case_one_of_two_bridges_killed(rig)
    assert_exactly_once(r)


def test_spark_driver_kill_9_then_exactly_one_restart(rig):
    r = case_spark_driver_kill9_one_restart(rig)
    assert_exactly_once(r)
    assert r["lake_job_running_after_one_restart"], r.get("lake_log_tail")


def test_bad_payload_corpus_goes_to_the_dlq_and_the_good_readings_all_land(rig):
    r = case_bad_payload_corpus(rig)
    assert_exactly_once(r)
    assert r["bridge_up"] and r["dead_lettered"] == r["corpus"] and r["corpus_rows_in_lake"] == 0, r
