"""The MQTT connection settings every service shares, and how they go onto a paho client.

Each service subclasses MqttConnection for what only it has (the agent's device id and in-flight
window, the bridge's shared-subscription group and receive maximum) and may give a field another
default; the settings loader (runtime.settings) reads inherited fields like its own, so the TOML
keys and environment names stay `[mqtt] host`, SMARTCITY_EDGE_MQTT__PASSWORD_FILE, ...

Nothing here imports paho: apply_auth_tls only calls the client's methods, so the module costs
nothing where paho is not installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import read_secret


@dataclass
class MqttConnection:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None          # default: the service's own (smartcity-edge-{device_id}, ...)
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None     # read at each connect (a rotated secret is picked up)
    tls: bool = False
    ca_file: Path | None = None           # none: the system's CA store
    cert_file: Path | None = None         # client certificate (its CN can be the broker user)
    key_file: Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400     # the broker keeps our session this long while we are away
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0

    def __post_init__(self):
        # Certificate files without tls would be ignored: a plain connection the operator did not mean.
        given = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n) is not None]
        if given and not self.tls:
            raise ValueError(f"tls is false but {', '.join(given)} set: set tls = true or remove them")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file set without cert_file")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")

    def password_value(self) -> str | None:
        """The password: from password_file when one is named (read now), else `password`."""
        return read_secret(self.password_file, self.password, "mqtt.password_file")


def apply_auth_tls(client: Any, s: MqttConnection) -> Any:
    """Username/password and TLS of `s` onto a paho client, before it connects."""
    if s.username:
        client.username_pw_set(s.username, s.password_value())
    if s.tls:
        client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                       certfile=str(s.cert_file) if s.cert_file else None,
                       keyfile=str(s.key_file) if s.key_file else None)
    return client
