"""Drive a real bridge from the outside: for the end-to-end tests and `python -m bench bridge`.

- BridgeProcess: `python -m bridge` as a child process (so kill -9 is a real crash).
- FleetPublisher: N simulated devices publishing contract-valid records at QoS 1 over MQTT v5,
  with the same envelope the edge agent writes (event_id, seq per device, ...).
- collect(): a Kafka consumer that reads the topics from the beginning until a condition holds.
- shared_kafka(): one Kafka broker per Python process (the test session), started on first use.
"""
from __future__ import annotations

import atexit
import json
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smartcity.contracts.envelope import event_id, format_ts, mqtt_topic
from smartcity.contracts.schema import SCHEMA_VERSION, example
from deploy.local.kafka import KafkaServer, free_port
from deploy.local.process import Process, log_tail

REPO = Path(__file__).resolve().parents[1]


# Kafka, once per process --------------------------------------------------------------------
_kafka: KafkaServer | None = None
_kafka_lock = threading.Lock()


def wait_until(pred, timeout_s: float, what: str) -> None:
    """Poll `pred` every 0.5 s; AssertionError naming `what` when it stays false for timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def shared_kafka(partitions: int = 3) -> KafkaServer:
    """Starting a JVM broker costs seconds: tests share one and isolate by device ids."""
    global _kafka
    with _kafka_lock:
        if _kafka is None or not _kafka.running():
            d = Path(tempfile.mkdtemp(prefix="smartcity-kafka-"))
            _kafka = KafkaServer(d)
            _kafka.start()
            _kafka.create_topics(partitions=partitions)
            atexit.register(_stop_and_remove, _kafka, d)
        return _kafka


def _stop_and_remove(k: KafkaServer, d: Path) -> None:
    import shutil
    k.stop()
    shutil.rmtree(d, ignore_errors=True)


# records ------------------------------------------------------------------------------------
def record(stream: str, device_id: str, boot_id: str, seq: int, ts: float | None = None) -> dict:
    """A contract-valid record of `stream` with the agent's envelope."""
    r = example(stream)
    r.update(event_id=event_id(device_id, boot_id, seq), device_id=device_id,
             ts=format_ts(time.time() if ts is None else ts), seq=seq, source="sim", clock="sim",
             schema_version=SCHEMA_VERSION)
    return r


STREAM_CYCLE = ("gps", "vehicle", "weather", "gps", "vehicle", "traffic", "gps", "emergency")


@dataclass
class Sent:
    event_id: str
    device_id: str
    stream: str
    seq: int
    t_sent: float


