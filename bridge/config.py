"""Bridge settings: defaults < TOML file < SMARTCITY_BRIDGE_* environment < command-line flags.

Secrets (MQTT password, Kafka SASL password) come from the environment or from files named in the
settings (`password_file`, `sasl_password_file`), never from code; they are redacted in logs.

Example TOML:

    bridge_id = "bridge-a"
    routes = ["smartcity/v1/{device_id}/status -> device_status -> {device_id}",
              "smartcity/v1/{device_id}/{stream} -> {stream}_data -> {device_id}"]
    [mqtt]
    host = "broker.internal"
    port = 8883
    tls = true
    ca_file = "/etc/smartcity/ca.pem"
    username = "bridge"
    password_file = "/run/secrets/mqtt_password"
    [kafka]
    bootstrap_servers = "kafka-1:9093"
    security_protocol = "SASL_SSL"
    sasl_mechanism = "SCRAM-SHA-512"
    sasl_username = "bridge"
    sasl_password_file = "/run/secrets/kafka_password"
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from smartcity.runtime.mqtt import MqttConnection
from smartcity.runtime.settings import read_secret

from .core import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_RAW_TOPICS, DEFAULT_ROUTES, Router

ENV_PREFIX = "SMARTCITY_BRIDGE_"


@dataclass
class MqttSettings(MqttConnection):
    """The shared connection settings (host, port, credentials, TLS, keepalive, session expiry,
    reconnect backoff: runtime.mqtt) and the bridge's own. client_id defaults to
    smartcity-bridge-{bridge_id}; the bridge reconnects sooner than an agent (0.2-10 s)."""
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    group: str = "smartcity-bridge"        # shared-subscription group: bridges in it split the load
    shared: bool = True
    # MQTT v5 receive maximum: the broker sends at most this many unacknowledged QoS 1 messages.
    # We acknowledge only after Kafka confirms, so this is also the bound on in-flight messages
    # while Kafka is down; the rest waits in the broker's queue for our session.
    max_inflight: int = 2000
    # Retained presence of each group member on smartcity/bridge/v1/{group}/{bridge_id} (a will says
    # "offline" when it dies): how a bridge knows which members are away while the broker queues
    # their share. The broker's ACL must let the bridge user readwrite smartcity/bridge/# (Mosquitto
    # disconnects a client that publishes where it may not).
    presence: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.max_inflight <= 65535:
            raise ValueError(f"max_inflight must be 1..65535, got {self.max_inflight}")


@dataclass
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"    # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None       # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = None
    sasl_password_file: Path | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    dlq_topic: str = "smartcity_dlq"
    linger_ms: int = 50                     # bigger batches: ~12% less CPU per message than 5 ms
    compression: str = "lz4"
    # Extra librdkafka properties, "name=value" each (not for secrets: use the fields above).
    extra: list[str] = field(default_factory=list)


_BRIDGE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def stable_bridge_id(hostname: str | None = None, environ: Mapping[str, str] | None = None,
                     in_container: bool | None = None) -> str:
    """The default bridge_id: the host name, when it is one that survives a restart.

    The id names the MQTT session (client id smartcity-bridge-{bridge_id}), and the broker keeps
    queueing a shared-group member's share for that session while it is away: a bridge that comes
    back under another id strands it. So no pid, and no name a container runtime or Kubernetes
    generates per container/pod; where only such a name exists, refuse (ValueError) and ask for one.
    """
    env = os.environ if environ is None else environ
    h = (socket.gethostname() if hostname is None else hostname).strip()
    if in_container is None:
        in_container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    why = None
    if not h or h.lower() in ("localhost", "localhost.localdomain", "(none)"):
        why = f"the host name {h!r} is not a name of this machine"
    elif in_container and re.fullmatch(r"[0-9a-f]{12}", h):
        why = f"the host name {h!r} is a container id, new each time the container is recreated"
    elif env.get("KUBERNETES_SERVICE_HOST") and not re.fullmatch(r".+-\d+", h):
        why = (f"the pod name {h!r} is not a StatefulSet's (name-<ordinal>): a Deployment or DaemonSet "
               "names each new pod anew")
    elif not _BRIDGE_ID_RE.fullmatch(h):
        why = f"the host name {h!r} is not usable as an id (letters, digits, '.', '_', '-'; 64 at most)"
    if why:
        raise ValueError(
            f"bridge_id: no stable default: {why}. The id names the bridge's MQTT session; a bridge "
            "that restarts under another id leaves its share of the shared subscription stranded "
            "in the old session. Set one fixed id per replica: --bridge-id, SMARTCITY_BRIDGE_BRIDGE_ID "
            "or bridge_id in the TOML file")
    return h


@dataclass
class BridgeSettings:
    # One fixed id per replica (names the MQTT session). Empty: the host name, if stable (see
    # stable_bridge_id); the process refuses to start when there is none.
    bridge_id: str = ""
    # First match wins: 'PATTERN -> TOPIC [-> KEY]' with {name} segments.
    routes: list[str] = field(default_factory=lambda: list(DEFAULT_ROUTES))
    raw_topics: list[str] = field(default_factory=lambda: list(DEFAULT_RAW_TOPICS))
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    dlq_max_bytes: int = 900_000            # DLQ copies of huge payloads are cut here (Kafka's 1 MB)
    # MQTT v5 user properties become Kafka headers (mqtt.up.<name>): bounded, or one message with
    # a huge property would exceed Kafka's record size. Past either bound the message goes to the
    # DLQ (reason headers_too_large) without its user properties.
    max_user_properties: int = 16
    max_user_property_bytes: int = 4096     # names + values, UTF-8, all properties of a message
    validate_contracts: bool = True
    check_device_id: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 9108                   # 0 = any free port; -1 = no HTTP server
    idle_degraded_s: float = 300.0          # /healthz degraded when nothing arrived this long (0: never)
    drain_timeout_s: float = 30.0
    # Tell each device which of its readings Kafka confirmed (contracts.acks) so it deletes them
    # only then; the broker's ACL must let the bridge write smartcity/ack/v1/#.
    end_to_end_acks: bool = True
    ack_flush_s: float = 0.2
    log_level: str = "WARNING"
    log_json: bool = True
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    # Retire this bridge_id for good (scale-down, a renamed or lost host): take what the broker
    # queued for its session into Kafka without subscribing, then end the session and clear its
    # presence; exits 0 once nothing arrived for retire_idle_s.
    retire: bool = False
    retire_idle_s: float = 3.0

    def __post_init__(self):
        if not self.bridge_id:
            self.bridge_id = stable_bridge_id()
        elif not _BRIDGE_ID_RE.fullmatch(self.bridge_id):
            raise ValueError(f"bridge_id {self.bridge_id!r}: letters, digits, '.', '_', '-' only "
                             "(64 at most): it is an MQTT client id and a topic level")
        Router(self.routes, raw_topics=self.raw_topics)  # fail at load time, with the route named, not on the first message
        if self.max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be > 0")
        if self.max_user_properties < 0 or self.max_user_property_bytes < 0:
            raise ValueError("max_user_properties and max_user_property_bytes must be >= 0")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"smartcity-bridge-{self.bridge_id}"


def kafka_config(s: KafkaSettings) -> dict[str, Any]:
    """librdkafka producer configuration. Lossless settings are not overridable by `extra`."""
    conf: dict[str, Any] = {
        "bootstrap.servers": s.bootstrap_servers,
        "security.protocol": s.security_protocol,
        "linger.ms": s.linger_ms,
        "compression.type": s.compression,
        "client.id": "smartcity-bridge",
    }
    if s.sasl_mechanism:
        conf["sasl.mechanism"] = s.sasl_mechanism
    if s.sasl_username:
        conf["sasl.username"] = s.sasl_username
    pw = read_secret(s.sasl_password_file, s.sasl_password, "kafka.sasl_password_file")
    if pw:
        conf["sasl.password"] = pw
    for key, p in (("ssl.ca.location", s.ssl_ca_file), ("ssl.certificate.location", s.ssl_cert_file),
                   ("ssl.key.location", s.ssl_key_file)):
        if p:
            conf[key] = str(p)
    for item in s.extra:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"kafka.extra: {item!r} is not name=value")
        conf[k.strip()] = v.strip()
    conf.update({
        "acks": "all",
        "enable.idempotence": True,       # retries cannot reorder or duplicate within a session
        # Never give up on a message: while Kafka is down it waits in the producer (bounded by the
        # MQTT receive maximum) and is not acknowledged to the broker.
        "message.timeout.ms": 0,
    })
    return conf
