"""`python -m deploy.local.stack up|status|down` brings up the real local stack idempotently,
with authentication and a per-device ACL that the bridge works through."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.harness import BridgeProcess, Collector, record
from deploy.local.kafka import free_port
from deploy.local.s3 import S3Server

REPO = Path(__file__).resolve().parents[1]


def stack(run_dir, *args, check=True):
    r = subprocess.run([sys.executable, "-m", "deploy.local.stack", *args, "--run-dir", str(run_dir)],
                       capture_output=True, text=True, cwd=REPO, timeout=180)
    if check and r.returncode != 0:
        raise AssertionError(f"stack {args} rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    ports = ["--mqtt-port", str(free_port()), "--mqtt-tls-port", "0", "--kafka-port", str(free_port()),
             "--kafka-controller-port", str(free_port()), "--s3-port", str(free_port())]
    extra = [] if S3Server.available() else ["--no-s3"]
    r = stack(run_dir, "up", *ports, *extra, "--device", "car-1", "--device", "car-2", "--partitions", "2")
    yield run_dir, ports + extra, json.loads(r.stdout)
    stack(run_dir, "down", check=False)


def connect(port, user, password):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    rc = []
    c.on_connect = lambda cl, u, f, reason, p: rc.append(reason)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not rc and time.monotonic() < deadline:
        time.sleep(0.02)
    return c, rc[0] if rc else None


def test_up_writes_ports_and_private_credentials_and_status_is_healthy(local_stack):
    run_dir, _, st = local_stack
    assert set(st) >= {"mosquitto", "kafka"}
    saved = json.loads((run_dir / "stack.json").read_text())
    assert saved["kafka"]["bootstrap"] == st["kafka"]["bootstrap"]
    assert stat.S_IMODE(os.stat(run_dir / "credentials.json").st_mode) == 0o600
    creds = json.loads((run_dir / "credentials.json").read_text())
    assert set(creds["mqtt"]) == {"bridge", "car-1", "car-2"}
    for secret in creds["mqtt"].values():
        assert secret not in (run_dir / "stack.json").read_text()
        assert secret not in Path(st["mosquitto"]["log"]).read_text()
    assert stack(run_dir, "status").returncode == 0
    assert (Path(st["mosquitto"]["log"])).exists() and (Path(st["kafka"]["log"])).exists()


def test_up_again_is_a_no_op_that_keeps_the_same_processes(local_stack):
    run_dir, ports, st = local_stack
    again = json.loads(stack(run_dir, "up", *ports, "--device", "car-1", "--device", "car-2").stdout)
    assert again["mosquitto"]["pid"] == st["mosquitto"]["pid"]
    assert again["kafka"]["pid"] == st["kafka"]["pid"]


def test_anonymous_and_wrong_password_are_refused(local_stack):
    run_dir, _, st = local_stack
    port = st["mosquitto"]["port"]
    c, rc = connect(port, "car-1", "not-the-password")
    assert rc is not None and rc.is_failure
    c.loop_stop()


def test_device_writes_only_its_own_topics_and_the_bridge_forwards_them(local_stack, tmp_path):
    run_dir, _, st = local_stack
    creds = json.loads((run_dir / "credentials.json").read_text())["mqtt"]
    port, bootstrap = st["mosquitto"]["port"], st["kafka"]["bootstrap"]
    col = Collector(bootstrap, ["gps_data", "smartcity_dlq"])
    b = BridgeProcess(port, bootstrap, tmp_path, bridge_id="stack",
                      env={"SMARTCITY_BRIDGE_MQTT__USERNAME": "bridge",
                           "SMARTCITY_BRIDGE_MQTT__PASSWORD": creds["bridge"]}).start()
    try:
        dev, rc = connect(port, "car-1", creds["car-1"])
        assert rc is not None and not rc.is_failure
        own = dev.publish("smartcity/v1/car-1/gps", json.dumps(record("gps", "car-1", "0000abcd", 0)), qos=1)
        other = dev.publish("smartcity/v1/car-2/gps", json.dumps(record("gps", "car-2", "0000abcd", 0)), qos=1)
        own.wait_for_publish(5)
        other.wait_for_publish(5)
        assert col.wait_for(lambda ms: len(ms) >= 1, 30)
        time.sleep(1.0)  # anything wrongly let through would arrive by now
        got = col.snapshot()
        assert [(m.topic, m.key) for m in got] == [("gps_data", b"car-1")], \
            "the broker must refuse car-1 writing as car-2"
        assert "secret" not in b.log_tail(200) and creds["bridge"] not in b.log_path.read_text()
        dev.loop_stop()
    finally:
        b.terminate()
        col.close()


@pytest.mark.skipif(not S3Server.available(), reason="no S3 server: S3Proxy's jar is fetched by "
                    "deploy/setup.d/36-s3proxy.sh and runs on Java 17 (docs/bridge.md)")
def test_stack_s3_accepts_the_generated_keys(local_stack):
    from deploy.local.s3 import s3_client
    run_dir, _, st = local_stack
    creds = json.loads((run_dir / "credentials.json").read_text())["s3"]
    assert st["s3"]["kind"] == "s3proxy"
    s3 = s3_client(st["s3"]["endpoint"], creds["access_key"], creds["secret_key"])
    s3.create_bucket(Bucket="stack-test")
    s3.put_object(Bucket="stack-test", Key="k", Body=b"v")
    assert s3.get_object(Bucket="stack-test", Key="k")["Body"].read() == b"v"


def test_down_stops_everything_and_status_then_fails(tmp_path):
    ports = ["--mqtt-port", str(free_port()), "--no-mqtt-tls", "--no-kafka", "--no-s3"]
    stack(tmp_path, "up", *ports)
    pid = json.loads((tmp_path / "stack.json").read_text())["mosquitto"]["pid"]
    assert stack(tmp_path, "status").returncode == 0
    stack(tmp_path, "down")
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}/cmdline").exists() or b"mosquitto" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert stack(tmp_path, "status", check=False).returncode == 1


def test_a_taken_port_is_a_clear_error(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = stack(tmp_path, "up", "--mqtt-port", str(port), "--mqtt-tls-port", "0", "--no-kafka", "--no-s3",
                  check=False)
    assert r.returncode == 1 and f"port {port} is taken" in r.stderr
