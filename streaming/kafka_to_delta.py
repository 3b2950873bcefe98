"""Copy a Kafka topic into a Delta table as raw records, exactly once.

Each row keeps the message value as text with its source coordinates (topic,
partition, offset, Kafka timestamp) and the ingest time. Re-running with the same
checkpoint continues where the last run stopped: nothing is lost or repeated.

    ./spark-submit.sh streaming/kafka_to_delta.py --topic fraud.events \\
        --table bronze/fraud_events_raw --trigger availableNow
"""

from __future__ import annotations

import sys

from driftline.errors import DriftlineError
from driftline.jobargs import job_parser, platform_from_args


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, usecase=False)
    parser.add_argument("--topic", required=True, help="Kafka topic to read")
    parser.add_argument("--table", required=True, help="Delta table: <layer>/<name> under the lake root, or a path")
    parser.add_argument("--trigger", default="availableNow",
                        help="availableNow (default: all that is there, then stop), once, or an interval "
                             "such as '10 seconds' (runs until stopped)")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest (default) or latest")
    args = parser.parse_args(argv)
    try:
        platform = platform_from_args(args)
        from driftline.session import build_session
        from driftline.streaming_io import raw_records, read_kafka_stream, write_delta_stream

        table = platform.path(args.table) if "://" in args.table or args.table.startswith("/") else \
            platform.table_path(*args.table.split("/", 1))
        spark = build_session(platform, "driftline-kafka-to-delta")
        raw = raw_records(read_kafka_stream(spark, platform.kafka, args.topic, args.starting_offsets))
        checkpoint = platform.checkpoint(f"kafka_to_delta/{args.topic}")
        query = write_delta_stream(raw, table, checkpoint, trigger=args.trigger, query_name=f"raw-{args.topic}")
        query.awaitTermination()
        print(f"kafka_to_delta: {args.topic} -> {table} (checkpoint {checkpoint})")
        return 0
    except (DriftlineError, ValueError) as e:
        print(f"kafka_to_delta: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
