"""Issue 6's proof: online scoring against the real broker, real Delta tables and a
real MLflow registry. Events come from the simulator through Kafka; the scoring
query runs in this process (session Spark) or, for the crash tests, as its own
driver process that is killed with SIGKILL in the middle of a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from driftline import catalog
from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.entity_state import TS
from driftline.errors import ConfigError, RegistryError
from driftline.features import feature_spec, point_in_time_features
from driftline.kafka.clients import ensure_topics, make_consumer, make_producer
from driftline.kafka.spark import raw_records, read_kafka_batch
from driftline.pipelines import batch_score as batch_score_job
from driftline.produce import produce_usecase
from driftline.quality import classify, event_dataset, good_records, spark_schema
from driftline.query_metrics import batch_jobs
from driftline.registry import client_for, model_name, promote, register_version, rollback, version_threshold
from driftline.scoring import (
    BUCKETS,
    BatchPlan,
    BatchScorer,
    PlanLog,
    canary_bucket,
    predictions_path,
    quarantine_stream_path,
    route_and_score,
    score_checkpoint,
    set_routing,
    split_aggregates,
    start_scoring,
)
from driftline.simulate import encode_json_lines, make_generator
from driftline.tracking import MODEL_ARTIFACT, pip_requirements
from driftline.training import build_pipeline, model_spec
from support import gold_frame

FRAUD = load_usecase("fraud")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs(spark: SparkSession, base_platform: PlatformConfig) -> dict[str, str]:
    """Two different fitted fraud pipelines logged as MLflow runs (Spark flavour): 'a' and 'b'."""
    client_for(base_platform)
    out = {}
    for tag, seed, reg in (("a", 1, 0.0), ("b", 2, 0.5)):
        spec = model_spec(FRAUD).model_copy(update={"estimator_params": {"maxIter": 10, "regParam": reg}})
        model = build_pipeline(spec, FRAUD.label.field, seed=seed).fit(gold_frame(spark, 400, seed))
        with mlflow.start_run(run_name=f"scoring-test-{tag}") as run:
            mlflow.spark.log_model(model, artifact_path=MODEL_ARTIFACT, pip_requirements=pip_requirements())
        out[tag] = run.info.run_id
    return out


def scoring_usecase(**updates: Any) -> UseCaseConfig:
    """The fraud use case under a fresh name (own topics, tables and registered model):
    30 customers, 600 events per simulated hour, small micro-batches."""
    name = f"sc{uuid.uuid4().hex[:8]}"
    sim = {**FRAUD.simulator, "customers": 30, "events_per_hour": 600, **updates.pop("simulator", {})}
    streaming = {"trigger": "availableNow", "max_offsets_per_trigger": 150, **updates.pop("streaming", {})}
    return FRAUD.replace(name=name, simulator=sim, streaming=streaming, **updates)


def register_models(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, runs: dict[str, str]) -> None:
    """v1 (run a) champion, v2 (run b) challenger."""
    assert register_version(spark, platform, uc, runs["a"]) == 1
    promote(spark, platform, uc, 1, force=True)
    assert register_version(spark, platform, uc, runs["b"]) == 2


def good_events(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> DataFrame:
    """The valid events on the topic, parsed as the batch validation parses them."""
    raw = raw_records(read_kafka_batch(spark, platform.kafka, uc.topic("events")))
    return good_records(classify(raw, event_dataset(uc)), event_dataset(uc))


def table(path: str) -> pd.DataFrame:
    return cast(pd.DataFrame, DeltaTable(path).to_pandas())


def pdf(df: DataFrame) -> pd.DataFrame:
    return cast(pd.DataFrame, df.toPandas())


def predictions(platform: PlatformConfig, uc: UseCaseConfig) -> pd.DataFrame:
    return table(predictions_path(platform, uc))


def committed_rows(path: str) -> int:
    """Rows in a Delta table's latest commit; 0 while its first commit is still being written
    (a batch's sinks commit one after another, so one may exist before the next)."""
    if not DeltaTable.is_deltatable(path):
        return 0
    try:
        return len(table(path))
    except TableNotFoundError:
        return 0


def load_model(platform: PlatformConfig, uc: UseCaseConfig, version: int) -> PipelineModel:
    client_for(platform)
    return mlflow.spark.load_model(f"models:/{model_name(uc)}/{version}")


def run_available(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> None:
    query = start_scoring(spark, platform, uc, trigger="availableNow")
    query.awaitTermination(600)
    assert query.exception() is None


# --------------------------------------------------------------------------- tests


def test_shadow_scoring_features_predictions_and_quarantine(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str]
) -> None:
    uc = scoring_usecase(routing={"mode": "shadow"}, streaming={"max_offsets_per_trigger": 250})
    register_models(spark, platform, uc, runs)
    produced = produce_usecase(platform, uc, events=600, seed=3, labels=False, scenarios=["malformed:rate=0.05"])
    assert produced.ok and produced.acked == 600
    events = good_events(spark, platform, uc).cache()
    spec = feature_spec(uc)
    entities = sorted(r[0] for r in events.select(uc.entity_key).distinct().collect())

    # the online table knows half of the entities
    known = entities[::2]
    online = pd.DataFrame({uc.entity_key: known, "as_of": pd.Timestamp("2024-01-31"),
                           "txn_count_24h": [10 + i for i in range(len(known))],
                           "amount_mean_7d": [50.0 + i for i in range(len(known))],
                           "amount_std_7d": [5.0] * len(known), "merchants_distinct_24h": [3] * len(known),
                           "countries_distinct_7d": [1] * len(known), "frauds_known_7d": [0.0] * len(known)})
    spark.createDataFrame(online).write.format("delta").save(platform.table_path("gold", f"{uc.name}_features_online"))

    run_available(spark, platform, uc)

    # good + quarantined = produced; the bad ones carry their source coordinates and reach the DLQ
    n_good = events.count()
    quarantined = table(quarantine_stream_path(platform, uc))
    assert n_good + len(quarantined) == 600 and 15 <= len(quarantined) <= 50
    assert quarantined["reason"].notna().all() and set(quarantined["topic"]) == {uc.topic("events")}
    assert quarantined[["partition", "offset"]].drop_duplicates().shape[0] == len(quarantined)
    consumer = make_consumer(platform.kafka, f"t-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([uc.topic("dlq")])
    dlq: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(dlq) < len(quarantined) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error() and msg.value() is not None:
            dlq.append(cast(bytes, msg.value()))
    consumer.close()
    assert len(dlq) == len(quarantined)

    # every good event scored once by the champion (served) and once in shadow (never served)
    preds = predictions(platform, uc)
    assert preds["batch_id"].nunique() >= 3  # several micro-batches: windows cross batch boundaries
    champ, shadow = preds[preds["route"] == "champion"], preds[preds["route"] == "shadow"]
    assert len(champ) == len(shadow) == n_good and champ["event_id"].is_unique
    assert champ["served"].all() and not shadow["served"].any()
    assert set(champ["model_version"]) == {1} and set(shadow["model_version"]) == {2}

    # streaming features = the batch compiler on the same events (+ the online table)
    stream_spec, table_names = split_aggregates(spec, 3600)
    expected = pdf(point_in_time_features(events, stream_spec)).set_index(uc.event_id).sort_index()
    got = table(platform.table_path("gold", f"{uc.name}_features_stream"))
    got = got.set_index(uc.event_id).sort_index()
    assert list(got.index) == list(expected.index)
    for col in stream_spec.columns():
        pd.testing.assert_series_equal(got[col], expected[col], check_dtype=False, check_names=False)
    assert max(got["txn_count_1h"]) >= 10  # the windows really hold earlier events
    lookup = online.set_index(uc.entity_key)
    for col in table_names:
        want = got[uc.entity_key].map(lookup[col]).astype(float)
        if col != "amount_mean_7d" and col != "amount_std_7d":
            want = want.fillna(0.0)
        pd.testing.assert_series_equal(got[col].astype(float), want, check_names=False)
    ratio = got["amount"] / got["amount_mean_7d"]
    assert np.allclose(got["amount_to_mean_7d"].astype(float), ratio, equal_nan=True)

    # exact predictions: the registered versions on those features
    features = spark.createDataFrame(got.reset_index())
    for version, rows in ((1, champ), (2, shadow)):
        want = pdf(load_model(platform, uc, version).transform(features).select(
            F.col(uc.event_id), vector_to_array(F.col("probability")).getItem(1).alias("p")
        )).set_index(uc.event_id)["p"]
        scored = rows.set_index("event_id")["score"]
        assert np.allclose(scored.sort_index().to_numpy(), want.sort_index().to_numpy(), rtol=0, atol=1e-12)

    # only served rows reach <uc>.predictions
    served = pdf(read_kafka_batch(spark, platform.kafka, uc.topic("predictions")).select(
        F.get_json_object(F.col("value").cast("string"), "$.route").alias("route")))
    assert len(served) == n_good and set(served["route"]) == {"champion"}

    events.unpersist()


def test_canary_share_is_stable_per_entity_and_can_be_ramped(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str]
) -> None:
    uc = scoring_usecase(routing={"mode": "canary", "share": 0.2},
                         simulator={**FRAUD.simulator, "customers": 2000, "events_per_hour": 2000},
                         streaming={"max_offsets_per_trigger": 2000})
    register_models(spark, platform, uc, runs)
    assert produce_usecase(platform, uc, events=2500, seed=4, labels=False).acked == 2500
    run_available(spark, platform, uc)
    every = predictions(platform, uc)
    # both models score every event (paired evidence for delivery); exactly one row per event is served
    assert len(every) == 5000 and every.groupby("event_id")["served"].sum().eq(1).all()
    assert set(every.groupby(["route", "model_version", "served"]).size().index) == {
        ("champion", 1, True), ("control", 1, False), ("challenger", 2, True), ("shadow", 2, False)}
    served = every[every["served"]]
    pairs = every.pivot(index="event_id", columns="model_version", values="route")
    assert set(map(tuple, pairs.to_numpy())) == {("champion", "shadow"), ("control", "challenger")}
    first = served
    assert first["event_id"].is_unique and len(first) == 2500
    by_entity = first.groupby("entity")["route"].nunique()
    assert (by_entity == 1).all()  # the same entity always takes the same route
    share = (first.groupby("entity")["route"].first() == "challenger").mean()
    assert share == pytest.approx(0.2, abs=0.04), share
    assert set(first.loc[first["route"] == "challenger", "model_version"]) == {2}

    # ramp 20% -> 60% while nothing restarts: the earlier canary entities stay in the canary
    set_routing(spark, platform, uc, "canary", 0.6)
    assert produce_usecase(platform, uc, events=2500, seed=5, labels=False).acked == 2500
    run_available(spark, platform, uc)
    second = predictions(platform, uc)
    second = second[~second["event_id"].isin(first["event_id"]) & second["served"]]
    assert second["event_id"].is_unique and len(second) == 2500
    share2 = (second.groupby("entity")["route"].first() == "challenger").mean()
    assert share2 == pytest.approx(0.6, abs=0.04), share2
    was_canary = set(first.loc[first["route"] == "challenger", "entity"])
    assert (second.loc[second["entity"].isin(was_canary), "route"] == "challenger").all()
    # the route is the stable hash, as the library computes it
    buckets = pdf(spark.createDataFrame(second[["entity"]].drop_duplicates()).select(
        "entity", canary_bucket(F.col("entity")).alias("b"))).set_index("entity")["b"]
    expect = second.groupby("entity")["route"].first().map({"challenger": True, "champion": False})
    assert ((buckets < 0.6 * BUCKETS) == expect.reindex(buckets.index)).all()


def test_promotion_and_rollback_apply_at_the_next_batch_without_restart(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str]
) -> None:
    uc = scoring_usecase(routing={"mode": "champion"}, streaming={"max_offsets_per_trigger": 10_000})
    register_models(spark, platform, uc, runs)
    batches: list[int] = []
    query = start_scoring(spark, platform, uc, trigger="1 second", on_batch=batches.append)
    try:
        sent = 0
        for phase, action in enumerate(("start", "promote", "rollback")):
            if action == "promote":
                promote(spark, platform, uc, 2, force=True)
            elif action == "rollback":
                assert rollback(spark, platform, uc) == 1
            result = produce_usecase(platform, uc, events=200, seed=10 + phase, labels=False,
                                     start=f"2024-02-0{phase + 1}T00:00:00Z")
            assert result.acked == 200
            sent += 200
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if committed_rows(predictions_path(platform, uc)) >= sent:
                    break
                assert query.exception() is None
                time.sleep(1)
    finally:
        query.stop()
    preds = predictions(platform, uc)
    assert len(preds) == 600 and preds["event_id"].is_unique  # nothing lost, nothing twice
    day = pd.to_datetime(preds["event_time"]).dt.day
    assert set(preds.loc[day == 1, "model_version"]) == {1}
    assert set(preds.loc[day == 2, "model_version"]) == {2}
    assert set(preds.loc[day == 3, "model_version"]) == {1}
    # every batch id is recorded with the version that scored it
    log = PlanLog(spark, score_checkpoint(platform, uc))
    used = preds.groupby("batch_id")["model_version"].first()
    for batch_id, version in used.items():
        plan = log.get(int(batch_id))
        assert plan is not None and plan.champion_version == version


