"""deploy/docker-compose.yml and bridge/Dockerfile as text: the compose file must validate against
the Compose Specification schema, pin every image, health-check every long-running service, publish
nothing beyond the host but the MQTT TLS listener and take its secrets from files. Mosquitto's part
(the password init and the healthcheck, with the file's own ACL) runs against Debian's Mosquitto.
The bridge image is built and run for real in tests/test_containers.py."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "tests/data/compose-spec.json").read_text())
COMPOSE_PATH = REPO / "deploy/docker-compose.yml"
DOCKERFILE = (REPO / "bridge/Dockerfile").read_text()
ONE_SHOT = {"mosquitto-init", "kafka-init"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_PATH.read_text())


def validator():
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA)


def test_compose_file_is_valid_against_the_compose_specification(compose):
    errors = sorted(validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_check_does_catch_mistakes(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "10s"
    assert list(validator().iter_errors(broken))


def test_every_service_of_the_issue_is_there(compose):
    assert {"mosquitto", "kafka", "bridge-1", "bridge-2", "spark-master", "spark-worker", "s3"} <= \
        set(compose["services"])
    # No PostgreSQL: nothing used it; the warehouse (issue 13) loads into one the local stack starts.
    assert not any("postgres" in svc["image"] for svc in compose["services"].values())


def test_every_image_is_pinned_to_a_version(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert re.match(r"^\d+\.\d+", tag), f"{name}: image {image!r} is not pinned to a version"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", DOCKERFILE, re.M).group(1)   # the default base
    assert re.match(r"^python:3\.11\.\d+-slim", base), base


def test_long_running_services_have_health_checks_and_dependents_wait_for_them(compose):
    services = compose["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            continue
        has_own = "healthcheck" in svc and not svc["healthcheck"].get("disable")
        from_image = name.startswith("bridge-") and "HEALTHCHECK" in DOCKERFILE
        assert has_own or from_image, f"{name} has no health check"
        test = svc.get("healthcheck", {}).get("test", ["CMD"])
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must be CMD/CMD-SHELL"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no health check"
            if cond["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT


SECRET_WORDS = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", re.I)


def test_secrets_are_compose_secret_files_never_environment_or_command_lines(compose):
    text = COMPOSE_PATH.read_text()
    assert not re.search(r"\$\{[^}]*(PASSWORD|SECRET|ACCESS_KEY)", text), "a secret interpolated into the file"
    assert "mosquitto_passwd -b" not in text, "a password in mosquitto_passwd's command line"
    assert not any(re.search(r"accessKey|secretKey", c.get("content", "")) for c in compose["configs"].values())
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_WORDS.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {key}"
        for s in svc.get("secrets", []):
            assert s in compose["secrets"], f"{name}: unknown secret {s}"
    assert compose["secrets"], "no secrets section"
    for name, spec in compose["secrets"].items():
        assert set(spec) == {"file"} and spec["file"].startswith("./secrets/"), name
    bridge_env = compose["services"]["bridge-1"]["environment"]
    assert bridge_env["SMARTCITY_BRIDGE_MQTT__PASSWORD_FILE"] == "/run/secrets/mqtt_bridge_password"


def published(svc: dict) -> list[tuple[str, str]]:
    """(host ip, container port) of each published port; short syntax; "" = every interface."""
    out = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p["target"])))
            continue
        parts = str(p).split(":")
        assert len(parts) in (2, 3), f"port {p!r}: give HOST:CONTAINER or IP:HOST:CONTAINER"
        out.append((parts[0] if len(parts) == 3 else "", parts[-1]))
    return out


def test_nothing_but_the_mqtt_tls_listener_is_published_beyond_the_host(compose):
    """Kafka has no authentication, the Spark master runs what it is sent: loopback only."""
    open_to_all = [(name, port) for name, svc in compose["services"].items()
                   for ip, port in published(svc) if ip not in ("127.0.0.1", "::1")]
    assert open_to_all == [("mosquitto", "8883")]
    conf = compose["configs"]["mosquitto-conf"]["content"]
    tls = conf[conf.index("listener 8883"):]
    for line in ("require_certificate true", "use_identity_as_username true", "cafile /run/secrets/"):
        assert line in tls, line
    assert "listener 1883" in conf


def _compose_text(value: str) -> str:
    return value.replace("$$", "$")      # compose's escape for a literal $


def test_mosquitto_init_and_healthcheck_pass_on_a_real_mosquitto_with_the_files_acl(compose, tmp_path):
    """The password init (from secret files) and the healthcheck, run by sh against Debian's
    Mosquitto with the compose file's own ACL: the `health` user reads $SYS/broker/uptime, so the
    check passes; as the bridge user (what the file did before) it never could."""
    from deploy.local.mosquitto import MosquittoServer
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "mqtt_bridge_password").write_text("bridge-pw\n")
    (secrets / "mqtt_health_password").write_text("health-pw\n")
    auth = tmp_path / "auth"
    auth.mkdir()
    init = compose["services"]["mosquitto-init"]
    assert init["entrypoint"] == ["/bin/sh", "-c"]
    script = _compose_text(init["command"][0]).replace("/run/secrets/", f"{secrets}/") \
        .replace("/mosquitto/auth/", f"{auth}/").replace("mosquitto_passwd ", f"{shutil.which('mosquitto_passwd') or '/usr/bin/mosquitto_passwd'} ")
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    hashed = (auth / "passwords").read_text()
    assert "bridge-pw" not in hashed and hashed.startswith("bridge:$7$"), hashed
    assert oct((auth / "passwords").stat().st_mode & 0o777) == "0o600"

    srv = MosquittoServer(tmp_path / "mqtt", passwords={}, acl=_compose_text(compose["configs"]["mosquitto-acl"]["content"]))
    write = srv._write_files

    def write_with_the_init_output():
        write()
        shutil.copy(auth / "passwords", srv.data_dir / "passwords")
    srv._write_files = write_with_the_init_output
    with srv:
        kind, check = compose["services"]["mosquitto"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        check = _compose_text(check).replace("/run/secrets/", f"{secrets}/").replace("-p 1883", f"-p {srv.port}")
        assert f"-p {srv.port}" in check
        ok = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, f"the healthcheck fails: {ok.stderr}\n{srv.log_tail()}"
        as_bridge = check.replace("-u health", "-u bridge").replace("mqtt_health_password", "mqtt_bridge_password")
        bad = subprocess.run(["sh", "-c", as_bridge.replace("-W 5", "-W 2")], capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0, "the bridge user may read $SYS: the ACL is wider than it should be"


def test_broker_in_compose_keeps_the_same_no_drop_queue_policy_as_the_local_stack(compose):
    conf = compose["configs"]["mosquitto-conf"]["content"]
    assert "max_queued_messages 0" in conf and "persistence true" in conf
    assert "allow_anonymous false" in conf
    from deploy.local.mosquitto import MAX_PACKET_BYTES
    assert f"max_packet_size {MAX_PACKET_BYTES}\n" in conf
    acl = compose["configs"]["mosquitto-acl"]["content"]
    assert "pattern write smartcity/v1/%u/#" in acl


def test_bridge_image_runs_as_non_root_and_installs_the_projects_wheel_with_the_bridge_extra():
    """The image is built and run for real in tests/test_containers.py; this is the text's part."""
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in ("root", "0")
    # The pins live in pyproject's `bridge` extra only: the image installs the wheel with it, and
    # the wheel (built by deploy/images.py) is all it copies: no source folder.
    assert re.findall(r"^COPY\s+(.+)$", DOCKERFILE, re.M) == ["smartcity-*.whl /tmp/dist/"]
    assert "smartcity-*.whl)[bridge]" in DOCKERFILE
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", DOCKERFILE, re.M)


def test_each_bridge_replica_has_its_own_fixed_id(compose):
    """The id names the replica's persistent MQTT session (issue 9: a bridge back under another id
    strands its share of the shared subscription)."""
    bridges = {n: svc for n, svc in compose["services"].items() if n.startswith("bridge")}
    assert len(bridges) >= 2
    ids = [svc["environment"]["SMARTCITY_BRIDGE_BRIDGE_ID"] for svc in bridges.values()]
    assert sorted(ids) == sorted(bridges) and len(set(ids)) == len(ids)
    for name, svc in bridges.items():
        assert svc.get("deploy", {}).get("replicas", 1) == 1, f"{name}: replicas would share one id"
        assert svc["environment"]["SMARTCITY_BRIDGE_MQTT__HOST"] == "mosquitto"
    acl = compose["configs"]["mosquitto-acl"]["content"]
    assert "topic readwrite smartcity/bridge/v1/#" in acl      # presence (Mosquitto disconnects on a denied publish)
