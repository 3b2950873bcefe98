"""Topic administration through kafka-python's KafkaAdminClient, against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import TopicPartition

from driftline.config import PlatformConfig, load_platform
from driftline.errors import BrokerError
from driftline.kafka.broker import free_port
from driftline.kafka.clients import ensure_topics, make_consumer, make_producer, topic_partitions


def test_ensure_topics_creates_only_the_missing_ones(platform: PlatformConfig, topic: str) -> None:
    new = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    created = ensure_topics(platform.kafka, [topic, *new], partitions=3)
    assert created == new
    assert topic_partitions(platform.kafka, [topic, *new, "t-does-not-exist"]) == {topic: 2, new[0]: 3, new[1]: 3}
    assert ensure_topics(platform.kafka, [topic, *new]) == []


def test_created_topics_are_usable_right_away(platform: PlatformConfig) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    assert ensure_topics(platform.kafka, [name]) == [name]
    assert topic_partitions(platform.kafka, [name]) == {name: platform.kafka.partitions}
    producer = make_producer(platform.kafka)
    producer.produce(name, key=b"k", value=b"v")
    assert producer.flush(30) == 0
    consumer = make_consumer(platform.kafka, f"test-{uuid.uuid4().hex}")
    try:
        total = sum(consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                    for p in range(platform.kafka.partitions))
    finally:
        consumer.close()
    assert total == 1


def test_unreachable_broker_is_a_broker_error() -> None:
    kafka = load_platform(overrides=[f"kafka.bootstrap_servers=127.0.0.1:{free_port()}"], env={}).kafka
    start = time.monotonic()
    with pytest.raises(BrokerError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+"):
        ensure_topics(kafka, ["t-never"], timeout_s=2)
    assert time.monotonic() - start < 15


def test_no_names_is_a_value_error(platform: PlatformConfig) -> None:
    with pytest.raises(ValueError, match="at least one topic name"):
        ensure_topics(platform.kafka, [])


def test_a_refused_topic_names_the_broker_error(platform: PlatformConfig) -> None:
    kafka = platform.kafka.model_copy(update={"replication_factor": 3})  # one broker only
    name = f"t-{uuid.uuid4().hex[:10]}"
    with pytest.raises(BrokerError, match=rf"creating topic '{name}' failed: InvalidReplicationFactorError"):
        ensure_topics(kafka, [name])
    assert topic_partitions(platform.kafka, [name]) == {}
