"""Configuration: the platform (``conf/platform.yaml``) and use cases (``conf/usecases/*.yaml``).

Everything is typed and parsed once, when it is loaded; a bad key fails at load
naming the section, the key, the value and what was expected.

    platform = load_platform(overrides=["kafka.bootstrap_servers=broker:9092"])
    uc = load_usecase("fraud")
    uc.streaming.trigger, uc.model.threshold, uc.drift.alert.n

Modules: :mod:`~driftline.config.platform`, :mod:`~driftline.config.usecase`,
:mod:`~driftline.config.sections` (one type per use-case section),
:mod:`~driftline.config.checks` (checks across sections),
:mod:`~driftline.config.durations` (the one duration parser).
"""

from driftline.config.base import Strict, config_hash, describe_errors, section_error
from driftline.config.durations import parse_duration, trigger_options, whole_seconds
from driftline.config.platform import (
    ENV_PREFIX,
    ENVIRONMENT,
    PROJECT_ROOT,
    EmbeddedKafka,
    KafkaConfig,
    KafkaSecurity,
    MlflowConfig,
    PlatformConfig,
    SparkConfig,
    default_conf_dir,
    load_platform,
)
from driftline.config.sections import (
    AlertRule,
    DeliverySpec,
    DriftSpec,
    FeatureDefinitions,
    ModelSpec,
    RoutingSpec,
    StreamingSpec,
    ValidationSpec,
)
from driftline.config.usecase import FieldSpec, LabelSpec, UseCaseConfig, load_usecase

__all__ = [
    "ENVIRONMENT", "ENV_PREFIX", "PROJECT_ROOT", "AlertRule", "DriftSpec", "EmbeddedKafka", "FeatureDefinitions",
    "FieldSpec", "KafkaConfig", "KafkaSecurity", "LabelSpec", "MlflowConfig", "ModelSpec", "PlatformConfig",
    "DeliverySpec", "RoutingSpec", "SparkConfig", "Strict", "StreamingSpec", "UseCaseConfig", "ValidationSpec", "config_hash",
    "default_conf_dir", "describe_errors", "load_platform", "load_usecase", "parse_duration", "section_error",
    "trigger_options", "whole_seconds",
]
