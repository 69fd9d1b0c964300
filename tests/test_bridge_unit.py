"""deploy/bridge/smartcity-bridge@.service: one instance per bridge replica, each with its own fixed
bridge_id (issue 9: a bridge back under another id strands its share of the shared subscription).
`systemd-analyze verify` clean, `systemd-analyze security` exposure <= 3.0, and the bridge
forwards under the unit's MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE applies the same rule)."""
from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "bridge" / "smartcity-bridge@.service"
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                     if (p / "sysinit.target").exists()), None)
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def entries(text: str) -> list[tuple[str, str, str]]:
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


def test_each_instance_gets_its_own_fixed_bridge_id():
    e = entries(UNIT.read_text())
    exec_start = next(v for s, k, v in e if k == "ExecStart")
    assert re.search(r"--bridge-id \S*%i", exec_start), "the id must come from the instance name"
    assert "%p" not in exec_start and "$MAINPID" not in exec_start
    assert {k: s for s, k, _ in e}["StartLimitIntervalSec"] == "Unit"


@needs_analyze
@pytest.mark.skipif(SYSTEM_UNITS is None, reason="no systemd unit directory to verify against")
def test_systemd_analyze_verify_is_clean(tmp_path):
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system" / UNIT.name)
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    exec_start = next(v for _, k, v in entries(UNIT.read_text()) if k == "ExecStart")
    binary = tmp_path / exec_start.split()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    r = subprocess.run([ANALYZE, "verify", f"--root={tmp_path}", "smartcity-bridge@1.service"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_3():
    r = subprocess.run([ANALYZE, "security", "--offline=true", "--threshold=30", "--no-pager", str(UNIT)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for smartcity-bridge@\S*\.service: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.0 and r.returncode == 0, r.stdout


def _set_mdwe() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _mdwe_supported() -> bool:
    return subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_set_mdwe,
                          capture_output=True).returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _mdwe_supported(),
                    reason="prctl(PR_SET_MDWE) needs Linux >= 6.3")
def test_the_bridge_forwards_with_memory_deny_write_execute(tmp_path):
    from tests.support.harness import Collector, FleetPublisher, shared_kafka
    from deploy.local.mosquitto import MosquittoServer, free_port
    kafka = shared_kafka()
    run = uuid.uuid4().hex[:6]
    http_port = free_port()
    with MosquittoServer(tmp_path / "mqtt") as broker:
        log = open(tmp_path / "bridge.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "smartcity.bridge", "--bridge-id", f"mdwe-{run}", "--group", f"g-{run}",
             "--mqtt-port", str(broker.port), "--kafka-bootstrap", kafka.bootstrap,
             "--http-port", str(http_port), "--log-level", "INFO"],
            cwd=ROOT, preexec_fn=_set_mdwe, stdout=log, stderr=subprocess.STDOUT)
        col = Collector(kafka.bootstrap, ["gps_data", "vehicle_data", "weather_data", "traffic_data",
                                          "emergency_data"])
        try:
            import time
            import urllib.request
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=1) as r:
                        if "\nbridge_mqtt_subscribed 1" in r.read().decode():
                            break
                except OSError:
                    pass
                time.sleep(0.1)
            pub = FleetPublisher(broker.port, [f"car-{run}"])
            pub.publish(20)
            assert pub.wait_acked(10)
            want = {s.event_id for s in pub.sent}
            assert col.wait_for(lambda ms: want <= {json.loads(m.value)["event_id"] for m in ms}, 30,
                                pred=lambda m: m.key == f"car-{run}".encode()), \
                (tmp_path / "bridge.log").read_text()[-3000:]
            pub.close()
        finally:
            col.close()
            proc.terminate()
            assert proc.wait(40) == 0, (tmp_path / "bridge.log").read_text()[-3000:]
            log.close()
