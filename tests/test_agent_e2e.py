"""The edge agent end to end: `smartcity-edge --simulate` as a real process, a real Mosquitto.

Specification: every reading gets a seq and an event_id when it is stored; whatever happens to the
broker or to the agent process, every seq from 1 to the last one arrives at a persistent subscriber,
first arrivals in order per stream, and nothing is invented.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from deploy.local.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
AGENT = [sys.executable, "-m", "smartcity.edge.agent"]


class AgentProcess:
    def __init__(self, data_dir: Path, mqtt_port: int, *extra: str, env: dict | None = None,
                 device_id: str = "bus-e2e", speedup: float = 1.0, gps_rate_hz: float = 10.0):
        self.http_port = free_port()
        self.log = open(data_dir.parent / f"agent-{time.time_ns()}.log", "w")
        self.proc = subprocess.Popen(
            AGENT + ["--simulate", "--device-id", device_id, "--data-dir", str(data_dir),
                     "--mqtt-port", str(mqtt_port), "--speedup", str(speedup),
                     "--gps-rate-hz", str(gps_rate_hz), "--http-port", str(self.http_port),
                     "--log-level", "INFO", *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str, **labels) -> float:
        """Sum of the series of `name` whose labels include `labels`."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] == name and all(w in series for w in want):
                total += float(value)
        return total

    def wait_http(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get("/healthz")
                return
            except OSError:
                assert self.proc.poll() is None, "agent exited during start-up"
                time.sleep(0.1)
        raise AssertionError("agent /healthz never answered")

    def terminate(self, timeout=30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def records(sub) -> list[dict]:
    return [json.loads(p) for p in sub.payloads(lambda t: not t.endswith("/status"))]


def assert_lossless_and_ordered(recs: list[dict]) -> dict[str, list[int]]:
    """Every seq from 1..max present; the first arrival of each record is in seq order per stream;
    a duplicate is always a byte-identical resend of the same event_id."""
    assert recs, "nothing arrived"
    by_id: dict[str, dict] = {}
    first_seqs: dict[str, list[int]] = defaultdict(list)
    for r in recs:
        if r["event_id"] in by_id:
            assert by_id[r["event_id"]] == r, "same event_id, different content"
            continue
        by_id[r["event_id"]] = r
        first_seqs[_stream_of(r)].append(r["seq"])
    seqs = sorted(r["seq"] for r in by_id.values())
    assert seqs == list(range(1, seqs[-1] + 1)), f"missing seqs: {sorted(set(range(1, seqs[-1] + 1)) - set(seqs))[:20]}"
    for stream, s in first_seqs.items():
        assert s == sorted(s), f"{stream}: first arrivals out of order"
    return first_seqs


def _stream_of(r: dict) -> str:
    for stream, key in (("gps", "fix_mode"), ("vehicle", "rpm"), ("weather", "humidity_pct"),
                        ("traffic", "camera_id"), ("emergency", "incident_id")):
        if key in r:
            return stream
    raise AssertionError(f"unknown record {r}")


def test_broker_down_for_30s_loses_nothing_and_keeps_order(tmp_path, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto.port)
    # Cap the reconnect backoff so the test need not wait out a 60 s back-off after the outage.
    agent = AgentProcess(tmp_path / "edge", mosquitto.port,
                         env={"SMARTCITY_EDGE_MQTT__RECONNECT_MAX_S": "2"})
    agent.wait_http()
    assert sub.wait_for(lambda m: len(m) > 30, 20), "agent published nothing before the outage"

    mosquitto.stop()
    time.sleep(30)
    # The agent kept reading sensors into its queue while the broker was away.
    assert agent.metric("smartcity_edge_queue_depth") > 200
    status, body = agent.get("/healthz")
    assert json.loads(body)["mqtt_connected"] is False
    mosquitto.start()

    assert wait_until(lambda: agent.metric("smartcity_edge_queue_depth") < 20, 30), \
        "backlog did not drain after the broker came back"
    assert agent.terminate() == 0
    recs = records(sub)
    first = assert_lossless_and_ordered(recs)
    # 10 Hz GPS over ~35 s of simulated time: the outage's 300 fixes must be among them.
    assert len(first["gps"]) >= 300
    assert {"vehicle", "weather"} <= set(first)
    assert all(r["source"] == "sim" and r["clock"] == "sim" for r in recs)


def test_kill_9_mid_stream_then_restart_leaves_no_gap_in_seq(tmp_path, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto.port)
    data = tmp_path / "edge"
    first = AgentProcess(data, mosquitto.port, speedup=5)
    assert sub.wait_for(lambda m: len(m) > 100, 20)
    first.kill9()
    n_before = len(records(sub))
    second = AgentProcess(data, mosquitto.port, speedup=5)
    assert sub.wait_for(lambda m: len(m) > n_before + 100, 20)
    assert second.terminate() == 0
    recs = records(sub)
    assert_lossless_and_ordered(recs)
    boots = {r["event_id"].split(":")[1] for r in recs}
    assert len(boots) == 2, "each process start has its own boot id"


def test_bad_nmea_and_flaky_dht_are_counted_and_the_agent_keeps_publishing(
        tmp_path, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto.port)
    agent = AgentProcess(tmp_path / "edge", mosquitto.port, speedup=20,
                         env={"SMARTCITY_EDGE_SIM__NMEA_CORRUPTION_RATE": "0.3",
                              "SMARTCITY_EDGE_SIM__DHT_ERROR_RATE": "0.5"})
    agent.wait_http()
    assert sub.wait_for(lambda m: len(m) > 300, 30)
    assert wait_until(lambda: agent.metric("smartcity_edge_sensor_errors_total", sensor="gps") > 0)
    assert wait_until(lambda: agent.metric("smartcity_edge_sensor_errors_total", sensor="dht") > 0)
    n = len(records(sub))
    assert sub.wait_for(lambda m: len(m) > n + 100, 10), "publishing stopped after the errors"
    status, body = agent.get("/healthz")
    assert agent.terminate() == 0
    assert status == 200, body
    recs = records(sub)
    assert_lossless_and_ordered(recs)
    # Corrupted cycles are rejected, never turned into invented positions off the route.
    gps = [r for r in recs if "fix_mode" in r and r["lat"] is not None]
    assert all(12.5 < r["lat"] < 14.2 and 100.3 < r["lon"] < 101.2 for r in gps)


def test_a_taken_http_port_is_one_line_and_exit_2_before_anything_runs(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            AGENT + ["--simulate", "--data-dir", str(tmp_path / "edge"), "--mqtt-port",
                     str(free_port()), "--http-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"smartcity-edge: cannot serve /metrics and /healthz on 127.0.0.1:{port}: "
        "Address already in use (choose another HTTP port)"]
    assert "Traceback" not in run.stdout


def test_metrics_and_healthz_describe_the_agent(tmp_path, mosquitto):
    agent = AgentProcess(tmp_path / "edge", mosquitto.port, speedup=10)
    agent.wait_http()
    time.sleep(3)
    status, text = agent.get("/metrics")
    hstatus, health = agent.get("/healthz")
    assert agent.terminate() == 0
    assert status == 200 and hstatus == 200
    for name in ("smartcity_edge_queue_depth", "smartcity_edge_queue_oldest_age_seconds",
                 "smartcity_edge_last_fix_age_seconds", "smartcity_edge_queue_dropped_total",
                 "smartcity_mqtt_publish_acks_total", "smartcity_edge_sensor_errors_total",
                 "smartcity_edge_published_per_second"):
        assert f"\n{name}" in "\n" + text, name
    h = json.loads(health)
    assert h["healthy"] is True and h["mqtt_connected"] is True and h["last_fix_age_s"] < 5
