"""The lake job's Kafka security: the bridge's SASL/SSL settings as Spark Kafka source options.

Specification: settings.kafka_options() gives the source kafka.security.protocol, kafka.sasl.*
and kafka.ssl.* from the [kafka] section (the bridge's field names); the password is read from
its file and shows in no repr, str, log line or settings repr; bad settings fail at load with the
setting named. End to end: the stream job reads from a Kafka listener that requires SASL/PLAIN.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from smartcity.runtime.settings import SettingsError
from smartcity.spark_jobs.settings import SECRET_OPTIONS_RE, LakeSettings, kafka_options, load

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pa\"ss\\w0rd-XyZ"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEv-secret-key-material\n-----END PRIVATE KEY-----\n"


def sasl_settings(tmp_path: Path, **kafka) -> LakeSettings:
    pw = tmp_path / "kafka_password"
    pw.write_text(PASSWORD + "\n")
    ca = tmp_path / "ca.pem"
    ca.write_text(CERT)
    return load(overrides={"bootstrap": "kafka-1:9093", "kafka": {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "lake", "sasl_password_file": str(pw), "ssl_ca_file": str(ca), **kafka}},
        environ={})


def test_plaintext_by_default():
    assert dict(kafka_options(LakeSettings(bootstrap="k:9092"))) == {
        "kafka.bootstrap.servers": "k:9092", "kafka.security.protocol": "PLAINTEXT"}


def test_sasl_ssl_options_from_the_bridge_fields(tmp_path):
    opts = kafka_options(sasl_settings(tmp_path))
    assert dict(opts) == {
        "kafka.bootstrap.servers": "kafka-1:9093",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                   'username="lake" password="pa\\"ss\\\\w0rd-XyZ";'),
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": str(tmp_path / "ca.pem"),
    }


def test_plain_mechanism_uses_the_plain_login_module(tmp_path):
    opts = kafka_options(sasl_settings(tmp_path, security_protocol="sasl_plaintext",
                                       sasl_mechanism="PLAIN"))
    assert opts["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert opts["kafka.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"lake\"")
    assert "kafka.ssl.truststore.location" not in opts   # no TLS on SASL_PLAINTEXT


def test_no_secret_in_repr_str_or_logs(tmp_path, caplog):
    key = tmp_path / "client.key"
    key.write_text(KEY)
    cert = tmp_path / "client.pem"
    cert.write_text(CERT)
    s = sasl_settings(tmp_path, ssl_cert_file=str(cert), ssl_key_file=str(key))
    opts = kafka_options(s)
    assert opts["kafka.ssl.keystore.type"] == "PEM" and opts["kafka.ssl.keystore.key"] == KEY
    assert opts["kafka.ssl.keystore.certificate.chain"] == CERT
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("kafka options %s %r", opts, opts)
        logging.getLogger("test").info("settings %s", s)
    shown = repr(opts) + str(opts) + f"{opts}" + json.dumps(opts.redacted()) + caplog.text
    for secret in ("w0rd-XyZ", "secret-key-material"):
        assert secret not in shown
    assert opts.redacted()["kafka.sasl.jaas.config"] == "***"
    assert opts.redacted()["kafka.bootstrap.servers"] == "kafka-1:9093"
    # A password given directly (environment) is not in the settings' repr either.
    direct = load(overrides={"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                       "sasl_username": "lake", "sasl_password": "direct-Secret-1"}},
                  environ={})
    assert "direct-Secret-1" not in repr(direct) and "direct-Secret-1" in str(dict(kafka_options(direct)))


def test_spark_redacts_the_secret_options_by_name():
    from smartcity.spark_jobs.session import spark_conf
    regex = spark_conf(LakeSettings(lake="/tmp/unused"), submitted=True)["spark.sql.redaction.options.regex"]
    for name in ("kafka.sasl.jaas.config", "kafka.ssl.keystore.key", "kafka.ssl.key.password", "url"):
        assert re.search(regex, name), name
    for name in ("kafka.bootstrap.servers", "kafka.ssl.truststore.location", "subscribe"):
        assert not re.search(regex, name) and not re.search(SECRET_OPTIONS_RE, name), name


def test_the_environment_sets_the_kafka_section(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-env\n")
    s = load(environ={"SMARTCITY_LAKE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                      "SMARTCITY_LAKE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
                      "SMARTCITY_LAKE_KAFKA__SASL_USERNAME": "lake",
                      "SMARTCITY_LAKE_KAFKA__SASL_PASSWORD_FILE": str(pw)})
    assert 'password="from-env";' in kafka_options(s)["kafka.sasl.jaas.config"]


@pytest.mark.parametrize("kafka, message", [
    ({"security_protocol": "SASL_SSLX"}, "security_protocol must be one of"),
    ({"security_protocol": "SASL_SSL"}, "sasl_mechanism must be one of"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u",
      "sasl_password": "p"}, "sasl_mechanism must be one of"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "needs sasl_username"),
    ({"ssl_cert_file": "/etc/c.pem"}, "ssl_cert_file and ssl_key_file go together"),
    ({"extra": ["no-equals-sign"]}, "is not name=value"),
])
def test_bad_settings_fail_at_load_naming_the_setting(kafka, message):
    with pytest.raises((ValueError, SettingsError), match=message):
        load(overrides={"kafka": kafka}, environ={})


def test_unreadable_or_unusable_files_are_named_never_shown(tmp_path):
    s = sasl_settings(tmp_path, sasl_password_file=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"kafka.sasl_password_file: cannot read .*missing"):
        kafka_options(s)
    rsa = tmp_path / "rsa.key"
    rsa.write_text("-----BEGIN RSA PRIVATE KEY-----\nsecret-rsa\n-----END RSA PRIVATE KEY-----\n")
    cert = tmp_path / "c.pem"
    cert.write_text(CERT)
    with pytest.raises(ValueError, match="not an unencrypted PKCS#8") as e:
        kafka_options(sasl_settings(tmp_path, ssl_cert_file=str(cert), ssl_key_file=str(rsa)))
    assert "secret-rsa" not in str(e.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="password is empty"):
        kafka_options(sasl_settings(tmp_path, sasl_password_file=str(tmp_path / "empty")))


def test_extra_consumer_properties_get_the_kafka_prefix(tmp_path):
    s = load(overrides={"kafka": {"extra": ["ssl.endpoint.identification.algorithm=",
                                            "client.rack = az-1"]}}, environ={})
    opts = kafka_options(s)
    assert opts["kafka.ssl.endpoint.identification.algorithm"] == ""
    assert opts["kafka.client.rack"] == "az-1"


# --- end to end ----------------------------------------------------------------------------------

def test_the_stream_reads_from_a_sasl_listener_and_never_logs_the_password(tmp_path):
    pytest.importorskip("pyspark")
    from confluent_kafka import Producer

    from smartcity.contracts import encode, example, format_ts
    from deploy.local.kafka import KafkaServer
    from smartcity.catalog.reader import event_ids

    password = "lake-Pw-7431"
    with KafkaServer(tmp_path / "kafka", sasl_users={"lake": password}) as kafka:
        kafka.create_topics(("gps_data",), partitions=1)
        ids = []
        p = Producer({"bootstrap.servers": kafka.bootstrap})  # the plain listener
        now = datetime.now(timezone.utc).replace(microsecond=0)
        for n in range(5):
            r = example("gps_data")
            r.update(event_id=f"veh-sasl:0000abcd:{n}", device_id="veh-sasl", seq=n, ts=format_ts(now))
            ids.append(r["event_id"])
            p.produce("gps_data", encode("gps_data", r))
        assert p.flush(30) == 0
        pw_file = tmp_path / "kafka_password"
        pw_file.write_text(password + "\n")
        lake = tmp_path / "lake"
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "SMARTCITY_LAKE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
               "SMARTCITY_LAKE_KAFKA__SASL_MECHANISM": "PLAIN",
               "SMARTCITY_LAKE_KAFKA__SASL_USERNAME": "lake",
               "SMARTCITY_LAKE_KAFKA__SASL_PASSWORD_FILE": str(pw_file)}
        log = tmp_path / "stream.log"
        cmd = [sys.executable, "-m", "smartcity.spark_jobs", "stream", "-v", "--lake", str(lake),
               "--bootstrap", kafka.sasl_bootstrap, "--trigger-s", "1", "--topics", "gps_data"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            got: list = []
            while time.monotonic() < deadline and proc.poll() is None:
                got = event_ids(LakeSettings(lake=str(lake)), "gps_data")
                if len(got) >= len(ids):
                    break
                time.sleep(1)
            assert sorted(got) == sorted(ids), log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)   # stops the query between batches, exits 0
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        assert proc.returncode == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert password not in text
