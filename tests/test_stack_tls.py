"""The local stack's TLS listener with client certificates, and the README's Pi configuration
(port 8883, tls, ca_file, cert_file, key_file) end to end: the real agent -> Mosquitto over TLS,
identified by its certificate -> the real bridge, over TLS with its own certificate -> Kafka, and
the bridge's end-to-end acknowledgements back to the agent (ACL `%u` = the certificate's CN)."""
from __future__ import annotations

import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.harness import BridgeProcess, Collector, record
from deploy.local.kafka import ALL_TOPICS, DLQ_TOPIC, free_port
from deploy.local.mosquitto import cert_valid
from smartcity.edge.queue import DurableQueue

REPO = Path(__file__).resolve().parents[1]
MQTT_KEYS = {"host", "port", "tls", "ca_file", "cert_file", "key_file"}


def stack(run_dir, *args, check=True):
    r = subprocess.run([sys.executable, "-m", "deploy.local.stack", *args, "--run-dir", str(run_dir)],
                       capture_output=True, text=True, cwd=REPO, timeout=180)
    if check and r.returncode != 0:
        raise AssertionError(f"stack {args} rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def device_cert(run_dir, device_id) -> dict:
    """`stack device-cert` as a user runs it; its output is TOML for the agent."""
    return tomllib.loads(stack(run_dir, "device-cert", device_id).stdout)


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    r = stack(run_dir, "up", "--mqtt-port", str(free_port()), "--mqtt-tls-port", "0",
              "--kafka-port", str(free_port()), "--kafka-controller-port", str(free_port()),
              "--no-s3", "--device", "pw-car", "--partitions", "2")
    yield run_dir, json.loads(r.stdout)
    stack(run_dir, "down", check=False)


@pytest.fixture(scope="module")
def tls_bridge(tls_stack, tmp_path_factory):
    """The bridge on the TLS listener with its own certificate (CN=bridge), set by its CLI flags."""
    _, st = tls_stack
    m = st["mosquitto"]
    b = BridgeProcess(m["tls_port"], st["kafka"]["bootstrap"], tmp_path_factory.mktemp("bridge"),
                      bridge_id="tls", extra_args=["--mqtt-tls", "--mqtt-ca-file", m["ca_file"],
                                                   "--mqtt-cert-file", m["bridge_cert_file"],
                                                   "--mqtt-key-file", m["bridge_key_file"]]).start()
    yield b
    b.terminate()


@pytest.fixture(scope="module")
def collector(tls_stack):
    c = Collector(tls_stack[1]["kafka"]["bootstrap"], list(ALL_TOPICS))
    yield c
    c.close()


def connect(port, *, user=None, password=None, tls=None, clean=True):
    """(client, CONNACK reason or None, messages); tls: dict for tls_set. A failed TLS handshake
    (no client certificate) leaves the reason None."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, password)
    if tls:
        c.tls_set(**tls)
    rc, got, acks, subacks, gone = [], [], {}, {}, []
    c.on_connect = lambda cl, u, f, reason, p: rc.append(reason)
    c.on_disconnect = lambda *a: gone.append(1)
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    c.on_publish = lambda cl, u, mid, reason, p: acks.__setitem__(mid, reason)
    c.on_subscribe = lambda cl, u, mid, reasons, p: subacks.__setitem__(mid, reasons)
    c.user_data_set({"got": got, "acks": acks, "subacks": subacks})
    try:
        c.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return c, None, got
    c.loop_start()
    deadline = time.monotonic() + 5
    while not rc and not gone and time.monotonic() < deadline:
        time.sleep(0.02)
    if not rc or rc[0].is_failure:
        c.loop_stop()
    return c, rc[0] if rc else None, got


def wait_until(cond, timeout_s, step=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def readme_pi_toml() -> str:
    """The TOML block of README's Configuration section, verbatim."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Configuration"):]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


def with_values(toml_text: str, values: dict[tuple[str, str], object]) -> str:
    """toml_text with the value of each (table, key) replaced, every other line as it was."""
    out, table, seen = [], "", set()
    for line in toml_text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line.strip()):
            table = m.group(1)
        elif (m := re.fullmatch(r"(\w+) = .*", line)) and (table, m.group(1)) in values:
            # JSON's strings, integers and booleans are TOML's too (for these values)
            line = f"{m.group(1)} = {json.dumps(values[(table, m.group(1))])}"
            seen.add((table, m.group(1)))
        out.append(line)
    assert seen == set(values), f"README's TOML lacks {set(values) - seen}"
    return "\n".join(out) + "\n"


