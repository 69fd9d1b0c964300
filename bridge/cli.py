"""smartcity-bridge: forward MQTT (shared subscription) to Kafka, losslessly.

    smartcity-bridge --config /etc/smartcity/bridge.toml
    smartcity-bridge --bridge-id bridge-1 --mqtt-port 1883 --kafka-bootstrap 127.0.0.1:9092
    smartcity-bridge --bridge-id bridge-2 --retire     # a member gone for good: drain, end its session

bridge_id names the bridge's persistent MQTT session: one fixed id per replica. Without one the
host name is used where it is stable; elsewhere (a container's generated name, a Deployment's pod)
the bridge refuses to start (exit 2).

Settings: defaults < TOML (--config or $SMARTCITY_BRIDGE_CONFIG) < SMARTCITY_BRIDGE_* environment
(e.g. SMARTCITY_BRIDGE_MQTT__PASSWORD, SMARTCITY_BRIDGE_KAFKA__SASL_PASSWORD) < flags.
Exit codes: 0 drained cleanly, 1 drain timed out (unacknowledged messages stay with the broker),
2 bad settings, 3 fatal Kafka producer error, 4 the I/O loop failed (a bug: logged with its
traceback; nothing unacknowledged is lost, the broker redelivers it after a restart).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from smartcity.runtime.cli import ArgumentParser, cli, report
from smartcity.runtime.obs import configure_logging
from smartcity.runtime.settings import load, redacted

from .config import ENV_PREFIX, BridgeSettings
from .service import Bridge, install_signal_handlers

log = logging.getLogger("bridge")
PROG = "smartcity-bridge"


def parse_args(argv: list[str] | None) -> tuple[str | None, dict[str, Any]]:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.environ.get(ENV_PREFIX + "CONFIG"), help="TOML settings file")
    p.add_argument("--bridge-id", help="one fixed id per replica (default: the host name, if stable)")
    p.add_argument("--retire", action="store_true", default=None,
                   help="take what the broker queued for this id into Kafka, then end its session")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-username")
    p.add_argument("--mqtt-password-file")
    p.add_argument("--mqtt-tls", action="store_true", default=None, help="TLS to the broker")
    p.add_argument("--mqtt-ca-file", help="CA that signed the broker's certificate (default: system CAs)")
    p.add_argument("--mqtt-cert-file", help="client certificate (a broker with use_identity_as_username "
                                            "takes its CN as the username)")
    p.add_argument("--mqtt-key-file", help="the client certificate's private key")
    p.add_argument("--group", help="shared subscription group")
    p.add_argument("--max-inflight", type=int)
    p.add_argument("--kafka-bootstrap")
    p.add_argument("--dlq-topic")
    p.add_argument("--route", action="append", dest="routes",
                   help="'PATTERN -> TOPIC [-> KEY]' (repeatable; replaces the default route)")
    p.add_argument("--max-payload-bytes", type=int)
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int, help="0 = any free port, -1 = none")
    p.add_argument("--idle-degraded-s", type=float)
    p.add_argument("--drain-timeout-s", type=float)
    p.add_argument("--log-level")
    p.add_argument("--log-text", action="store_true", default=None, help="key=value logs, not JSON")
    a = p.parse_args(argv)
    overrides = {
        "bridge_id": a.bridge_id, "retire": a.retire, "routes": a.routes, "max_payload_bytes": a.max_payload_bytes,
        "http_host": a.http_host, "http_port": a.http_port, "idle_degraded_s": a.idle_degraded_s,
        "drain_timeout_s": a.drain_timeout_s, "log_level": a.log_level,
        "log_json": (False if a.log_text else None),
        "mqtt.host": a.mqtt_host, "mqtt.port": a.mqtt_port, "mqtt.username": a.mqtt_username,
        "mqtt.password_file": a.mqtt_password_file, "mqtt.group": a.group,
        "mqtt.tls": a.mqtt_tls, "mqtt.ca_file": a.mqtt_ca_file, "mqtt.cert_file": a.mqtt_cert_file,
        "mqtt.key_file": a.mqtt_key_file,
        "mqtt.max_inflight": a.max_inflight,
        "kafka.bootstrap_servers": a.kafka_bootstrap, "kafka.dlq_topic": a.dlq_topic,
    }
    return a.config, overrides


@cli(PROG)
def main(argv: list[str] | None = None) -> int:
    config, overrides = parse_args(argv)
    try:
        settings = load(BridgeSettings, config, ENV_PREFIX, overrides)
    except ValueError as e:  # a SettingsError, or a check of the settings' own
        return report(PROG, e)
    configure_logging(settings.log_level, json=settings.log_json)
    log.info("settings", extra={"settings": redacted(settings)})
    try:
        bridge = Bridge(settings)
        install_signal_handlers(bridge)
        bridge.start()
    except (ValueError, OSError) as e:
        return report(PROG, e)
    if bridge.http_port is not None:
        log.info("http", extra={"port": bridge.http_port})
    return bridge.run()


if __name__ == "__main__":
    sys.exit(main())
