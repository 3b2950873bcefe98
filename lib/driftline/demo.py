"""The smoke path ``make demo`` runs: broker → JSON events → Structured Streaming →
Delta, verified by an independent Delta reader (delta-rs).

    run_smoke(load_platform(), events=10_000)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from driftline.config import PlatformConfig
from driftline.kafka_io import ensure_topics, make_producer

log = logging.getLogger(__name__)

SMOKE_TOPIC = "smoke.events"


@dataclass(frozen=True)
class SmokeResult:
    run_id: str
    produced: int
    acked: int
    in_table: int
    distinct_in_table: int
    table: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.acked == self.produced == self.in_table == self.distinct_in_table


def produce_json_events(platform: PlatformConfig, topic: str, n: int, run_id: str) -> int:
    """Publish ``n`` small JSON events tagged with ``run_id``; return how many were acknowledged."""
    if n < 1:
        raise ValueError(f"n: expected a positive number of events, got {n}")
    producer = make_producer(platform.kafka)
    acked = 0
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            errors.append(str(err))

    for i in range(n):
        event = {"event_id": f"{run_id}-{i}", "run_id": run_id, "seq": i, "amount": round(i * 0.01, 2)}
        producer.produce(topic, key=str(i % 97), value=json.dumps(event), on_delivery=on_delivery)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    if errors:
        log.warning("%d delivery errors, first: %s", len(errors), errors[0])
    return acked


def stream_topic_to_delta(platform: PlatformConfig, topic: str, table: str, checkpoint: str) -> None:
    """Copy everything new on ``topic`` into the Delta table (trigger availableNow)."""
    from driftline.session import build_session
    from driftline.streaming_io import raw_records, read_kafka_stream, write_delta_stream

    spark = build_session(platform, "driftline-smoke")
    raw = raw_records(read_kafka_stream(spark, platform.kafka, topic))
    query = write_delta_stream(raw, table, checkpoint, trigger="availableNow", query_name="smoke")
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"streaming query failed: {query.exception()}")


def count_run_in_table(table: str, run_id: str) -> tuple[int, int]:
    """(rows, distinct event ids) of ``run_id`` in the table, read with delta-rs."""
    from deltalake import DeltaTable

    values = DeltaTable(table).to_pandas(columns=["value"])["value"]
    events = (json.loads(v) for v in values)
    ids = [e["event_id"] for e in events if e.get("run_id") == run_id]
    return len(ids), len(set(ids))


def run_smoke(
    platform: PlatformConfig,
    events: int = 10_000,
    keep_broker: bool = False,
    echo: Callable[[str], None] = print,
) -> SmokeResult:
    """Run the smoke path end to end and report each step through ``echo``."""
    from driftline.kafka_local import EmbeddedBroker

    start = time.monotonic()
    broker = None
    if platform.kafka.uses_embedded:
        broker = EmbeddedBroker.from_config(platform)
        was_running = broker.pid() is not None
        broker.start()
        echo(f"1/4 Kafka broker {'already running' if was_running else 'started'} at {broker.bootstrap}")
        keep_broker = keep_broker or was_running
    else:
        echo(f"1/4 using Kafka at {platform.kafka.bootstrap}")
    try:
        ensure_topics(platform.kafka, [SMOKE_TOPIC])
        run_id = uuid.uuid4().hex[:8]
        acked = produce_json_events(platform, SMOKE_TOPIC, events, run_id)
        echo(f"2/4 published {events} JSON events to {SMOKE_TOPIC} (run {run_id}), {acked} acknowledged")
        table = platform.table_path("bronze", "smoke_events")
        stream_topic_to_delta(platform, SMOKE_TOPIC, table, platform.checkpoint("smoke"))
        echo(f"3/4 Structured Streaming (Kafka -> Delta, availableNow) wrote {table}")
        rows, distinct = count_run_in_table(table, run_id)
        result = SmokeResult(run_id, events, acked, rows, distinct, table, time.monotonic() - start)
        verdict = "OK" if result.ok else "MISMATCH"
        echo(f"4/4 delta-rs reads {rows} rows, {distinct} distinct event ids for run {run_id}: {verdict}")
        echo(f"smoke path finished in {result.seconds:.1f}s")
        if not result.ok:
            raise RuntimeError(f"smoke path lost or duplicated events: {result}")
        return result
    finally:
        if broker is not None and not keep_broker:
            broker.stop()
            echo("Kafka broker stopped (use --keep-broker to leave it running)")