# --------------------------------------------------------------------------- crash and stop


def _submit(uc_file: Path, platform: PlatformConfig, log: Path, *extra: str, env: dict[str, str] | None = None
            ) -> subprocess.Popen[str]:
    """Start streaming/score.py as its own driver process (own process group), output to ``log``."""
    args = [sys.executable, str(PROJECT_ROOT / "streaming" / "score.py"), "--usecase", str(uc_file),
            "--set", f"lake_root={platform.lake_root}", "--set", f"checkpoint_root={platform.checkpoint_root}",
            "--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap}",
            "--set", f"mlflow.home={platform.mlflow.home}", "--set", "spark.ui_enabled=false",
            "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2", *extra]
    with log.open("w") as out:
        return subprocess.Popen(args, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, text=True,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "idempotence-off"])
def test_kill_9_mid_batch_then_restart(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str], tmp_path: Path, idempotent: bool
) -> None:
    uc = scoring_usecase(routing={"mode": "champion"}, streaming={"max_offsets_per_trigger": 100})
    register_models(spark, platform, uc, runs)
    uc_file = tmp_path / "uc.yaml"
    uc_file.write_text(yaml.safe_dump(uc.model_dump(mode="json", by_alias=True)))
    assert produce_usecase(platform, uc, events=400, seed=6, labels=False).acked == 400
    switch = () if idempotent else ("--unsafe-no-idempotence",)

    # 1. the driver writes batch 1's predictions, then is killed before Spark commits the batch
    marker = tmp_path / "marker"
    first_log, second_log = tmp_path / "driver-1.log", tmp_path / "driver-2.log"
    proc = _submit(uc_file, platform, first_log, *switch, env={"DRIFTLINE_FAULT_PAUSE_AFTER_WRITE": f"1:{marker}"})
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, first_log.read_text()[-3000:]
        assert time.monotonic() < deadline, "batch 1 was never written"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    written = predictions(platform, uc)
    assert 0 < len(written) < 400

    # 2. restart from the checkpoint, run until everything is scored, then SIGTERM: a clean stop
    proc = _submit(uc_file, platform, second_log, *switch, "--trigger", "1 second")
    try:
        deadline = time.monotonic() + 300
        while len(predictions(platform, uc)) < 400 or proc.poll() is not None:
            assert proc.poll() is None, second_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the restarted query did not catch up"
            time.sleep(1)
        time.sleep(3)  # a late duplicate would land now
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = second_log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "stopped" in out and "cleanly" in out

    preds = predictions(platform, uc)
    counts = preds.groupby("event_id").size()
    assert len(counts) == 400  # every acknowledged event is there
    if idempotent:
        assert (counts == 1).all(), counts[counts > 1]
    else:
        # without the Delta transaction ids the replay of batch 1 writes it again: the test sees it
        assert (counts > 1).sum() == (written["batch_id"] == 1).sum() > 0


