"""The bridge's pure rules: routing, what goes to the dead-letter topic and why, ack ordering,
lossless producer settings. No sockets."""
from __future__ import annotations

import json

import pytest

from smartcity.bridge.config import BridgeSettings, KafkaSettings, MqttSettings, kafka_config
from smartcity.bridge.core import (CONTRACT, NO_CONTRACT, NOT_JSON, SPOOFED, TOO_LARGE, UNMAPPED, AckWindow,
                         Route, RouteError, Router, inspect)
from tests.support.harness import record
from smartcity.runtime.settings import load


def test_default_route_maps_stream_to_topic_and_keys_by_device():
    t = Router().route("smartcity/v1/bus-7/gps")
    assert (t.topic, t.key, t.device_id) == ("gps_data", b"bus-7", "bus-7")


def test_topic_outside_every_route_is_unmapped():
    r = Router()
    assert r.route("smartcity/v2/bus-7/gps") is None
    assert r.route("smartcity/v1/bus-7/gps/extra") is None


def test_configured_route_with_literal_segments_and_custom_key():
    r = Router(["fleet/{region}/{device_id}/telemetry -> telemetry_{region} -> {region}:{device_id}"])
    t = r.route("fleet/eu/car1/telemetry")
    assert (t.topic, t.key) == ("telemetry_eu", b"eu:car1")
    assert r.routes[0].mqtt_filter == "fleet/+/+/telemetry"


def test_first_matching_route_wins():
    r = Router(["smartcity/v1/vip/{stream} -> vip_{stream}", "smartcity/v1/{device_id}/{stream} -> {stream}_data"])
    assert r.route("smartcity/v1/vip/gps").topic == "vip_gps"
    assert r.route("smartcity/v1/car/gps").topic == "gps_data"


@pytest.mark.parametrize("spec", [
    "smartcity/v1/{device_id}/{stream}",                      # no topic
    "smartcity/v1/{device_id}/{stream} -> {nope}_data",       # template uses unknown segment
    "smartcity/v1/{a}/{a} -> x",                              # duplicate segment
    "smartcity/+/{device_id} -> x",                           # wildcard inside a pattern
    "smartcity/v1/dev{device_id} -> x",                       # partial segment
])
def test_bad_route_is_rejected_with_the_route_named(spec):
    with pytest.raises(RouteError, match="route"):
        Route.parse(spec)


def _target(topic="smartcity/v1/car-1/gps"):
    return Router().route(topic)


def test_valid_record_passes_inspection():
    assert inspect(json.dumps(record("gps", "car-1", "0000abcd", 3)).encode(), _target()) is None


@pytest.mark.parametrize("payload,reason", [
    (b'{"event_id": ', NOT_JSON),                                     # truncated
    (b"\x00\xff\xfe binary", NOT_JSON),                               # not even UTF-8
    (b"hello", NOT_JSON),
    (b"[1, 2, 3]", CONTRACT),                                         # JSON but not an object
    (b"{}", CONTRACT),                                                # everything missing
    (b"x" * (256 * 1024 + 1), TOO_LARGE),
])
def test_bad_payloads_are_rejected_with_their_reason(payload, reason):
    assert inspect(payload, _target()).reason == reason


def test_wrong_type_is_a_contract_violation_naming_the_field():
    rec = record("gps", "car-1", "0000abcd", 1)
    rec["seq"] = "one"
    rej = inspect(json.dumps(rec).encode(), _target())
    assert rej.reason == CONTRACT and "seq=" in rej.detail


def test_payload_claiming_another_device_is_spoofing_even_if_valid():
    rec = record("gps", "car-2", "0000abcd", 1)
    rej = inspect(json.dumps(rec).encode(), _target("smartcity/v1/car-1/gps"))
    assert rej.reason == SPOOFED and "car-2" in rej.detail


