"""smartcity.runtime: what every service uses and nothing service-specific.

Typed settings (defaults < TOML < environment < flags, secrets redacted), structured logging and
rate-limited error lines, the /metrics + /healthz HTTP endpoint, systemd's sd_notify, and the MQTT
connection settings the agent and the bridge share (mqtt.py). The ground
floor beside smartcity.contracts: it imports no service.
"""