def test_replayed_batch_keeps_its_model_version(spark: SparkSession, platform: PlatformConfig, tmp_path: Path
                                                ) -> None:
    """The plan of a batch id is decided once: a later alias change does not touch a replay."""
    uc = scoring_usecase()
    checkpoint = str(tmp_path / "cp")
    PlanLog(spark, checkpoint).put(BatchPlan(7, 3, None, "champion", 0.05))
    scorer = BatchScorer(spark, platform, uc, checkpoint)  # no model is registered: only a replay can work
    assert scorer.plan(7) == BatchPlan(7, 3, None, "champion", 0.05)
    with pytest.raises(RegistryError, match="no 'champion'"):
        scorer.plan(8)


def test_stream_features_equal_the_backfill_across_batches_late_events_and_a_restart(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str]
) -> None:
    """Per-entity state in the query: events in several micro-batches, 40 of them sent up to
    5 minutes late (within streaming.allowed_lateness), and a restart from the checkpoint
    between the two halves. Each event's stream aggregates are exactly those of the same
    entity's earlier events that had arrived by its micro-batch; for every event that no
    later-arriving earlier event could reach (the late events themselves included) that is
    the batch backfill's value."""
    uc = scoring_usecase(routing={"mode": "champion"}, streaming={"max_offsets_per_trigger": 120})
    register_models(spark, platform, uc, runs)
    gen = make_generator(uc, seed=8, start="2024-02-01T00:00:00Z", diurnal=False, chunk_size=600)
    frame = gen.next_chunk().events
    fields = list(uc.schema_)
    frame = frame[[f.name for f in fields]].sort_values(uc.event_time, kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(1)
    late = set(rng.choice(np.arange(50, len(frame)), size=40, replace=False).tolist())
    send_at = frame[uc.event_time] + pd.to_timedelta([300 if i in late else 0 for i in range(len(frame))], unit="s")
    order = np.lexsort((np.arange(len(frame)), send_at.to_numpy()))
    values = encode_json_lines(frame, fields)
    producer = make_producer(platform.kafka)
    ensure_topics(platform.kafka, [uc.topic("events")])
    half = len(order) // 2
    for part in (order[:half], order[half:]):
        for i in part:
            producer.produce(uc.topic("events"), key=str(frame.at[i, uc.entity_key]).encode(), value=values[i])
        assert producer.flush(60) == 0
        run_available(spark, platform, uc)  # the second run restarts from the first one's checkpoint

    got = table(catalog.path(platform, "features_stream", uc)).set_index(uc.event_id)
    assert len(got) == len(frame) and got.index.is_unique
    assert got["batch_id"].nunique() >= 5
    stream_spec, _ = split_aggregates(feature_spec(uc), uc.streaming.stream_window_max_s)
    names = [a.name for a in stream_spec.aggregates]
    assert names == ["txn_count_10m", "txn_count_1h", "amount_sum_1h"]

    # the oracle: the entity's events of earlier or the same micro-batch, strictly earlier in time
    ev = frame.set_index(uc.event_id).join(got[["batch_id"]])
    ts = pd.to_datetime(ev[uc.event_time], utc=True)
    visible_expected: dict[str, list[float]] = {n: [] for n in names}
    complete = []
    for eid, row in ev.iterrows():
        same = ev[(ev[uc.entity_key] == row[uc.entity_key]) & (ts < ts[eid])]
        reachable = same[ts[same.index] >= ts[eid] - pd.Timedelta("1h")]
        complete.append(bool((reachable["batch_id"] <= row["batch_id"]).all()))
        seen = same[same["batch_id"] <= row["batch_id"]]
        for a in stream_spec.aggregates:
            inside = seen[ts[seen.index] >= ts[eid] - pd.Timedelta(seconds=a.window_s)]
            visible_expected[a.name].append(float(len(inside)) if a.fn == "count" else float(inside["amount"].sum()))
    for n in names:
        want = pd.Series(visible_expected[n], index=ev.index)
        assert np.allclose(got.loc[ev.index, n].astype(float), want, rtol=1e-12, atol=1e-9), n

    # and the batch backfill, wherever arrival order could not matter: the late events included
    backfill = pdf(point_in_time_features(spark.createDataFrame(frame), stream_spec)).set_index(uc.event_id)
    complete_ids = ev.index[np.array(complete)]
    late_ids = [frame.at[i, uc.event_id] for i in late]
    assert set(late_ids) <= set(complete_ids) and len(complete_ids) >= 0.8 * len(frame)
    for n in names:
        pd.testing.assert_series_equal(got.loc[complete_ids, n].astype(float),
                                       backfill.loc[complete_ids, n].astype(float), check_names=False)
    assert got["txn_count_1h"].max() >= 10  # the windows hold earlier events, across the restart


def test_a_replay_reads_the_online_table_version_of_its_first_attempt(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str], tmp_path: Path
) -> None:
    uc = scoring_usecase(routing={"mode": "champion"})
    register_models(spark, platform, uc, runs)
    path = catalog.path(platform, "features_online", uc)
    row = {uc.entity_key: "c1", "as_of": pd.Timestamp("2024-01-31"), "txn_count_24h": 1, "amount_mean_7d": 5.0,
           "amount_std_7d": 1.0, "merchants_distinct_24h": 1, "countries_distinct_7d": 1, "frauds_known_7d": 0.0}
    spark.createDataFrame(pd.DataFrame([row])).write.format("delta").save(path)
    scorer = BatchScorer(spark, platform, uc, str(tmp_path / "cp"))
    first = scorer.plan(5)
    assert first.online_version == 0
    spark.createDataFrame(pd.DataFrame([{**row, "txn_count_24h": 99}])).write.format("delta").mode("overwrite").save(path)
    replay = BatchScorer(spark, platform, uc, str(tmp_path / "cp")).plan(5)  # a restarted driver replays batch 5
    assert replay == first
    online = scorer.online(replay.online_version)
    assert online is not None and online.collect()[0]["txn_count_24h"] == 1  # the version it first read
    assert scorer.plan(6).online_version == 1
    assert scorer.online(1).collect()[0]["txn_count_24h"] == 99  # type: ignore[union-attr]


