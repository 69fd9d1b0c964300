"""smartcity.runtime: what every service uses and nothing service-specific.

Typed settings (defaults < TOML < environment < flags, secrets redacted), structured logging and
rate-limited error lines, the /metrics + /healthz HTTP endpoint, and systemd's sd_notify. The ground
floor beside smartcity.contracts: it imports no service.
"""
