"""Publishers -> real Mosquitto -> bridge process -> real Kafka, with faults. Zero loss is checked
by event_id: every record published must be in Kafka at the end (duplicates are allowed: the
pipeline is at-least-once and consumers deduplicate on event_id).

One Kafka broker serves the whole session (a JVM start costs seconds); each test uses its own
Mosquitto, its own device ids and its own shared-subscription group, so tests do not see each
other's records.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from collections import defaultdict

import pytest

from tests.support.harness import BridgeProcess, Collector, FleetPublisher, shared_kafka
from deploy.local.kafka import ALL_TOPICS, DLQ_TOPIC
from deploy.local.mosquitto import MosquittoServer

# The issue asks for a 30 s Kafka outage: long enough for librdkafka's in-flight requests to time
# out (request.timeout.ms 30 s) and for its reconnect backoff to reach its ceiling.
KAFKA_OUTAGE_S = float(os.environ.get("SMARTCITY_TEST_KAFKA_OUTAGE_S", "30"))


@pytest.fixture(scope="session")
def kafka():
    return shared_kafka()


@pytest.fixture
def run_id():
    return uuid.uuid4().hex[:6]


@pytest.fixture
def broker(tmp_path):
    srv = MosquittoServer(tmp_path / "mosquitto").start()
    yield srv
    srv.kill()


@pytest.fixture
def collector(kafka):
    c = Collector(kafka.bootstrap, list(ALL_TOPICS))
    yield c
    c.close()


@pytest.fixture
def bridges(tmp_path):
    started: list[BridgeProcess] = []
    yield started
    for b in started:
        b.kill()


def start_bridge(bridges, broker, kafka, tmp_path, run_id, bridge_id="b1", **kw) -> BridgeProcess:
    b = BridgeProcess(broker.port, kafka.bootstrap, tmp_path,   # bridge_id None: the bridge's default
                      bridge_id=f"{bridge_id}-{run_id}" if bridge_id else None, group=f"g-{run_id}", **kw).start()
    bridges.append(b)
    return b


def mine(run_id):
    return lambda m: m.key is not None and m.key.decode().endswith(run_id)


def event_ids(msgs) -> set[str]:
    return {json.loads(m.value)["event_id"] for m in msgs if m.topic != DLQ_TOPIC}


def wait_all(collector, pub, run_id, timeout_s=60.0, bridges=()):
    """Every record the publisher sent, as the collector read it from Kafka. On a timeout the
    failure says what the bridges and the collector saw, for a loss that happens once in many runs."""
    want = {s.event_id for s in pub.sent}
    ok = collector.wait_for(lambda ms: want <= event_ids(ms), timeout_s, pred=mine(run_id))
    missing = want - event_ids(collector.snapshot(mine(run_id)))
    assert ok and not missing, f"{len(missing)} of {len(want)} records never reached Kafka, " \
                               f"e.g. {sorted(missing)[:5]}\n{collector.state()}" + \
                               "".join(f"\n{b.state()}" for b in bridges)
    return collector.snapshot(mine(run_id))


def devices(run_id, n):
    return [f"car{i}-{run_id}" for i in range(n)]


def test_every_record_reaches_its_topic_keyed_by_device_in_seq_order(broker, kafka, collector, bridges,
                                                                     tmp_path, run_id):
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id)
    pub = FleetPublisher(broker.port, devices(run_id, 5))
    pub.publish(300)
    assert pub.wait_acked(30)
    got = wait_all(collector, pub, run_id, bridges=bridges)

    sent = {s.event_id: s for s in pub.sent}
    per_partition_seq = defaultdict(list)
    for m in sorted(got, key=lambda m: (m.topic, m.partition, m.offset)):
        rec = m.json()
        s = sent[rec["event_id"]]
        assert m.topic == f"{s.stream}_data"
        assert m.key == s.device_id.encode() == rec["device_id"].encode()
        assert m.headers["mqtt.topic"] == f"smartcity/v1/{s.device_id}/{s.stream}".encode()
        assert m.headers["mqtt.qos"] == b"1" and m.headers["bridge.id"] == f"b1-{run_id}".encode()
        per_partition_seq[(m.topic, s.device_id)].append(rec["seq"])
    for key, seqs in per_partition_seq.items():
        assert seqs == sorted(seqs), f"{key}: records out of seq order"
    assert len(got) == len(pub.sent), "no fault, so no duplicate either"

    metrics = b.metrics()
    assert metrics["bridge_received_total"] == len(pub.sent)
    assert sum(v for k, v in metrics.items() if k.startswith("bridge_forwarded_total")) == len(pub.sent)
    status, body = b.http_get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert b.terminate() == 0, b.log_tail()   # SIGTERM drains and exits cleanly
    pub.close()


def test_mqtt5_user_properties_become_kafka_headers(broker, kafka, collector, bridges, tmp_path, run_id):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tests.support.harness import record
    start_bridge(bridges, broker, kafka, tmp_path, run_id)
    dev = f"car-{run_id}"
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("fw", "1.4.2"), ("trace", "abc")]
    c.publish(f"smartcity/v1/{dev}/weather", json.dumps(record("weather", dev, "0000abcd", 0)), qos=1,
              properties=props).wait_for_publish(10)
    assert collector.wait_for(lambda ms: len(ms) == 1, 30, pred=mine(run_id))
    h = collector.snapshot(mine(run_id))[0].headers
    assert h["mqtt.up.fw"] == b"1.4.2" and h["mqtt.up.trace"] == b"abc"
    c.loop_stop()


def publish_in_background(pub, seconds, rate_per_s):
    t = threading.Thread(target=pub.publish, args=(int(seconds * rate_per_s / len(pub.devices)),
                                                   rate_per_s), daemon=True)
    t.start()
    return t


def test_kill_9_of_the_bridge_mid_stream_loses_nothing(broker, kafka, collector, bridges, tmp_path, run_id):
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id)
    pub = FleetPublisher(broker.port, devices(run_id, 4))
    t = publish_in_background(pub, seconds=4, rate_per_s=1500)
    time.sleep(1.5)
    b.kill()                                   # crash: unacknowledged messages stay with the broker
    time.sleep(1.0)                            # the broker queues for the dead bridge's session
    b.start()
    t.join()
    assert pub.wait_acked(30)
    got = wait_all(collector, pub, run_id, bridges=bridges)
    assert len(got) >= len(pub.sent)
    assert b.metrics()["bridge_received_total"] > 0


def test_kafka_outage_holds_acks_and_drains_without_loss(broker, kafka, collector, bridges, tmp_path,
                                                         run_id):
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id, extra_args=["--max-inflight", "300"])
    pub = FleetPublisher(broker.port, devices(run_id, 3))
    pub.publish(100)
    wait_all(collector, pub, run_id, bridges=bridges)
    kafka.stop()
    try:
        t = publish_in_background(pub, seconds=KAFKA_OUTAGE_S / 2, rate_per_s=300)
        deadline = time.monotonic() + KAFKA_OUTAGE_S
        healthz_seen = set()
        max_inflight = 0
        while time.monotonic() < deadline:
            status, body = b.http_get("/healthz")
            healthz_seen.add(status)
            max_inflight = max(max_inflight, b.metrics()["bridge_inflight"])
            time.sleep(0.5)
        t.join()
        m = b.metrics()
        # Nothing acknowledged while Kafka is away: the broker keeps the backlog, the bridge only
        # its receive-maximum worth.
        assert m["bridge_acked_total"] == 300, "acks must stop while Kafka is down"
        assert max_inflight <= 300
        assert 503 in healthz_seen and m["bridge_kafka_up"] == 0
    finally:
        kafka.start()
    got = wait_all(collector, pub, run_id, timeout_s=90, bridges=bridges)
    assert len(event_ids(got)) == len(pub.sent)
    deadline = time.monotonic() + 10
    while b.metrics()["bridge_kafka_up"] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b.metrics()["bridge_kafka_up"] == 1 and b.http_get("/healthz")[0] == 200
    assert b.running()


def test_mosquitto_restart_loses_nothing(broker, kafka, collector, bridges, tmp_path, run_id):
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id)
    pub = FleetPublisher(broker.port, devices(run_id, 4))
    pub.publish(1000)                          # 4,000 records: the bridge is still busy with them
    assert pub.wait_acked(30)
    broker.restart()                           # clean stop writes sessions + queues to disk
    # Mosquitto 2.0.11 (Debian 12) restores sessions and their queued messages but NOT shared
    # subscriptions: until the bridge re-subscribes, a new message has no subscriber. The bridge
    # reconnects within reconnect_min_s (0.2 s), before agents (0.5 s+ backoff) resume; the test
    # publishes after that point, as an agent would.
    deadline = time.monotonic() + 10
    while b.metrics().get('bridge_reconnects_total{side="mqtt"}', 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.metrics()['bridge_reconnects_total{side="mqtt"}'] >= 1
    time.sleep(0.2)                            # SUBACK
    pub.publish(200)                           # the publisher reconnected by itself
    assert pub.wait_acked(30)
    wait_all(collector, pub, run_id, bridges=bridges)
    pub.close()


def test_two_bridges_share_the_group_and_one_is_killed(broker, kafka, collector, bridges, tmp_path, run_id):
    b1 = start_bridge(bridges, broker, kafka, tmp_path, run_id, "b1")
    b2 = start_bridge(bridges, broker, kafka, tmp_path, run_id, "b2")
    pub = FleetPublisher(broker.port, devices(run_id, 4))
    pub.publish(250)
    assert pub.wait_acked(30)
    wait_all(collector, pub, run_id, bridges=bridges)
    n1, n2 = b1.metrics()["bridge_received_total"], b2.metrics()["bridge_received_total"]
    assert n1 > 0 and n2 > 0 and n1 + n2 == len(pub.sent), "the shared group splits the load"

    t = publish_in_background(pub, seconds=3, rate_per_s=1500)
    time.sleep(1.0)
    b2.kill()
    t.join()
    assert pub.wait_acked(30)
    # Mosquitto keeps a killed member's share for its persistent session; it resumes it.
    b2.start()
    got = wait_all(collector, pub, run_id, bridges=bridges)
    assert len(event_ids(got)) == len(pub.sent)
    by_bridge = {m.headers["bridge.id"] for m in got}
    assert by_bridge == {f"b1-{run_id}".encode(), f"b2-{run_id}".encode()}


def test_bad_payload_corpus_ends_in_the_dlq_with_its_reason_and_the_bridge_keeps_going(
        broker, kafka, collector, bridges, tmp_path, run_id):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.support.harness import record
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id)
    dev = f"car-{run_id}"
    good = record("gps", dev, "0000abcd", 0)
    wrong_type = dict(good, seq="7")
    missing = {k: v for k, v in good.items() if k not in ("ts", "fix_mode")}
    spoofed = dict(good, device_id=f"other-{run_id}")
    huge = dict(good, event_id="x" * (300 * 1024))
    corpus = {
        "malformed": (b'{"event_id": "a", "seq": 1,,}', "not_json"),
        "truncated": (json.dumps(good).encode()[:40], "not_json"),
        "binary": (bytes(range(256)), "not_json"),
        "wrong_types": (json.dumps(wrong_type).encode(), "contract_invalid"),
        "missing_fields": (json.dumps(missing).encode(), "contract_invalid"),
        "not_an_object": (b'["gps", 1]', "contract_invalid"),
        # Valid JSON, but no double can hold it (it once raised OverflowError in the validator).
        "number_beyond_double": (json.dumps(good).replace('"lat": null', '"lat": 1' + "0" * 400).encode(),
                                 "contract_invalid"),
        "huge": (json.dumps(huge).encode(), "too_large"),
        "spoofed_device": (json.dumps(spoofed).encode(), "device_id_mismatch"),
        "unknown_stream": (json.dumps(good).encode(), "no_contract"),
    }
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    for name, (payload, _) in corpus.items():
        stream = "radio" if name == "unknown_stream" else "gps"
        c.publish(f"smartcity/v1/{dev}/{stream}", payload, qos=1).wait_for_publish(10)
    c.publish(f"smartcity/v1/{dev}/gps", json.dumps(good), qos=1).wait_for_publish(10)

    assert collector.wait_for(lambda ms: len(ms) == len(corpus) + 1, 30, pred=mine(run_id)), \
        collector.snapshot(mine(run_id))
    got = collector.snapshot(mine(run_id))
    dlq = [m for m in got if m.topic == DLQ_TOPIC]
    reasons = sorted(m.headers["dlq.reason"].decode() for m in dlq)
    assert reasons == sorted(r for _, r in corpus.values())
    for m in dlq:
        assert m.headers["mqtt.topic"].startswith(f"smartcity/v1/{dev}/".encode())
        assert m.headers["dlq.detail"]
        if m.headers["dlq.reason"] == b"too_large":
            assert int(m.headers["dlq.original_bytes"]) > 256 * 1024
    by_reason = {m.headers["dlq.reason"]: m for m in dlq}
    assert by_reason[b"not_json"].value in {p for p, _ in corpus.values()}  # original bytes kept
    assert [m.json()["event_id"] for m in got if m.topic == "gps_data"] == [good["event_id"]]
    assert b.running()
    metrics = b.metrics()
    assert metrics['bridge_dlq_total{reason="not_json"}'] == 3
    assert metrics['bridge_dlq_total{reason="contract_invalid"}'] == 4
    c.loop_stop()


def test_simulated_agent_to_kafka_every_seq_arrives_in_order(broker, kafka, collector, bridges,
                                                             tmp_path, run_id):
    """The real edge agent (--simulate) as the publisher: its seq is per device across streams with
    no holes, so every seq from 0 to the last must be in Kafka, in order within each topic."""
    import subprocess
    import sys
    pytest.importorskip("edge.agent")
    start_bridge(bridges, broker, kafka, tmp_path, run_id)
    dev = f"sim-{run_id}"
    r = subprocess.run([sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--device-id", dev,
                        "--data-dir", str(tmp_path / "agent"), "--mqtt-port", str(broker.port),
                        "--http-port", "0", "--speedup", "30", "--duration-s", "5"],
                       capture_output=True, text=True, timeout=90,
                       cwd=str(Path(__file__).resolve().parents[1]))
    assert r.returncode == 0, r.stderr[-2000:]
    is_dev = (lambda m: m.key == dev.encode())
    collector.wait_for(lambda ms: len(ms) > 0, 30, pred=is_dev)
    time.sleep(2.0)  # the tail of the run
    got = [m for m in collector.snapshot(is_dev) if m.topic.endswith("_data")]
    seqs = sorted({m.json()["seq"] for m in got})
    # the queue numbers from its first row (0 or 1): nothing may be missing from the start on
    assert len(seqs) > 20 and seqs[0] <= 1 and seqs == list(range(seqs[0], seqs[-1] + 1)), \
        "a hole in seq: a lost record"
    assert {m.topic for m in got} >= {"gps_data", "vehicle_data", "weather_data"}
    for topic in {m.topic for m in got}:
        in_topic = [m.json()["seq"] for m in sorted(got, key=lambda m: (m.partition, m.offset))
                    if m.topic == topic]
        assert in_topic == sorted(in_topic), f"{topic}: out of seq order"
    assert not [m for m in collector.snapshot(is_dev) if m.topic == DLQ_TOPIC]


def test_healthz_turns_degraded_when_nothing_arrives_for_the_configured_time(
        broker, kafka, bridges, tmp_path, run_id):
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id, extra_args=["--idle-degraded-s", "1"])
    time.sleep(1.5)
    status, body = b.http_get("/healthz")
    doc = json.loads(body)
    assert status == 503 and doc["status"] == "degraded"
    assert any("no message" in p for p in doc["problems"])
    m = b.metrics()
    assert m["bridge_mqtt_connected"] == 1 and m["bridge_mqtt_subscribed"] == 1 and m["bridge_kafka_up"] == 1


def test_a_failing_io_loop_stops_the_bridge_and_a_restart_loses_nothing(broker, kafka, collector, run_id):
    """A bug in the I/O thread must not leave a process that looks alive and forwards nothing:
    the bridge reports it, exits with code 4, and what it had not acknowledged comes back."""
    from smartcity.bridge.config import BridgeSettings
    from smartcity.bridge.service import Bridge
    from smartcity.runtime.settings import load

    settings = load(BridgeSettings, None, overrides={
        "mqtt.port": broker.port, "kafka.bootstrap_servers": kafka.bootstrap,
        "bridge_id": f"loop-{run_id}", "http_port": -1, "mqtt.group": f"g-{run_id}"})

    class BuggyBridge(Bridge):
        def _on_delivery(self, *a, **kw):  # stands in for any bug on the I/O thread
            raise RuntimeError("injected bug")

    buggy = BuggyBridge(settings).start()
    deadline = time.monotonic() + 20
    while not buggy._subscribed and time.monotonic() < deadline:
        time.sleep(0.05)
    pub = FleetPublisher(broker.port, [f"car-{run_id}"])
    pub.publish(3)
    assert pub.wait_acked(20)
    assert buggy._stop.wait(20), "the bridge kept running without its I/O loop"
    ok, health = buggy.health()
    assert not ok and any("io loop failed: RuntimeError: injected bug" in p for p in health["problems"])
    assert buggy.shutdown() == 4

    fixed = Bridge(settings).start()  # same client id: the persistent session and its backlog
    try:
        assert collector.wait_for(lambda ms: event_ids(ms) >= {s.event_id for s in pub.sent}, 30,
                                  pred=mine(run_id)), "messages the failed bridge held were lost"
    finally:
        fixed.request_stop()
        assert fixed.shutdown() == 0
        pub.close()


# issue 9: one message must not stop the bridge; a full producer queue must drain ----------------
def _v5_client(broker):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def _publish(c, dev, payload, user_properties=None, stream="gps"):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = None
    if user_properties:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = user_properties
    info = c.publish(f"smartcity/v1/{dev}/{stream}", payload, qos=1, properties=props)
    info.wait_for_publish(10)
    assert info.is_published()


def test_oversized_user_properties_go_to_the_dlq_and_the_bridge_keeps_forwarding(
        broker, kafka, collector, bridges, tmp_path, run_id):
    from tests.support.harness import record
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id)
    dev, boot = f"car-{run_id}", "0000abcd"
    rec = [json.dumps(record("gps", dev, boot, i)).encode() for i in range(4)]
    c = _v5_client(broker)
    # (an MQTT string holds at most 64 KiB: two big properties make 100 kB)
    _publish(c, dev, rec[0], [("trace", "abc"), ("big1", "x" * 50_000), ("big2", "y" * 50_000)])
    _publish(c, dev, rec[1], [(f"p{i}", "v") for i in range(17)])          # one property too many
    _publish(c, dev, rec[2], [(f"p{i}", "v") for i in range(16)])          # at the limit: forwarded
    _publish(c, dev, rec[3])
    assert collector.wait_for(lambda ms: len(ms) == 4, 30, pred=mine(run_id)), \
        collector.snapshot(mine(run_id))
    got = collector.snapshot(mine(run_id))
    dlq = sorted((m for m in got if m.topic == DLQ_TOPIC), key=lambda m: m.json()["seq"])
    assert [m.value for m in dlq] == rec[:2]                  # the payload kept whole
    for m, want in zip(dlq, (b"100016 bytes of user properties > limit 4096",
                             b"17 user properties > limit 16")):
        assert m.headers["dlq.reason"] == b"headers_too_large"
        assert m.headers["dlq.detail"].startswith(want), m.headers["dlq.detail"]
        assert not [h for h in m.headers if h.startswith("mqtt.up.")], "the bad headers are dropped"
    fwd = sorted((m for m in got if m.topic == "gps_data"), key=lambda m: m.json()["seq"])
    assert [m.json()["seq"] for m in fwd] == [2, 3]
    assert len([h for h in fwd[0].headers if h.startswith("mqtt.up.")]) == 16
    assert b.running()
    assert b.metrics()['bridge_dlq_total{reason="headers_too_large"}'] == 2
    c.loop_stop()


def test_a_record_the_producer_refuses_is_dead_lettered_and_the_bridge_stays_up(
        broker, kafka, collector, bridges, tmp_path, run_id):
    """Issue 9's crash loop: produce() raised KafkaException(MSG_SIZE_TOO_LARGE) out of on_message,
    the I/O loop exited (code 4), and the unacknowledged message killed the restarted bridge again.
    Here the user-property bound is lifted and the producer's own size limit lowered, so produce()
    refuses the records themselves."""
    from tests.support.harness import record
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id, env={
        "SMARTCITY_BRIDGE_MAX_USER_PROPERTY_BYTES": "10000000",
        "SMARTCITY_BRIDGE_KAFKA__EXTRA": "message.max.bytes=100000"})
    dev, boot = f"car-{run_id}", "0000abcd"
    rec = [json.dumps(record("gps", dev, boot, i)).encode() for i in range(2)]
    c = _v5_client(broker)
    # 1. the headers are the problem: dead-lettered without them
    _publish(c, dev, rec[0], [("trace", "abc")] + [(f"big{i}", "x" * 50_000) for i in range(4)])
    # 2. the payload is (under max_payload_bytes, over the producer's limit): its DLQ copy is
    #    refused too, so a minimal copy goes (payload cut to 16 KiB, the bridge's own headers)
    not_json = b"\x00" * 150_000
    _publish(c, dev, not_json)
    _publish(c, dev, rec[1])
    assert collector.wait_for(lambda ms: len(ms) == 3, 30, pred=mine(run_id)), b.log_tail()
    got = collector.snapshot(mine(run_id))
    by_reason = {m.headers.get("dlq.reason"): m for m in got if m.topic == DLQ_TOPIC}
    rejected = by_reason[b"kafka_rejected"]
    assert rejected.value == rec[0]
    assert b"MSG_SIZE_TOO_LARGE" in rejected.headers["dlq.detail"] or \
        b"too large" in rejected.headers["dlq.detail"].lower(), rejected.headers["dlq.detail"]
    assert b"5 user properties dropped" in rejected.headers["dlq.detail"]
    assert not [h for h in rejected.headers if h.startswith("mqtt.up.")]
    minimal = by_reason[b"not_json"]
    assert minimal.headers["dlq.minimal"] == b"1" and minimal.headers["dlq.truncated"] == b"1"
    assert minimal.value == not_json[:16 * 1024]
    assert minimal.headers["dlq.original_bytes"] == b"150000"
    assert minimal.headers["mqtt.topic"] == f"smartcity/v1/{dev}/gps".encode()
    assert [m.json()["seq"] for m in got if m.topic == "gps_data"] == [1]
    assert b.running(), b.log_tail()
    m = b.metrics()
    assert m['bridge_dlq_total{reason="kafka_rejected"}'] == 1 and m['bridge_dlq_total{reason="not_json"}'] == 1
    assert m['bridge_kafka_errors_total{code="MSG_SIZE_TOO_LARGE"}'] == 2   # the record, the DLQ copy
    # everything was acknowledged: nothing comes back to a restarted bridge
    deadline = time.monotonic() + 10
    while b.metrics()["bridge_acked_total"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b.metrics()["bridge_acked_total"] == 3 and b.metrics()["bridge_inflight"] == 0
    c.loop_stop()


def test_a_full_producer_queue_drains(broker, kafka, collector, bridges, tmp_path, run_id):
    """The producer's local queue holds 5 messages: produce() raises BufferError nearly every time.
    The bridge used to sleep-and-retry without polling on the only thread that polls (a stall for
    good); now the message waits in order and the I/O loop polls until there is room."""
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id,
                     env={"SMARTCITY_BRIDGE_KAFKA__EXTRA": "queue.buffering.max.messages=5",
                          "SMARTCITY_BRIDGE_KAFKA__LINGER_MS": "5"})
    pub = FleetPublisher(broker.port, devices(run_id, 3))
    t0 = time.monotonic()
    pub.publish(200)
    assert pub.wait_acked(30)
    got = wait_all(collector, pub, run_id, timeout_s=60, bridges=bridges)
    print(f"600 records through a 5-message producer queue in {time.monotonic() - t0:.1f} s")
    assert len(got) == len(pub.sent), "no fault, so no duplicate"
    per_device = defaultdict(list)
    for m in sorted(got, key=lambda m: (m.topic, m.partition, m.offset)):
        per_device[(m.topic, m.key)].append(m.json()["seq"])
    for k, seqs in per_device.items():
        assert seqs == sorted(seqs), f"{k}: waiting for room must not reorder"
    m = b.metrics()
    assert m["bridge_produce_waiting"] == 0 and m["bridge_received_total"] == len(pub.sent)
    assert m.get('bridge_reconnects_total{side="mqtt"}', 0) == 0
    assert b.terminate() == 0, b.log_tail()
    pub.close()


def test_the_broker_refuses_a_packet_no_kafka_record_could_hold(broker):
    """max_packet_size (deploy/local/mosquitto.py): advertised in CONNACK; a bigger PUBLISH gets its
    sender disconnected instead of reaching the bridge."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from deploy.local.mosquitto import MAX_PACKET_BYTES
    seen = {}
    connected, done = threading.Event(), threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: (seen.setdefault("max", getattr(p, "MaximumPacketSize", None)),
                                            connected.set())
    c.on_disconnect = lambda cl, u, f, rc, p: (seen.setdefault("reason", str(rc)), done.set())
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    # The CONNACK first: a PUBLISH queued before it went out right behind the CONNECT, and the
    # broker's reset after the oversize packet could drop the unread CONNACK (CI, 2026-12-04).
    assert connected.wait(10)
    c.publish("smartcity/v1/x/gps", b"x" * (MAX_PACKET_BYTES + 1), qos=1)
    assert done.wait(10)
    c.loop_stop()
    assert seen["max"] == MAX_PACKET_BYTES
    # The broker's verdict is in its log. The client sees its DISCONNECT "Packet too large" unless
    # the RST that Mosquitto's close (with the rest of the payload unread) sends overtakes it on the
    # client's side; then paho reports a lost connection. Seen once in three CI runs.
    assert seen["reason"] in ("Packet too large", "Unspecified error"), seen
    assert "oversize packet" in broker.log_tail()