def test_batch_and_streaming_scoring_decide_alike_at_each_versions_threshold(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str], tmp_path: Path
) -> None:
    """Champion and challenger decide at their own version's threshold (a tag written at
    registration): jobs/batch_score.py and the streaming scorer, which loads each threshold
    with its model, agree row for row; a version without the tag falls back to model.threshold."""
    uc = scoring_usecase(routing={"mode": "shadow"}, model={**FRAUD.raw("model"), "threshold": 0.5})
    assert register_version(spark, platform, uc, runs["a"], threshold=0.3) == 1
    promote(spark, platform, uc, 1, force=True)
    assert register_version(spark, platform, uc, runs["b"], threshold=0.7) == 2
    source = catalog.path(platform, "features_offline", uc)
    gold_frame(spark, 300, 12).select(
        "*", F.concat(F.lit("e"), F.monotonically_increasing_id().cast("string")).alias(uc.event_id),
        F.lit("c1").alias(uc.entity_key), F.lit("2024-02-01 00:00:00").cast("timestamp").alias(uc.event_time),
    ).write.format("delta").save(source)
    batch = {}
    for alias, version, day in (("champion", 1, "2024-02-01"), ("challenger", 2, "2024-02-02")):
        out = batch_score_job.run(spark, platform, uc, alias=alias, table=source, batch_date=day)
        assert out.model_version == version
        written = table(out.output)
        batch[version] = written[written["batch_date"] == day].set_index(uc.event_id).sort_index()

    scorer = BatchScorer(spark, platform, uc, str(tmp_path / "cp"))
    plan = scorer.plan(0)
    assert (plan.champion_version, plan.challenger_version, plan.mode) == (1, 2, "shadow")
    models = {v: scorer.model(v) for v in (1, 2)}
    assert scorer.thresholds == {1: 0.3, 2: 0.7}
    rows = spark.read.format("delta").load(source).withColumn("kafka_timestamp", F.current_timestamp())
    stream = pdf(route_and_score(rows, plan, models, uc, scorer.thresholds, model_name(uc)))
    for version, route in ((1, "champion"), (2, "shadow")):
        got = stream[stream["route"] == route].set_index("event_id").sort_index()
        assert list(batch[version].index) == list(got.index) and (got["model_version"] == version).all()
        assert np.allclose(batch[version]["score"], got["score"], rtol=0, atol=1e-12)
        assert (batch[version]["prediction"] == got["prediction"]).all()
    # the thresholds matter: the champion calls rows scoring in [0.3, 0.5) positive, the
    # challenger calls rows scoring in [0.5, 0.7) negative
    champion, challenger = batch[1], batch[2]
    low = (champion["score"] >= 0.3) & (champion["score"] < 0.5)
    assert low.any() and (champion.loc[low, "prediction"] == 1.0).all()
    high = (challenger["score"] >= 0.5) & (challenger["score"] < 0.7)
    assert high.any() and (challenger.loc[high, "prediction"] == 0.0).all()
    # a version registered without a threshold (before thresholds were stored) decides at model.threshold
    assert register_version(spark, platform, uc, runs["a"]) == 3
    assert version_threshold(client_for(platform), uc, 3) == 0.5


