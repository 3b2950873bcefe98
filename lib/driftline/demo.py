"""What ``make demo`` runs.

``run_demo``: the batch lifecycle as a user runs it, on the embedded defaults:
simulated events published to Kafka, then each job submitted with
``spark-submit.sh`` (ingest → validate → build_features → train → batch_score →
streaming/score over the same topic),
then a summary read back with delta-rs and MLflow.

``run_smoke``: broker → JSON events → Structured Streaming → Delta, verified by
an independent Delta reader (delta-rs).

    run_smoke(load_platform(), events=10_000)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from driftline import catalog
from driftline.config import PROJECT_ROOT, PlatformConfig, load_usecase
from driftline.delta import count_local, read_local
from driftline.errors import MissingTableError, UsageError
from driftline.kafka.clients import ensure_topics, make_producer

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
        raise UsageError(f"n: expected a positive number of events, got {n}")
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
    from driftline.kafka.spark import raw_records, read_kafka_stream, write_delta_stream
    from driftline.session import build_session

    spark = build_session(platform, "driftline-smoke")
    raw = raw_records(read_kafka_stream(spark, platform.kafka, topic))
    query = write_delta_stream(raw, table, checkpoint, trigger="availableNow", query_name="smoke")
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(f"streaming query failed: {query.exception()}")


def count_run_in_table(table: str, run_id: str) -> tuple[int, int]:
    """(rows, distinct event ids) of ``run_id`` in the table, read with delta-rs."""
    frame = read_local(table, ["value"])
    if frame is None:
        raise MissingTableError(f"no Delta table at {table}: the streaming query wrote nothing")
    events = (json.loads(v) for v in frame["value"])
    ids = [e["event_id"] for e in events if e.get("run_id") == run_id]
    return len(ids), len(set(ids))


@contextlib.contextmanager
def kafka_for_demo(platform: PlatformConfig, keep_broker: bool, echo: Callable[[str], None]) -> Iterator[None]:
    """Start the embedded broker if the config uses it; stop it afterwards unless it
    was already running or ``keep_broker`` is set."""
    from driftline.kafka.broker import EmbeddedBroker

    if not platform.kafka.uses_embedded:
        echo(f"[kafka] using {platform.kafka.bootstrap}")
        yield
        return
    broker = EmbeddedBroker.from_config(platform)
    was_running = broker.pid() is not None
    broker.start()
    echo(f"[kafka] broker {'already running' if was_running else 'started'} at {broker.bootstrap}")
    try:
        yield
    finally:
        if not (keep_broker or was_running):
            broker.stop()
            echo("[kafka] broker stopped (use --keep-broker to leave it running)")


def run_smoke(
    platform: PlatformConfig,
    events: int = 10_000,
    keep_broker: bool = False,
    echo: Callable[[str], None] = print,
) -> SmokeResult:
    """Run the smoke path end to end and report each step through ``echo``."""
    start = time.monotonic()
    with kafka_for_demo(platform, keep_broker, echo):
        ensure_topics(platform.kafka, [SMOKE_TOPIC])
        run_id = uuid.uuid4().hex[:8]
        acked = produce_json_events(platform, SMOKE_TOPIC, events, run_id)
        echo(f"1/3 published {events} JSON events to {SMOKE_TOPIC} (run {run_id}), {acked} acknowledged")
        table = catalog.path(platform, "smoke_events")
        stream_topic_to_delta(platform, SMOKE_TOPIC, table, catalog.checkpoint(platform, "smoke"))
        echo(f"2/3 Structured Streaming (Kafka -> Delta, availableNow) wrote {table}")
        rows, distinct = count_run_in_table(table, run_id)
        result = SmokeResult(run_id, events, acked, rows, distinct, table, time.monotonic() - start)
        verdict = "OK" if result.ok else "MISMATCH"
        echo(f"3/3 delta-rs reads {rows} rows, {distinct} distinct event ids for run {run_id}: {verdict}")
        echo(f"smoke path finished in {result.seconds:.1f}s")
        if not result.ok:
            raise RuntimeError(f"smoke path lost or duplicated events: {result}")
        return result


DEMO_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("jobs/ingest.py", ()), ("jobs/validate.py", ()), ("jobs/build_features.py", ()), ("jobs/train.py", ()),
    ("jobs/batch_score.py", ()),
    # the online path over the same events: Kafka -> features -> champion -> Delta + Kafka
    ("streaming/score.py", ("--trigger", "availableNow")),
)
# the tables the demo's summary shows (catalog keys), in pipeline order
DEMO_TABLES = (
    "bronze_events", "quarantine_events", "silver_events", "silver_labels", "features_offline", "features_online",
    "predictions_batch", "predictions", "features_stream", "quarantine_events_stream", "model_events",
)


def submit(job: str, args: list[str], overrides: tuple[str, ...] = ()) -> None:
    """Run ``./spark-submit.sh JOB ARGS`` as a user would; raise with its stderr tail on failure."""
    cmd = [str(PROJECT_ROOT / "spark-submit.sh"), job, *args]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "DRIFTLINE_HOME": str(PROJECT_ROOT)}
    res = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{job} exited with {res.returncode}:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")


def _events_in_topic(platform: PlatformConfig, topic: str) -> int:
    from driftline.kafka.clients import admin_client
    from driftline.kafka.spark import kafka_watermarks

    if topic not in admin_client(platform.kafka).list_topics(timeout=30).topics:
        return 0
    return sum(high - low for low, high in kafka_watermarks(platform.kafka, topic).values())


def _delta_rows(path: str) -> int:
    return count_local(path) or 0  # 0: a table a step did not write


def run_demo(
    platform: PlatformConfig,
    usecase: str = "fraud",
    events: int = 20_000,
    seed: int = 7,
    overrides: tuple[str, ...] = (),
    keep_broker: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, int]:
    """Publish a simulated stream and run every batch job on it; return table row counts."""
    from driftline.produce import produce_usecase

    uc = load_usecase(usecase)
    start = time.monotonic()
    total = len(DEMO_STEPS) + 1
    with kafka_for_demo(platform, keep_broker, echo):
        earlier = _events_in_topic(platform, uc.topic("events"))
        if earlier:
            # Same seed, same event ids: a re-run would publish 100% duplicates.
            seed += earlier
            echo(f"[kafka] {uc.topic('events')} already holds {earlier} events from earlier runs; "
                 f"publishing a new stream (seed {seed}) on top")
        result = produce_usecase(platform, uc, events=events, seed=seed, labels=True, flush_labels=True,
                                 scenarios=["malformed:rate=0.01", "duplicates:rate=0.01"])
        echo(f"[1/{total}] published {result.acked} events and {result.labels_acked} labels to "
             f"{uc.topic('events')} / {uc.topic('labels')} (1% malformed, 1% duplicates)")
        for i, (job, extra) in enumerate(DEMO_STEPS, start=2):
            t0 = time.monotonic()
            submit(job, ["--usecase", uc.name, *extra], overrides)
            echo(f"[{i}/{total}] ./spark-submit.sh {' '.join([job, '--usecase', uc.name, *extra])}  "
                 f"({time.monotonic() - t0:.0f}s)")
        shown = [catalog.table(key) for key in DEMO_TABLES]
        tables = {f"{t.layer}/{t.table_name(uc.name)}": _delta_rows(t.path(platform, uc)) for t in shown}
        echo("Delta tables (rows, read with delta-rs):")
        for name, rows in tables.items():
            echo(f"  {name:<32} {rows:>8}")
        echo(_registry_summary(platform, uc.name))
        echo(f"demo finished in {time.monotonic() - start:.0f}s; lake at {platform.path(platform.lake_root)}, "
             f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri "
             f"{platform.mlflow.resolved_tracking_uri(PROJECT_ROOT)}")
        return tables


def _registry_summary(platform: PlatformConfig, usecase: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(platform.mlflow.resolved_tracking_uri(PROJECT_ROOT))
    client = MlflowClient()
    name = f"{usecase}-model"
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001
        return f"MLflow: no registered model {name}"
    aliases = ", ".join(f"{alias}=v{version}" for alias, version in sorted(model.aliases.items()))
    champion = model.aliases.get("champion")
    metrics = ""
    run_id = client.get_model_version(name, champion).run_id if champion else None
    if run_id:
        run = client.get_run(run_id)
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(run.data.metrics.items()) if k.startswith("test_"))
    return f"MLflow: {name} aliases [{aliases}] {metrics}".rstrip()

