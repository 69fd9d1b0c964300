"""The bridge's MQTT client tests on the newest paho-mqtt release on PyPI (issue 10).

paho-mqtt is pinned exactly because bridge/mqtt_client.py's fast receive path overrides private
parts of it. A new release must not break the bridge: on any release other than the one the fast
path was written for, new_client() falls back to paho's own receive path. This installs the
newest release (pip picks it: no version named here) into .cache/paho-newest/ beside the project's
venv, which supplies everything else (pytest, the project itself, Kafka's client) — the directory
comes first on PYTHONPATH, so its paho shadows the pinned one — and runs
tests/test_bridge_mqtt_client.py there: on that release the client tests run on the path(s) it
gets, and one test checks which path new_client() chose and that it said why.

No skip: if PyPI cannot be reached the install fails and so does this test. ~40 s.
SMARTCITY_PAHO_SPEC=paho-mqtt==2.1.0 runs the same on another release (the fallback on a real paho).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_bridge_client_tests_pass_on_the_newest_paho_release():
    target = Path(os.environ.get("SMARTCITY_CACHE", ROOT / ".cache")) / "paho-newest"
    shutil.rmtree(target, ignore_errors=True)          # the newest release, not last run's
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          "--no-deps", "--target", str(target),
                          os.environ.get("SMARTCITY_PAHO_SPEC", "paho-mqtt")],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, f"pip could not install the newest paho-mqtt (PyPI unreachable?):\n" \
                                f"{pip.stdout}{pip.stderr}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run(
        [sys.executable, "-c", "import json, paho.mqtt; from smartcity.bridge import mqtt_client as m; "
                               "print(json.dumps({'file': paho.mqtt.__file__, 'version': m.paho_version(), "
                               "'problem': m.fast_path_problem()}))"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["file"]).is_relative_to(target), f"the pinned paho was imported: {found['file']}"
    print(f"paho-mqtt from PyPI: {found['version']}; fast receive path: "
          f"{'yes' if found['problem'] is None else 'no, ' + found['problem']}")

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_bridge_mqtt_client.py"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, f"paho-mqtt {found['version']}:\n{tail}\n{run.stderr[-3000:]}"
    assert " skipped" not in tail, tail
    print(tail.splitlines()[-1])