def test_few_jobs_per_micro_batch_and_state_bounded_by_event_time(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str], tmp_path: Path
) -> None:
    """Five hours of event time through small micro-batches: every batch runs at most 8 Spark
    jobs (counted from the driver's status store), and the state holds exactly the events
    within the retention of each bucket's clock: it levels off instead of growing with history."""
    uc = scoring_usecase(routing={"mode": "shadow"}, streaming={"max_offsets_per_trigger": 400, "state_buckets": 4})
    register_models(spark, platform, uc, runs)
    assert produce_usecase(platform, uc, events=3000, seed=21, labels=False).acked == 3000
    checkpoint = str(tmp_path / "cp")
    query = start_scoring(spark, platform, uc, trigger="availableNow", checkpoint=checkpoint)
    query.awaitTermination(600)
    assert query.exception() is None
    preds = predictions(platform, uc)
    assert len(preds) == 2 * 3000 and preds["batch_id"].nunique() >= 7

    jobs = batch_jobs(spark, str(query.id))
    assert set(jobs) >= set(preds["batch_id"].unique())
    assert max(n for n, _ in jobs.values()) <= 8, jobs

    state = spark.read.format("statestore").option("stateVarName", "recent").load(checkpoint).collect()
    assert 1 <= len(state) <= 4  # one row per bucket, whatever the number of entities or events
    kept = sum(len(r["value"][TS]) // 8 for r in state)
    retention_us = (max(uc.streaming.stream_window_max_s, uc.streaming.dedupe_window_s)
                    + uc.streaming.allowed_lateness_s) * 1_000_000
    events = good_events(spark, platform, uc).select(
        F.pmod(F.xxhash64(F.col(uc.entity_key).cast("string")), F.lit(4)).alias("b"),
        F.unix_micros(F.col(uc.event_time)).alias("t"))
    newest = events.groupBy("b").agg(F.max("t").alias("clock"))
    expected = events.join(newest, "b").where(F.col("t") >= F.col("clock") - F.lit(retention_us)).count()
    assert kept == expected and expected < 3000 / 3, (kept, expected)


def test_an_old_checkpoint_is_refused_and_migration_takes_over_without_loss_or_duplicates(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str], tmp_path: Path
) -> None:
    uc = scoring_usecase(routing={"mode": "champion"}, streaming={"max_offsets_per_trigger": 100})
    register_models(spark, platform, uc, runs)
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    assert produce_usecase(platform, uc, events=300, seed=31, labels=False).acked == 300
    query = start_scoring(spark, platform, uc, trigger="availableNow", checkpoint=old)
    query.awaitTermination(600)
    assert query.exception() is None and len(predictions(platform, uc)) == 300
    # the old query had written its last batch but not committed it, and knew no layout marker
    last = max(int(p.name) for p in (tmp_path / "old" / "commits").iterdir() if p.name.isdigit())
    (tmp_path / "old" / "commits" / str(last)).unlink()
    (tmp_path / "old" / "driftline-layout").unlink()
    with pytest.raises(ConfigError, match=r"--migrate-from .*old"):
        start_scoring(spark, platform, uc, trigger="availableNow", checkpoint=old)

    assert produce_usecase(platform, uc, events=200, seed=32, labels=False).acked == 200
    query = start_scoring(spark, platform, uc, trigger="availableNow", checkpoint=new, migrate_from=old)
    query.awaitTermination(600)
    assert query.exception() is None
    preds = predictions(platform, uc)
    assert len(preds) == 500 and preds["event_id"].is_unique  # every event once: none lost, none twice


