"""The platform configuration: storage, Kafka, MLflow, Spark (``conf/platform.yaml``).

Three layers, later ones winning:

1. ``conf/platform.yaml``,
2. environment variables ``DRIFTLINE_<SECTION>__<KEY>=value`` (double underscore
   between levels, e.g. ``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=broker:9092``),
3. ``--set section.key=value`` overrides from the command line.

Every error names the key, the value and what was expected::

    >>> load_platform(overrides=["kafka.embedded.port=abc"])
    Traceback (most recent call last):
    ConfigError: .../platform.yaml: kafka.embedded.port: got 'abc', expected: Input should be a valid integer, ...

The few ``DRIFTLINE_*`` variables that are not settings are listed in :data:`ENVIRONMENT`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator

from driftline.config.base import Strict, config_hash, section_error
from driftline.errors import ConfigError

ENV_PREFIX = "DRIFTLINE_"
# The project checkout; spark-submit.sh sets DRIFTLINE_HOME because the library may
# then be imported from a zip elsewhere.
PROJECT_ROOT = Path(os.environ.get("DRIFTLINE_HOME") or Path(__file__).resolve().parents[3])

# Every DRIFTLINE_* environment variable that is not a DRIFTLINE_<SECTION>__<KEY> setting,
# with what reads it. The Kafka credentials' names are themselves settings
# (kafka.security.sasl_username_env / sasl_password_env); these are their defaults.
ENVIRONMENT: dict[str, str] = {
    "DRIFTLINE_CONF_DIR": "where platform.yaml and usecases/ live (default <project>/conf)",
    "DRIFTLINE_HOME": "the project checkout, set by spark-submit.sh when lib/ ships as a zip",
    "DRIFTLINE_JARS_DIR": "where bin/fetch-jars puts the resolved JVM artefacts",
    "DRIFTLINE_USECASE": "the use case the notebooks show",
    "DRIFTLINE_KAFKA_USERNAME": "SASL user (kafka.security.sasl_username_env)",
    "DRIFTLINE_KAFKA_PASSWORD": "SASL password (kafka.security.sasl_password_env)",
    "DRIFTLINE_FAULT_PAUSE_AFTER_WRITE": "test hook: the scoring query pauses after this batch id's write",
}


def default_conf_dir() -> Path:
    """Where ``platform.yaml`` lives: ``$DRIFTLINE_CONF_DIR`` or ``<project>/conf``."""
    return Path(os.environ.get("DRIFTLINE_CONF_DIR", PROJECT_ROOT / "conf"))


class EmbeddedKafka(Strict):
    """The broker ``driftline kafka start`` runs when no bootstrap servers are given."""

    port: int = Field(9092, ge=1, le=65535)
    controller_port: int = Field(9093, ge=1, le=65535)
    host: str = "127.0.0.1"
    home: str = ".driftline/kafka"
    heap: str = "512m"
    start_timeout_s: float = Field(60.0, gt=0)


class KafkaSecurity(Strict):
    """Passed through to every Kafka client. Secrets come only from the environment."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username_env: str = "DRIFTLINE_KAFKA_USERNAME"
    sasl_password_env: str = "DRIFTLINE_KAFKA_PASSWORD"
    ssl_ca_location: str | None = None

    def credentials(self) -> tuple[str, SecretStr] | None:
        """Read the SASL user and password from the environment, if SASL is used."""
        if not self.protocol.startswith("SASL"):
            return None
        user = os.environ.get(self.sasl_username_env)
        password = os.environ.get(self.sasl_password_env)
        if not user or password is None:
            raise ConfigError(
                f"kafka.security.protocol: {self.protocol!r} needs the environment variables "
                f"{self.sasl_username_env} and {self.sasl_password_env}"
            )
        return user, SecretStr(password)


class KafkaConfig(Strict):
    bootstrap_servers: str | None = None
    embedded: EmbeddedKafka = EmbeddedKafka()
    security: KafkaSecurity = KafkaSecurity()
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)

    @property
    def uses_embedded(self) -> bool:
        return not self.bootstrap_servers

    @property
    def bootstrap(self) -> str:
        """The servers clients connect to: the configured ones or the embedded broker."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return f"{self.embedded.host}:{self.embedded.port}"

    def client_options(self, dialect: Literal["confluent", "spark"] = "confluent") -> dict[str, str]:
        """Connection options for confluent-kafka (``dialect='confluent'``) or
        Spark's Kafka source and sink (``'spark'``, keys prefixed ``kafka.``)."""
        opts: dict[str, str] = {"bootstrap.servers": self.bootstrap}
        sec = self.security
        if sec.protocol != "PLAINTEXT":
            opts["security.protocol"] = sec.protocol
        if sec.ssl_ca_location:
            if dialect == "confluent":
                opts["ssl.ca.location"] = sec.ssl_ca_location
            else:  # the same PEM file of CA certificates, which Java's client reads as a PEM truststore
                opts["ssl.truststore.location"] = sec.ssl_ca_location
                opts["ssl.truststore.type"] = "PEM"
        creds = sec.credentials()
        if creds and sec.sasl_mechanism:
            user, password = creds
            if dialect == "confluent":
                opts.update(
                    {"sasl.mechanism": sec.sasl_mechanism, "sasl.username": user,
                     "sasl.password": password.get_secret_value()}
                )
            else:
                module = (
                    "org.apache.kafka.common.security.plain.PlainLoginModule"
                    if sec.sasl_mechanism == "PLAIN"
                    else "org.apache.kafka.common.security.scram.ScramLoginModule"
                )
                opts["sasl.mechanism"] = sec.sasl_mechanism
                opts["sasl.jaas.config"] = (
                    f'{module} required username="{user}" '
                    f'password="{password.get_secret_value()}";'
                )
        if dialect == "spark":
            return {f"kafka.{k}": v for k, v in opts.items()}
        return opts


