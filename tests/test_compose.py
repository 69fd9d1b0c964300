"""deploy/docker-compose.yml and bridge/Dockerfile, checked without Docker: the compose file must
validate against the Compose Specification schema, pin every image, health-check every
long-running service and keep secrets out of the file."""
from __future__ import annotations

import json
import re
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


def test_no_secret_is_written_in_the_compose_file():
    text = COMPOSE_PATH.read_text()
    found = 0
    for m in re.finditer(r"^\s*([A-Z_]*(?:PASSWORD|SECRET|ACCESS_KEY)[A-Z_]*):\s*(\S+)", text, re.M):
        found += 1
        assert m.group(2).startswith("${"), f"literal secret for {m.group(1)}"
    for m in re.finditer(r'"(accessKey|secretKey)":\s*"([^"]*)"', text):
        found += 1
        assert m.group(2).startswith("${"), f"literal secret for {m.group(1)}"
    assert found >= 5


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
