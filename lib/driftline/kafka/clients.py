"""Plain Kafka clients configured from the platform config.

Spark reads and writes Kafka through its own connector (see :mod:`driftline.kafka.spark`);
this module is for everything outside Spark:

- producing and consuming with confluent-kafka (librdkafka): the producer the
  simulator publishes with, consumers in jobs, tests and baselines;
- topic administration with kafka-python's ``KafkaAdminClient``: creating the
  topics that are missing and reading their partition counts.

Both are configured from the same ``kafka`` settings (bootstrap servers and
``kafka.security``): :meth:`KafkaConfig.client_options` for confluent-kafka,
:func:`admin_options` for kafka-python::

    ensure_topics(platform.kafka, ["fraud.events", "fraud.labels"])
    topic_partitions(platform.kafka, ["fraud.events"])  # {'fraud.events': 4}
    producer = make_producer(platform.kafka, linger_ms=20)
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from driftline.config import KafkaConfig
from driftline.errors import BrokerError, UsageError

ADMIN_CLIENT_ID = "driftline-admin"
_CREDENTIAL_KEY = re.compile(r"(?i)password|secret|token")


class HideCredentials(logging.Filter):
    """kafka-python's ``KafkaAdminClient`` logs its keyword arguments at DEBUG when it starts,
    ``sasl_plain_password`` among them: this filter (on logger ``kafka.admin.client``) shows
    them with every password, secret and token replaced by ``[hidden]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping) and any(_CREDENTIAL_KEY.search(str(k)) for k in args):
            record.args = {k: "[hidden]" if _CREDENTIAL_KEY.search(str(k)) and v is not None else v
                           for k, v in args.items()}
        return True


logging.getLogger("kafka.admin.client").addFilter(HideCredentials())


def admin_options(kafka: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``KafkaAdminClient``) from the
    platform's Kafka settings; the same mapping :meth:`KafkaConfig.client_options`
    does for confluent-kafka:

    ============================  ==========================================
    platform setting              kafka-python argument
    ============================  ==========================================
    bootstrap servers             ``bootstrap_servers`` (a list)
    ``security.protocol``         ``security_protocol``
    ``security.ssl_ca_location``  ``ssl_cafile``
    ``security.sasl_mechanism``   ``sasl_mechanism``
    user/password from the env    ``sasl_plain_username``/``sasl_plain_password``
    ============================  ==========================================

    SASL credentials are read from the environment only when the protocol is
    ``SASL_*`` (a missing variable raises ``ConfigError``). Keyword arguments
    are added as they are (``request_timeout_ms=5000``).

    Example::

        KafkaAdminClient(**admin_options(platform.kafka, request_timeout_ms=10_000))
    """
    sec = kafka.security
    opts: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap.split(",") if s.strip()],
        "client_id": ADMIN_CLIENT_ID,
        "security_protocol": sec.protocol,
    }
    if sec.ssl_ca_location:
        opts["ssl_cafile"] = sec.ssl_ca_location
    creds = sec.credentials()
    if creds and sec.sasl_mechanism:
        user, password = creds
        opts.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=user,
            sasl_plain_password=password.get_secret_value(),
        )
    opts.update(overrides)
    return opts


@contextlib.contextmanager
def topic_admin(kafka: KafkaConfig, timeout_s: float = 30.0) -> Iterator[KafkaAdminClient]:
    """A connected kafka-python ``KafkaAdminClient``, closed when the block ends.

    Raises :class:`BrokerError` when no broker answers within ``timeout_s``.

    Example::

        with topic_admin(platform.kafka) as admin:
            admin.list_topics()
    """
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **admin_options(kafka, bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms)
        )
    except KafkaError as e:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap}: {e}") from e
    try:
        yield admin
    finally:
        admin.close()


def ensure_topics(
    kafka: KafkaConfig, names: Iterable[str], partitions: int | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Returns once every created topic has a leader for each partition, so a
    producer or consumer started right after finds it. A topic another client
    created meanwhile counts as existing.

    Example::

        ensure_topics(platform.kafka, ["fraud.events"], partitions=4)
    """
    names = list(names)
    if not names:
        raise UsageError("names: expected at least one topic name")
    timeout_ms = int(timeout_s * 1000)
    with topic_admin(kafka, timeout_s) as admin:
        try:
            existing = set(admin.list_topics())
        except KafkaError as e:
            raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap}: {e}") from e
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        spec = {"num_partitions": partitions or kafka.partitions, "replication_factor": kafka.replication_factor}
        try:
            response = admin.create_topics(
                {n: dict(spec) for n in missing}, timeout_ms=timeout_ms, raise_errors=False
            )
        except KafkaError as e:
            raise BrokerError(f"creating topics {', '.join(missing)} on {kafka.bootstrap} failed: {e}") from e
        errors = {t["name"]: t for t in response["topics"] if t["error_code"] != 0}
        for name, t in errors.items():
            error = for_code(t["error_code"])
            if error is not TopicAlreadyExistsError:
                detail = f": {t['error_message']}" if t.get("error_message") else ""
                raise BrokerError(f"creating topic {name!r} failed: {error.__name__}{detail}")
        try:
            admin.wait_for_topics(missing, timeout_ms=timeout_ms)
        except KafkaError as e:
            raise BrokerError(f"topics {', '.join(missing)} on {kafka.bootstrap} did not become ready: {e}") from e
    return [n for n in missing if n not in errors]


