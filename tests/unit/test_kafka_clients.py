"""kafka-python's options from the platform's Kafka settings, matching what confluent-kafka gets."""

from __future__ import annotations

import sys

import pytest

from driftline.config import load_platform
from driftline.errors import ConfigError
from driftline.kafka.clients import ADMIN_CLIENT_ID, admin_options


def _kafka(*overrides: str):  # type: ignore[no-untyped-def]
    return load_platform(overrides=list(overrides), env={}).kafka


def test_plaintext_defaults_to_the_embedded_broker() -> None:
    kafka = _kafka()
    assert admin_options(kafka) == {
        "bootstrap_servers": [kafka.bootstrap],
        "client_id": ADMIN_CLIENT_ID,
        "security_protocol": "PLAINTEXT",
    }


def test_bootstrap_servers_become_a_list() -> None:
    opts = admin_options(_kafka("kafka.bootstrap_servers=b1:9092, b2:9092,"))
    assert opts["bootstrap_servers"] == ["b1:9092", "b2:9092"]


def test_ssl_ca_maps_to_ssl_cafile() -> None:
    kafka = _kafka("kafka.bootstrap_servers=b:9093", "kafka.security.protocol=SSL",
                   "kafka.security.ssl_ca_location=/etc/ca.pem")
    opts = admin_options(kafka)
    assert opts["security_protocol"] == "SSL" and opts["ssl_cafile"] == "/etc/ca.pem"
    assert "sasl_mechanism" not in opts
    assert kafka.client_options()["ssl.ca.location"] == "/etc/ca.pem"
    # Spark's (Java) Kafka client reads the same PEM file as a PEM truststore (a JKS type would not load it)
    spark = kafka.client_options("spark")
    assert (spark["kafka.ssl.truststore.location"], spark["kafka.ssl.truststore.type"]) == ("/etc/ca.pem", "PEM")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_USERNAME", "svc")
    monkeypatch.setenv("DRIFTLINE_KAFKA_PASSWORD", "s3cret")
    kafka = _kafka("kafka.bootstrap_servers=b:9094", "kafka.security.protocol=SASL_SSL",
                   f"kafka.security.sasl_mechanism={mechanism}", "kafka.security.ssl_ca_location=/etc/ca.pem")
    opts = admin_options(kafka)
    assert opts == {
        "bootstrap_servers": ["b:9094"],
        "client_id": ADMIN_CLIENT_ID,
        "security_protocol": "SASL_SSL",
        "ssl_cafile": "/etc/ca.pem",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }
    # the same settings confluent-kafka gets
    conf = kafka.client_options()
    assert (conf["security.protocol"], conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SASL_SSL", mechanism, "svc", "s3cret")


def test_custom_credential_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_USER", "u")
    monkeypatch.setenv("MY_PASS", "p")
    kafka = _kafka("kafka.security.protocol=SASL_PLAINTEXT", "kafka.security.sasl_mechanism=PLAIN",
                   "kafka.security.sasl_username_env=MY_USER", "kafka.security.sasl_password_env=MY_PASS")
    opts = admin_options(kafka)
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("u", "p")


def test_missing_sasl_credentials_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLINE_KAFKA_USERNAME", raising=False)
    monkeypatch.delenv("DRIFTLINE_KAFKA_PASSWORD", raising=False)
    kafka = _kafka("kafka.security.protocol=SASL_SSL", "kafka.security.sasl_mechanism=PLAIN")
    with pytest.raises(ConfigError, match="DRIFTLINE_KAFKA_USERNAME and DRIFTLINE_KAFKA_PASSWORD"):
        admin_options(kafka)


def test_keyword_arguments_are_added() -> None:
    opts = admin_options(_kafka(), request_timeout_ms=5000, client_id="other")
    assert opts["request_timeout_ms"] == 5000 and opts["client_id"] == "other"


def test_options_are_accepted_by_kafka_admin_client() -> None:
    from kafka.admin import KafkaAdminClient

    assert set(admin_options(_kafka())) <= set(KafkaAdminClient.DEFAULT_CONFIG)
    assert {"ssl_cafile", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"} <= set(
        KafkaAdminClient.DEFAULT_CONFIG)


def test_importing_the_kafka_package_does_not_import_pyspark() -> None:
    import subprocess

    code = "import sys, driftline.kafka, driftline.kafka.clients; sys.exit('pyspark' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_client_factories_keep_the_names_of_python_callbacks() -> None:
    from driftline.kafka.clients import make_consumer, make_producer

    errors: list[object] = []
    kafka = _kafka("kafka.bootstrap_servers=127.0.0.1:1")
    # error_cb must not become "error.cb" (librdkafka refuses an unknown property), linger_ms still becomes linger.ms
    make_producer(kafka, error_cb=errors.append, linger_ms=5).flush(0)
    make_consumer(kafka, "g", error_cb=errors.append, session_timeout_ms=6000).close()


def test_kafka_python_debug_log_hides_the_sasl_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from driftline.errors import BrokerError
    from driftline.kafka.clients import ensure_topics

    monkeypatch.setenv("DRIFTLINE_KAFKA_USERNAME", "svc")
    monkeypatch.setenv("DRIFTLINE_KAFKA_PASSWORD", "s3cret-in-env")
    kafka = _kafka("kafka.bootstrap_servers=127.0.0.1:1", "kafka.security.protocol=SASL_PLAINTEXT",
                   "kafka.security.sasl_mechanism=SCRAM-SHA-512")
    caplog.set_level("DEBUG", logger="kafka")
    with pytest.raises(BrokerError):
        ensure_topics(kafka, ["t"], timeout_s=0.5)
    assert "'sasl_plain_password': '[hidden]'" in caplog.text  # KafkaAdminClient logged its configuration
    assert "s3cret-in-env" not in caplog.text
