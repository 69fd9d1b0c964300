"""deploy/docker-compose.yml brought up for real (issue 15), with podman-compose, on images built
here (deploy/compose-local/override.yml: Mosquitto from Debian's package, Kafka from the project's
jars, the bridge image from the wheel), by deploy/compose_local.py, which enforces every healthcheck
(podman 4.3 runs none by itself here): a check that never turns healthy fails this test.

The bridge path of the file: the password init job, Mosquitto (TLS with client certificates for the
devices, passwords for the bridges), Kafka and its topic job, two bridges with their fixed ids.
Everything published is on 127.0.0.1, on free ports. Spark and S3 have no local image yet.
"""
from __future__ import annotations

import json
import shutil
import ssl
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from smartcity.contracts.envelope import mqtt_topic
from deploy.compose_local import Stack, build_images
from deploy.local.kafka import DATA_TOPICS, DLQ_TOPIC
from deploy.local.mosquitto import make_test_pki
from tests.support.harness import Collector, free_port, record

RUN = uuid.uuid4().hex[:6]
SENT: list[str] = []     # every reading the tests' device published, in order
DEVICE = f"car-{RUN}"
BRIDGE_IMAGE = f"localhost/smartcity-bridge-test:compose-{RUN}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run deploy/setup.sh", pytrace=False)
    t0 = time.monotonic()
    build_images(BRIDGE_IMAGE)
    built = time.monotonic() - t0
    secrets = tmp_path_factory.mktemp("compose") / "secrets"
    secrets.mkdir(mode=0o700)
    pki = make_test_pki(secrets / "pki", client_names=(DEVICE,))
    for name, src in (("mqtt_ca.crt", "ca"), ("mqtt_server.crt", "server_cert"), ("mqtt_server.key", "server_key")):
        shutil.copy(pki[src], secrets / name)
    (secrets / "mqtt_bridge_password").write_text(uuid.uuid4().hex + "\n")
    (secrets / "mqtt_health_password").write_text(uuid.uuid4().hex + "\n")
    (secrets / "s3_identities.json").write_text('{"identities": []}\n')
    for f in secrets.iterdir():
        if f.is_file():
            f.chmod(0o644)    # read by the containers' users (1883, 10001); the folder is 0700
    st = Stack(f"smartcity-test-{RUN}", secrets, mqtt_tls_port=free_port(), mqtt_port=free_port(),
               kafka_port=free_port(), bridge_image=BRIDGE_IMAGE)
    st.pki = pki
    try:
        t0 = time.monotonic()
        st.took = st.up()
        print(f"images built in {built:.1f}s, stack up in {time.monotonic() - t0:.1f}s: {st.took}")
        yield st
    finally:
        st.down(volumes=True)
        shutil.rmtree(secrets.parent / f"{st.project}-compose", ignore_errors=True)
        subprocess_run(["podman", "rmi", "-f", BRIDGE_IMAGE])


def subprocess_run(cmd: list[str]) -> str:
    import subprocess
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return p.stdout + p.stderr


@pytest.fixture
def collector(stack):
    c = Collector(f"127.0.0.1:{stack.kafka_port}", [*DATA_TOPICS, DLQ_TOPIC])
    yield c
    c.close()


class Device:
    """The device as on a Pi: MQTT v5 over TLS with its client certificate (CN = device_id)."""

    def __init__(self, stack: Stack):
        self.sent: list[str] = []
        self.boot = uuid.uuid4().hex[:8]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{DEVICE}-{self.boot}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(stack.pki["ca"]), certfile=str(stack.pki[f"{DEVICE}_cert"]),
                            keyfile=str(stack.pki[f"{DEVICE}_key"]), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.connect("127.0.0.1", stack.mqtt_tls_port, keepalive=30)
        self.client.loop_start()

    def publish(self, n: int) -> None:
        infos = []
        for _ in range(n):
            rec = record("gps", DEVICE, self.boot, len(self.sent))
            self.sent.append(rec["event_id"])
            infos.append(self.client.publish(mqtt_topic(DEVICE, "gps"), json.dumps(rec), qos=1))
        for i in infos:
            i.wait_for_publish(20)     # the broker has it (PUBACK)
            assert i.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def in_kafka(collector: Collector, want: list[str], stack: Stack, timeout_s: float = 60) -> None:
    def got(msgs):
        return {json.loads(m.value).get("event_id") for m in msgs if m.topic == "gps_data"}
    ok = collector.wait_for(lambda msgs: set(want) <= got(msgs), timeout_s)
    missing = set(want) - got(collector.snapshot())
    assert ok and not missing, (f"{len(missing)} of {len(want)} readings not in Kafka\n"
                                f"bridge-1:\n{stack.logs('bridge-1')}\nbridge-2:\n{stack.logs('bridge-2')}")


def metrics(stack: Stack, service: str) -> dict[str, float]:
    body = subprocess_run(["podman", "exec", stack.container(service), "python3", "-c",
                           "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())"])
    out = {}
    for line in body.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def test_every_healthcheck_passes_and_a_devices_readings_reach_kafka_through_both_bridges(stack, collector):
    assert set(stack.took) == {"mosquitto", "kafka", "bridge-1", "bridge-2"}
    device = Device(stack)
    try:
        device.publish(40)
        in_kafka(collector, device.sent, stack)
    finally:
        SENT.extend(device.sent)
        device.close()
    # Two replicas with distinct fixed ids share the group's load, and each sees the other online.
    m1, m2 = metrics(stack, "bridge-1"), metrics(stack, "bridge-2")
    assert m1.get("bridge_acked_total", 0) > 0 and m2.get("bridge_acked_total", 0) > 0, (m1, m2)
    assert m1.get('bridge_group_member_offline{member="bridge-2"}') == 0.0, m1
    assert m2.get('bridge_group_member_offline{member="bridge-1"}') == 0.0, m2


def test_down_and_up_again_loses_nothing(stack):
    """Published just before `down`: what the bridges had not forwarded waits in Mosquitto's
    volume for their sessions; what Kafka had stays in its volume. After `up`, a new consumer
    reading from the beginning finds every reading of both tests."""
    device = Device(stack)
    try:
        device.publish(30)
    finally:
        SENT.extend(device.sent)
        device.close()
    stack.down()                  # SIGTERM to each; containers and network gone, volumes kept
    took = stack.up()
    assert set(took) == {"mosquitto", "kafka", "bridge-1", "bridge-2"}
    fresh = Collector(f"127.0.0.1:{stack.kafka_port}", ["gps_data"])
    try:
        in_kafka(fresh, SENT, stack)
    finally:
        fresh.close()
    assert len(SENT) == 70
