"""deploy/docker-compose.yml brought up for real with podman-compose, on images built here
(deploy/compose-local/override.yml): where no registry of images is reachable, and for the tests.

    python -m deploy.compose_local up --project smartcity-try --secrets DIR [SERVICE ...]
    python -m deploy.compose_local down --project smartcity-try --secrets DIR

podman 4.3 runs no healthcheck by itself without systemd, so `depends_on: condition:
service_healthy` is not enforced by podman-compose. `up` therefore starts the services one at a
time in dependency order (`up -d --no-deps SERVICE`) and, before starting a dependant, waits for
what it depends on: a one-shot job (service_completed_successfully) to exit 0, a service with a
healthcheck (its own or its image's) until `podman healthcheck run` says healthy. A check that never
passes fails the bring-up, with the service's log.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from deploy.images import BRIDGE_TAG, HOST_CA, LOCAL_BASE, build_bridge_image

REPO = Path(__file__).resolve().parents[1]
BASE_FILE = REPO / "deploy" / "docker-compose.yml"
OVERRIDE = REPO / "deploy" / "compose-local" / "override.yml"
MOSQUITTO_IMAGE = "localhost/smartcity-mosquitto:2.0.11"
KAFKA_IMAGE = "localhost/smartcity-kafka:4.1.1"
# The services the bridge path needs (Spark and S3 have no local image yet).
BRIDGE_PATH = ("mosquitto-init", "mosquitto", "kafka", "kafka-init", "bridge-1", "bridge-2")


class ComposeError(RuntimeError):
    pass


def _run(cmd: list[str], what: str, timeout: float = 600, env: dict | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ComposeError(f"{what}: no end after {timeout:g}s: {' '.join(cmd)}") from None
    if check and p.returncode != 0:
        raise ComposeError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{(p.stdout + p.stderr)[-3000:]}")
    return p


def _podman_build(dockerfile: Path, context: Path, tag: str) -> None:
    cmd = ["podman", "build", "-q", "--format", "docker", "--network", "host", "--build-arg",
           f"BASE_IMAGE={LOCAL_BASE}", "-f", str(dockerfile), "-t", tag]
    if HOST_CA.is_file():
        cmd += ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
    _run([*cmd, str(context)], f"building {tag}", timeout=900)


def build_images(bridge_tag: str = BRIDGE_TAG) -> None:
    """Mosquitto (Debian's package) and Kafka (the project's jars) on the local Debian base, and the
    bridge (deploy/images.py). podman's layer cache makes a second build quick."""
    here = REPO / "deploy" / "compose-local"
    _podman_build(here / "mosquitto.Dockerfile", here, MOSQUITTO_IMAGE)
    from deploy.local.kafka import libs_dir
    with tempfile.TemporaryDirectory(prefix="smartcity-kafka-image-") as tmp:
        shutil.copytree(libs_dir(), Path(tmp) / "libs")
        shutil.copy2(here / "kafka-entrypoint.sh", tmp)
        _podman_build(here / "kafka.Dockerfile", Path(tmp), KAFKA_IMAGE)
    build_bridge_image("podman", bridge_tag, base=LOCAL_BASE)