def test_unknown_stream_has_no_contract_and_no_route_is_unmapped():
    assert inspect(b"{}", _target("smartcity/v1/car-1/radio")).reason == NO_CONTRACT
    assert inspect(b"{}", None).reason == UNMAPPED


def test_size_limit_is_configurable():
    assert inspect(b"{}" + b" " * 100, _target(), max_bytes=50).reason == TOO_LARGE


def test_acks_leave_in_arrival_order_even_when_kafka_confirms_out_of_order():
    w = AckWindow()
    e1, e2, e3 = w.add(11, 1), w.add(12, 1), w.add(13, 1)
    AckWindow.complete(e3)
    AckWindow.complete(e2)
    assert w.pop_ready() == []          # 11 is not confirmed: nothing may be acked
    AckWindow.complete(e1)
    assert w.pop_ready() == [(11, 1), (12, 1), (13, 1)]
    assert len(w) == 0


def test_reset_forgets_packet_ids_of_an_old_connection():
    w = AckWindow()
    old = w.add(5, 1)
    assert w.reset() == 1
    AckWindow.complete(old)             # the confirmation of the old copy arrives later
    new = w.add(5, 1)                   # the broker reuses id 5 for the resent copy
    assert w.pop_ready() == []
    AckWindow.complete(new)
    assert w.pop_ready() == [(5, 1)]


def test_lossless_producer_settings_cannot_be_overridden_by_extra():
    conf = kafka_config(KafkaSettings(extra=["acks=1", "enable.idempotence=false", "batch.size=65536"]))
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["message.timeout.ms"] == 0
    assert conf["batch.size"] == "65536"


def test_secrets_come_from_files(tmp_path):
    (tmp_path / "mqtt").write_text("s3cret\n")
    (tmp_path / "kafka").write_text("k-pass\n")
    assert MqttSettings(password_file=tmp_path / "mqtt").password_value() == "s3cret"
    conf = kafka_config(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                      sasl_username="bridge", sasl_password_file=tmp_path / "kafka",
                                      ssl_ca_file=tmp_path / "ca.pem"))
    assert conf["sasl.password"] == "k-pass" and conf["ssl.ca.location"].endswith("ca.pem")


def test_settings_layer_toml_then_env_then_flags(tmp_path):
    toml = tmp_path / "bridge.toml"
    toml.write_text('bridge_id = "from-toml"\n[mqtt]\nport = 1111\ngroup = "g-toml"\n'
                    '[kafka]\nbootstrap_servers = "k:1"\n')
    env = {"SMARTCITY_BRIDGE_MQTT__PORT": "2222", "SMARTCITY_BRIDGE_MQTT__PASSWORD": "pw"}
    s = load(BridgeSettings, toml, "SMARTCITY_BRIDGE_", {"mqtt.group": "g-flag"}, environ=env)
    assert (s.bridge_id, s.mqtt.port, s.mqtt.group, s.kafka.bootstrap_servers) == \
        ("from-toml", 2222, "g-flag", "k:1")
    assert s.mqtt.password == "pw" and s.client_id == "smartcity-bridge-from-toml"


def test_a_bad_route_in_settings_fails_at_load_time(tmp_path):
    with pytest.raises(ValueError, match="route"):
        load(BridgeSettings, None, "SMARTCITY_BRIDGE_", {"routes": ["no-arrow"]}, environ={})


def test_agent_presence_goes_unvalidated_to_the_status_topic():
    t = Router().route("smartcity/v1/car-1/status")
    assert (t.topic, t.key, t.raw) == ("device_status", b"car-1", True)
    assert inspect(b"offline", t) is None


def test_overlapping_route_filters_subscribe_once():
    from smartcity.bridge.core import covering_filters
    assert covering_filters(["smartcity/v1/+/status", "smartcity/v1/+/+", "fleet/+/x"]) == \
        ["fleet/+/x", "smartcity/v1/+/+"]


