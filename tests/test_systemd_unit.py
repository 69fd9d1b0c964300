"""deploy/edge/smartcity-edge.service as systemd reads it.

Specification: `systemd-analyze verify` reports nothing on the unit as shipped (unknown keys,
misplaced keys, bad values), its `systemd-analyze security` exposure is at most 3.0, and the agent
runs under the unit's MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE applies the same rule).
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from deploy.local.mosquitto import free_port
from tests.support.systemd import (analyze_verify, needs_analyze, needs_mdwe, needs_unit_dir, security_exposure,
                                    set_mdwe, unit_entries)

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "edge" / "smartcity-edge.service"


def test_unit_shape():
    entries = unit_entries(UNIT.read_text())
    where = {k: s for s, k, _ in entries}
    assert where["StartLimitIntervalSec"] == "Unit"   # ignored with a warning in [Service]
    svc = {k: v for s, k, v in entries if s == "Service"}
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["WatchdogSec"] and svc["Restart"] == "on-failure"
    # The agent reads the clock's sync state with adjtimex(): re-allowed after ~@privileged.
    filters = [v for s, k, v in entries if k == "SystemCallFilter"]
    assert filters[-1].split() == ["adjtimex"] and "ProtectClock" not in svc


@needs_analyze
@needs_unit_dir
def test_systemd_analyze_verify_is_clean(tmp_path):
    r = analyze_verify(UNIT, tmp_path)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_3():
    exposure, r = security_exposure(UNIT)
    assert exposure is not None, r.stdout + r.stderr
    assert exposure <= 3.0 and r.returncode == 0, r.stdout


@needs_mdwe
def test_the_agent_runs_with_memory_deny_write_execute(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)"],  # R|W|X
        preexec_fn=set_mdwe, capture_output=True, text=True)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr  # the rule is in force
    data = tmp_path / "edge"
    r = subprocess.run(
        [sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--device-id", "bus-mdwe",
         "--data-dir", str(data), "--mqtt-port", str(free_port()), "--http-port", "0",
         "--speedup", "20", "--duration-s", "3", "--log-level", "INFO"],
        cwd=ROOT, preexec_fn=set_mdwe, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "thread crashed" not in r.stderr, r.stderr[-3000:]
    with sqlite3.connect(data / "queue.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] > 0
