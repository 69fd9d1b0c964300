#!/usr/bin/env bash
# System services the tests and the demo start on loopback (never as system daemons).
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# mosquitto_sub: the compose file's Mosquitto healthcheck, run by tests/test_compose.py.
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
# systemd-analyze checks deploy/edge/smartcity-edge.service (tests/test_systemd_unit.py); only the
# tool is used, nothing is started.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# Maven fetches the Java-side parts from Maven Central (35-spark-jars, 36-s3proxy, 60-trino).
command -v mvn >/dev/null 2>&1 || need+=(maven)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian may start a system-wide broker on 1883; the project runs its own on free ports.
$SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