# issue 9: the producer's refusals and a full local queue, with a stand-in producer --------------
def test_user_properties_are_bounded_by_count_and_bytes():
    from smartcity.bridge.core import user_properties_over
    assert user_properties_over([("a", "b")] * 16, 16, 4096) is None
    assert user_properties_over([("a", "b")] * 17, 16, 4096).startswith("17 user properties > limit 16")
    assert user_properties_over([("k", "é" * 2048)], 16, 4096).startswith("4097 bytes of user properties")
    assert user_properties_over([("k", "v" * 4095)], 16, 4096) is None


def test_the_broker_packet_limit_fits_the_bridge_limit_and_one_kafka_record():
    from smartcity.bridge.core import DEFAULT_MAX_PAYLOAD_BYTES
    from deploy.local.mosquitto import MAX_PACKET_BYTES
    s = BridgeSettings(bridge_id="t")
    # a payload at the bridge's limit with a long topic and the bounded user properties gets through
    assert DEFAULT_MAX_PAYLOAD_BYTES + 1024 + s.max_user_property_bytes + 4 * 16 < MAX_PACKET_BYTES
    # whatever the broker accepts is one record for the producer (message.max.bytes 1,000,000),
    # whole in the DLQ too
    assert MAX_PACKET_BYTES + 4096 < min(1_000_000, s.dlq_max_bytes)


class _FakeProducer:
    def __init__(self):
        self.produced: list[tuple] = []
        self.full = False
        self.too_large_over = None      # produce() raises MSG_SIZE_TOO_LARGE above this many bytes
        self.polls = 0

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        from confluent_kafka import KafkaError, KafkaException
        if self.full:
            raise BufferError("Local: Queue full")
        size = len(value) + sum(len(k) + len(v) for k, v in headers)
        if self.too_large_over is not None and size > self.too_large_over:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large"))
        self.produced.append((topic, value, dict(headers), on_delivery))

    def poll(self, timeout=0):
        self.polls += 1
        return 0


def _bridge():
    from smartcity.bridge.service import Bridge
    b = Bridge(BridgeSettings(bridge_id="unit", http_port=-1))
    b.producer = _FakeProducer()
    return b


def test_a_refused_record_goes_to_the_dlq_without_its_user_properties_and_never_raises():
    from smartcity.bridge.core import Rejection
    b = _bridge()
    b.producer.too_large_over = 50_000
    entry = b.window.add(1, 1)
    headers = [("mqtt.topic", "smartcity/v1/c/gps"), ("bridge.id", b"unit"), ("mqtt.up.big", "x" * 60_000)]
    b._produce("gps_data", b"{}", b"c", headers, entry)              # does not raise
    topic, value, h, _ = b.producer.produced[-1]
    assert topic == "smartcity_dlq" and value == b"{}" and h["dlq.reason"] == "kafka_rejected"
    assert "mqtt.up.big" not in h and "1 user properties dropped" in h["dlq.detail"]
    # a DLQ copy refused in turn becomes a minimal one: payload cut, the bridge's own headers
    b.producer.too_large_over = 20_000
    b._produce_dlq(b"\0" * 30_000, b"c", headers[:2], b.window.add(2, 1), Rejection("not_json", "bad"))
    topic, value, h, _ = b.producer.produced[-1]
    assert h["dlq.minimal"] == b"1" and h["dlq.reason"] == "not_json" and len(value) == 16 * 1024
    assert h["dlq.original_bytes"] == "30000" and h["dlq.truncated"] == b"1"
    # a refused minimal copy waits for a later retry: no exception, no sleep, not acknowledged
    b.producer.too_large_over = 10
    e3 = b.window.add(3, 1)
    b._produce_dlq(b"x", b"c", headers[:2], e3, Rejection("not_json", "bad"))
    assert len(b._delayed) == 1 and not e3[2]


