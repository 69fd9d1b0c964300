"""python -m edge.obd probe, run as a subprocess against the emulator's pty."""
from __future__ import annotations

import json
import subprocess
import sys

from smartcity.sim.elm327 import Elm327Emulator

VALUES = {"speed_kmh": 42.0, "rpm": 1500.0, "coolant_c": 88.0, "throttle_pct": 20.0,
          "engine_load_pct": 40.0, "fuel_level_pct": 60.0, "battery_v": 13.8}


def probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartcity.edge.obd", "probe", *args],
                          capture_output=True, text=True, timeout=30)


def test_probe_prints_one_json_object_with_every_field():
    e = Elm327Emulator(lambda: VALUES, vin="1HGCM82633A004352")
    try:
        p = probe(e.start(), "--baud", "38400")
    finally:
        e.stop()
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert list(out) == ["speed_kmh", "rpm", "coolant_c", "throttle_pct", "engine_load_pct",
                         "fuel_level_pct", "battery_v", "vin"]
    assert out["vin"] == "1HGCM82633A004352"
    for k, v in VALUES.items():
        assert abs(out[k] - v) < 0.2, k


def test_probe_of_an_unreachable_adapter_fails_with_a_clear_message(tmp_path):
    p = probe(str(tmp_path / "ttyUSB9"), "--timeout", "0.3")
    assert p.returncode != 0
    assert p.stdout == ""
    assert "cannot reach the OBD adapter" in p.stderr and "ttyUSB9" in p.stderr


def test_probe_of_a_silent_device_times_out_with_a_clear_message():
    e = Elm327Emulator(lambda: VALUES)
    e.set_silent(True)
    try:
        p = subprocess.run([sys.executable, "-m", "smartcity.edge.obd", "probe", e.start(),
                            "--timeout", "0.3"], capture_output=True, text=True, timeout=30)
    finally:
        e.stop()
    assert p.returncode != 0
    assert "no prompt from OBD adapter" in p.stderr
