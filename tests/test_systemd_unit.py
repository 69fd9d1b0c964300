"""deploy/edge/smartcity-edge.service as systemd reads it.

Specification: `systemd-analyze verify` reports nothing on the unit as shipped (unknown keys,
misplaced keys, bad values), its `systemd-analyze security` exposure is at most 3.0, and the agent
runs under the unit's MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE applies the same rule).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "edge" / "smartcity-edge.service"
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                     if (p / "sysinit.target").exists()), None)
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed "
                                   "(deploy/setup.d/10-apt.sh installs Debian's systemd)")


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; systemd allows a key more than once."""
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
@pytest.mark.skipif(SYSTEM_UNITS is None, reason="no systemd unit directory to verify against")
def test_systemd_analyze_verify_is_clean(tmp_path):
    # An alternate root holding the unit where it is installed, systemd's own units (for the
    # targets it references) and an executable at the ExecStart path, so verify checks all of it.
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system" / UNIT.name)
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    exec_start = next(v for _, k, v in unit_entries(UNIT.read_text()) if k == "ExecStart")
    binary = tmp_path / exec_start.split()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    r = subprocess.run([ANALYZE, "verify", f"--root={tmp_path}", UNIT.name],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_3(tmp_path):
    r = subprocess.run([ANALYZE, "security", "--offline=true", "--threshold=30", "--no-pager",
                        str(UNIT)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for smartcity-edge\.service: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.0 and r.returncode == 0, r.stdout


def _set_mdwe() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _mdwe_supported() -> bool:
    r = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_set_mdwe,
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _mdwe_supported(),
                    reason="prctl(PR_SET_MDWE) needs Linux >= 6.3")
def test_the_agent_runs_with_memory_deny_write_execute(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)"],  # R|W|X
        preexec_fn=_set_mdwe, capture_output=True, text=True)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr  # the rule is in force
    data = tmp_path / "edge"
    r = subprocess.run(
        [sys.executable, "-m", "smartcity.edge.agent", "--simulate", "--device-id", "bus-mdwe",
         "--data-dir", str(data), "--mqtt-port", str(free_port()), "--http-port", "0",
         "--speedup", "20", "--duration-s", "3", "--log-level", "INFO"],
        cwd=ROOT, preexec_fn=_set_mdwe, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "thread crashed" not in r.stderr, r.stderr[-3000:]
    with sqlite3.connect(data / "queue.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] > 0
