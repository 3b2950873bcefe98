"""The first half of the closed loop on the real broker, real Delta and a real MLflow
registry: a champion trained by the pipeline; events in two phases, steady then a
covariate shift; the stream monitor itself publishes exactly one alert as the drifted
windows close (read back from <uc>.alerts with a real consumer) and a second run
publishes nothing new; the on-alert consumer retrains, and the new version passes the
gate into shadow (alias challenger, routing shadow, audited), the champion unchanged; a
scoring pass then serves every event once from the champion and scores it once, unserved,
with the shadow challenger. Under delivery.mode direct the same gate pass promotes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from deltalake import DeltaTable
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from driftline.alerts import monitoring_path
from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.kafka.clients import make_consumer
from driftline.kafka.spark import kafka_watermarks
from driftline.monitoring import await_all, load_reference_profile, start_monitor
from driftline.pipelines import retrain as pipeline
from driftline.produce import produce_usecase
from driftline.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    events_as_dicts,
    gate_and_promote,
    model_name,
    rebuild_test_set,
)
from driftline.scoring import MODE_TAG, decide_plan, predictions_path, start_scoring

SMALL_MODEL: dict[str, Any] = {
    "estimator": "logistic_regression",
    "estimator_params": {"maxIter": 10},
    "search": {"method": "grid", "params": {"regParam": [0.01]}, "parallelism": 1},
    "gate": {"metric": "roc_auc", "tolerance": 0.5, "min": None},
}
T0 = datetime(2024, 2, 1, tzinfo=UTC)


def minute(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def loop_fraud() -> UseCaseConfig:
    """fraud under a unique name: a one-point search, 15% frauds, 100 events per simulated
    minute, 2-minute windows flagged from 150 events, alert on 2 of the last 3 windows, and
    routing champion in the YAML (so shadow can only come from the gate pass)."""
    uc = load_usecase("fraud")
    return uc.replace(**{
        "name": f"loop_{uuid.uuid4().hex[:6]}",
        "model": {**uc.raw("model"), **SMALL_MODEL},
        "simulator": {**uc.simulator, "fraud_rate": 0.15, "events_per_hour": 6000},
        "drift": {**uc.raw("drift"), "window": "2m", "lateness": "1m", "min_samples": 150,
                  "alert": {"n": 2, "m": 3, "retrain": True}},
        "streaming": {**uc.raw("streaming"), "trigger": "availableNow"},
        "routing": {"mode": "champion", "share": 0.05},
        "delivery": {"mode": "progressive"},
    })


def read_topic(platform: PlatformConfig, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every message on ``topic``, read from the start by a new consumer group."""
    high = sum(h for _, h in kafka_watermarks(platform.kafka, topic).values())
    consumer = make_consumer(platform.kafka, f"test-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < high and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def test_monitor_alert_retrains_into_shadow(spark: SparkSession, broker_platform: PlatformConfig) -> None:
    platform, uc = broker_platform, loop_fraud()
    name = model_name(uc)
    client = MlflowClient(platform.mlflow.tracking_uri, registry_uri=platform.mlflow.tracking_uri)
    alerts_topic = uc.topic("alerts")

    # ---- a champion trained by the pipeline on 9 steady minutes: the first model goes straight to champion
    produce_usecase(platform, uc, events=900, seed=3, flush_labels=True, start=minute(0))
    initial = pipeline.run(spark, platform, uc, reason="initial")
    assert (initial.version, initial.promoted, initial.gate) == (1, True, "promote")
    assert alias_version(client, name, CHAMPION) == 1

    # ---- two phases: 00:10-00:16 steady, 00:16-00:22 amounts x4 (2-minute windows of about 200 events)
    produce_usecase(platform, uc, events=550, seed=4, flush_labels=True, start=minute(10))
    produce_usecase(platform, uc, events=600, seed=5, flush_labels=True, start=minute(16),
                    scenarios=["covariate_shift@0:factor=4"])

    # the monitor closes the windows and evaluates the rule itself: windows 16-18 and 18-20 are bad,
    # so it fires at 18-20 (2 of 14-16, 16-18, 18-20); 20-22 is bad too but within the cooldown
    profile = load_reference_profile(platform, uc)
    run1 = start_monitor(spark, platform, uc, profile, trigger="availableNow", sources=["events"])
    await_all(run1)
    assert run1.alerts is not None and len(run1.alerts.published) == 1
    assert run1.alerts.evaluations >= 2  # as windows closed in the batch, then for the windows the run's end wrote
    alert = run1.alerts.published[0]
    assert (alert.window_start, alert.window_end) == (minute(14), minute(20))
    assert (alert.bad_windows, alert.windows, alert.retrain) == (2, 3, True)
    assert {(r.source, r.subject) for r in alert.reasons} == {("drift", "amount")}
    assert {r.window_end for r in alert.reasons} == {minute(18), minute(20)}
    messages = read_topic(platform, alerts_topic)
    assert len(messages) == 1 and messages[0].key().decode() == alert.alert_id
    published = json.loads(messages[0].value())
    assert (published["usecase"], published["window_start"], published["window_end"]) == (
        uc.name, minute(14).isoformat(), minute(20).isoformat())
    assert published["reference_version"] == profile["model_version"] == 1  # the champion the windows were judged by
    assert {(r["subject"], r["window_end"]) for r in published["reasons"]} == {
        ("amount", minute(18).isoformat()), ("amount", minute(20).isoformat())}
    drift = DeltaTable(monitoring_path(platform, uc, "drift")).to_pandas()
    bad_ends = sorted({e.replace(tzinfo=UTC) for e in drift.loc[drift["drifted"], "window_end"]})
    assert bad_ends == [minute(18), minute(20), minute(22)]  # the steady windows are clean
    recorded = DeltaTable(monitoring_path(platform, uc, "alerts")).to_pyarrow_table().to_pylist()
    assert [r["alert_id"] for r in recorded] == [alert.alert_id]

    # ---- more steady events (00:30); then, as in `driftline run`, the on-alert consumer retrains in a
    # thread while the monitor runs again: it evaluates the new window and publishes nothing new
    produce_usecase(platform, uc, events=200, seed=6, flush_labels=True, start=minute(30))
    seen: list[pipeline.AlertHandled] = []
    started: list[tuple[str, int]] = []  # (alert id, versions registered when its retraining started)
    result: dict[str, Any] = {}

    def consume() -> None:
        result["handled"] = pipeline.run_on_alert(
            spark, platform, uc, max_alerts=1, timeout_s=400, on_handled=seen.append,
            on_start=lambda a: started.append((a.alert_id, len(client.search_model_versions(f"name='{name}'")))))

    retrainer = threading.Thread(target=consume, name="retrain-test")
    retrainer.start()
    run2 = start_monitor(spark, platform, uc, profile, trigger="availableNow", sources=["events"])
    await_all(run2)
    assert run2.alerts is not None and run2.alerts.evaluations >= 1 and run2.alerts.published == []
    assert sum(h for _, h in kafka_watermarks(platform.kafka, alerts_topic).values()) == 1
    retrainer.join(420)
    assert not retrainer.is_alive()

    # ---- the retrain: the gate passes and the new version goes to shadow
    handled = result["handled"]
    assert [(h.alert_id, h.action) for h in handled] == [(alert.alert_id, "retrained")] and seen == handled
    assert started == [(alert.alert_id, 1)]  # said before the new version was registered
    outcome = handled[0].outcome
    assert outcome is not None and outcome.version == 2 and outcome.ingested["events"] == 1350
    assert (outcome.gate, outcome.promoted) == ("shadow_start", False)
    assert alias_version(client, name, CHALLENGER) == 2
    assert alias_version(client, name, CHAMPION) == 1  # unchanged
    assert client.get_registered_model(name).tags[MODE_TAG] == "shadow"
    plan = decide_plan(platform, uc, 0)  # what a running scoring query reads at its next batch
    assert (plan.champion_version, plan.challenger_version, plan.mode) == (1, 2, "shadow")
    audit = events_as_dicts(spark, platform, uc)
    trigger = [e for e in audit if e["action"] == "retrain_triggered"][-1]
    assert (trigger["reason"], trigger["from_version"], trigger["to_version"]) == (
        f"alert {alert.alert_id}", 1, 2)
    shadow = [e for e in audit if e["action"] == "shadow_start"]
    assert len(shadow) == 1 and (shadow[0]["from_version"], shadow[0]["to_version"]) == (1, 2)
    evidence = shadow[0]["metrics"]
    assert set(evidence) >= {"challenger_roc_auc", "champion_roc_auc"}
    assert shadow[0]["reason"] == (f"gate passed (roc_auc {evidence['challenger_roc_auc']:.4g} vs champion "
                                   f"{evidence['champion_roc_auc']:.4g}): in shadow until delivery has evidence")
    assert not [e for e in audit if e["action"] == "promote" and e["to_version"] == 2]

    # the consumer committed the alert: a new poll finds nothing, and `stop` ends it within one poll
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()
    began = time.monotonic()
    assert pipeline.run_on_alert(spark, platform, uc, stop=stop, poll_s=0.5) == []
    assert stop.is_set() and time.monotonic() - began < 30

    # ---- a scoring pass: every event served once by the champion and scored once, unserved, in shadow
    query = start_scoring(spark, platform, uc, trigger="availableNow")
    query.awaitTermination(600)
    assert query.exception() is None
    preds = DeltaTable(predictions_path(platform, uc)).to_pandas()
    assert preds["event_id"].nunique() == 900 + 550 + 600 + 200  # nothing lost
    served = preds[preds["served"]]
    assert Counter(served["event_id"]).most_common(1)[0][1] == 1 and len(served) == preds["event_id"].nunique()
    assert set(zip(served["route"], served["model_version"], strict=True)) == {("champion", 1)}
    unserved = preds[~preds["served"]]
    assert sorted(unserved["event_id"]) == sorted(served["event_id"])
    assert set(zip(unserved["route"], unserved["model_version"], strict=True)) == {("shadow", 2)}

    # ---- delivery.mode direct: the same gate pass promotes at once
    direct = uc.replace(delivery={"mode": "direct"})
    test, spec, metrics = rebuild_test_set(spark, platform, direct, 2)
    decision = gate_and_promote(spark, platform, direct, 2, test, spec, metrics)
    assert decision.passed and decision.action == "promote"
    assert alias_version(client, name, CHAMPION) == 2
