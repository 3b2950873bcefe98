"""Ingest a use case's Kafka topics (or simulator files) into the bronze Delta tables.

    ./spark-submit.sh jobs/ingest.py --usecase fraud
    ./spark-submit.sh jobs/ingest.py --usecase fraud --from-files .driftline/sim/fraud
    ./spark-submit.sh jobs/ingest.py --usecase eta --starting-offsets earliest

Topics ``<uc>.events`` and ``<uc>.labels`` go to ``bronze/<uc>_events`` and
``bronze/<uc>_labels``: the raw value as text, key, topic, partition, offset,
Kafka timestamp and ingest time. By default each run reads from where the
last one stopped up to the current end of each partition; ``--starting-offsets``
/ ``--ending-offsets`` take ``earliest``/``latest`` or Spark's JSON, e.g.
'{"fraud.events": {"0": 100, "1": -2}}'. Rows are merged on (topic, partition,
offset), so re-reading a range adds nothing.

With ``--from-files DIR`` the simulator's ``DIR/events.jsonl`` and
``DIR/labels.jsonl`` are read instead; the file path and line number stand in
for topic and offset.

Exit codes: 0 done, 2 bad arguments, configuration or missing input.
"""

from __future__ import annotations

import argparse
import logging
import uuid
from pathlib import Path
from typing import Literal

from pyspark.sql import SparkSession

from driftline import catalog
from driftline.catalog import SOURCE_KEYS
from driftline.config import PlatformConfig, UseCaseConfig
from driftline.delta import delta_version, merge_new_rows, read_delta
from driftline.errors import MissingTableError
from driftline.jobs import JobContext, entry_point
from driftline.kafka.spark import (
    bronze_records,
    kafka_watermarks,
    next_offsets,
    read_jsonl_records,
    read_kafka_batch,
)
from driftline.lineage import Lineage
from driftline.preflight import check_broker

log = logging.getLogger("driftline.jobs.ingest")

Stream = Literal["events", "labels"]
STREAMS: tuple[Stream, ...] = ("events", "labels")


def bronze_table(platform: PlatformConfig, usecase: UseCaseConfig, stream: Stream) -> str:
    return catalog.path(platform, f"bronze_{stream}", usecase)


def _offset_range(
    spark: SparkSession, platform: PlatformConfig, topic: str, table: str,
    starting_offsets: str | None, ending_offsets: str | None,
) -> tuple[str | dict[int, int], str | dict[int, int]]:
    """Resolve the range to read: explicit options win; otherwise resume after what
    bronze holds, up to the end of each partition as of now (so the read is repeatable)."""
    watermarks = kafka_watermarks(platform.kafka, topic)
    end: str | dict[int, int] = (
        {p: high for p, (_, high) in watermarks.items()}
        if ending_offsets in (None, "latest") else ending_offsets  # type: ignore[assignment]
    )
    if starting_offsets is not None:
        return starting_offsets, end
    done = next_offsets(read_delta(spark, table), topic) if delta_version(spark, table) is not None else {}
    start = {p: min(max(done.get(p, low), low), high) for p, (low, high) in watermarks.items()}
    return start, end


def ingest_topic(
    spark: SparkSession, platform: PlatformConfig, usecase: UseCaseConfig, stream: Stream, run_id: str,
    starting_offsets: str | None = None, ending_offsets: str | None = None,
) -> int:
    """Merge one topic's offset range into its bronze table; return the rows added."""
    topic = usecase.topic(stream)
    table = bronze_table(platform, usecase, stream)
    start, end = _offset_range(spark, platform, topic, table, starting_offsets, ending_offsets)
    if isinstance(start, dict) and isinstance(end, dict) and all(start[p] >= end.get(p, 0) for p in start):
        log.info("%s: nothing new (offsets %s)", topic, end)
        return 0
    lineage = Lineage.for_job(
        "ingest", platform, usecase, run_id,
        inputs=[{"topic": topic, "starting_offsets": start, "ending_offsets": end}],
    )
    raw = read_kafka_batch(spark, platform.kafka, topic, start, end)
    added = merge_new_rows(spark, bronze_records(raw), table, SOURCE_KEYS, metadata=lineage.to_json())
    log.info("%s -> %s: %d new records", topic, table, added)
    return added


def ingest_file(
    spark: SparkSession, platform: PlatformConfig, usecase: UseCaseConfig, stream: Stream, path: str, run_id: str
) -> int:
    """Merge one JSON-lines file into its bronze table; return the rows added."""
    table = bronze_table(platform, usecase, stream)
    lineage = Lineage.for_job("ingest", platform, usecase, run_id, inputs=[{"file": path}])
    added = merge_new_rows(spark, read_jsonl_records(spark, path), table, SOURCE_KEYS, metadata=lineage.to_json())
    log.info("%s -> %s: %d new records", path, table, added)
    return added


def run(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    from_files: str | None = None,
    starting_offsets: str | None = None,
    ending_offsets: str | None = None,
    run_id: str | None = None,
) -> dict[str, int]:
    """Ingest events and labels into bronze; return the rows added per stream.

    Example::

        run(spark, platform, load_usecase("fraud"))  # {'events': 400, 'labels': 398}
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    if from_files is None:
        return {
            s: ingest_topic(spark, platform, usecase, s, run_id, starting_offsets, ending_offsets) for s in STREAMS
        }
    base = from_files.rstrip("/")
    files = {s: f"{base}/{s}.jsonl" for s in STREAMS}
    local = "://" not in base or base.startswith("file:")
    if local:
        present = {s: p for s, p in files.items() if Path(p.removeprefix("file:")).exists()}
        if not present:
            raise MissingTableError(f"--from-files: neither events.jsonl nor labels.jsonl found in {from_files}")
        for s in sorted(set(files) - set(present)):
            log.warning("%s not found: no %s ingested", files[s], s)
        files = present
    return {s: ingest_file(spark, platform, usecase, s, p, run_id) for s, p in files.items()}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-files", metavar="DIR", help="read DIR/events.jsonl and DIR/labels.jsonl, not Kafka")
    parser.add_argument("--starting-offsets", help="earliest, or Spark's per-partition JSON (default: resume)")
    parser.add_argument("--ending-offsets", help="latest (default), or Spark's per-partition JSON")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.from_files and (args.starting_offsets or args.ending_offsets):
        parser.error("--starting-offsets/--ending-offsets apply to Kafka, not to --from-files")


def _run(ctx: JobContext) -> None:
    a = ctx.args
    added = run(ctx.spark, ctx.platform, ctx.uc, from_files=a.from_files, starting_offsets=a.starting_offsets,
                ending_offsets=a.ending_offsets)
    log.info("ingest %s: %s", ctx.uc.name, added)


def _preflight(ctx: JobContext) -> None:
    if not ctx.args.from_files:
        check_broker(ctx.platform.kafka)


main = entry_point("ingest", __doc__, run=_run, arguments=_arguments, check=_check, preflight=_preflight)
