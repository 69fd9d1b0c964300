"""The installed wheel works outside the checkout (issue 10): what a Pi or a bridge host gets from
`pip install 'smartcity[edge]'` / `'smartcity[bridge]'`, run from a folder that is not the checkout.

The wheel is built from a copy of the checkout; each extra goes into its own fresh venv under a
temporary folder, and every command runs there with the checkout off sys.path (no PYTHONPATH, cwd
elsewhere). The dependencies come from the package index pip is configured with (PyPI here):
`pip download` asks the index every run and keeps the files in .cache/pip/wheelhouse (git-ignored;
pip's own HTTP cache stores nothing here, the index's files come without caching headers), so a
second run downloads nothing; the venvs then install from that folder only (--no-index). No
index, no test: it fails and says so, it does not skip.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from smartcity.contracts.acks import ack_topic
from smartcity.contracts.envelope import mqtt_topic

REPO = Path(__file__).resolve().parents[1]
PIP_CACHE = REPO / ".cache" / "pip"
WHEELHOUSE = PIP_CACHE / "wheelhouse"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SERVICES = ("contracts", "runtime", "sim", "edge", "bridge", "spark_jobs")
NOT_INSTALLED = ("bench", "deploy", "tests")
# Everything the checkout has that a build must not see (or that is just big and irrelevant).
IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "run", "lake", "build", "dist", "*.egg-info",
                                "__pycache__", ".pytest_cache")


def clean_env() -> dict[str, str]:
    """The environment without anything that would point Python at the checkout or a venv."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SMARTCITY_")}


def pip(args: list[str], what: str, cwd: Path, python: str = sys.executable, index: bool = False) -> None:
    cmd = [python, "-m", "pip", *args, "--cache-dir", str(PIP_CACHE), "--disable-pip-version-check"]
    p = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        why = ""
        if index:
            url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple (pip's default)")
            why = f" This test installs from the package index ({url}) and needs it reachable; it does not skip."
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-25:])
        pytest.fail(f"{what} failed (pip exit {p.returncode}).{why}\n{tail}", pytrace=False)


def download(requirements: list[str], what: str, cwd: Path) -> None:
    """Into the wheelhouse, from the index (asked every time; files already there are kept)."""
    pip(["download", "--dest", str(WHEELHOUSE), *requirements], f"downloading {what} from the index", cwd,
        index=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=IGNORE, symlinks=True)
    download(PYPROJECT["build-system"]["requires"], "the build requirements", root)
    pip(["wheel", "--no-deps", "--no-index", "--find-links", str(WHEELHOUSE), "-w", str(root / "dist"),
         str(src)], "building the wheel", root)
    [whl] = (root / "dist").glob("smartcity-*.whl")
    return whl


def fresh_venv(root: Path, wheel: Path, extra: str) -> Path:
    """A new venv under root (not the checkout) with the wheel and one extra; its bin folder."""
    venv = root / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=clean_env(), check=True,
                   capture_output=True, timeout=300)
    project = PYPROJECT["project"]
    download([*project["dependencies"], *project["optional-dependencies"][extra]],
             f"the {extra!r} extra's requirements", root)
    pip(["install", "--no-index", "--find-links", str(WHEELHOUSE), f"{wheel}[{extra}]"],
        f"installing smartcity[{extra}] into a fresh venv", root, python=str(venv / "bin" / "python"))
    return venv / "bin"