# issue 9: a stable bridge identity ---------------------------------------------------------------
def test_a_bridge_restarted_with_default_settings_resumes_its_session_and_strands_nothing(
        broker, kafka, collector, bridges, tmp_path, run_id):
    """No --bridge-id, as the docs used to show: the id used to be host-pid, so a restarted bridge
    was a new session and the old one kept its share (2,328 of 6,005 messages in the fault run)."""
    from smartcity.bridge.config import stable_bridge_id
    try:
        host = stable_bridge_id()
    except ValueError as e:
        pytest.skip(f"no stable default id on this machine: {e}")
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id, bridge_id=None)
    assert b.metrics()["bridge_mqtt_session_present"] == 0           # first start: a new session
    pub = FleetPublisher(broker.port, devices(run_id, 3))
    pub.publish(100)
    wait_all(collector, pub, run_id, bridges=bridges)
    b.kill()                                   # kill -9; a supervisor restarts it with the same settings
    pub.publish(300)                           # queued at the broker for the bridge's session
    assert pub.wait_acked(30)
    b2 = start_bridge(bridges, broker, kafka, tmp_path, run_id, bridge_id=None)
    got = wait_all(collector, pub, run_id, bridges=bridges)
    assert len(event_ids(got)) == len(pub.sent)
    m = b2.metrics()
    assert m["bridge_mqtt_session_present"] == 1, "the restarted bridge must resume its session"
    assert m["bridge_received_total"] >= 900
    assert {x.headers["bridge.id"] for x in got} == {host.encode()}
    assert m[f'bridge_group_member_offline{{member="{host}"}}'] == 0
    assert b2.terminate() == 0, b2.log_tail()
    pub.close()


