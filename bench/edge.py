"""python -m bench edge [--agent-seconds S] [--drain-readings N]

- nmea_sentences_per_s: the GPS driver's pure core (framing + checksum + decode + fix assembly)
  over a simulated 10 Hz NMEA stream, single thread, CPU time.
- cpu_ms_per_reading / peak_rss_mb: `smartcity-edge --simulate` as a real process (simulator,
  drivers over ptys, durable queue with fsync, MQTT to a local Mosquitto), its CPU time divided by
  the readings the broker acknowledged, and its peak resident set (VmHWM).
- drain_readings_per_s: a backlog of queued readings drained into a local Mosquitto until every
  one is acknowledged (the agent's queue settings: fsync on).
Targets (edge issue): CPU <= 1 ms per reading, RSS <= 60 MB, drain >= 3,000 readings/s.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nmea_throughput(seconds_of_trip: float = 600.0, rate_hz: float = 10.0) -> dict:
    from edge.gps import NmeaPipeline
    from sim.backend import DEFAULT_START_UTC
    from sim.nmea import nmea_cycle
    from sim.trip import TripSimulator

    trip = TripSimulator(seed=1, start_utc=DEFAULT_START_UTC)
    chunks = []
    for _ in range(int(seconds_of_trip * rate_hz)):
        s = trip.advance(1 / rate_hz)
        chunks.append(nmea_cycle(utc=s.ts, lat=s.lat, lon=s.lon, alt_m=s.alt_m,
                                 speed_kmh=s.speed_kmh, heading_deg=s.heading_deg,
                                 sats_used=s.sats_used, hdop=s.hdop))
    data = b"".join(chunks)
    sentences = data.count(b"\n")
    pipe = NmeaPipeline()
    t0 = time.process_time()
    # 64-byte reads: what a 9600-baud UART hands over between two polls
    fixes = 0
    for i in range(0, len(data), 64):
        fixes += len(pipe.feed(data[i:i + 64]))
    cpu = time.process_time() - t0
    return {"nmea_sentences_per_s": round(sentences / cpu), "nmea_sentences": sentences,
            "nmea_fixes": fixes}


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_hwm_mb(pid: int) -> float:
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def agent_cost(seconds: float, speedup: float, gps_rate_hz: float) -> dict:
    from deploy.local.mosquitto import MosquittoServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="smartcity-bench-edge-"))
    broker = MosquittoServer(tmp / "mqtt").start()
    http_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.agent", "--simulate", "--device-id", "bench-edge",
         "--data-dir", str(tmp / "edge"), "--mqtt-port", str(broker.port),
         "--speedup", str(speedup), "--gps-rate-hz", str(gps_rate_hz),
         "--http-port", str(http_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # start-up (imports, ptys, MQTT connect) is not per-reading cost
        cpu0, acks0 = _proc_cpu_s(proc.pid), _metric(http_port, "smartcity_mqtt_publish_acks_total")
        time.sleep(seconds)
        cpu1, acks1 = _proc_cpu_s(proc.pid), _metric(http_port, "smartcity_mqtt_publish_acks_total")
        hwm = _proc_hwm_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        broker.stop()
    readings = acks1 - acks0
    return {"cpu_ms_per_reading": round((cpu1 - cpu0) * 1000 / max(readings, 1), 3),
            "peak_rss_mb": round(hwm, 1), "agent_readings": int(readings),
            "agent_readings_per_s": round(readings / seconds, 1), "agent_seconds": seconds,
            "agent_speedup": speedup, "agent_gps_rate_hz": gps_rate_hz}


def run(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench edge")
    p.add_argument("--agent-seconds", type=float, default=20.0)
    p.add_argument("--speedup", type=float, default=10.0,
                   help="simulated seconds per wall second (10 Hz GPS x 10 = 100 fixes/s)")
    p.add_argument("--gps-rate-hz", type=float, default=10.0)
    p.add_argument("--drain-readings", type=int, default=100_000)
    a = p.parse_args(argv)
    from edge.publisher import drain_benchmark

    out: dict = {}
    out.update(nmea_throughput())
    out.update(agent_cost(a.agent_seconds, a.speedup, a.gps_rate_hz))
    drain = drain_benchmark(n=a.drain_readings, fsync=True)
    out["drain_readings_per_s"] = drain["readings_per_s"]
    out["drain_readings"] = drain["readings"]
    out["drain_left_in_queue"] = drain["left_in_queue"]
    out["targets"] = {"cpu_ms_per_reading": "<= 1", "peak_rss_mb": "<= 60",
                      "drain_readings_per_s": ">= 3000"}
    out["machine"] = f"{os.cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}"
    return out
