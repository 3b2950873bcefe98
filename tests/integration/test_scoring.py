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
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.errors import RegistryError
from driftline.features import feature_spec, point_in_time_features
from driftline.kafka.clients import make_consumer
from driftline.kafka.spark import raw_records, read_kafka_batch
from driftline.produce import produce_usecase
from driftline.quality import classify, event_dataset, good_records
from driftline.registry import client_for, model_name, promote, register_version, rollback
from driftline.scoring import (
    BUCKETS,
    BatchPlan,
    BatchScorer,
    PlanLog,
    canary_bucket,
    predictions_path,
    quarantine_stream_path,
    score_checkpoint,
    set_routing,
    split_aggregates,
    start_scoring,
    stream_features,
)
from driftline.simulate import make_generator
from driftline.tracking import MODEL_ARTIFACT, pip_requirements
from driftline.training import build_pipeline, model_spec

FRAUD = load_usecase("fraud")


# --------------------------------------------------------------------------- fixtures


def _gold_frame(spark: SparkSession, n: int, seed: int) -> DataFrame:
    """Rows with every model feature of the fraud use case; the label follows ``amount``."""
    spec = model_spec(FRAUD)
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {c: rng.gamma(2.0, 2.0, n) for c in spec.numeric}
    data["amount"] = rng.gamma(2.0, 40.0, n)
    for c in spec.categorical:
        allowed = FRAUD.field(c).allowed or ["x"]
        data[c] = rng.choice([str(a) for a in allowed], n)
    data[FRAUD.label.field] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(data["amount"] - 80) / 20))).astype(float)
    return spark.createDataFrame(pd.DataFrame(data))


@pytest.fixture(scope="module")
def runs(spark: SparkSession, base_platform: PlatformConfig) -> dict[str, str]:
    """Two different fitted fraud pipelines logged as MLflow runs (Spark flavour): 'a' and 'b'."""
    client_for(base_platform)
    out = {}
    for tag, seed, reg in (("a", 1, 0.0), ("b", 2, 0.5)):
        spec = model_spec(FRAUD).model_copy(update={"estimator_params": {"maxIter": 10, "regParam": reg}})
        model = build_pipeline(spec, FRAUD.label.field, seed=seed).fit(_gold_frame(spark, 400, seed))
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
    first = predictions(platform, uc)
    assert first["served"].all() and first["event_id"].is_unique and len(first) == 2500
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
    second = second[~second["event_id"].isin(first["event_id"])]
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
                if DeltaTable.is_deltatable(predictions_path(platform, uc)) and len(predictions(platform, uc)) >= sent:
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


def test_stream_features_over_micro_batches_equal_the_batch_backfill_for_eta(spark: SparkSession) -> None:
    """The regression use case through the same code: three micro-batches, each seeing
    the earlier ones as recent events, give the point-in-time backfill's values."""
    uc = load_usecase("eta")
    uc = uc.replace(simulator={**uc.simulator, "restaurants": 20})
    gen = make_generator(uc, seed=2, start="2024-02-01T00:00:00Z", diurnal=False, chunk_size=450)
    frame = gen.next_chunk().events
    frame = frame[[f.name for f in uc.schema_]]
    spec = feature_spec(uc)
    stream_spec, table_names = split_aggregates(spec, 3600)
    assert table_names == ["distance_mean_24h", "delivery_minutes_mean_7d", "delivery_minutes_std_7d"]
    recent: DataFrame | None = None
    parts = []
    for part in np.array_split(frame, 3):
        batch = spark.createDataFrame(part)
        parts.append(pdf(stream_features(batch, recent, None, spec, 3600)))
        recent = batch if recent is None else recent.unionByName(batch)
    got = pd.concat(parts).set_index(uc.event_id).sort_index()
    expected = pdf(point_in_time_features(spark.createDataFrame(frame), stream_spec)).set_index(uc.event_id)
    expected = expected.sort_index()
    assert list(got.index) == list(expected.index) and len(got) == 450
    for col in stream_spec.columns():
        pd.testing.assert_series_equal(got[col], expected[col], check_dtype=False, check_names=False)
    assert got["orders_1h"].max() >= 5
    # no online table: unknown counts are 0, unknown means null, ratios over them null
    assert got["distance_mean_24h"].isna().all() and got["distance_to_mean_24h"].isna().all()