def test_a_member_gone_for_good_shows_offline_and_retire_drains_and_ends_its_session(
        broker, kafka, collector, bridges, tmp_path, run_id):
    """Mosquitto 2.0.11 keeps routing a share of the group's messages to an offline member's
    persistent session. The other members show it in bridge_group_member_offline (its retained
    presence, set by its will when it died); `--retire` with its id takes what it holds into Kafka
    and ends the session, so nothing more is routed there."""
    b1 = start_bridge(bridges, broker, kafka, tmp_path, run_id, "b1")
    b2 = start_bridge(bridges, broker, kafka, tmp_path, run_id, "b2")
    m1, m2 = f"b1-{run_id}", f"b2-{run_id}"
    offline = lambda b, member: b.metrics().get(f'bridge_group_member_offline{{member="{member}"}}')  # noqa: E731
    deadline = time.monotonic() + 5
    while offline(b1, m2) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert offline(b1, m1) == 0 and offline(b1, m2) == 0
    pub = FleetPublisher(broker.port, devices(run_id, 4))
    pub.publish(50)
    wait_all(collector, pub, run_id, bridges=bridges)
    b2.kill()                                   # and never restarted
    deadline = time.monotonic() + 5
    while offline(b1, m2) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert offline(b1, m2) == 1, "the will marks the dead member offline"
    pub.publish(200)
    assert pub.wait_acked(30)
    want = {s.event_id for s in pub.sent}
    collector.wait_for(lambda ms: False, 3, pred=mine(run_id))           # b1 forwards its share
    stranded = want - event_ids(collector.snapshot(mine(run_id)))
    print(f"held in the dead member's session: {len(stranded)} of {len(want)}")
    assert stranded, "Mosquitto routed nothing to the offline member (its behaviour changed?)"

    r = BridgeProcess(broker.port, kafka.bootstrap, tmp_path, bridge_id=m2, group=f"g-{run_id}",
                      extra_args=["--retire"], env={"SMARTCITY_BRIDGE_RETIRE_IDLE_S": "1"})
    bridges.append(r)
    t0 = time.monotonic()
    r.start(wait=False)
    assert r.proc.wait(60) == 0, r.log_tail()
    print(f"retire took {time.monotonic() - t0:.1f} s")
    wait_all(collector, pub, run_id, bridges=bridges)           # the stranded share is in Kafka now
    deadline = time.monotonic() + 5
    while offline(b1, m2) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert offline(b1, m2) is None, "a retired member's presence is cleared"
    n1 = b1.metrics()["bridge_received_total"]
    pub.publish(100)                           # the group is b1 alone now: nothing goes to b2's session
    assert pub.wait_acked(30)
    wait_all(collector, pub, run_id, timeout_s=20, bridges=bridges)
    assert b1.metrics()["bridge_received_total"] - n1 == 400
    pub.close()


