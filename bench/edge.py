"""python -m bench edge [--agent-seconds S] [--drain-readings N]

- nmea_sentences_per_s: the GPS driver's pure core (framing + checksum + decode + fix assembly)
  over a simulated 10 Hz NMEA stream, single thread, CPU time.
- cpu_ms_per_reading / peak_rss_mb: `smartcity-edge --simulate` as a real process (simulator,
  drivers over ptys, durable queue with fsync, MQTT to a local Mosquitto), its CPU time divided by
  the readings the broker acknowledged, and its peak resident set (VmHWM).
- drain_readings_per_s: a backlog of queued readings drained into a local Mosquitto until every
  one is confirmed (the agent's queue settings: fsync on), end to end (the default delivery) and,
  as the baseline in the same run, on PUBACK (delivery="broker").
- The end-to-end acknowledgement's cost: the agent and the drain run with an AckPeer subscribed
  in the bridge's place, which acknowledges what it receives the way the bridge does once Kafka has
  it (contracts.acks, batched per device every 0.2 s); `python -m bench bridge` measures the real
  bridge. Reported: agent CPU per reading and unconfirmed readings at 10 Hz in both modes, and the
  broker messages per reading (data + acks).
Targets (edge issue): CPU <= 1 ms per reading, RSS <= 60 MB, drain >= 3,000 readings/s.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
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

from smartcity.runtime.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]


def nmea_throughput(seconds_of_trip: float = 600.0, rate_hz: float = 10.0) -> dict:
    from smartcity.edge.gps import NmeaPipeline
    from smartcity.sim.backend import DEFAULT_START_UTC
    from smartcity.sim.nmea import nmea_cycle
    from smartcity.sim.trip import TripSimulator

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


class AckPeer:
    """Subscribes where the bridge does and acknowledges every reading it receives as the bridge
    does once Kafka has it: per device and boot, merged into ranges, flushed every `flush_s`."""

    def __init__(self, port: int, flush_s: float = 0.2):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from smartcity.contracts.acks import AckRanges, find_event_id
        self._find = find_event_id
        self.pending = AckRanges()
        self.received = 0
        self.ack_messages = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ack-peer",
                                  protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("smartcity/v1/+/+", qos=1)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("ack peer: no SUBACK")
        self._flusher = threading.Thread(target=self._flush_loop, args=(flush_s,), daemon=True)
        self._flusher.start()

    def _on_message(self, client, userdata, msg) -> None:
        found = self._find(msg.payload)
        self.received += 1
        if found is not None:
            with self._lock:
                self.pending.add(*found)

    def _flush_loop(self, flush_s: float) -> None:
        while not self._stop.wait(flush_s):
            with self._lock:
                out = self.pending.drain()
            for topic, payload in out:
                self.client.publish(topic, payload, qos=1)
                self.ack_messages += 1

    def close(self) -> None:
        self._stop.set()
        self._flusher.join(2)
        self.client.disconnect()
        self.client.loop_stop()


def agent_cost(seconds: float, speedup: float, gps_rate_hz: float, delivery: str) -> dict:
    from deploy.local.mosquitto import MosquittoServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="smartcity-bench-edge-"))
    broker = MosquittoServer(tmp / "mqtt").start()
    peer = AckPeer(broker.port)
    http_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--device-id", "bench-edge",
         "--data-dir", str(tmp / "edge"), "--mqtt-port", str(broker.port),
         "--speedup", str(speedup), "--gps-rate-hz", str(gps_rate_hz),
         "--http-port", str(http_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "SMARTCITY_EDGE_MQTT__DELIVERY": delivery})
    try:
        time.sleep(3)  # start-up (imports, ptys, MQTT connect) is not per-reading cost
        cpu0, acks0 = _proc_cpu_s(proc.pid), _metric(http_port, "smartcity_mqtt_publish_acks_total")
        rcv0, ackmsg0 = peer.received, peer.ack_messages
        unconfirmed = []
        for _ in range(int(seconds * 2)):
            time.sleep(0.5)
            unconfirmed.append(_metric(http_port, "smartcity_mqtt_unconfirmed"))
        cpu1, acks1 = _proc_cpu_s(proc.pid), _metric(http_port, "smartcity_mqtt_publish_acks_total")
        rcv1, ackmsg1 = peer.received, peer.ack_messages
        hwm = _proc_hwm_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        peer.close()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    readings = acks1 - acks0
    return {"cpu_ms_per_reading": round((cpu1 - cpu0) * 1000 / max(readings, 1), 3),
            "peak_rss_mb": round(hwm, 1), "readings": int(readings),
            "readings_per_s": round(readings / seconds, 1),
            "unconfirmed_mean": round(sum(unconfirmed) / max(1, len(unconfirmed)), 1),
            "unconfirmed_max": max(unconfirmed, default=0),
            "broker_messages_per_reading": round(
                ((rcv1 - rcv0) + (ackmsg1 - ackmsg0)) / max(readings, 1), 3)}


def drain_benchmark(n: int = 100_000, payload_bytes: int = 300, window: int = 500,
                    delivery: str = "end_to_end", workdir: str | Path | None = None,
                    fsync: bool = False, timeout_s: float = 300.0) -> dict:
    """Fill a queue with n readings (~payload_bytes JSON each), start a local Mosquitto (and an
    AckPeer), publish until every row is confirmed. Returns the rate."""
    from smartcity.contracts.envelope import TOPIC_PREFIX
    from deploy.local.mosquitto import MosquittoServer
    from smartcity.edge.publisher import MqttPublisher, MqttSettings
    from smartcity.edge.queue import DurableQueue
    from smartcity.runtime.obs import value

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="smartcity-drain-"))
    tmp.mkdir(parents=True, exist_ok=True)
    broker = MosquittoServer(tmp / "mqtt", persistence=False).start()
    peer = AckPeer(broker.port)
    q = DurableQueue(tmp / "queue.db", max_bytes=10 * n * payload_bytes, fsync=fsync)
    try:
        device = "bench-0001"
        filler = "x" * max(0, payload_bytes - 120)

        def build(stream):
            def b(seq):
                doc = {"event_id": f"{device}:boot:{seq}", "device_id": device, "seq": seq,
                       "ts": "2026-01-01T00:00:00.000Z", "stream": stream, "pad": filler}
                return f"{TOPIC_PREFIX}/{device}/{stream}", json.dumps(doc).encode()
            return b

        t0 = time.monotonic()
        streams = ["gps", "vehicle", "weather"]
        for start in range(0, n, 5000):
            q.append_many([(streams[i % 3], build(streams[i % 3]))
                           for i in range(start, min(n, start + 5000))])
        fill_s = time.monotonic() - t0
        avg_payload = q.bytes() / max(1, q.depth())
        pub = MqttPublisher(q, MqttSettings(port=broker.port, device_id=device, delivery=delivery,
                                            inflight_window=window))
        t0 = time.monotonic()
        pub.start()
        deadline = t0 + timeout_s
        while q.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        drain_s = time.monotonic() - t0
        left = q.depth()
        pub.stop(2)
        return {"readings": n, "payload_bytes_avg": round(avg_payload, 1), "window": window,
                "delivery": delivery, "fsync": fsync, "fill_s": round(fill_s, 3),
                "drain_s": round(drain_s, 3), "readings_per_s": round((n - left) / drain_s, 1),
                "left_in_queue": left, "published_total": value(pub.m_published),
                "acks_total": value(pub.m_acks)}
    finally:
        q.close()
        peer.close()
        broker.stop()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(argv: list[str]) -> dict:
    p = ArgumentParser(prog="python -m bench edge")
    p.add_argument("--agent-seconds", type=float, default=20.0)
    p.add_argument("--speedup", type=float, default=10.0,
                   help="simulated seconds per wall second (10 Hz GPS x 10 = 100 fixes/s)")
    p.add_argument("--gps-rate-hz", type=float, default=10.0)
    p.add_argument("--drain-readings", type=int, default=100_000)
    a = p.parse_args(argv)

    out: dict = {}
    out.update(nmea_throughput())
    # Each pair runs back to back in this process: the broker-mode run is the same-run baseline.
    e2e = agent_cost(a.agent_seconds, a.speedup, a.gps_rate_hz, "end_to_end")
    broker = agent_cost(a.agent_seconds, a.speedup, a.gps_rate_hz, "broker")
    out.update({k: e2e[k] for k in ("cpu_ms_per_reading", "peak_rss_mb")})
    out["agent_end_to_end"] = e2e
    out["agent_broker_ack_baseline"] = broker
    out["agent_seconds"], out["agent_speedup"], out["agent_gps_rate_hz"] = (
        a.agent_seconds, a.speedup, a.gps_rate_hz)
    drain = drain_benchmark(n=a.drain_readings, fsync=True)
    drain_base = drain_benchmark(n=a.drain_readings, fsync=True, delivery="broker")
    out["drain_readings_per_s"] = drain["readings_per_s"]
    out["drain_readings"] = drain["readings"]
    out["drain_left_in_queue"] = drain["left_in_queue"]
    out["drain_broker_ack_baseline_readings_per_s"] = drain_base["readings_per_s"]
    out["targets"] = {"cpu_ms_per_reading": "<= 1", "peak_rss_mb": "<= 60",
                      "drain_readings_per_s": ">= 3000"}
    out["machine"] = f"{os.cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}"
    return out