class MlflowConfig(Strict):
    tracking_uri: str | None = None
    home: str = ".driftline/mlflow"

    def resolved_tracking_uri(self, base: Path) -> str:
        """The configured URI, or a local SQLite store under ``home``."""
        if self.tracking_uri:
            return self.tracking_uri
        db = (base / self.home / "mlflow.db").resolve()
        return f"sqlite:///{db}"


# Spark/Hadoop settings that hold a credential (S3A keys, ADLS account keys and OAuth
# secrets, SAS tokens). Credentials come from the environment only: S3A and delta-rs read
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY themselves; any other such setting may name an
# environment variable, ${env.NAME}, which Hadoop expands where the setting is read.
CREDENTIAL_KEY = re.compile(r"(?i)secret|password|access[.]?key|account[.]key|session[.]token|sas[.].*token|refresh[.]token")
ENV_REFERENCE = re.compile(r"^\$\{env\.[A-Za-z_][A-Za-z0-9_]*\}$")


class SparkConfig(Strict):
    app_name: str = "driftline"
    master: str | None = None
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "2g"
    ui_enabled: bool = True
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf")
    @classmethod
    def _no_credentials(cls, conf: dict[str, str]) -> dict[str, str]:
        for key, value in conf.items():
            if CREDENTIAL_KEY.search(key) and not ENV_REFERENCE.match(value.strip()):
                # the value is a secret: never repeat it in the message
                raise ValueError(
                    f"{key!r} holds a credential, and credentials come from the environment only: "
                    "for s3a:// set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), "
                    f"otherwise write the setting as {key}: ${{env.NAME}} (Hadoop reads the variable NAME)"
                )
        return conf


class PlatformConfig(Strict):
    """Everything shared by all use cases: storage, Kafka, MLflow, Spark."""

    base_dir: str = "."
    lake_root: str = ".driftline/lake"
    checkpoint_root: str = ".driftline/checkpoints"
    jars_dir: str = ".driftline/jars"
    kafka: KafkaConfig = KafkaConfig()
    mlflow: MlflowConfig = MlflowConfig()
    spark: SparkConfig = SparkConfig()

    def path(self, value: str) -> str:
        """Resolve a local relative path against ``base_dir``; URIs pass through."""
        if "://" in value or value.startswith("/"):
            return value
        return str((Path(self.base_dir) / value).resolve())

    def table_path(self, layer: str, name: str) -> str:
        """``<lake_root>/<layer>/<name>``, e.g. ``table_path('bronze', 'fraud_events')``."""
        return f"{self.path(self.lake_root).rstrip('/')}/{layer}/{name}"

    def checkpoint(self, query: str) -> str:
        return f"{self.path(self.checkpoint_root).rstrip('/')}/{query}"

    def digest(self) -> str:
        """A stable hash of the effective configuration (secrets are never in it)."""
        return config_hash(self.model_dump(mode="json"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _set_path(data: dict[str, Any], dotted: str, raw: str, source: str) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"{source}: empty key")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None


def _secret_names(data: Mapping[str, Any]) -> set[str]:
    """The environment variables the YAML names as holding Kafka credentials."""
    kafka = data.get("kafka")
    security = kafka.get("security") if isinstance(kafka, Mapping) else None
    if not isinstance(security, Mapping):
        return set()
    return {str(security[k]) for k in ("sasl_username_env", "sasl_password_env") if security.get(k)}


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    not_settings = set(ENVIRONMENT) | _secret_names(data)
    for name, raw in sorted(env.items()):
        # secrets are read where they are used, never merged into the config
        if not name.startswith(ENV_PREFIX) or name in not_settings:
            continue
        rest = name[len(ENV_PREFIX):]
        dotted = ".".join(part.lower() for part in rest.split("__"))
        _set_path(data, dotted, raw, f"environment variable {name}")


def _apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> None:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. kafka.embedded.port=19092")
        _set_path(data, key.strip(), raw.strip(), f"--set {item!r}")


def load_platform(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> PlatformConfig:
    """Load ``platform.yaml``, apply ``DRIFTLINE_*`` env vars and ``--set`` overrides.

    Example::

        cfg = load_platform(overrides=["kafka.bootstrap_servers=broker:9092"])
        cfg.kafka.bootstrap  # 'broker:9092'
    """
    path = Path(path) if path else default_conf_dir() / "platform.yaml"
    data = _read_yaml(path)
    _apply_env(data, os.environ if env is None else env)
    _apply_overrides(data, overrides)
    data.setdefault("base_dir", str(PROJECT_ROOT))
    try:
        return PlatformConfig.model_validate(data)
    except ValidationError as e:
        raise section_error(str(path), e) from e
