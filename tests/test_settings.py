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
    assert redacted(MqttSettings(key_file=Path("/k.pem")))["key_file"] == "/k.pem"
    assert redacted(MqttSettings())["password"] is None  # unset stays visibly unset
