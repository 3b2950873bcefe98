"""Progressive delivery on evidence, end to end on the real broker, Delta and MLflow:
events and labels from the simulator through Kafka, the scoring query (availableNow) with
the champion and a challenger, then driftline.delivery.step. (a) An equally good or better
challenger moves shadow → canary 25% → canary 50% → champion, each step audited with
evidence that equals what numpy/scipy compute from the predictions and labels, and no
event is lost or served twice across the switches. (b) A deliberately worse challenger
(trained on inverted labels) is retired at the first stage with evidence: routing back to
champion only, the challenger alias removed, the champion unchanged."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from scipy import stats

from driftline import delivery
from driftline.alerts import Alert
from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.kafka.broker import EmbeddedBroker
from driftline.kafka.spark import raw_records, read_kafka_batch
from driftline.pipelines.retrain import stale
from driftline.produce import produce_usecase
from driftline.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    audit_path,
    client_for,
    events_as_dicts,
    model_name,
    promote,
    record_event,
    register_version,
)
from driftline.scoring import current_routing, predictions_path, routing_spec, set_routing, start_scoring
from driftline.simulate import make_generator
from driftline.tracking import MODEL_ARTIFACT, pip_requirements
from driftline.training import build_pipeline, model_spec

FRAUD = load_usecase("fraud")
PER_ROUND = 500
STREAM_START = pd.Timestamp("2024-02-01T00:00:00Z")


def delivery_usecase(tag: str, **delivery_keys: Any) -> UseCaseConfig:
    """fraud under a unique name: 15% fraud, small batches scored at once, and a delivery that
    decides on 150 labelled events (15 positives) per look, steps 25% and 50%."""
    spec = {**FRAUD.raw("delivery"), "steps": [0.25, 0.5], "min_labels": 150, "min_positives": 15,
            "margin": 0.02, "alpha": 0.05, **delivery_keys}
    return FRAUD.replace(
        name=f"dl{tag}{uuid.uuid4().hex[:6]}",
        simulator={**FRAUD.simulator, "fraud_rate": 0.15, "customers": 400, "events_per_hour": 2000},
        streaming={**FRAUD.raw("streaming"), "trigger": "availableNow", "max_offsets_per_trigger": 5000},
        routing={"mode": "champion", "share": 0.05},
        delivery=spec,
    )


@pytest.fixture(scope="module")
def loop_platform(base_platform: PlatformConfig, broker: EmbeddedBroker,
                  tmp_path_factory: pytest.TempPathFactory) -> PlatformConfig:
    data = base_platform.model_dump(mode="json")
    root = tmp_path_factory.mktemp("delivery")
    data["lake_root"] = str(root / "lake")
    data["checkpoint_root"] = str(root / "checkpoints")
    data["kafka"]["bootstrap_servers"] = broker.bootstrap
    return PlatformConfig.model_validate(data)


@pytest.fixture(scope="module")
def runs(spark: SparkSession, loop_platform: PlatformConfig) -> dict[str, str]:
    """Three fraud models fitted on 1,500 events straight from the simulator (the event fields
    the scoring query serves them with), logged as MLflow runs: 'basic' (amount, merchant
    category), 'full' (+ country, channel: better) and 'inverted' (the full features fitted to
    the inverted label: deliberately worse)."""
    uc = delivery_usecase("train")
    started = time.monotonic()
    chunk = make_generator(uc, seed=1, chunk_size=1500, diurnal=False).next_chunk()
    label = uc.label.field
    frame = chunk.events[[uc.event_id, "amount", "merchant_category", "country", "channel"]].merge(
        chunk.labels[[uc.event_id, label]], on=uc.event_id)
    frame[label] = frame[label].astype(float)
    frame[f"{label}_inverted"] = 1.0 - frame[label]
    train = spark.createDataFrame(frame).cache()
    client_for(loop_platform)
    out = {}
    for tag, categorical, target in (
        ("basic", ["merchant_category"], label),
        ("full", ["merchant_category", "country", "channel"], label),
        ("inverted", ["merchant_category", "country", "channel"], f"{label}_inverted"),
    ):
        spec = model_spec(uc).model_copy(update={"numeric": ["amount"], "categorical": categorical,
                                                 "estimator_params": {"maxIter": 10, "regParam": 0.01}})
        model = build_pipeline(spec, target, seed=1).fit(train)
        with mlflow.start_run(run_name=f"delivery-test-{tag}") as run:
            mlflow.spark.log_model(model, artifact_path=MODEL_ARTIFACT, pip_requirements=pip_requirements())
        out[tag] = run.info.run_id
        print(f"model {tag} fitted and logged at {time.monotonic() - started:.1f}s", flush=True)
    train.unpersist()
    return out


# --------------------------------------------------------------------------- helpers


def setup_models(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, champion_run: str,
                 challenger_run: str) -> None:
    """v1 champion, v2 challenger in shadow: what a gate pass does under delivery.mode progressive,
    done here with the registry and scoring functions directly."""
    assert register_version(spark, platform, uc, champion_run, threshold=0.5) == 1
    promote(spark, platform, uc, 1, force=True)
    assert register_version(spark, platform, uc, challenger_run, threshold=0.5) == 2
    set_routing(spark, platform, uc, "shadow", None)
    record_event(spark, audit_path(platform, uc), action="shadow_start", model=model_name(uc), from_version=1,
                 to_version=2, reason="gate passed (test): in shadow")


def produce_round(platform: PlatformConfig, uc: UseCaseConfig, k: int, n: int = PER_ROUND) -> None:
    start = (STREAM_START + timedelta(hours=k)).isoformat()
    assert produce_usecase(platform, uc, events=n, seed=100 + k, flush_labels=True, start=start).acked == n


@contextlib.contextmanager
def scoring(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> Iterator[StreamingQuery]:
    """The scoring query, running (1 s trigger) while delivery changes its routing and models."""
    query = start_scoring(spark, platform, uc, trigger="1 second")
    try:
        yield query
    finally:
        query.stop()


def wait_served(platform: PlatformConfig, uc: UseCaseConfig, query: StreamingQuery, events: int,
                timeout_s: float = 240) -> None:
    """Until ``events`` events have a served prediction (the query commits predictions first)."""
    path = predictions_path(platform, uc)
    deadline = time.monotonic() + timeout_s
    served = 0
    while time.monotonic() < deadline:
        if query.exception() is not None:
            raise AssertionError(f"scoring query failed: {query.exception()}")
        if DeltaTable.is_deltatable(path):
            t = DeltaTable(path).to_pyarrow_table(columns=["event_id", "served"])
            served = int(pc.sum(t.column("served")).as_py() or 0)
            if served >= events:
                assert served == events, f"{served} served predictions for {events} events"
                return
        time.sleep(0.5)
    raise AssertionError(f"only {served} of {events} events served within {timeout_s}s")


def routing(platform: PlatformConfig, uc: UseCaseConfig) -> tuple[str, float]:
    tags = dict(client_for(platform).get_registered_model(model_name(uc)).tags)
    r = current_routing(tags, routing_spec(uc))
    return r.mode, r.share


def predictions(platform: PlatformConfig, uc: UseCaseConfig) -> pd.DataFrame:
    return cast(pd.DataFrame, DeltaTable(predictions_path(platform, uc)).to_pandas())


def kafka_labels(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> pd.DataFrame:
    """event_id, label, label_time of every label record, parsed here from the JSON."""
    values = [json.loads(r["value"]) for r in
              read_kafka_batch(spark, platform.kafka, uc.topic("labels")).select(F.col("value").cast("string")).collect()]
    frame = pd.DataFrame({"event_id": [v[uc.event_id] for v in values],
                          "label": [float(v[uc.label.field]) for v in values],
                          "label_time": pd.to_datetime([v["label_time"] for v in values], utc=True)})
    return frame.drop_duplicates("event_id", keep="last")


def stage_pairs(platform: PlatformConfig, uc: UseCaseConfig, labels: pd.DataFrame, since: Any) -> pd.DataFrame:
    """Champion and challenger scores of every event scored since ``since``, with its label,
    in label-time order: the evidence, recomputed from the tables without the library."""
    p = predictions(platform, uc)
    p = p[p["scoring_time"] >= utc(p["scoring_time"], since)]
    a = p[(p["model_version"] == 1) & p["route"].isin(["champion", "control"])].set_index("event_id")["score"]
    b = p[(p["model_version"] == 2) & p["route"].isin(["challenger", "shadow"])].set_index("event_id")["score"]
    both = pd.DataFrame({"a": a, "b": b}).dropna().join(labels.set_index("event_id"), how="inner")
    return both.reset_index().sort_values(["label_time", "event_id"]).reset_index(drop=True)


def utc(column: pd.Series, when: Any) -> pd.Timestamp:
    """``when`` (naive UTC, as Spark returns it) comparable with ``column``."""
    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if column.dt.tz is not None and ts.tzinfo is None else ts


def auc(y: np.ndarray, s: np.ndarray) -> float:
    u = stats.mannwhitneyu(s[y == 1], s[y == 0]).statistic
    return float(u / ((y == 1).sum() * (y == 0).sum()))


def check_evidence(row: dict[str, Any], pairs: pd.DataFrame) -> None:
    """The audit row's evidence equals scipy on the same events: all of the stage, and the look's sample."""
    m = row["metrics"]
    y = pairs["label"].to_numpy()
    assert m["labelled"] == len(pairs) and m["positives"] == y.sum()
    assert m["champion_roc_auc_all"] == pytest.approx(auc(y, pairs["a"].to_numpy()), abs=1e-9)
    assert m["challenger_roc_auc_all"] == pytest.approx(auc(y, pairs["b"].to_numpy()), abs=1e-9)
    look = pairs.iloc[: int(m["n"])]
    ya = look["label"].to_numpy()
    assert m["champion_roc_auc"] == pytest.approx(auc(ya, look["a"].to_numpy()), abs=1e-9)
    assert m["challenger_roc_auc"] == pytest.approx(auc(ya, look["b"].to_numpy()), abs=1e-9)
    assert m["difference"] == pytest.approx(m["challenger_roc_auc"] - m["champion_roc_auc"], abs=1e-12)
    assert m["bound"] == pytest.approx(m["difference"] - stats.norm.ppf(1 - m["alpha"]) * m["se"], abs=1e-9)
    assert m["p_value"] < m["alpha"] and m["bound"] > -m["margin"]
    assert m["n"] >= 150 and (ya == 1).sum() >= 15 and (ya == 0).sum() >= 15


_CLOCK = [time.monotonic()]


def lap(what: str) -> None:
    now = time.monotonic()
    print(f"{what}: {now - _CLOCK[0]:.1f}s", flush=True)
    _CLOCK[0] = now


@pytest.fixture()
def timed() -> Iterator[None]:
    started = time.monotonic()
    _CLOCK[0] = started
    yield
    print(f"took {time.monotonic() - started:.0f}s")


# --------------------------------------------------------------------------- tests


def test_a_better_challenger_ramps_on_evidence_to_champion(
    spark: SparkSession, loop_platform: PlatformConfig, runs: dict[str, str], timed: None
) -> None:
    platform, uc = loop_platform, delivery_usecase("up")
    name = model_name(uc)
    client = client_for(platform)
    setup_models(spark, platform, uc, runs["basic"], runs["full"])
    assert routing(platform, uc) == ("shadow", 0.05)
    lap("setup")

    expected = [("shadow", 0.0, "advance", ("canary", 0.25)), ("canary", 0.25, "advance", ("canary", 0.5)),
                ("canary", 0.5, "promote", ("champion", 0.5))]
    with scoring(spark, platform, uc) as query:
        for k, (stage, share, action, after) in enumerate(expected):
            produce_round(platform, uc, k)
            wait_served(platform, uc, query, (k + 1) * PER_ROUND)
            lap(f"round {k}: produced and scored")
            before_step = datetime.now(UTC)
            decision = delivery.step(spark, platform, uc)
            after_step = datetime.now(UTC)
            lap(f"round {k}: step {decision.timings}")
            assert (decision.stage, decision.share, decision.action, decision.applied) == (
                stage, share, action, True), decision.describe()
            assert decision.evidence is not None and decision.evidence.verdict == "not_worse"
            assert decision.look >= 1 and decision.tripped == ()
            assert routing(platform, uc) == after
            if k == 0:
                # the same evidence again: the new stage needs its own, so nothing moves twice; the hold
                # says how much evidence its first look needs
                again = delivery.step(spark, platform, uc)
                assert (again.action, again.stage, again.share, again.labelled) == ("hold", "canary", 0.25, 0)
                assert again.labels_needed == 150 and again.positives_needed == 15 and "needs 150" in again.reason
                assert routing(platform, uc) == after
                lap("step again")
            row = [e for e in events_as_dicts(spark, platform, uc) if e["action"] in ("ramp", "promote")][-1]
            assert row["action"] == ("ramp" if action == "advance" else "promote")
            assert (row["from_version"], row["to_version"]) == (1, 2)
            assert row["metrics"]["share"] == share and "not worse" in row["reason"]
            check_evidence(row, stage_pairs(platform, uc, kafka_labels(spark, platform, uc), decision.stage_start))
            lap(f"round {k}: checked")

        assert alias_version(client, name, CHAMPION) == 2
        assert delivery.step(spark, platform, uc).action == "idle"  # promoted: nothing left to deliver
        # an alert raised before the promotion judged v1: retraining on alert skips it; a later one is not
        since = delivery.champion_since(platform, uc)
        assert since is not None and since[0] == 2
        assert before_step.replace(tzinfo=None) <= since[1] <= after_step.replace(tzinfo=None)
        old_alert, new_alert = (Alert(alert_id=f"a{i}", usecase=uc.name, window_start=t, window_end=t, bad_windows=2,
                                      windows=3, reasons=(), rule={}, created_at=t)
                                for i, t in enumerate((before_step, after_step + timedelta(seconds=1))))
        assert "before v2 became champion" in (stale(old_alert, since) or "")
        assert stale(new_alert, since) is None
        # every prediction so far was written before the promotion: the boundary is the newest event time
        served_until = delivery.scored_before(platform, uc, since[1])
        newest = DeltaTable(predictions_path(platform, uc)).to_pandas(columns=["event_time"])["event_time"]
        expected = pd.Timestamp(newest.max())
        expected = expected.tz_convert(None) if expected.tzinfo is not None else expected
        assert served_until is not None and pd.Timestamp(served_until).tz_convert(None) == expected
        # the running query switches to the new champion at its next batch
        produce_round(platform, uc, 3, n=200)
        wait_served(platform, uc, query, 3 * PER_ROUND + 200)
        lap("after the promotion: produced and scored")

    audit = events_as_dicts(spark, platform, uc)
    assert [e["action"] for e in audit if e["action"] in ("shadow_start", "ramp", "promote")] == [
        "promote", "shadow_start", "ramp", "ramp", "promote"]
    assert [e["metrics"].get("next_share") for e in audit if e["action"] == "ramp"] == [0.25, 0.5]

    # nothing lost or served twice across the switches
    preds = predictions(platform, uc)
    produced = {r[0] for r in raw_records(read_kafka_batch(spark, platform.kafka, uc.topic("events")))
                .select(F.get_json_object(F.col("value"), f"$.{uc.event_id}")).collect()}
    served = preds[preds["served"]]
    assert len(produced) == 3 * PER_ROUND + 200
    assert served["event_id"].is_unique and set(served["event_id"]) == produced
    promoted_at = [e["event_time"] for e in audit if e["action"] == "promote"][-1]
    last = preds[preds["scoring_time"] > utc(preds["scoring_time"], promoted_at)]
    assert len(last) == 200 and set(last["model_version"]) == {2} and set(last["route"]) == {"champion"}
    # shadow and canary: both models scored every event, exactly one of them served it
    paired = preds[~preds["event_id"].isin(last["event_id"])]
    assert len(paired) == 2 * 3 * PER_ROUND
    assert paired.groupby("event_id")["model_version"].agg(lambda v: tuple(sorted(v)) == (1, 2)).all()
    canary = paired[paired["route"].isin(["challenger", "control"])]
    assert len(canary) > 0 and canary.groupby("event_id")["route"].agg(set).eq({"challenger", "control"}).all()

    # every evaluation went to monitoring/<uc>_delivery, both models side by side
    rows = delivery.read_evaluations(spark, platform, uc)
    steps = [(r["stage"], r["share"], r["action"]) for r in rows if r["model"] == "challenger"]
    assert [s for s in steps if s[2] != "hold"] == [("shadow", 0.0, "advance"), ("canary", 0.25, "advance"),
                                                   ("canary", 0.5, "promote")]
    champ_rows = [r for r in rows if r["model"] == "champion" and r["action"] == "promote"]
    assert champ_rows[0]["model_version"] == 1 and champ_rows[0]["verdict"] == "not_worse"
    assert champ_rows[0]["routes"] == "champion+control" and champ_rows[0]["rows"] > 0


def test_a_worse_challenger_is_retired_at_the_first_stage_with_evidence(
    spark: SparkSession, loop_platform: PlatformConfig, runs: dict[str, str], timed: None
) -> None:
    platform, uc = loop_platform, delivery_usecase("down")
    name = model_name(uc)
    client = client_for(platform)
    setup_models(spark, platform, uc, runs["full"], runs["inverted"])
    with scoring(spark, platform, uc) as query:
        produce_round(platform, uc, 0, n=400)
        wait_served(platform, uc, query, 400)
        lap("produced and scored")
        decision = delivery.step(spark, platform, uc)
        lap(f"step {decision.timings}")
        assert (decision.stage, decision.action, decision.applied) == ("shadow", "retire", True), decision.describe()
        assert "metric_drop" in decision.tripped and decision.reason.startswith("guardrail tripped in shadow")
        assert decision.evidence is not None and decision.evidence.verdict == "worse"
        assert routing(platform, uc)[0] == "champion"
        assert alias_version(client, name, CHAMPION) == 1 and alias_version(client, name, CHALLENGER) is None

        # out of traffic: the next events are served by the champion only, and delivery has nothing to do
        produce_round(platform, uc, 1, n=100)
        wait_served(platform, uc, query, 500)
        lap("after the retirement: produced and scored")
    assert delivery.step(spark, platform, uc).action == "idle"

    retire = [e for e in events_as_dicts(spark, platform, uc) if e["action"] == "retire"]
    assert len(retire) == 1 and (retire[0]["from_version"], retire[0]["to_version"]) == (1, 2)
    m = retire[0]["metrics"]
    pairs = stage_pairs(platform, uc, kafka_labels(spark, platform, uc), decision.stage_start)
    y = pairs["label"].to_numpy()
    champion_auc, challenger_auc = auc(y, pairs["a"].to_numpy()), auc(y, pairs["b"].to_numpy())
    assert m["labelled"] == len(pairs) == 400
    assert m["champion_roc_auc_all"] == pytest.approx(champion_auc, abs=1e-9)
    assert m["challenger_roc_auc_all"] == pytest.approx(challenger_auc, abs=1e-9)
    assert m["guardrail_metric_drop"] == pytest.approx(champion_auc - challenger_auc, abs=1e-9)
    assert m["guardrail_metric_drop"] > 0.05
    assert f"metric_drop {m['guardrail_metric_drop']:.4g} > 0.05" in retire[0]["reason"]

    preds = predictions(platform, uc)
    late = preds[preds["scoring_time"] > utc(preds["scoring_time"], retire[0]["event_time"])]
    assert len(late) == 100 and set(late["route"]) == {"champion"} and set(late["model_version"]) == {1}
    assert preds["event_id"].nunique() == 500 and preds[preds["served"]]["event_id"].is_unique


def test_cli_deliver_prints_the_decision(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from driftline.cli import main

    result = CliRunner().invoke(main, ["deliver", "--help"])
    assert result.exit_code == 0
    assert "shadow" in result.output and "canary" in result.output and "retire" in result.output