def run(cmd: list, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


LAYOUT = """
import importlib.util, json, os, sys, sysconfig
sp = sysconfig.get_paths()["purelib"]
def origin(name):
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    return spec and (spec.origin or list(spec.submodule_search_locations or []))
print(json.dumps({"site_packages": sp, "top": sorted(os.listdir(sp)),
                  "smartcity": sorted(os.listdir(os.path.join(sp, "smartcity"))),
                  "origins": {n: origin(n) for n in sys.argv[1:]}, "sys_path": sys.path}))
"""


def check_layout(bin_dir: Path, cwd: Path) -> dict:
    """The wheel's code is the services and their ground under smartcity/, nothing of the top."""
    names = [f"smartcity.{s}" for s in SERVICES] + ["smartcity.bridge.service", "smartcity.spark_jobs.lake",
                                                    "smartcity.edge.agent", *NOT_INSTALLED]
    p = run([bin_dir / "python", "-c", LAYOUT, *names], cwd)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    sp = got["site_packages"]
    assert not any(str(REPO) in entry for entry in got["sys_path"]), got["sys_path"]
    assert set(SERVICES) <= set(got["smartcity"]), got["smartcity"]
    assert not set(got["smartcity"]) & set(NOT_INSTALLED)
    assert not set(got["top"]) & set(SERVICES + NOT_INSTALLED), "no bare top-level package names"
    for name in names:
        where = got["origins"][name]
        if name in NOT_INSTALLED:
            assert where is None, f"{name} importable from {where}"
        else:
            assert where and sp in str(where), f"{name}: {where}"
    return got


# the agent: smartcity[edge] ----------------------------------------------------------------------

def test_the_edge_extra_runs_the_agent_from_a_fresh_venv(wheel, tmp_path, mosquitto, subscriber_factory):
    bin_dir = fresh_venv(tmp_path, wheel, "edge")
    work = tmp_path / "elsewhere"
    work.mkdir()
    h = run([bin_dir / "smartcity-edge", "--help"], work)
    assert h.returncode == 0 and "--simulate" in h.stdout, h.stderr
    check_layout(bin_dir, work)

    device = f"wheel-{uuid.uuid4().hex[:6]}"
    sub = subscriber_factory(mosquitto.port, topic=f"smartcity/v1/{device}/#", acks=False)
    p = run([bin_dir / "smartcity-edge", "--simulate", "--duration-s", "5", "--mqtt-delivery", "broker",
             "--mqtt-port", mosquitto.port, "--device-id", device, "--data-dir", work / "edge",
             "--http-port", "0"], work, timeout=90)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    readings = [json.loads(b) for b in sub.payloads(lambda t: not t.endswith("/status"))]
    assert readings, f"no reading reached the broker; agent stderr:\n{p.stderr[-3000:]}"
    assert {r["device_id"] for r in readings} == {device}
    assert "gps" in {m.topic.rsplit("/", 1)[1] for m in sub.messages}, "the simulated GPS at the wire"


# the bridge: smartcity[bridge] -------------------------------------------------------------------

def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def subscribed(port: int) -> bool:
    try:
        _, body = http_get(port, "/metrics")
    except OSError:
        return False
    return any(line.split() == ["bridge_mqtt_subscribed", "1.0"] for line in body.splitlines())


def test_the_bridge_extra_runs_the_bridge_from_a_fresh_venv(wheel, tmp_path, mosquitto, subscriber_factory):
    from tests.support.harness import free_port, record, shared_kafka
    kafka = shared_kafka()
    bin_dir = fresh_venv(tmp_path, wheel, "bridge")
    work = tmp_path / "elsewhere"
    work.mkdir()
    h = run([bin_dir / "smartcity-bridge", "--help"], work)
    assert h.returncode == 0 and "--kafka-bootstrap" in h.stdout, h.stderr
    check_layout(bin_dir, work)

    http_port, run_id = free_port(), uuid.uuid4().hex[:6]
    log_path = work / "bridge.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "smartcity-bridge"), "--bridge-id", f"wheel-{run_id}", "--group", f"wheel-{run_id}",
             "--mqtt-port", str(mosquitto.port), "--kafka-bootstrap", kafka.bootstrap,
             "--http-port", str(http_port), "--log-level", "INFO"],
            cwd=work, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not subscribed(http_port):
            assert proc.poll() is None, f"the bridge exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no subscription in 30 s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        status, body = http_get(http_port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", body
        # One reading through it: the end-to-end ack comes only once Kafka has it.
        device = f"wheel-{run_id}"
        acks = subscriber_factory(mosquitto.port, topic=ack_topic(device), acks=False)
        pub = subscriber_factory(mosquitto.port, topic=f"smartcity/none/{run_id}", acks=False)
        pub.client.publish(mqtt_topic(device, "gps"), json.dumps(record("gps", device, "0badcafe", 1)),
                           qos=1).wait_for_publish(10)
        assert acks.wait_for(lambda msgs: bool(msgs), 30), log_path.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(10)
    out = log_path.read_text()
    assert rc == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def test_an_unreachable_index_fails_with_a_clear_message_not_a_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")   # nothing listens on port 9
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(pytest.fail.Exception, match=r"127\.0\.0\.1:9/simple\) and needs it reachable"):
        download(["pynmea2==1.19.0"], "one requirement", tmp_path)
