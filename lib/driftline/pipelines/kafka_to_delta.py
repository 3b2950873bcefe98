"""Copy a Kafka topic into a Delta table as raw records, exactly once.

Each row keeps the message value as text with its source coordinates (topic,
partition, offset, Kafka timestamp) and the ingest time. Re-running with the same
checkpoint continues where the last run stopped: nothing is lost or repeated.

    ./spark-submit.sh streaming/kafka_to_delta.py --topic fraud.events \\
        --table bronze/fraud_events_raw --trigger availableNow
"""

from __future__ import annotations

import argparse

from driftline import catalog
from driftline.config import PlatformConfig
from driftline.errors import UsageError
from driftline.jobs import JobContext, entry_point
from driftline.kafka.spark import raw_records, read_kafka_stream, write_delta_stream
from driftline.preflight import needs


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", required=True, help="Kafka topic to read")
    parser.add_argument("--table", required=True, help="Delta table: <layer>/<name> under the lake root, or a path")
    parser.add_argument("--trigger", default="availableNow",
                        help="availableNow (default: all that is there, then stop), once, or an interval "
                             "such as '10 seconds' (runs until stopped)")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest (default) or latest")


def table_location(platform: PlatformConfig, table: str) -> str:
    """``<layer>/<name>`` under the lake root, or a path or URI as it is."""
    if "://" in table or table.startswith("/"):
        return platform.path(table)
    layer, sep, name = table.partition("/")
    if not sep or not name:
        raise UsageError(f"--table: expected <layer>/<name> or a path, got {table!r}")
    return platform.table_path(layer, name)


def _run(ctx: JobContext) -> None:
    a, platform = ctx.args, ctx.platform
    table = table_location(platform, a.table)
    raw = raw_records(read_kafka_stream(ctx.spark, platform.kafka, a.topic, a.starting_offsets))
    checkpoint = catalog.checkpoint(platform, "kafka_to_delta", topic=a.topic)
    query = write_delta_stream(raw, table, checkpoint, trigger=a.trigger, query_name=f"raw-{a.topic}")
    query.awaitTermination()
    print(f"kafka_to_delta: {a.topic} -> {table} (checkpoint {checkpoint})")


main = entry_point("kafka_to_delta", __doc__, run=_run, arguments=_arguments, usecase=False,
                   preflight=needs(kafka=True))
