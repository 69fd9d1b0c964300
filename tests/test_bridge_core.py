"""The bridge's pure rules: routing, what goes to the dead-letter topic and why, ack ordering,
lossless producer settings. No sockets."""
from __future__ import annotations

import json

import pytest

from bridge.config import BridgeSettings, KafkaSettings, MqttSettings, kafka_config, mqtt_password
from bridge.core import (CONTRACT, NO_CONTRACT, NOT_JSON, SPOOFED, TOO_LARGE, UNMAPPED, AckWindow,
                         Route, RouteError, Router, inspect)
from bridge.harness import record
from edge.settings import load


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
    assert mqtt_password(MqttSettings(password_file=tmp_path / "mqtt")) == "s3cret"
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
    from bridge.core import covering_filters
    assert covering_filters(["smartcity/v1/+/status", "smartcity/v1/+/+", "fleet/+/x"]) == \
        ["fleet/+/x", "smartcity/v1/+/+"]