class Stack:
    """ports: the host ports (on 127.0.0.1) for MQTT over TLS, plain MQTT and Kafka."""

    def __init__(self, project: str, secrets_dir: Path, mqtt_tls_port: int = 8883, mqtt_port: int = 1883,
                 kafka_port: int = 9092, bridge_image: str = BRIDGE_TAG):
        self.project = project
        self.secrets_dir = Path(secrets_dir).resolve()
        self.kafka_port, self.mqtt_tls_port, self.mqtt_port = kafka_port, mqtt_tls_port, mqtt_port
        self.env = {**os.environ, "SECRETS_DIR": str(self.secrets_dir), "KAFKA_PORT": str(kafka_port),
                    "BRIDGE_IMAGE": bridge_image}
        self.base = yaml.safe_load(BASE_FILE.read_text())
        # podman-compose 1.6 neither interpolates inside !override nor mounts `configs:`: a third
        # file, written here, publishes on loopback and mounts the configs' contents as files.
        work = self.secrets_dir.parent / f"{project}-compose"
        work.mkdir(exist_ok=True)
        mounts = {"mosquitto-conf": "/mosquitto/config/mosquitto.conf", "mosquitto-acl": "/mosquitto/config/acl"}
        for name in mounts:
            (work / name).write_text(self.base["configs"][name]["content"].replace("$$", "$"))
        volumes = "".join(f"      - \"{work / n}:{target}:ro\"\n" for n, target in mounts.items())
        local = work / "local.yml"
        local.write_text(
            "# written by deploy/compose_local.py\n"
            "services:\n"
            f"  mosquitto:\n    ports: !override\n      - \"127.0.0.1:{mqtt_tls_port}:8883\"\n"
            f"      - \"127.0.0.1:{mqtt_port}:1883\"\n"
            f"    volumes:\n{volumes}"
            f"  kafka:\n    ports: !override\n      - \"127.0.0.1:{kafka_port}:9092\"\n")
        exe = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
        self.compose = [exe, "-p", project, "-f", str(BASE_FILE), "-f", str(OVERRIDE), "-f", str(local)]

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def _order(self, services: tuple[str, ...]) -> list[str]:
        out: list[str] = []

        def visit(s: str) -> None:
            if s in out:
                return
            for dep in (self.base["services"][s].get("depends_on") or {}):
                visit(dep)
            out.append(s)
        for s in services:
            visit(s)
        return out

    def logs(self, service: str) -> str:
        p = _run(["podman", "logs", self.container(service)], "logs", check=False)
        return (p.stdout + p.stderr)[-3000:]

    def wait_healthy(self, service: str, timeout_s: float = 120) -> float:
        t0 = time.monotonic()
        while True:
            p = _run(["podman", "healthcheck", "run", self.container(service)], "healthcheck", check=False)
            if p.returncode == 0:
                return time.monotonic() - t0
            state = _run(["podman", "inspect", "--format", "{{.State.Running}} {{.RestartCount}}",
                          self.container(service)], "inspect", check=False).stdout.split()
            if state and (state[0] != "true" or int(state[1]) > 2):
                raise ComposeError(f"{service} is not running (restarted {state[1:]} times):\n{self.logs(service)}")
            if time.monotonic() - t0 > timeout_s:
                raise ComposeError(f"{service} never turned healthy in {timeout_s:g}s "
                                   f"({(p.stdout + p.stderr).strip()}):\n{self.logs(service)}")
            time.sleep(1)

    def wait_completed(self, service: str, timeout_s: float = 120) -> None:
        p = _run(["podman", "wait", self.container(service)], f"waiting for {service}", timeout=timeout_s)
        if p.stdout.strip() != "0":
            raise ComposeError(f"{service} exited {p.stdout.strip()}:\n{self.logs(service)}")

    def start(self, service: str) -> None:
        _run([*self.compose, "up", "-d", "--no-deps", service], f"starting {service}", env=self.env)

    def up(self, services: tuple[str, ...] = BRIDGE_PATH, timeout_s: float = 120) -> dict[str, float]:
        """Start services (and what they depend on) in order, each waited for as its dependants
        say; the seconds each took to turn healthy."""
        took: dict[str, float] = {}
        for s in self._order(services):
            self.start(s)
            conditions = {c["condition"] for svc in self.base["services"].values()
                          for d, c in (svc.get("depends_on") or {}).items() if d == s}
            if "service_completed_successfully" in conditions:
                self.wait_completed(s, timeout_s)
            elif s.startswith("bridge-") or "healthcheck" in self.base["services"][s]:
                took[s] = self.wait_healthy(s, timeout_s)
        return took

    def down(self, volumes: bool = False) -> None:
        _run([*self.compose, "down", *(["-v"] if volumes else [])], "compose down", env=self.env,
             timeout=180, check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.compose_local", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "build"])
    p.add_argument("--project", default="smartcity-local")
    p.add_argument("--secrets", type=Path, help="folder with the secret files the compose file names")
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    try:
        if a.action == "build":
            build_images()
            return 0
        if a.secrets is None:
            p.error("--secrets DIR is needed")
        stack = Stack(a.project, a.secrets)
        if a.action == "up":
            build_images()
            print(stack.up(tuple(a.services) or BRIDGE_PATH))
            print(f"MQTT over TLS on 127.0.0.1:{stack.mqtt_tls_port}, Kafka on 127.0.0.1:{stack.kafka_port}")
        else:
            stack.down(volumes=True)
    except ComposeError as e:
        print(f"deploy.compose_local: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
