"""Faults against real processes: the simulated edge agent -> Mosquitto -> bridge -> Kafka.

The agent deletes a reading only when the bridge reports that Kafka has it (end-to-end
acknowledgement), so each fault below must end with every seq the agent allocated in Kafka and an
empty agent queue. Seqs are per device and strictly increasing across restarts (the durable queue
allocates them), so "every seq from the first to the last" is exactly "nothing lost".
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.harness import BridgeProcess, Collector, shared_kafka
from deploy.local.kafka import ALL_TOPICS, DLQ_TOPIC
from deploy.local.mosquitto import MosquittoServer, free_port
from smartcity.edge.queue import DurableQueue

ROOT = Path(__file__).resolve().parents[1]


class Agent:
    """`smartcity-edge --simulate` as a real process, metrics on its own HTTP port."""

    def __init__(self, data_dir: Path, mqtt_port: int, device_id: str, speedup: float = 20.0):
        self.data_dir, self.device_id = data_dir, device_id
        self.http_port = free_port()
        self.log = open(data_dir.parent / f"agent-{device_id}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--device-id", device_id,
             "--data-dir", str(data_dir), "--mqtt-port", str(mqtt_port), "--speedup", str(speedup),
             "--http-port", str(self.http_port), "--log-level", "INFO"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "SMARTCITY_EDGE_MQTT__RECONNECT_MIN_S": "0.2",
                 "SMARTCITY_EDGE_MQTT__RECONNECT_MAX_S": "1.0",
                 # A stop waits for its last readings to be confirmed: the resends after PUBACK
                 # 0x10 back off up to ack_timeout_s (30 s), so give it more than that.
                 "SMARTCITY_EDGE_DRAIN_TIMEOUT_S": "90"})

    def metric(self, name: str) -> float:
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return float("nan")
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.split("{")[0].split(" ")[0] == name)

    def stop(self, timeout_s: float = 120.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout_s)
        self.log.close()
        return rc

    def queue_state(self) -> tuple[int, int]:
        """(last seq allocated, readings still queued) from the agent's queue file."""
        with DurableQueue(self.data_dir / "queue.sqlite3") as q:
            return q.next_seq() - 1, q.depth()


def wait_until(cond, timeout_s: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.fixture(scope="module")
def kafka():
    return shared_kafka()


@pytest.fixture
def collector(kafka):
    c = Collector(kafka.bootstrap, list(ALL_TOPICS))
    yield c
    c.close()


def seqs_in_kafka(collector, device_id: str) -> list[int]:
    got = collector.snapshot(lambda m: m.key == device_id.encode() and m.topic != DLQ_TOPIC
                             and m.topic.endswith("_data"))
    return [json.loads(m.value)["seq"] for m in got]


def test_broker_kill_9_with_the_agent_back_before_the_bridge_loses_nothing(tmp_path, kafka,
                                                                           collector):
    """The race from the fault run: Mosquitto 2.0.11 does not restore shared subscriptions, so an
    agent that reconnects before the bridge publishes into a topic with no subscriber and gets
    PUBACK 0x10. Forced here: the broker is killed (-9: what it acknowledged since its last
    autosave is gone too) and the bridge's first reconnect is held back 6 s."""
    run = uuid.uuid4().hex[:6]
    broker = MosquittoServer(tmp_path / "mosquitto").start()
    bridge = BridgeProcess(broker.port, kafka.bootstrap, tmp_path, bridge_id=f"f1-{run}",
                           group=f"g-{run}",
                           env={"SMARTCITY_BRIDGE_MQTT__RECONNECT_MIN_S": "6",
                                "SMARTCITY_BRIDGE_MQTT__RECONNECT_MAX_S": "6"}).start()
    device = f"fault-{run}"
    agent = Agent(tmp_path / "agent", broker.port, device)
    try:
        assert wait_until(lambda: agent.metric("smartcity_mqtt_publish_acks_total") >= 50, 30), \
            "the agent's readings are confirmed end to end before the fault"
        broker.kill()
        time.sleep(1.0)
        broker.start()
        assert wait_until(lambda: agent.metric("smartcity_mqtt_not_delivered_total") > 0, 10), \
            "the race did not happen: the agent never published into a missing subscription"
        assert bridge.running(), bridge.log_tail()
        time.sleep(3.0)
        assert agent.stop() == 0
        last_seq, left = agent.queue_state()
        assert left == 0, "the stop waits until Kafka has confirmed every reading"
        want = set(range(1, last_seq + 1))
        assert collector.wait_for(lambda ms: want <= set(seqs_in_kafka(collector, device)), 60)
        assert set(seqs_in_kafka(collector, device)) == want, "nothing lost, nothing invented"
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
        bridge.kill()
        broker.kill()
