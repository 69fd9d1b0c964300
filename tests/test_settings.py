"""Settings: defaults < TOML < environment < overrides, typed, with errors that name the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smartcity.edge.publisher import MqttSettings
from smartcity.runtime.settings import SettingsError, load, redacted


@dataclass
class Mqtt:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = None
    password: str | None = None
    api_key: str = ""


@dataclass
class Queue:
    max_age_s: float = 86400.0
    streams: list[str] = field(default_factory=lambda: ["gps", "vehicle"])


@dataclass
class AppSettings:
    device_id: str = "edge-0001"
    log_level: str = "WARNING"
    mqtt: Mqtt = field(default_factory=Mqtt)
    queue: Queue = field(default_factory=Queue)


def write_toml(tmp_path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def test_defaults_when_nothing_is_given():
    s = load(AppSettings, None, "SMARTCITY_", {}, environ={})
    assert s == AppSettings()


def test_precedence_defaults_then_toml_then_env_then_overrides(tmp_path):
    toml = write_toml(tmp_path, """
        device_id = "from-toml"
        log_level = "INFO"
        [mqtt]
        host = "toml-host"
        port = 1884
        tls = true
    """)
    env = {"SMARTCITY_MQTT__PORT": "1885", "SMARTCITY_LOG_LEVEL": "DEBUG",
           "SMARTCITY_MQTT__CA_FILE": "/etc/ca.pem", "SMARTCITY_CACHE": "/unrelated"}
    s = load(AppSettings, toml, "SMARTCITY_", {"mqtt.port": 1886, "device_id": None}, environ=env)
    assert s.device_id == "from-toml"            # override None = not given
    assert s.log_level == "DEBUG"                # env beats TOML
    assert s.mqtt.host == "toml-host"            # TOML beats default
    assert s.mqtt.port == 1886                   # override beats env
    assert s.mqtt.tls is True
    assert s.mqtt.ca_file == Path("/etc/ca.pem")
    assert s.queue == Queue()


def test_nested_overrides_and_env_type_coercion():
    env = {"SMARTCITY_MQTT__TLS": "yes", "SMARTCITY_QUEUE__MAX_AGE_S": "3600",
           "SMARTCITY_QUEUE__STREAMS": "gps, weather", "SMARTCITY_MQTT__PASSWORD": ""}
    s = load(AppSettings, None, "SMARTCITY_", {"mqtt": {"host": "broker.local"}}, environ=env)
    assert s.mqtt.tls is True and s.mqtt.host == "broker.local"
    assert s.queue.max_age_s == 3600.0 and isinstance(s.queue.max_age_s, float)
    assert s.queue.streams == ["gps", "weather"]
    assert s.mqtt.password is None               # empty env value for an optional field


def test_bad_env_value_names_the_key_and_the_variable():
    with pytest.raises(SettingsError, match=r"mqtt\.port: expected an integer, got 'abc' "
                                            r"\(from env SMARTCITY_MQTT__PORT\)"):
        load(AppSettings, None, "SMARTCITY_", {}, environ={"SMARTCITY_MQTT__PORT": "abc"})
    with pytest.raises(SettingsError, match=r"mqtt\.tls: expected a boolean"):
        load(AppSettings, None, "SMARTCITY_", {}, environ={"SMARTCITY_MQTT__TLS": "maybe"})


def test_unknown_or_mistyped_toml_keys_are_errors_naming_the_file(tmp_path):
    with pytest.raises(SettingsError, match=r"mqtt\.hots: unknown setting \(from file .*edge.toml\)"):
        load(AppSettings, write_toml(tmp_path, "[mqtt]\nhots = 'x'\n"), "SMARTCITY_", {}, environ={})
    with pytest.raises(SettingsError, match=r"mqtt\.port: expected an integer, got '1883'"):
        load(AppSettings, write_toml(tmp_path, "[mqtt]\nport = '1883'\n"), "SMARTCITY_", {},
             environ={})
    with pytest.raises(SettingsError, match="mqtt: is a section"):
        load(AppSettings, write_toml(tmp_path, "mqtt = 3\n"), "SMARTCITY_", {}, environ={})
    with pytest.raises(SettingsError, match="not valid TOML"):
        load(AppSettings, write_toml(tmp_path, "[mqtt\n"), "SMARTCITY_", {}, environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load(AppSettings, tmp_path / "missing.toml", "SMARTCITY_", {}, environ={})


def test_validation_in_post_init_becomes_a_settings_error():
    @dataclass
    class S:
        mqtt: MqttSettings = field(default_factory=MqttSettings)

    with pytest.raises(SettingsError, match="mqtt.inflight_window must be 1..10000"):
        load(S, None, "SMARTCITY_", {"mqtt.inflight_window": 70000}, environ={})


def test_redacted_hides_secrets_but_not_paths_to_key_files():
    s = load(AppSettings, None, "SMARTCITY_", {"mqtt.password": "hunter2", "mqtt.api_key": "k-123",
                                                "mqtt.ca_file": "/etc/ca.pem"}, environ={})
    r = redacted(s)
    assert r["mqtt"]["password"] == "***" and r["mqtt"]["api_key"] == "***"
    assert r["mqtt"]["ca_file"] == "/etc/ca.pem"
    assert "hunter2" not in repr(r) and "k-123" not in repr(r)
    assert redacted(MqttSettings(tls=True, cert_file=Path("/c.pem"), key_file=Path("/k.pem")))["key_file"] == "/k.pem"
    assert redacted(MqttSettings())["password"] is None  # unset stays visibly unset


def test_both_services_share_the_mqtt_connection_settings(tmp_path):
    """One MqttConnection (runtime.mqtt) under the agent's and the bridge's mqtt sections: the same
    TOML keys and environment names, the same TLS rules, password_file for both."""
    from smartcity.bridge.config import BridgeSettings
    from smartcity.edge.agent import AgentSettings
    (tmp_path / "pw").write_text("s3cret\n")
    edge = load(AgentSettings, None, "SMARTCITY_EDGE_", {}, environ={
        "SMARTCITY_EDGE_MQTT__HOST": "broker", "SMARTCITY_EDGE_MQTT__PASSWORD_FILE": str(tmp_path / "pw"),
        "SMARTCITY_EDGE_MQTT__RECONNECT_MAX_S": "30", "SMARTCITY_EDGE_MQTT__INFLIGHT_WINDOW": "100"})
    assert (edge.mqtt.host, edge.mqtt.reconnect_max_s, edge.mqtt.inflight_window) == ("broker", 30.0, 100)
    assert edge.mqtt.password_value() == "s3cret" and edge.mqtt.reconnect_min_s == 0.5
    bridge = load(BridgeSettings, None, "SMARTCITY_BRIDGE_", {"bridge_id": "b1"}, environ={
        "SMARTCITY_BRIDGE_MQTT__PASSWORD_FILE": str(tmp_path / "pw"), "SMARTCITY_BRIDGE_MQTT__GROUP": "g"})
    assert bridge.mqtt.password_value() == "s3cret" and bridge.mqtt.group == "g"
    assert (bridge.mqtt.reconnect_min_s, bridge.mqtt.reconnect_max_s) == (0.2, 10.0)  # its own defaults
    for cls, prefix in ((AgentSettings, "SMARTCITY_EDGE_"), (BridgeSettings, "SMARTCITY_BRIDGE_")):
        with pytest.raises(SettingsError, match="mqtt.tls is false but ca_file set"):
            load(cls, None, prefix, {"bridge_id": "b1"} if cls is BridgeSettings else {},
                 environ={prefix + "MQTT__CA_FILE": "/etc/ca.pem"})
    with pytest.raises(ValueError, match="mqtt.password_file: cannot read secret file"):
        MqttSettings(password_file=tmp_path / "missing").password_value()


def test_credentials_and_tls_go_onto_the_client():
    from smartcity.runtime.mqtt import MqttConnection, apply_auth_tls

    class Client:
        def __init__(self):
            self.calls = []

        def username_pw_set(self, *a):
            self.calls.append(("user", a))

        def tls_set(self, **kw):
            self.calls.append(("tls", kw))

    assert apply_auth_tls(Client(), MqttConnection()).calls == []
    c = apply_auth_tls(Client(), MqttConnection(username="bus-1", password="pw", tls=True,
                                                cert_file=Path("/c.crt"), key_file=Path("/c.key")))
    assert c.calls == [("user", ("bus-1", "pw")),
                       ("tls", {"ca_certs": None, "certfile": "/c.crt", "keyfile": "/c.key"})]