def test_the_local_stack_acl_lets_the_bridge_keep_its_presence(kafka, collector, bridges, tmp_path, run_id):
    """Mosquitto 2.0.11 disconnects a client that publishes where its ACL denies it: a bridge whose
    presence (or acknowledgement) topic the ACL does not grant would reconnect for ever."""
    from tests.support.harness import record
    from deploy.local.stack import ACL, BRIDGE_USER
    dev = f"car-{run_id}"
    srv = MosquittoServer(tmp_path / "acl-mosquitto", passwords={BRIDGE_USER: "bpw", dev: "dpw"},
                          acl=ACL).start()
    try:
        b = start_bridge(bridges, srv, kafka, tmp_path, run_id, env={
            "SMARTCITY_BRIDGE_MQTT__USERNAME": BRIDGE_USER, "SMARTCITY_BRIDGE_MQTT__PASSWORD": "bpw"})
        pub = FleetPublisher(srv.port, [dev], username=dev, password="dpw")
        pub.publish(20)
        assert pub.wait_acked(10)
        wait_all(collector, pub, run_id, bridges=bridges)
        time.sleep(1.0)
        m = b.metrics()
        assert m.get('bridge_reconnects_total{side="mqtt"}', 0) == 0, b.log_tail()
        assert m[f'bridge_group_member_offline{{member="b1-{run_id}"}}'] == 0   # its own presence, read back
        assert m.get("bridge_device_ack_messages_total", 1) >= 1
        pub.close()
    finally:
        srv.kill()


