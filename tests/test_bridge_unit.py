"""deploy/bridge/smartcity-bridge@.service: one instance per bridge replica, each with its own fixed
bridge_id (issue 9: a bridge back under another id strands its share of the shared subscription).
`systemd-analyze verify` clean, `systemd-analyze security` exposure <= 3.0, and the bridge
forwards under the unit's MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE applies the same rule)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.systemd import (analyze_verify, needs_analyze, needs_mdwe, needs_unit_dir, security_exposure,
                                    set_mdwe, unit_entries)

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "bridge" / "smartcity-bridge@.service"


def test_each_instance_gets_its_own_fixed_bridge_id():
    e = unit_entries(UNIT.read_text())
    exec_start = next(v for s, k, v in e if k == "ExecStart")
    assert re.search(r"--bridge-id \S*%i", exec_start), "the id must come from the instance name"
    assert "%p" not in exec_start and "$MAINPID" not in exec_start
    assert {k: s for s, k, _ in e}["StartLimitIntervalSec"] == "Unit"


@needs_analyze
@needs_unit_dir
def test_systemd_analyze_verify_is_clean(tmp_path):
    r = analyze_verify(UNIT, tmp_path, "smartcity-bridge@1.service")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_3():
    exposure, r = security_exposure(UNIT)
    assert exposure is not None, r.stdout + r.stderr
    assert exposure <= 3.0 and r.returncode == 0, r.stdout


@needs_mdwe
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
            cwd=ROOT, preexec_fn=set_mdwe, stdout=log, stderr=subprocess.STDOUT)
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
