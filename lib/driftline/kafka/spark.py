"""Spark's Kafka source and sink: streaming and batch reads, bronze records, offset ranges.

Streaming: a Kafka topic into a Delta table with a checkpoint, exactly once
(Spark records the Kafka offsets of each micro-batch, and Delta commits each
batch id once)::

    raw = read_kafka_stream(spark, platform.kafka, "fraud.events")
    query = write_delta_stream(raw_records(raw), path, checkpoint, trigger="availableNow")
    query.awaitTermination()

Batch: an offset range of a topic, resolved before reading so the read is
repeatable, as bronze records (:data:`driftline.catalog.BRONZE_COLUMNS`: the raw
value as text plus the coordinates it came from)::

    end = {p: high for p, (_, high) in kafka_watermarks(platform.kafka, "fraud.events").items()}
    raw = read_kafka_batch(spark, platform.kafka, "fraud.events", next_offsets(bronze, "fraud.events"), end)
    merge_new_rows(spark, bronze_records(raw), path, keys=catalog.SOURCE_KEYS)

JSON-lines files map onto the same bronze shape (:func:`read_jsonl_records`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from driftline.config import KafkaConfig, trigger_options
from driftline.errors import UsageError

OffsetSpec = str | Mapping[int, int]


# --------------------------------------------------------------------------- streaming


def read_kafka_stream(
    spark: SparkSession,
    kafka: KafkaConfig,
    topic: str,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
    fail_on_data_loss: bool = False,
) -> DataFrame:
    """A streaming DataFrame over ``topic`` with Spark's Kafka source columns.

    ``fail_on_data_loss``: Spark's ``failOnDataLoss``: whether offsets Kafka deleted before
    the query read them (retention) stop the query, or are skipped.

    Example::

        df = read_kafka_stream(spark, platform.kafka, "fraud.events")
    """
    if not topic:
        raise UsageError("topic: expected a topic name")
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka.client_options("spark"))
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", str(fail_on_data_loss).lower())
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def raw_records(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows as bronze records: the value as text plus source coordinates."""
    return kafka_df.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


def write_delta_stream(
    df: DataFrame,
    path: str,
    checkpoint: str,
    trigger: str = "availableNow",
    query_name: str | None = None,
    output_mode: Literal["append", "complete", "update"] = "append",
    partition_by: tuple[str, ...] = (),
) -> StreamingQuery:
    """Start a streaming write of ``df`` into the Delta table at ``path``.

    ``trigger`` is ``availableNow``, ``once`` or an interval such as ``10 seconds``
    (see :func:`driftline.config.trigger_options`)."""
    writer = (
        df.writeStream.format("delta")
        .outputMode(output_mode)
        .option("checkpointLocation", checkpoint)
        .trigger(**trigger_options(trigger))  # type: ignore[call-overload]
    )
    if query_name:
        writer = writer.queryName(query_name)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    return writer.start(path)


def json_field(value: Column, field: str) -> Column:
    """One top-level string field of a JSON text column (null when absent or not JSON)."""
    return F.get_json_object(value, f"$.{field}")


# --------------------------------------------------------------------------- batch


def offsets_json(topic: str, offsets: OffsetSpec) -> str:
    """Spark's ``startingOffsets``/``endingOffsets`` value for one topic.

    ``"earliest"``/``"latest"`` and JSON strings pass through; a mapping of
    partition → offset becomes ``{"<topic>": {"<partition>": offset}}``
    (``-2`` means earliest, ``-1`` latest)::

        offsets_json("fraud.events", {0: 10, 1: -2})  # '{"fraud.events": {"0": 10, "1": -2}}'
    """
    if isinstance(offsets, str):
        if not offsets.strip():
            raise UsageError("offsets: expected 'earliest', 'latest', a JSON string or a partition->offset mapping")
        return offsets
    if not offsets:
        raise UsageError("offsets: the partition->offset mapping is empty")
    return json.dumps({topic: {str(p): int(o) for p, o in sorted(offsets.items())}})


def read_kafka_batch(
    spark: SparkSession,
    kafka: KafkaConfig,
    topic: str,
    starting_offsets: OffsetSpec = "earliest",
    ending_offsets: OffsetSpec = "latest",
) -> DataFrame:
    """A batch DataFrame over an offset range of ``topic`` (Spark's Kafka source columns).

    Example::

        df = read_kafka_batch(spark, platform.kafka, "fraud.events", {0: 100, 1: 80}, "latest")
    """
    if not topic:
        raise UsageError("topic: expected a topic name")
    return (
        spark.read.format("kafka")
        .options(**kafka.client_options("spark"))
        .option("subscribe", topic)
        .option("startingOffsets", offsets_json(topic, starting_offsets))
        .option("endingOffsets", offsets_json(topic, ending_offsets))
        .option("failOnDataLoss", "false")
        .load()
    )


def kafka_watermarks(kafka: KafkaConfig, topic: str, timeout_s: float = 30.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` offsets of ``topic`` right now (high = next offset to be written).

    Resolving the end of a range once, before reading, makes a batch read
    repeatable: two actions over the same DataFrame see the same records.

    Example::

        kafka_watermarks(platform.kafka, "fraud.events")  # {0: (0, 120), 1: (0, 98)}
    """
    from confluent_kafka import TopicPartition

    from driftline.errors import BrokerError
    from driftline.kafka.clients import make_consumer

    if not topic:
        raise UsageError("topic: expected a topic name")
    consumer = make_consumer(kafka, group_id="driftline-offsets")
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BrokerError(f"topic {topic!r} does not exist on {kafka.bootstrap}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def bronze_records(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows as bronze records: key and value as text plus source coordinates.

    Example::

        bronze_records(read_kafka_batch(spark, platform.kafka, "eta.events"))
    """
    return kafka_df.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


def read_jsonl_records(spark: SparkSession, path: str) -> DataFrame:
    """The lines of JSON-lines file(s) at ``path`` as bronze records.

    The file path stands in for the topic, partition is 0 and the offset is
    the 1-based line number, so a file re-read maps onto the same coordinates::

        read_jsonl_records(spark, "out/sim/events.jsonl")
    """
    if not path:
        raise UsageError("path: expected a file or directory of JSON-lines files")
    lines = spark.read.format("text").load(path).select(
        F.col("value"),
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        # Rows keep file order inside a split; splits are ordered by their start.
        F.monotonically_increasing_id().alias("read_order"),
    )
    in_file_order = Window.partitionBy("file_path").orderBy("block_start", "read_order")
    return lines.select(
        F.lit(None).cast("string").alias("key"),
        F.col("value"),
        F.col("file_path").alias("topic"),
        F.lit(0).alias("partition"),
        F.row_number().over(in_file_order).cast("long").alias("offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


def next_offsets(bronze: DataFrame, topic: str) -> dict[int, int]:
    """``{partition: max(offset) + 1}`` of ``topic``'s records already in ``bronze``.

    Example::

        next_offsets(read_delta(spark, bronze_path), "fraud.events")  # {0: 120, 1: 98}
    """
    rows = (
        bronze.where(F.col("topic") == F.lit(topic))
        .groupBy("partition")
        .agg((F.max("offset") + 1).alias("next"))
        .collect()
    )
    return {int(r["partition"]): int(r["next"]) for r in rows}
