"""The bridge's container image, built and run for real with podman (issue 15).

The image is bridge/Dockerfile around the project's wheel (deploy/images.py), on the local Debian
base image that deploy/setup.d/70-podman.sh makes (no registry of images is reachable here). The
container runs with `--network host` against a Mosquitto and a Kafka that the project's own
deploy/local classes start on loopback, so every byte stays on this machine. Its MQTT password
comes from a podman secret (a file in /run/secrets), never the environment.

No podman, or a machine that cannot run a container: these tests fail with podman's own words,
they do not skip.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from deploy.images import LOCAL_BASE, build_bridge_image
from deploy.local.kafka import DLQ_TOPIC
from deploy.local.mosquitto import MosquittoServer
from deploy.local.stack import ACL, BRIDGE_USER
from tests.support.harness import Collector, FleetPublisher, free_port, shared_kafka

TAG = f"localhost/smartcity-bridge-test:{uuid.uuid4().hex[:8]}"
USER_ID = "10001"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run deploy/setup.sh (deploy/setup.d/70-podman.sh)", pytrace=False)
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}", pytrace=False)
    return p


@pytest.fixture(scope="module")
def image():
    if podman("image", "exists", LOCAL_BASE, check=False).returncode != 0:
        pytest.fail(f"the base image {LOCAL_BASE} is missing: run deploy/setup.sh", pytrace=False)
    t0 = time.monotonic()
    build_bridge_image("podman", TAG, base=LOCAL_BASE)
    print(f"bridge image built in {time.monotonic() - t0:.1f}s")
    yield TAG
    podman("rmi", "-f", TAG, check=False)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    """The broker's passwords, and the bridge's as a podman secret (a file the container reads)."""
    run = uuid.uuid4().hex[:8]
    pw = {BRIDGE_USER: f"bridge-{uuid.uuid4().hex}", f"car-{run}": f"car-{uuid.uuid4().hex}"}
    f = tmp_path_factory.mktemp("secrets") / "mqtt_password"
    f.write_text(pw[BRIDGE_USER] + "\n")
    f.chmod(0o600)
    name = f"smartcity-test-mqtt-{run}"
    podman("secret", "create", name, str(f))
    yield {"name": name, "passwords": pw, "device": f"car-{run}"}
    podman("secret", "rm", name, check=False)


@pytest.fixture(scope="module")
def broker(tmp_path_factory, secrets):
    srv = MosquittoServer(tmp_path_factory.mktemp("mosquitto"), passwords=secrets["passwords"], acl=ACL).start()
    yield srv
    srv.stop()


@pytest.fixture
def collector():
    c = Collector(shared_kafka().bootstrap, ["gps_data", "vehicle_data", "weather_data", "traffic_data",
                                             "emergency_data", DLQ_TOPIC])
    yield c
    c.close()


class Container:
    """One bridge container on the host's network (loopback only: the broker and Kafka listen there)."""

    def __init__(self, image: str, secret: str, broker: MosquittoServer, bridge_id: str,
                 mqtt_port: int | None = None):
        self.name = f"smartcity-test-{bridge_id}"
        self.http_port = free_port()
        self.bridge_id = bridge_id
        podman("rm", "-f", self.name, check=False)
        podman("run", "-d", "--name", self.name, "--network", "host",
               "--secret", f"{secret},uid={USER_ID},mode=0400",
               "-e", f"SMARTCITY_BRIDGE_BRIDGE_ID={bridge_id}",
               "-e", f"SMARTCITY_BRIDGE_MQTT__GROUP=g-{bridge_id}",
               "-e", "SMARTCITY_BRIDGE_MQTT__HOST=127.0.0.1",
               "-e", f"SMARTCITY_BRIDGE_MQTT__PORT={mqtt_port or broker.port}",
               "-e", f"SMARTCITY_BRIDGE_MQTT__USERNAME={BRIDGE_USER}",
               "-e", f"SMARTCITY_BRIDGE_MQTT__PASSWORD_FILE=/run/secrets/{secret}",
               "-e", f"SMARTCITY_BRIDGE_KAFKA__BOOTSTRAP_SERVERS={shared_kafka().bootstrap}",
               "-e", f"SMARTCITY_BRIDGE_HTTP_PORT={self.http_port}",
               "-e", "SMARTCITY_BRIDGE_IDLE_DEGRADED_S=0",
               "-e", "SMARTCITY_BRIDGE_LOG_LEVEL=INFO",
               image)

    def logs(self) -> str:
        p = podman("logs", self.name, check=False)
        return (p.stdout + p.stderr)[-4000:]

    def inspect(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
                body = r.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        for line in body.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        return None

    def wait_subscribed(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.metric("bridge_mqtt_subscribed") != 1.0:
            state = self.inspect()["State"]
            assert state["Running"], f"the container exited ({state['ExitCode']}):\n{self.logs()}"
            assert time.monotonic() < deadline, f"not subscribed after {timeout_s}s:\n{self.logs()}"
            time.sleep(0.2)

    def remove(self) -> None:
        podman("stop", "-t", "30", self.name, check=False, timeout=60)
        podman("rm", "-f", self.name, check=False)


@pytest.fixture
def containers():
    started: list[Container] = []
    yield started
    for c in started:
        c.remove()


def publish(broker: MosquittoServer, secrets: dict, n: int) -> FleetPublisher:
    device = secrets["device"]   # the ACL: a device publishes under its own username only
    pub = FleetPublisher(broker.port, [device], username=device, password=secrets["passwords"][device])
    pub.publish(n)
    assert pub.wait_acked(30), "the broker did not acknowledge every publish"
    return pub


def wait_in_kafka(collector: Collector, pubs: list[FleetPublisher], c: Container, timeout_s: float = 60):
    want = {s.event_id for p in pubs for s in p.sent}

    def got(msgs) -> set[str]:
        return {json.loads(m.value).get("event_id") for m in msgs if m.topic != DLQ_TOPIC}
    ok = collector.wait_for(lambda msgs: want <= got(msgs), timeout_s)
    missing = want - got(collector.snapshot())
    assert ok and not missing, f"{len(missing)} of {len(want)} readings never reached Kafka:\n{c.logs()}"
    ours = {d.encode() for p in pubs for d in p.devices}
    assert not [m for m in collector.snapshot() if m.topic == DLQ_TOPIC and m.key in ours], c.logs()


# ---------------------------------------------------------------------------------------------------

def test_the_image_installs_the_wheel_and_runs_as_a_non_root_user(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    assert info["Config"]["User"] == USER_ID
    assert info["Config"]["Entrypoint"] == ["smartcity-bridge"]
    assert "/healthz" in " ".join(info["Healthcheck"]["Test"])   # kept: built with --format docker
    p = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
               "id -u; ls /opt/smartcity/lib/python3*/site-packages | grep '^smartcity';"
               " ls -d /src /app /bridge 2>/dev/null; smartcity-bridge --help >/dev/null && echo help-ok")
    lines = p.stdout.split()
    assert lines[0] == USER_ID, p.stdout
    # The wheel is installed (its dist-info), and no source folder was copied in.
    assert "smartcity" in lines and "smartcity-0.1.0.dist-info" in lines, p.stdout
    assert lines[-1] == "help-ok" and not {"/src", "/app", "/bridge"} & set(lines), p.stdout


def test_a_reading_goes_through_the_container_into_kafka_and_the_healthcheck_passes(
        image, secrets, broker, collector, containers):
    c = Container(image, secrets["name"], broker, f"ctr-{uuid.uuid4().hex[:6]}")
    containers.append(c)
    c.wait_subscribed()
    assert c.inspect()["Config"]["User"] == USER_ID
    # The image's HEALTHCHECK (its /healthz) as podman runs it: podman 4.3 schedules checks with
    # systemd timers, which this machine does not have, so the test runs it, as a compose script would.
    h = podman("healthcheck", "run", c.name, check=False)
    assert h.returncode == 0, f"healthcheck: {h.stdout}{h.stderr}\n{c.logs()}"

    pub = publish(broker, secrets, 1)
    wait_in_kafka(collector, [pub], c)
    mine = [m for m in collector.snapshot() if m.key == secrets["device"].encode()]
    assert [m.topic for m in mine] == [f"{pub.sent[0].stream}_data"]   # keyed by its device

    # The password came from the secret file: it is nowhere in the container's configuration.
    assert secrets["passwords"][BRIDGE_USER] not in json.dumps(c.inspect())
    pub.close()


def test_stop_drains_and_the_restarted_container_resumes_its_session_losing_nothing(
        image, secrets, broker, collector, containers):
    c = Container(image, secrets["name"], broker, f"ctr-{uuid.uuid4().hex[:6]}")
    containers.append(c)
    c.wait_subscribed()
    before = publish(broker, secrets, 20)
    # SIGTERM: the bridge drains (what Kafka confirmed is acknowledged to the broker) and exits 0.
    podman("stop", "-t", "45", c.name, timeout=60)
    state = c.inspect()["State"]
    assert state["ExitCode"] == 0, f"exit {state['ExitCode']} after SIGTERM:\n{c.logs()}"
    # While it is away the broker queues for its session (same bridge id, same MQTT session) ...
    during = publish(broker, secrets, 20)
    podman("start", c.name)
    c.wait_subscribed()
    # ... and the container takes it all on its return, with what came before.
    wait_in_kafka(collector, [before, during], c)
    # The same session resumed: the broker saw the same client id come back.
    client_id = f"smartcity-bridge-{c.bridge_id}"
    assert broker.log_path.read_text().count(f"as {client_id} ") >= 2, broker.log_path.read_text()[-3000:]
    # `podman restart` does the same (SIGTERM, start): healthy again afterwards.
    podman("restart", "-t", "45", c.name, timeout=90)
    c.wait_subscribed()
    after = publish(broker, secrets, 5)
    wait_in_kafka(collector, [after], c)
    assert podman("healthcheck", "run", c.name, check=False).returncode == 0, c.logs()
    for p in (before, during, after):
        p.close()


def test_the_healthcheck_fails_while_the_broker_cannot_be_reached(image, secrets, broker, containers):
    """The check means something: with nothing listening where MQTT should be, /healthz is 503 and
    `podman healthcheck run` says unhealthy (exit 1), while the bridge stays up and keeps trying."""
    c = Container(image, secrets["name"], broker, f"ctr-{uuid.uuid4().hex[:6]}", mqtt_port=free_port())
    containers.append(c)
    deadline = time.monotonic() + 30
    while c.metric("bridge_mqtt_connected") is None:      # its HTTP server is up
        assert c.inspect()["State"]["Running"], c.logs()
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.2)
    h = podman("healthcheck", "run", c.name, check=False)
    assert h.returncode == 1 and "unhealthy" in h.stdout + h.stderr, f"{h.returncode}: {h.stdout}{h.stderr}"
    assert c.inspect()["State"]["Running"], c.logs()