def test_waiting_for_producer_room_through_a_kafka_outage_keeps_the_mqtt_session(
        broker, kafka, collector, bridges, tmp_path, run_id):
    """A 5-message producer queue and Kafka down: produce() finds no room for most of the outage.
    The I/O thread must keep serving MQTT meanwhile (keepalive 2 s: the broker drops a client
    silent for 3 s), then drain everything once Kafka is back."""
    b = start_bridge(bridges, broker, kafka, tmp_path, run_id, extra_args=["--max-inflight", "200"],
                     env={"SMARTCITY_BRIDGE_KAFKA__EXTRA": "queue.buffering.max.messages=5",
                          "SMARTCITY_BRIDGE_MQTT__KEEPALIVE_S": "2"})
    pub = FleetPublisher(broker.port, devices(run_id, 2))
    pub.publish(20)
    wait_all(collector, pub, run_id, bridges=bridges)
    kafka.stop()
    try:
        pub.publish(150)
        assert pub.wait_acked(30)                 # the broker has them; the bridge holds <= 200
        waiting = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            waiting = max(waiting, b.metrics()["bridge_produce_waiting"])
            time.sleep(0.5)
        assert waiting > 0, "the producer queue never filled: the test tests nothing"
    finally:
        kafka.start()
    got = wait_all(collector, pub, run_id, timeout_s=90, bridges=bridges)
    assert len(event_ids(got)) == len(pub.sent)
    m = b.metrics()
    assert m.get('bridge_reconnects_total{side="mqtt"}', 0) == 0, "MQTT went silent while waiting for room"
    assert m["bridge_produce_waiting"] == 0
    print(f"most waiting for producer room: {waiting:.0f}")
    pub.close()
