"""The bridge's MQTT client (paho with a buffered, direct PUBLISH receive path) must deliver
exactly what paho would: every message, in order, with its topic, payload, QoS, flags and
MQTT v5 properties, whatever the packet sizes and however they fall across socket reads."""
from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smartcity.bridge.mqtt_client import BridgeMqttClient, _varint
from deploy.local.mosquitto import MosquittoServer, TlsFiles, make_test_pki


@pytest.mark.parametrize("encoded,value", [(b"\x00", 0), (b"\x7f", 127), (b"\x80\x01", 128),
                                           (b"\xff\x7f", 16383), (b"\x80\x80\x01", 16384),
                                           (b"\xff\xff\xff\x7f", 268_435_455)])
def test_variable_byte_integers_decode_as_the_mqtt_spec_lists_them(encoded, value):
    assert _varint(b"xx" + encoded + b"tail", 2) == (value, 2 + len(encoded))


def test_a_variable_byte_integer_longer_than_four_bytes_is_malformed():
    with pytest.raises(ValueError):
        _varint(b"\x80\x80\x80\x80\x01", 0)


def _client(cls, client_id: str, port: int, ca: str | None = None) -> mqtt.Client:
    c = cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    if ca:
        c.tls_set(ca_certs=ca)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port)
    return c, connected


@pytest.fixture(params=["plain", "tls"])
def broker(request, tmp_path):
    """Over TLS a read returns at most one TLS record (16 KiB) and the SSL layer buffers the rest:
    the other way packets fall across reads."""
    ca = None
    tls = None
    if request.param == "tls":
        pki = make_test_pki(tmp_path / "pki")
        tls = TlsFiles(pki["ca"], pki["server_cert"], pki["server_key"])
        ca = str(pki["ca"])
    srv = MosquittoServer(tmp_path / "mosquitto", tls=tls).start()
    srv.ca = ca
    yield srv
    srv.stop()


def test_every_message_arrives_intact_and_in_order_across_reads_of_any_size(broker):
    # Sizes from empty to several times the client's 64 KiB read, so packets straddle reads.
    sizes = [0, 1, 10, 300, 5_000, 65_535, 65_536, 65_537, 200_000] + [300] * 2000
    sent = []
    for i, n in enumerate(sizes):
        payload = (f"{i}:".encode() * (n // 4 + 1))[:n]
        props = None
        if i % 7 == 3:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("i", str(i)), ("fw", "1.4.2")]
            props.ContentType = "application/json"
        sent.append((f"smartcity/v1/dev-{i % 5}/gps", payload, i % 2, props))

    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()

    def on_message(client, userdata, msg):
        got.append(msg)
        if len(got) == len(sent):
            done.set()

    sub, sub_up = _client(BridgeMqttClient, "sub", broker.port, broker.ca)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.loop_start()
    assert sub_up.wait(10)
    sub.subscribe("smartcity/v1/+/+", qos=1)
    assert subscribed.wait(10)

    pub, pub_up = _client(mqtt.Client, "pub", broker.port, broker.ca)
    pub.loop_start()
    assert pub_up.wait(10)
    for topic, payload, qos, props in sent:
        pub.publish(topic, payload, qos=qos, properties=props)
    try:
        assert done.wait(30), f"received {len(got)} of {len(sent)}"
    finally:
        pub.disconnect(); pub.loop_stop()
        sub.disconnect(); sub.loop_stop()

    # The broker keeps the order within a QoS level (QoS 0 may overtake queued QoS 1).
    pairs = [pair for q in (0, 1) for pair in zip([s for s in sent if s[2] == q], [m for m in got if m.qos == q])]
    assert len(pairs) == len(sent)
    for (topic, payload, qos, props), m in pairs:
        assert (m.topic, m.payload, m.qos, m.retain) == (topic, payload, qos, False)
        if props is None:
            assert m.properties is None
        else:
            assert m.properties.UserProperty == props.UserProperty
            assert m.properties.ContentType == "application/json"


def test_retained_and_redelivered_flags_survive_the_direct_decoder(mosquitto):
    pub, pub_up = _client(mqtt.Client, "pub", mosquitto.port)
    pub.loop_start()
    assert pub_up.wait(10)
    pub.publish("smartcity/v1/dev-1/status", b"online", qos=1, retain=True).wait_for_publish(5)

    got: list[mqtt.MQTTMessage] = []
    sub, sub_up = _client(BridgeMqttClient, "sub-r", mosquitto.port)
    sub.on_message = lambda c, u, m: got.append(m)
    sub.on_connect = lambda c, *a: (sub_up.set(), c.subscribe("smartcity/v1/+/status", qos=1))
    sub.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pub.disconnect(); pub.loop_stop()
        sub.disconnect(); sub.loop_stop()
    assert got and got[0].retain and got[0].payload == b"online" and got[0].qos == 1


def test_batched_acknowledgements_release_exactly_the_acknowledged_messages(mosquitto):
    """With manual acks, what ack_many acknowledged is gone from the session; the rest comes back
    (dup) when the client reconnects to its persistent session."""
    def connect(got: list, subscribed: threading.Event) -> BridgeMqttClient:
        c = BridgeMqttClient(CallbackAPIVersion.VERSION2, client_id="acker", protocol=mqtt.MQTTv5,
                             manual_ack=True)
        c.on_message = lambda cl, u, m: got.append(m)
        c.on_connect = lambda cl, *a: cl.subscribe("smartcity/v1/+/+", qos=1)
        c.on_subscribe = lambda *a: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        c.connect("127.0.0.1", mosquitto.port, clean_start=False, properties=props)
        c.loop_start()
        assert subscribed.wait(10)
        return c

    def wait_count(got: list, n: int) -> None:
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # and nothing more arrives
        assert len(got) == n, [m.payload for m in got]

    first: list = []
    sub = connect(first, threading.Event())
    pub, pub_up = _client(mqtt.Client, "pub", mosquitto.port)
    pub.loop_start()
    assert pub_up.wait(10)
    for i in range(10):
        pub.publish("smartcity/v1/dev-1/gps", str(i).encode(), qos=1).wait_for_publish(5)
    wait_count(first, 10)
    sub.ack_many([m.mid for m in first[:6]])
    time.sleep(0.3)
    sub.disconnect(); sub.loop_stop()

    again: list = []
    sub = connect(again, threading.Event())
    try:
        wait_count(again, 4)
    finally:
        sub.disconnect(); sub.loop_stop()
        pub.disconnect(); pub.loop_stop()
    assert [m.payload for m in again] == [b"6", b"7", b"8", b"9"]
    assert all(m.dup for m in again)
