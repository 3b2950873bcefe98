from __future__ import annotations

from pathlib import Path

import pytest

from driftline.config import load_platform, load_usecase
from driftline.errors import ConfigError


def test_defaults_use_the_embedded_broker_and_a_local_mlflow_store() -> None:
    cfg = load_platform(env={})
    assert cfg.kafka.uses_embedded
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    assert cfg.mlflow.resolved_tracking_uri(Path("/p")) == "sqlite:////p/.driftline/mlflow/mlflow.db"
    assert cfg.table_path("bronze", "fraud_events").endswith("/.driftline/lake/bronze/fraud_events")


def test_environment_overrides_file_and_cli_overrides_environment() -> None:
    env = {"DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": "env:9092", "DRIFTLINE_SPARK__SHUFFLE_PARTITIONS": "8"}
    cfg = load_platform(env=env, overrides=["kafka.bootstrap_servers=cli:9092"])
    assert cfg.kafka.bootstrap == "cli:9092"
    assert cfg.spark.shuffle_partitions == 8
    assert not cfg.kafka.uses_embedded


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootsrap_servers: unknown key"):
        load_platform(env={}, overrides=["kafka.bootsrap_servers=x:1"])


def test_wrong_type_names_key_value_and_expectation() -> None:
    with pytest.raises(ConfigError) as err:
        load_platform(env={}, overrides=["kafka.embedded.port=abc"])
    msg = str(err.value)
    assert "kafka.embedded.port: got 'abc', expected: Input should be a valid integer" in msg


def test_out_of_range_and_bad_choice_are_named() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.embedded\.port: got 70000"):
        load_platform(env={}, overrides=["kafka.embedded.port=70000"])
    with pytest.raises(ConfigError, match=r"kafka\.security\.protocol: got 'TLS'"):
        load_platform(env={}, overrides=["kafka.security.protocol=TLS"])


def test_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitionz: unknown key"):
        load_platform(env={"DRIFTLINE_SPARK__SHUFFLE_PARTITIONZ": "2"})


def test_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_platform(env={}, overrides=["kafka.embedded.port"])


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "platform.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_platform(bad, env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_platform(tmp_path / "nope.yaml", env={})


def test_sasl_needs_credentials_from_environment_and_never_shows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    over = ["kafka.bootstrap_servers=b:9093", "kafka.security.protocol=SASL_SSL",
            "kafka.security.sasl_mechanism=SCRAM-SHA-512"]
    cfg = load_platform(env={}, overrides=over)
    monkeypatch.delenv("DRIFTLINE_KAFKA_USERNAME", raising=False)
    with pytest.raises(ConfigError, match="DRIFTLINE_KAFKA_USERNAME and DRIFTLINE_KAFKA_PASSWORD"):
        cfg.kafka.client_options()
    monkeypatch.setenv("DRIFTLINE_KAFKA_USERNAME", "svc")
    monkeypatch.setenv("DRIFTLINE_KAFKA_PASSWORD", "s3cret")
    opts = cfg.kafka.client_options()
    assert opts["sasl.username"] == "svc" and opts["sasl.password"] == "s3cret"
    spark_opts = cfg.kafka.client_options("spark")
    assert spark_opts["kafka.security.protocol"] == "SASL_SSL"
    assert "ScramLoginModule required username=\"svc\"" in spark_opts["kafka.sasl.jaas.config"]
    # the secret is not part of the config itself, nor of its hash input
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())


def test_usecase_loads_and_unknown_usecase_lists_known_ones() -> None:
    uc = load_usecase("fraud")
    assert (uc.entity_key, uc.event_id, uc.topic("dlq")) == ("customer_id", "event_id", "fraud.dlq")
    with pytest.raises(ConfigError, match=r"'nope' is not defined: expected one of \[.*'eta'.*'fraud'"):
        load_usecase("nope")


def test_usecase_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: x\nentity_key: k\nevent_id: id\nevent_time: t\n"
        "schema: [{name: id, type: str}]\nlabel: {field: y, kind: binary}\n"
    )
    with pytest.raises(ConfigError, match=r"schema\.0\.type: got 'str'"):
        load_usecase(path)