def topic_partitions(kafka: KafkaConfig, names: Iterable[str], timeout_s: float = 30.0) -> dict[str, int]:
    """``{topic: number of partitions}`` for those of ``names`` that exist.

    Example::

        topic_partitions(platform.kafka, ["fraud.events", "fraud.nope"])  # {'fraud.events': 4}
    """
    names = list(names)
    if not names:
        raise UsageError("names: expected at least one topic name")
    with topic_admin(kafka, timeout_s) as admin:
        try:
            described = admin.describe_topics(names)
        except KafkaError as e:
            raise BrokerError(f"describing topics on {kafka.bootstrap} failed: {e}") from e
    counts: dict[str, int] = {}
    for t in described:
        error = for_code(t["error_code"])
        if error is UnknownTopicOrPartitionError:
            continue
        if t["error_code"] != 0:
            raise BrokerError(f"describing topic {t['name']!r} failed: {error.__name__}")
        counts[t["name"]] = len(t["partitions"])
    return counts


def admin_client(kafka: KafkaConfig) -> AdminClient:
    """A confluent-kafka ``AdminClient`` (its ``list_topics`` returns cluster metadata with
    partitions); topic creation goes through :func:`ensure_topics`."""
    conf: dict[str, Any] = dict(kafka.client_options())
    return AdminClient(conf)


# confluent-kafka's Python-side settings: their names keep the underscore (there is no ``error.cb``)
PYTHON_SETTINGS = frozenset({"error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_commit", "on_delivery", "logger"})


def _librdkafka_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides as client settings: ``linger_ms`` -> ``linger.ms``; callbacks such as
    ``error_cb`` (:data:`PYTHON_SETTINGS`) keep their names."""
    return {k if k in PYTHON_SETTINGS else k.replace("_", "."): v for k, v in overrides.items()}


def make_producer(kafka: KafkaConfig, **overrides: Any) -> Producer:
    """An idempotent producer with acks=all; keyword args override librdkafka settings
    (underscores become dots: ``linger_ms=20`` sets ``linger.ms``; callbacks such as
    ``error_cb`` keep their names)."""
    conf: dict[str, Any] = {
        **kafka.client_options(),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 10,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
    }
    conf.update(_librdkafka_overrides(overrides))
    return Producer(conf)


def make_consumer(kafka: KafkaConfig, group_id: str, **overrides: Any) -> Consumer:
    """A consumer reading from the earliest offset without committing by default."""
    conf: dict[str, Any] = {
        **kafka.client_options(),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    conf.update(_librdkafka_overrides(overrides))
    return Consumer(conf)