def test_up_starts_a_certificate_listener_beside_the_password_one(tls_stack):
    run_dir, st = tls_stack
    m = st["mosquitto"]
    assert m["tls_port"] != m["port"] and m["tls_url"] == f"mqtts://127.0.0.1:{m['tls_port']}"
    assert json.loads((run_dir / "stack.json").read_text())["mosquitto"]["tls_port"] == m["tls_port"]
    pki = run_dir / "pki"
    assert stat.S_IMODE(os.stat(pki).st_mode) == 0o700
    for key in ("ca.key", "server.key", "bridge.key"):
        assert stat.S_IMODE(os.stat(pki / key).st_mode) == 0o600, key
        assert (pki / key).read_text() not in (run_dir / "stack.json").read_text()
    assert cert_valid(m["bridge_cert_file"], m["ca_file"], 30 * 86400)
    conf = (Path(m["data_dir"]) / "mosquitto.conf").read_text()
    tls_listener = conf[conf.index(f"listener {m['tls_port']} 127.0.0.1"):]
    assert "require_certificate true" in tls_listener and "use_identity_as_username true" in tls_listener
    assert conf.index("password_file") < conf.index(f"listener {m['tls_port']}")
    status = json.loads(stack(run_dir, "status").stdout)
    assert status["mosquitto"]["tls_port"] == m["tls_port"] and status["mosquitto"]["answering"]


def test_device_cert_writes_a_private_key_and_prints_the_readme_mqtt_settings(tls_stack):
    run_dir, st = tls_stack
    conf = device_cert(run_dir, "tls-bus-1")
    readme = tomllib.loads(readme_pi_toml())
    assert set(conf["mqtt"]) == set(readme["mqtt"]) == MQTT_KEYS
    assert conf["device_id"] == "tls-bus-1" and conf["mqtt"]["tls"] is True
    assert conf["mqtt"]["port"] == st["mosquitto"]["tls_port"]
    key, crt = Path(conf["mqtt"]["key_file"]), Path(conf["mqtt"]["cert_file"])
    assert key.parent == run_dir / "pki" / "devices" and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(crt)],
                             capture_output=True, text=True, check=True).stdout
    assert subject.strip().replace(" ", "") == "subject=CN=tls-bus-1"
    assert cert_valid(crt, conf["mqtt"]["ca_file"], 30 * 86400)
    before = crt.read_bytes()
    assert device_cert(run_dir, "tls-bus-1") == conf and crt.read_bytes() == before, "kept while valid"


def test_device_cert_refuses_the_bridge_name_and_what_is_no_device_id(tmp_path, capsys):
    from deploy.local.stack import main
    for bad in ("bridge", "../x", ".hidden", "a/b", "x" * 65):
        assert main(["device-cert", bad, "--run-dir", str(tmp_path)]) == 2, bad
        out, err = capsys.readouterr()
        assert not out and "stack device-cert:" in err
    assert not list(tmp_path.glob("pki/devices/*"))


