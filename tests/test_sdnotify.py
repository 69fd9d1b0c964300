"""sd_notify from the edge agent, received on a real AF_UNIX datagram socket as systemd would.

Specification: with $NOTIFY_SOCKET the agent sends READY=1 once started, WATCHDOG=1 at least every
half $WATCHDOG_USEC from its main loop only while all its threads run, and STOPPING=1 on SIGTERM;
without $NOTIFY_SOCKET nothing is sent and nothing fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from deploy.local.mosquitto import free_port
from smartcity.edge.agent import Agent, AgentSettings
from smartcity.edge.publisher import MqttPublisher
from smartcity.runtime.sdnotify import Notifier, watchdog_interval_s

ROOT = Path(__file__).resolve().parents[1]
EDGE = Path(sys.executable).with_name("smartcity-edge")


@pytest.fixture
def notify_socket():
    """A bound AF_UNIX datagram socket in a short directory (sun_path holds 107 bytes)."""
    d = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield path, sock
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def receive(sock: socket.socket, until, timeout: float) -> list[tuple[float, dict[str, str]]]:
    """Datagrams as (monotonic arrival, {key: value}) until `until(messages)` or the timeout."""
    got: list[tuple[float, dict[str, str]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        got.append((time.monotonic(), fields))
    return got


def test_without_notify_socket_every_call_is_a_no_op():
    n = Notifier(env={})
    assert not n.enabled and n.watchdog_s is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_a_notification_is_one_datagram_of_key_value_lines(notify_socket):
    path, sock = notify_socket
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.ready("up\nand running") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=up and running"


def test_abstract_socket_names_start_with_an_at_sign():
    name = f"smartcity-test-{os.getpid()}-{time.time_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier(env={"NOTIFY_SOCKET": "@" + name}).watchdog() is True
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_a_manager_that_went_away_is_not_an_error(tmp_path, caplog):
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.enabled
    assert n.watchdog() is False and n.watchdog() is False
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


def test_unusable_addresses_disable_notifications():
    assert not Notifier(env={"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert not Notifier(env={"NOTIFY_SOCKET": ""}).enabled


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "4242"}, 0.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),   # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_follows_sd_watchdog_enabled(env, expected):
    assert watchdog_interval_s(env, pid=4242) == expected


def test_from_environ_removes_the_variables_so_children_do_not_inherit_them():
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000000",
               "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin"}
    n = Notifier.from_environ(environ)
    assert n.address == "/run/systemd/notify" and n.watchdog_s == 1.0
    assert environ == {"PATH": "/usr/bin"}
    n.close()


def test_the_watchdog_is_withheld_while_a_thread_is_dead(tmp_path, notify_socket, monkeypatch):
    path, sock = notify_socket
    monkeypatch.setattr(MqttPublisher, "alive", property(lambda self: True))
    settings = AgentSettings(device_id="bus-wd", data_dir=tmp_path / "edge")
    agent = Agent(settings, Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}))
    try:
        assert agent.watchdog_tick(now=100.0) is True
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert agent.watchdog_tick(now=100.4) is False          # not due before half the interval
        done = threading.Thread(target=lambda: None, name="gps")
        done.start()
        done.join()
        agent.threads.append(done)
        assert agent.watchdog_tick(now=101.0) is False
        assert sock.recv(4096) == b"STATUS=threads stopped: gps; restart pending"
        assert agent.watchdog_tick(now=102.0) is False          # still withheld, said once
        with pytest.raises(socket.timeout):
            sock.recv(4096)
        assert agent.health()[1]["dead_threads"] == ["gps"]
    finally:
        agent.queue.close()


def test_a_publisher_thread_that_died_counts_as_a_dead_thread(tmp_path):
    agent = Agent(AgentSettings(device_id="bus-wd", data_dir=tmp_path / "edge"))
    try:  # never started: no publishing thread
        assert agent.dead_threads() == ["mqtt-publisher"]
    finally:
        agent.queue.close()


def test_the_real_agent_notifies_ready_watchdog_and_stopping(tmp_path, notify_socket):
    path, sock = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    # As systemd does: WATCHDOG_PID is the main process, which exec keeps.
    cmd = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", str(EDGE), "--simulate",
           "--device-id", "bus-sdnotify", "--data-dir", str(tmp_path / "edge"),
           "--mqtt-port", str(free_port()), "--http-port", "0", "--log-level", "INFO"]
    log = open(tmp_path / "agent.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        got = receive(sock, lambda g: sum("WATCHDOG" in f for _, f in g) >= 3, timeout=30)
        assert got, f"nothing received; log: {(tmp_path / 'agent.log').read_text()[-2000:]}"
        assert got[0][1]["READY"] == "1" and "bus-sdnotify" in got[0][1]["STATUS"]
        pings = [t for t, f in got if f == {"WATCHDOG": "1"}]
        assert len(pings) >= 3
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(0.3 < g < 0.9 for g in gaps), gaps   # every half interval (0.5 s), 0.2 s loop
        proc.send_signal(signal.SIGTERM)
        rest = receive(sock, lambda g: any("STOPPING" in f for _, f in g), timeout=10)
        assert any(f.get("STOPPING") == "1" for _, f in rest), rest
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