def test_a_dead_letter_write_refused_in_its_delivery_report_is_retried_later_not_slept_on():
    import time

    from confluent_kafka import KafkaError

    from smartcity.bridge.core import Rejection
    b = _bridge()
    entry = b.window.add(1, 1)
    b._produce_dlq(b"x", b"c", [("mqtt.topic", "t")], entry, Rejection("not_json", "bad"))
    denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")
    t0 = time.monotonic()
    b.producer.produced[-1][3](denied, None)                 # -> a minimal copy
    assert b.producer.produced[-1][2]["dlq.minimal"] == b"1"
    b.producer.produced[-1][3](denied, None)                 # -> retried later
    assert time.monotonic() - t0 < 0.1, "a delivery callback must not sleep"
    assert len(b.producer.produced) == 2 and len(b._delayed) == 1 and b.producer.polls == 0
    b._delayed[0] = (0.0, b._delayed[0][1])                  # due now
    b._serve_pending()
    assert len(b.producer.produced) == 3 and not b._delayed
    b.producer.produced[-1][3](None, type("M", (), {"latency": lambda self: 0.001})())
    assert entry[2] and b.window.pop_ready() == [(1, 1)]


def test_a_full_local_queue_parks_messages_in_order_and_only_the_io_loop_polls():
    b = _bridge()
    b.producer.full = True
    entries = [b.window.add(i, 1) for i in range(3)]
    for i, e in enumerate(entries):
        b._produce("gps_data", str(i).encode(), b"c", [("mqtt.topic", "t")], e)
    assert len(b._pending) == 3 and b.producer.polls == 0    # produce() neither waits nor polls
    b._serve_pending()
    assert b.producer.polls == 1 and len(b._pending) == 3    # the I/O loop polls for room
    b.producer.full = False
    b._produce("gps_data", b"3", b"c", [("mqtt.topic", "t")], b.window.add(3, 1))  # behind the others
    b._serve_pending()
    assert [p[1] for p in b.producer.produced] == [b"0", b"1", b"2", b"3"] and not b._pending


# issue 9: a stable bridge identity -------------------------------------------------------------
def test_the_default_bridge_id_is_the_host_name_without_a_pid(monkeypatch):
    import os

    from smartcity.bridge.config import stable_bridge_id
    monkeypatch.setattr("socket.gethostname", lambda: "ingest-2")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    s = BridgeSettings()
    assert s.bridge_id == "ingest-2" and str(os.getpid()) not in s.client_id
    assert s.client_id == "smartcity-bridge-ingest-2"
    assert stable_bridge_id("bridge-0", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "bridge-0"  # StatefulSet
    assert stable_bridge_id("vm", {}, in_container=True) == "vm"       # a container named by its operator


@pytest.mark.parametrize("hostname, env, in_container, why", [
    ("3f4e5d6c7b8a", {}, True, "container id"),
    ("bridge-7c9f8d6b5-xk2lp", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False, "StatefulSet"),
    ("localhost", {}, False, "not a name of this machine"),
    ("", {}, False, "not a name of this machine"),
    ("host/with+wildcards", {}, False, "not usable as an id"),
])
def test_no_stable_default_bridge_id_is_refused_with_a_clear_reason(hostname, env, in_container, why):
    from smartcity.bridge.config import stable_bridge_id
    with pytest.raises(ValueError, match=why) as e:
        stable_bridge_id(hostname, env, in_container=in_container)
    assert "--bridge-id" in str(e.value) and "SMARTCITY_BRIDGE_BRIDGE_ID" in str(e.value)


def test_the_service_refuses_to_start_without_a_stable_id(monkeypatch, capsys):
    from smartcity.bridge.cli import main
    monkeypatch.setattr("socket.gethostname", lambda: "bridge-7c9f8d6b5-xk2lp")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert main(["--mqtt-port", "1", "--http-port", "-1"]) == 2
    err = capsys.readouterr().err
    assert "bridge_id: no stable default" in err and "stranded" in err
    with pytest.raises(ValueError, match="letters, digits"):
        BridgeSettings(bridge_id="a/b")
