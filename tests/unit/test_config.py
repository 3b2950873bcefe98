from __future__ import annotations

import re
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


# --------------------------------------------------------------------------- one typed home per key


def _mappings(data: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The dotted path of every mapping (section and sub-section) in a parsed YAML document."""
    found = [path] if isinstance(data, dict) else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _mappings(value, (*path, str(key)))
    return found


@pytest.mark.parametrize("name", ["fraud", "eta"])
def test_a_bad_key_in_any_usecase_section_fails_at_load_naming_it(name: str, tmp_path: Path) -> None:
    import yaml

    from driftline.config import PROJECT_ROOT

    raw = yaml.safe_load((PROJECT_ROOT / "conf" / "usecases" / f"{name}.yaml").read_text())
    sections = [p for p in _mappings(raw) if p]
    # every section a use case can have is exercised, the simulator's options included
    assert {p[0] for p in sections} >= {"label", "validation", "features", "simulator", "model", "drift", "streaming",
                                        "routing"}
    # mappings whose keys are names of the user's data: fields, metrics, estimator parameters
    named = {("validation", "max_missing_rate"), ("validation", "warn", "max_missing_rate"),
             ("drift", "quality", "max_missing_rate"), ("drift", "performance", "thresholds"),
             ("model", "estimator_params"), ("model", "search", "params")}
    for section in [(), *sections]:
        if section in named and section[-1] in ("estimator_params", "params"):
            continue  # estimator parameter names are checked against the estimator when it is built
        bad = yaml.safe_load(yaml.safe_dump(raw))
        node = bad
        for key in section:
            node = node[key]
        node["zz_typo"] = {} if section == ("drift", "performance", "thresholds") else 1
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(bad))
        dotted = ".".join([*section, "zz_typo"])
        if section in named:
            message = re.escape(".".join(section)) + r": unknown (fields|metrics) \['zz_typo'\]"
        else:
            message = re.escape(dotted) + ": unknown (key|option)"
        with pytest.raises(ConfigError, match=message):
            load_usecase(path)


def test_a_bad_key_in_any_platform_section_fails_at_load_naming_it() -> None:
    from driftline.config import PlatformConfig

    def sections(model: type, prefix: str = "") -> list[str]:
        out = [prefix]
        for field_name, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                out += sections(sub, f"{prefix}{field_name}.")
        return out

    found = sections(PlatformConfig)
    assert {"kafka.", "kafka.embedded.", "kafka.security.", "mlflow.", "spark."} <= set(found)
    for prefix in found:
        with pytest.raises(ConfigError, match=re.escape(f"{prefix}zz_typo") + ": unknown key"):
            load_platform(env={}, overrides=[f"{prefix}zz_typo=1"])
        env_name = "DRIFTLINE_" + "__".join(p.upper() for p in f"{prefix}zz_typo".split("."))
        with pytest.raises(ConfigError, match=re.escape(f"{prefix}zz_typo") + ": unknown key"):
            load_platform(env={env_name: "1"})


def test_every_driftline_environment_variable_has_one_typed_home() -> None:
    """Each DRIFTLINE_* name the project reads or documents is either a setting
    (DRIFTLINE_<SECTION>__<KEY>, loaded into the typed platform config) or listed in ENVIRONMENT."""
    from driftline.config import ENVIRONMENT, PROJECT_ROOT

    files = [*PROJECT_ROOT.glob("lib/driftline/**/*.py"), *PROJECT_ROOT.glob("bin/*"), PROJECT_ROOT / "Makefile",
             PROJECT_ROOT / "spark-submit.sh", PROJECT_ROOT / "docker-compose.yml", PROJECT_ROOT / "README.md",
             *PROJECT_ROOT.glob("conf/**/*.yaml"), *PROJECT_ROOT.glob("notebooks/*.ipynb")]
    names = set()
    for f in files:
        names |= set(re.findall(r"\bDRIFTLINE_[A-Z][A-Z0-9_]*[A-Z0-9]\b", f.read_text(errors="ignore")))
    assert names, "the scan found nothing: it proves nothing"
    for name in sorted(names):
        if name in ENVIRONMENT:
            continue
        # a setting: loads into a typed key (an unknown one would fail, naming it)
        value = "x" if name.endswith(("_SERVERS", "_URI", "_ROOT", "_HOME")) else "{}" if name.endswith("__CONF") else "1"
        load_platform(env={name: value})
