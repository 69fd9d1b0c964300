"""Small pieces of the agent that need no process: the rate gauge and the recorder."""
import json
import os
from datetime import datetime, timezone

import pytest

import smartcity.contracts as contracts
from smartcity.edge.agent import AgentSettings, RateMeter, check_settings, main
from smartcity.runtime.settings import SettingsError
from smartcity.edge.queue import DurableQueue
from smartcity.edge.recorder import Recorder

TS = datetime(2026, 11, 28, 1, 2, 3, 456000, tzinfo=timezone.utc)


def test_rate_meter_reports_the_recent_rate_not_the_lifetime_average():
    clock, total = [0.0], [0.0]
    meter = RateMeter(lambda: total[0], window_s=10, monotonic=lambda: clock[0])
    assert meter() == 0.0
    for _ in range(30):           # 30 s at 100/s
        clock[0] += 1
        total[0] += 100
        meter()
    for _ in range(20):           # then 20 s at 10/s
        clock[0] += 1
        total[0] += 10
        rate = meter()
    assert 9.0 <= rate <= 11.0


def test_recorder_stores_a_valid_record_with_a_deterministic_event_id(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    rec = Recorder(q, "bus-1", "hw", lambda: (TS, "system"), boot_id="0badcafe")
    seq = rec.emit("weather", {"temperature_c": 31.5, "humidity_pct": 60.0})
    (row,) = q.peek(10)
    doc = json.loads(row.payload)
    assert row.topic == "smartcity/v1/bus-1/weather"
    assert doc["event_id"] == f"bus-1:0badcafe:{seq}" and doc["seq"] == seq
    assert doc["ts"] == "2026-11-28T01:02:03.456Z" and doc["clock"] == "system"
    contracts.validate("weather", doc)


def test_recorder_rejects_a_reading_that_breaks_the_contract_without_burning_a_seq(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    rec = Recorder(q, "bus-1", "hw", lambda: (TS, "system"), boot_id="0badcafe")
    assert rec.emit("weather", {"temperature_c": 500.0}) is None
    assert rec.invalid_total["weather"] == 1 and q.depth() == 0
    first = rec.emit("weather", {"temperature_c": 30.0})
    second = rec.emit("weather", {"temperature_c": 30.1})
    assert second == first + 1


def test_a_reading_the_full_disk_refuses_is_not_counted_as_recorded(tmp_path):
    low = lambda path: os.statvfs_result((4096, 4096, 1000, 0, 10, 100, 0, 0, 0, 255))  # noqa: E731
    q = DurableQueue(tmp_path / "q.db", min_free_bytes=1 << 20, statvfs=low)
    rec = Recorder(q, "bus-1", "hw", lambda: (TS, "system"), boot_id="0badcafe")
    assert rec.emit("weather", {"temperature_c": 30.0}) is None
    assert rec.records_total["weather"] == 0 and q.refused_total()["disk_low"] == 1


# --- settings the agent refuses to start with -------------------------------------------------------

def test_an_mqtt_username_other_than_the_device_id_refuses_to_start(tmp_path, monkeypatch, capsys):
    # With the deployed ACL (write smartcity/v1/%u/#) every reading would be refused by the broker.
    monkeypatch.setenv("SMARTCITY_EDGE_MQTT__USERNAME", "bus-2")
    assert main(["--device-id", "bus-1", "--data-dir", str(tmp_path / "edge")]) == 2
    err = capsys.readouterr().err
    assert "mqtt.username 'bus-2' differs from device_id 'bus-1'" in err
    assert "allow_mqtt_username_mismatch" in err
    assert not (tmp_path / "edge").exists(), "refused before anything started"


def test_a_different_username_is_allowed_only_explicitly_and_then_warned_about():
    s = AgentSettings(device_id="bus-1", allow_mqtt_username_mismatch=True)
    s.mqtt.username = "fleet"
    [warning] = check_settings(s)
    assert "differs from device_id" in warning and "allow_mqtt_username_mismatch" in warning
    for username in (None, "bus-1"):
        s = AgentSettings(device_id="bus-1")
        s.mqtt.username = username
        assert check_settings(s) == []


@pytest.mark.parametrize("device_id", ["bus-1\n", "bus 1", "bus/1", "x" * 65])
def test_a_device_id_the_contract_refuses_refuses_to_start(device_id, tmp_path, capsys):
    assert main(["--device-id", device_id, "--data-dir", str(tmp_path / "edge")]) == 2
    assert "device_id" in capsys.readouterr().err
    with pytest.raises(SettingsError):
        check_settings(AgentSettings(device_id=device_id))


def test_recorder_batch_stores_its_readings_in_one_transaction_at_the_end(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    rec = Recorder(q, "bus-1", "hw", lambda: (TS, "system"), boot_id="0badcafe")
    calls = []
    append_many = q.append_many
    q.append_many = lambda items: calls.append(len(items)) or append_many(items)
    with rec.batch():
        assert rec.emit("weather", {"temperature_c": 30.0}) is None
        assert rec.emit("weather", {"temperature_c": 500.0}) is None   # invalid: not stored
        with rec.batch():                                                 # nested: outer stores
            rec.emit("weather", {"temperature_c": 30.2})
        assert q.depth() == 0 and calls == []    # nothing queued (or publishable) before the end
    assert calls == [2] and q.depth() == 2
    assert rec.records_total["weather"] == 2 and rec.invalid_total["weather"] == 1
    seqs = [json.loads(r.payload)["seq"] for r in q.peek(10)]
    assert seqs[1] == seqs[0] + 1
    with pytest.raises(RuntimeError):
        with rec.batch():
            rec.emit("weather", {"temperature_c": 30.3})
            raise RuntimeError("driver bug")
    assert q.depth() == 3                        # what was emitted before the error is stored
    assert rec.emit("weather", {"temperature_c": 30.4}) == seqs[1] + 2   # no batch: stored at once
