"""Shared fixtures: a real Mosquitto on a free loopback port, and an MQTT subscriber that keeps
a persistent session (like the bridge), records what arrives and, like the bridge once Kafka has
a reading, acknowledges each reading end to end on its device's ack topic (contracts.acks)."""
from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smartcity.contracts.acks import ack_topic, encode_acks, find_event_id
from deploy.local.mosquitto import MosquittoServer


@pytest.fixture
def mosquitto(tmp_path):
    """A started broker with persistence; stopped (SIGTERM) at the end of the test."""
    srv = MosquittoServer(tmp_path / "mosquitto").start()
    yield srv
    srv.stop()


class Subscriber:
    """paho subscriber with clean_start=False and a session expiry, so the broker queues for it
    while it (or the broker) is down. Reconnects by itself (paho loop thread)."""

    def __init__(self, port: int, topic: str = "smartcity/v1/#", host: str = "127.0.0.1",
                 username: str | None = None, password: str | None = None,
                 client_id: str | None = None, tls: dict | None = None, acks: bool = True):
        self.messages: list[mqtt.MQTTMessage] = []
        self.acks = acks
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)  # ca_certs=, certfile=, keyfile=
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(host, port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber never got SUBACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not flags.session_present:  # the broker kept our subscription otherwise
            client.subscribe(self.topic, qos=1)
        else:
            self._subscribed.set()

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append(msg)
        found = find_event_id(msg.payload) if self.acks else None
        if found is not None:
            device, boot, seq = found
            client.publish(ack_topic(device), encode_acks({boot: [seq]}), qos=1)

    def payloads(self, topic_filter=None) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages
                    if topic_filter is None or topic_filter(m.topic)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.messages)
            if predicate(snapshot):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory():
    subs: list[Subscriber] = []

    def make(port: int, **kw) -> Subscriber:
        s = Subscriber(port, **kw)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()
