"""What the tests of the project's systemd units share: reading a unit as systemd does, running
`systemd-analyze verify` and `security` on it, and the kernel's rule behind MemoryDenyWriteExecute=
(PR_SET_MDWE) to run a service under it without systemd."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                     if (p / "sysinit.target").exists()), None)
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed "
                                   "(deploy/setup.d/10-apt.sh installs Debian's systemd)")
needs_unit_dir = pytest.mark.skipif(SYSTEM_UNITS is None, reason="no systemd unit directory to verify against")


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


def analyze_verify(unit: Path, root: Path, name: str | None = None) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of `unit` (as `name`, e.g. a template's instance) in an alternate
    root holding the unit where it is installed, systemd's own units (for the targets it
    references) and an executable at its ExecStart path, so that verify checks all of it."""
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    exec_start = next(v for _, k, v in unit_entries(unit.read_text()) if k == "ExecStart")
    binary = root / exec_start.split()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return subprocess.run([ANALYZE, "verify", f"--root={root}", name or unit.name],
                          capture_output=True, text=True, timeout=60)


def security_exposure(unit: Path) -> tuple[float | None, subprocess.CompletedProcess]:
    """The overall exposure `systemd-analyze security --offline` gives the unit (None: no such
    line in its output), and the run itself."""
    r = subprocess.run([ANALYZE, "security", "--offline=true", "--threshold=30", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+\.service: (\d+\.\d)", r.stdout)
    return (float(m.group(1)) if m else None), r


def set_mdwe() -> None:
    """In a child before exec: the rule MemoryDenyWriteExecute= puts in force."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _mdwe_supported() -> bool:
    return sys.platform == "linux" and subprocess.run(
        [sys.executable, "-c", "pass"], preexec_fn=set_mdwe, capture_output=True).returncode == 0


needs_mdwe = pytest.mark.skipif(not _mdwe_supported(), reason="prctl(PR_SET_MDWE) needs Linux >= 6.3")