class FleetPublisher:
    """Publishes records for `devices` round-robin at QoS 1, as fast as the broker acknowledges
    (bounded by max_inflight), remembering what was published and when."""

    def __init__(self, port: int, devices: Iterable[str], host: str = "127.0.0.1",
                 max_inflight: int = 500, client_id: str | None = None,
                 username: str | None = None, password: str | None = None):
        self.devices = list(devices)
        self.window = max_inflight
        self.boot_id = uuid.uuid4().hex[:8]
        self.seq = {d: 0 for d in self.devices}
        self.sent: list[Sent] = []
        self.acked = 0
        self._lock = threading.Lock()
        self._acked_cv = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(0.1, 1)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not connected.wait(10):
            raise RuntimeError(f"publisher could not connect to 127.0.0.1:{port}")

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._acked_cv:
            self.acked += 1
            self._acked_cv.notify_all()

    def publish_one(self, device_id: str, stream: str) -> Sent:
        # Flow control: at most `window` unacknowledged publishes, like the agent's publisher.
        with self._acked_cv:
            while len(self.sent) - self.acked >= self.window:
                self._acked_cv.wait(1.0)
        seq = self.seq[device_id]
        self.seq[device_id] = seq + 1
        rec = record(stream, device_id, self.boot_id, seq)
        payload = json.dumps(rec, separators=(",", ":"))
        s = Sent(rec["event_id"], device_id, stream, seq, time.time())
        with self._lock:
            self.sent.append(s)
        info = self.client.publish(mqtt_topic(device_id, stream), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise RuntimeError(f"publish failed rc={info.rc}")
        return s

    def publish(self, n_per_device: int, rate_per_s: float | None = None) -> None:
        """n_per_device records per device, interleaved, streams cycling; rate is overall."""
        gap = 1.0 / rate_per_s if rate_per_s else 0.0
        t_next = time.monotonic()
        for i in range(n_per_device):
            for j, d in enumerate(self.devices):
                self.publish_one(d, STREAM_CYCLE[(i + j) % len(STREAM_CYCLE)])
                if gap:
                    t_next += gap
                    delay = t_next - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)

    def publish_for(self, seconds: float, stop: threading.Event | None = None) -> None:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            for j, d in enumerate(self.devices):
                self.publish_one(d, STREAM_CYCLE[(i + j) % len(STREAM_CYCLE)])
            i += 1

    def wait_acked(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._acked_cv:
            while self.acked < len(self.sent):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked_cv.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# Kafka side ---------------------------------------------------------------------------------
@dataclass
class Got:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int
    ts_ms: int

    def json(self) -> dict:
        return json.loads(self.value)


@dataclass
class Collector:
    """Reads topics from the beginning in a background thread; `messages` grows as they arrive."""
    bootstrap: str
    topics: list[str]
    messages: list[Got] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # the consumer's last errors (partition EOF, broker down)

    def __post_init__(self):
        from confluent_kafka import Consumer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.consumer = Consumer({"bootstrap.servers": self.bootstrap,
                                  "group.id": f"collect-{uuid.uuid4().hex[:8]}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 50, "logger": _quiet})
        self.consumer.subscribe(self.topics)
        self._t = threading.Thread(target=self._run, daemon=True, name="collector")
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            batch = self.consumer.consume(1000, 0.1)
            got = []
            for m in batch:
                if m.error():
                    self.errors = (self.errors + [str(m.error())])[-5:]
                    continue
                got.append(Got(m.topic(), m.key(), m.value(), dict(m.headers() or ()), m.partition(),
                               m.offset(), m.timestamp()[1]))
            if got:
                with self._lock:
                    self.messages.extend(got)

    def state(self) -> str:
        """One line for a failure message: what was read, per topic, and the last errors."""
        with self._lock:
            per_topic = dict(Counter(m.topic for m in self.messages))
        return f"collector: {per_topic}, last errors {self.errors or 'none'}"

    def snapshot(self, pred: Callable[[Got], bool] | None = None) -> list[Got]:
        with self._lock:
            return [m for m in self.messages if pred is None or pred(m)]

    def wait_for(self, cond: Callable[[list[Got]], bool], timeout_s: float = 60.0,
                 pred: Callable[[Got], bool] | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond(self.snapshot(pred)):
                return True
            time.sleep(0.1)
        return cond(self.snapshot(pred))

    def close(self):
        self._stop.set()
        self._t.join(5)
        self.consumer.close()


def _quiet_logger():
    import logging
    lg = logging.getLogger("harness.librdkafka")
    lg.setLevel(logging.CRITICAL)
    return lg


_quiet = _quiet_logger()


# the bridge as a process --------------------------------------------------------------------
class BridgeProcess:
    def __init__(self, mqtt_port: int, kafka_bootstrap: str, log_dir: Path, bridge_id: str | None = "b1",
                 group: str = "smartcity-bridge", extra_args: Iterable[str] = (),
                 env: dict[str, str] | None = None):
        self.mqtt_port, self.kafka_bootstrap = mqtt_port, kafka_bootstrap
        self.bridge_id, self.group = bridge_id, group
        self.extra_args = list(extra_args)
        self.env = env or {}
        # bridge_id None: no --bridge-id, the bridge's own default (the host name)
        self.log_path = Path(log_dir) / f"bridge-{bridge_id or 'default'}.log"
        self.http_port = free_port()
        self.proc: Process | None = None

    def start(self, wait: bool = True) -> "BridgeProcess":
        cmd = [sys.executable, "-m", "smartcity.bridge", *(("--bridge-id", self.bridge_id) if self.bridge_id else ()),
               "--group", self.group,
               "--mqtt-port", str(self.mqtt_port), "--kafka-bootstrap", self.kafka_bootstrap,
               "--http-port", str(self.http_port), "--log-level", "INFO", *self.extra_args]
        self.proc = Process(f"bridge {self.bridge_id or '(default id)'}", cmd, self.log_path,
                            env={"PYTHONPATH": str(REPO), **self.env}, cwd=REPO, new_session=False).start()
        if wait:
            self.wait_connected()
        return self

    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metrics(self) -> dict[str, float]:
        """name{labels} -> value from /metrics."""
        _, body = self.http_get("/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def wait_connected(self, timeout_s: float = 20.0) -> None:
        """Until the broker granted the bridge's subscription: from then on nothing published is
        lost even if the bridge dies."""
        def subscribed() -> bool:
            try:
                return self.metrics().get("bridge_mqtt_subscribed") == 1
            except OSError:
                return False
        self.proc.wait_for(subscribed, "the broker to grant its subscription", timeout_s)

    def log_tail(self, n: int = 40) -> str:
        return log_tail(self.log_path, n)

    def state(self, n: int = 30) -> str:
        """For a failure message: the bridge's counters (or why there are none) and its log's end."""
        try:
            m = self.metrics()
            flows = ("bridge_received", "bridge_forwarded", "bridge_acked", "bridge_dlq", "bridge_kafka_errors",
                     "bridge_produce_", "bridge_reconnects")          # shown when not 0
            states = ("bridge_inflight", "bridge_kafka_up", "bridge_mqtt_connected")
            counters = ", ".join(f"{k}={v:g}" for k, v in sorted(m.items())
                                 if k.startswith(states) or (k.startswith(flows) and v))
        except OSError as e:
            counters = f"no /metrics ({e})"
        return f"--- bridge {self.bridge_id}: running={self.running()}; {counters}\n{self.log_tail(n)}"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def terminate(self, timeout_s: float = 40.0) -> int:
        """SIGTERM (the bridge drains), SIGKILL after timeout_s; the exit code."""
        return self.proc.terminate(timeout_s) if self.proc is not None else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.terminate()