def test_a_taken_tls_port_is_a_clear_error(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = stack(tmp_path, "up", "--mqtt-port", str(free_port()), "--mqtt-tls-port", str(port),
                  "--no-kafka", "--no-s3", check=False)
    assert r.returncode == 1 and f"TLS port {port} is taken" in r.stderr


def test_password_listener_still_works_and_the_tls_listener_wants_a_certificate(tls_stack):
    run_dir, st = tls_stack
    m = st["mosquitto"]
    pw = json.loads((run_dir / "credentials.json").read_text())["mqtt"]["pw-car"]
    c, rc, _ = connect(m["port"], user="pw-car", password=pw)
    assert rc is not None and not rc.is_failure, "the password listener works as before"
    c.disconnect()
    c.loop_stop()
    # A password on the TLS listener, without a client certificate: the handshake fails.
    _, rc, _ = connect(m["tls_port"], user="pw-car", password=pw, tls={"ca_certs": m["ca_file"]})
    assert rc is None or rc.is_failure


def test_readme_pi_configuration_end_to_end_over_tls(tls_stack, tls_bridge, collector, tmp_path):
    """README's TOML verbatim but for the values the stack decides (the TLS port, the files
    `device-cert` wrote, a data dir here); the real agent with --simulate --config; its readings
    reach Kafka through the bridge on TLS, the bridge's acknowledgements reach the agent (the
    queue empties), and the broker knew the agent only by its certificate."""
    run_dir, st = tls_stack
    device = f"tls-pi-{uuid.uuid4().hex[:4]}"
    mq = device_cert(run_dir, device)["mqtt"]
    toml_text = with_values(readme_pi_toml(), {
        ("", "device_id"): device, ("", "data_dir"): str(tmp_path / "edge"),
        **{("mqtt", k): mq[k] for k in ("host", "port", "ca_file", "cert_file", "key_file")}})
    assert "username" not in toml_text and "password" not in toml_text
    assert tomllib.loads(toml_text)["mqtt"]["tls"] is True
    cfg = tmp_path / "edge.toml"
    cfg.write_text(toml_text)
    http_port = free_port()
    log_path = tmp_path / "agent.log"
    with open(log_path, "ab") as out:
        agent = subprocess.Popen([sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--config", str(cfg),
                                  "--speedup", "20", "--http-port", str(http_port), "--log-level", "INFO"],
                                 cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def metric(name):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(float(ln.rpartition(" ")[2]) for ln in text.splitlines()
                   if ln.split("{")[0].split(" ")[0] == name)

    def device_seqs():
        return {json.loads(m.value)["seq"] for m in collector.snapshot(
            lambda m: m.key == device.encode() and m.topic.endswith("_data"))}

    try:
        assert wait_until(lambda: metric("smartcity_mqtt_publish_acks_total") >= 50, 60), \
            f"no end-to-end acks:\n{log_path.read_text()[-3000:]}\n{tls_bridge.log_tail()}"
        assert wait_until(lambda: len(device_seqs()) >= 50, 30)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
    with DurableQueue(tmp_path / "edge" / "queue.sqlite3") as q:
        last_seq, left, rejected = q.next_seq() - 1, q.depth(), q.rejected()
    assert left == 0 and not rejected, "the bridge acknowledged every reading: the queue drained"
    want = set(range(1, last_seq + 1))
    assert collector.wait_for(lambda _: want <= device_seqs(), 30)
    assert device_seqs() == want
    assert not collector.snapshot(lambda m: m.topic == DLQ_TOPIC and m.key == device.encode())
    # The broker took the agent's username from its certificate, on the TLS port.
    broker_log = Path(st["mosquitto"]["log"]).read_text()
    peers = re.findall(rf"New client connected from (127\.0\.0\.1:\d+) as \S+ \(.*u'{device}'\)", broker_log)
    assert peers and all(f"New connection from {p} on port {mq['port']}." in broker_log for p in peers)


def test_a_device_certificate_cannot_publish_or_read_as_another_device(tls_stack, tls_bridge,
                                                                         collector):
    run_dir, st = tls_stack
    a, b = f"tls-a-{uuid.uuid4().hex[:4]}", f"tls-b-{uuid.uuid4().hex[:4]}"
    clients = {}
    for dev in (a, b):
        mq = device_cert(run_dir, dev)["mqtt"]
        c, rc, got = connect(mq["port"], tls={"ca_certs": mq["ca_file"], "certfile": mq["cert_file"],
                                              "keyfile": mq["key_file"]})
        assert rc is not None and not rc.is_failure
        clients[dev] = (c, got, c.user_data_get())
    (ca, got_a, ud_a), (cb, got_b, _) = clients[a], clients[b]
    try:
        # Mosquitto grants any subscription and applies the read ACL to each message delivered.
        ca.subscribe(f"smartcity/ack/v1/{a}", qos=1)
        ca.subscribe(f"smartcity/ack/v1/{b}", qos=1)
        cb.subscribe(f"smartcity/ack/v1/{b}", qos=1)
        assert wait_until(lambda: len(ud_a["subacks"]) == 2, 5)
        for c, dev in ((ca, a), (cb, b)):
            c.publish(f"smartcity/v1/{dev}/gps", json.dumps(record("gps", dev, "0000abcd", 1)),
                      qos=1).wait_for_publish(5)
        assert wait_until(lambda: any(t == f"smartcity/ack/v1/{a}" for t, _ in got_a), 15), \
            "the bridge's acknowledgement reaches the device named by the certificate"
        assert wait_until(lambda: any(t == f"smartcity/ack/v1/{b}" for t, _ in got_b), 15)
        other = ca.publish(f"smartcity/v1/{b}/gps", json.dumps(record("gps", b, "0000abcd", 2)), qos=1)
        assert wait_until(lambda: other.mid in ud_a["acks"], 5)
        assert ud_a["acks"][other.mid].getName() == "Not authorized"
    finally:
        for c, _, _ in clients.values():
            c.disconnect()
            c.loop_stop()
    assert collector.wait_for(lambda ms: len(ms) >= 1, 15, pred=lambda m: m.key == a.encode())
    time.sleep(1.0)  # anything wrongly let through would have arrived by now
    assert [json.loads(m.value)["seq"] for m in collector.snapshot(lambda m: m.key == b.encode())] == [1], \
        "B's own reading only: A's certificate cannot write as B"
    assert not [t for t, _ in got_a if t.endswith(b)], "A's certificate cannot read B's acknowledgements"


def test_bridge_settings_refuse_certificate_files_without_tls():
    from smartcity.bridge.config import MqttSettings
    with pytest.raises(ValueError, match="tls is false but cert_file, key_file set"):
        MqttSettings(cert_file=Path("c.crt"), key_file=Path("c.key"))
    with pytest.raises(ValueError, match="key_file set without cert_file"):
        MqttSettings(tls=True, key_file=Path("c.key"))
    assert MqttSettings(tls=True, ca_file=Path("ca.crt"), cert_file=Path("c.crt")).tls
