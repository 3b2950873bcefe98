"""Structured Streaming sources and sinks over Kafka and Delta.

    raw = read_kafka_stream(spark, platform.kafka, "fraud.events")
    query = write_delta_stream(raw_records(raw), path, checkpoint, trigger="availableNow")
    query.awaitTermination()

The Delta sink with a checkpoint gives exactly-once output: Spark records the
Kafka offsets of each micro-batch, and Delta commits each batch id once.
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from driftline.config import KafkaConfig

RAW_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "ingest_time")


def read_kafka_stream(
    spark: SparkSession,
    kafka: KafkaConfig,
    topic: str,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
) -> DataFrame:
    """A streaming DataFrame over ``topic`` with Spark's Kafka source columns.

    Example::

        df = read_kafka_stream(spark, platform.kafka, "fraud.events")
    """
    if not topic:
        raise ValueError("topic: expected a topic name")
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka.client_options("spark"))
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "false")
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


def trigger_options(trigger: str) -> dict[str, object]:
    """Turn ``availableNow``, ``once`` or an interval like ``10 seconds`` into
    keyword arguments for ``DataStreamWriter.trigger``."""
    if trigger == "availableNow":
        return {"availableNow": True}
    if trigger == "once":
        return {"once": True}
    if not trigger.strip():
        raise ValueError("trigger: expected 'availableNow', 'once' or an interval such as '10 seconds'")
    return {"processingTime": trigger}


def write_delta_stream(
    df: DataFrame,
    path: str,
    checkpoint: str,
    trigger: str = "availableNow",
    query_name: str | None = None,
    output_mode: Literal["append", "complete", "update"] = "append",
    partition_by: tuple[str, ...] = (),
) -> StreamingQuery:
    """Start a streaming write of ``df`` into the Delta table at ``path``."""
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
