"""Plain Kafka clients (confluent-kafka) configured from the platform config.

Spark reads and writes Kafka through its own connector (see :mod:`driftline.io`);
this module is for everything outside Spark: creating topics, the producer the
simulator publishes with, and consumers in tests and baselines.

    ensure_topics(platform.kafka, ["fraud.events", "fraud.labels"])
    producer = make_producer(platform.kafka, linger_ms=20)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.config import KafkaConfig
from driftline.errors import BrokerError


def admin_client(kafka: KafkaConfig) -> AdminClient:
    conf: dict[str, Any] = dict(kafka.client_options())
    return AdminClient(conf)


def ensure_topics(
    kafka: KafkaConfig, names: Iterable[str], partitions: int | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Example::

        ensure_topics(platform.kafka, ["fraud.events"], partitions=4)
    """
    names = list(names)
    if not names:
        raise ValueError("names: expected at least one topic name")
    admin = admin_client(kafka)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as e:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap}: {e}") from e
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(n, num_partitions=partitions or kafka.partitions, replication_factor=kafka.replication_factor)
            for n in missing
        ],
        operation_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise BrokerError(f"creating topic {name!r} failed: {e}") from e
    return created


def make_producer(kafka: KafkaConfig, **overrides: Any) -> Producer:
    """An idempotent producer with acks=all; keyword args override librdkafka settings
    (underscores become dots: ``linger_ms=20`` sets ``linger.ms``)."""
    conf: dict[str, Any] = {
        **kafka.client_options(),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 10,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
    }
    conf.update({k.replace("_", "."): v for k, v in overrides.items()})
    return Producer(conf)


def make_consumer(kafka: KafkaConfig, group_id: str, **overrides: Any) -> Consumer:
    """A consumer reading from the earliest offset without committing by default."""
    conf: dict[str, Any] = {
        **kafka.client_options(),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    conf.update({k.replace("_", "."): v for k, v in overrides.items()})
    return Consumer(conf)