def test_a_deployment_at_the_end_of_the_topic_starts_from_the_entities_history(
    spark: SparkSession, platform: PlatformConfig, runs: dict[str, str]
) -> None:
    """starting_offsets latest on a new checkpoint: the state is seeded from silver, so the
    first events scored after the deployment have the batch backfill's features."""
    uc = scoring_usecase(routing={"mode": "champion"}, streaming={"starting_offsets": "latest"})
    register_models(spark, platform, uc, runs)
    gen = make_generator(uc, seed=9, start="2024-02-01T00:00:00Z", diurnal=False, chunk_size=400)
    fields = list(uc.schema_)
    frame = gen.next_chunk().events[[f.name for f in fields]].sort_values(uc.event_time, kind="stable")
    frame = frame.reset_index(drop=True)
    history, live = frame.iloc[:300], frame.iloc[300:]
    schema = spark_schema(fields)
    spark.createDataFrame(history, schema).write.format("delta").save(catalog.path(platform, "silver_events", uc))

    ensure_topics(platform.kafka, [uc.topic("events")])
    query = start_scoring(spark, platform, uc, trigger="1 second")
    try:
        deadline = time.monotonic() + 180
        while not query.recentProgress and time.monotonic() < deadline:  # the start offsets are taken
            time.sleep(0.5)
        producer = make_producer(platform.kafka)
        for key, value in zip(live[uc.entity_key], encode_json_lines(live, fields), strict=True):
            producer.produce(uc.topic("events"), key=str(key).encode(), value=value)
        assert producer.flush(60) == 0
        while time.monotonic() < deadline:  # every sink of the batch has committed
            if min(committed_rows(predictions_path(platform, uc)),
                   committed_rows(catalog.path(platform, "features_stream", uc))) >= 100:
                break
            assert query.exception() is None
            time.sleep(1)
    finally:
        query.stop()
    got = table(catalog.path(platform, "features_stream", uc)).set_index(uc.event_id).sort_index()
    assert sorted(got.index) == sorted(live[uc.event_id])
    stream_spec, _ = split_aggregates(feature_spec(uc), uc.streaming.stream_window_max_s)
    backfill = pdf(point_in_time_features(spark.createDataFrame(frame, schema), stream_spec)).set_index(uc.event_id)
    for a in stream_spec.aggregates:
        pd.testing.assert_series_equal(got[a.name].astype(float), backfill.loc[got.index, a.name].astype(float),
                                       check_names=False)
    assert got["txn_count_1h"].min() >= 1  # every live event saw history it could only get from the seed
