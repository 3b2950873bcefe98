"""Issue 7's proof for continuous training, end to end against the real broker:
simulated events and labels on Kafka → jobs/pipeline.py (ingest → validate →
features → train → gate) gives a champion; drift rows in monitoring/<uc>_drift
→ the N-of-M rule publishes one alert to <uc>.alerts (read back with a real
consumer) and records it in monitoring/<uc>_alerts; re-evaluating publishes
nothing; then the --on-alert trigger consumes the alert, retrains on fresh data
and registers a new challenger, audited as retrain_triggered; a redelivered
alert is skipped."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from driftline.alerts import evaluate_alerts, monitoring_path, read_windows
from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.kafka.clients import make_consumer, make_producer
from driftline.kafka.spark import kafka_watermarks
from driftline.pipelines import retrain as pipeline
from driftline.produce import produce_usecase
from driftline.registry import CHALLENGER, CHAMPION, alias_version, events_as_dicts, list_versions, model_name

SMALL_MODEL: dict[str, Any] = {
    "estimator": "logistic_regression",
    "estimator_params": {"maxIter": 10},
    "search": {"method": "grid", "params": {"regParam": [0.01]}, "parallelism": 1},
    "gate": {"metric": "roc_auc", "tolerance": 0.5, "min": None},
    "retrain_window": "2h",  # a retrain on an alert: the fresh day's rows only, not the history's
}
W0 = datetime(2024, 2, 1, tzinfo=UTC)


def small_fraud() -> UseCaseConfig:
    """fraud under a unique name (own topics and tables), a one-point search and more
    frauds, so that a small sample trains in seconds and its test set has both classes."""
    uc = load_usecase("fraud")
    return uc.replace(**{
        "name": f"fraud_{uuid.uuid4().hex[:6]}",
        "model": {**uc.raw("model"), **SMALL_MODEL},
        "simulator": {**uc.simulator, "fraud_rate": 0.15},
        "drift": {**uc.raw("drift"), "alert": {"n": 2, "m": 3, "retrain": True}},
    })


def write_drift(spark: SparkSession, path: str, rows: list[tuple[int, str, bool, int]]) -> None:
    """Rows of the monitor's drift contract: (window index, feature, drifted, computed minute)."""
    schema = ("window_start timestamp, window_end timestamp, feature string, kind string, statistic string, "
              "value double, p_value double, p_adjusted double, threshold double, drifted boolean, "
              "n_reference long, n_current long, computed_at timestamp")
    data = [
        (W0 + timedelta(minutes=i), W0 + timedelta(minutes=i + 1), feature, "numeric", "psi",
         0.5 if drifted else 0.01, 0.0001 if drifted else 0.8, 0.0002 if drifted else 0.9, 0.2, drifted,
         1000, 600, W0 + timedelta(minutes=i + 1, seconds=computed))
        for i, feature, drifted, computed in rows
    ]
    spark.createDataFrame(data, schema).write.format("delta").mode("append").save(path)


def read_topic(platform: PlatformConfig, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    consumer = make_consumer(platform.kafka, f"test-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    try:
        while len(messages) < expected and datetime.now(UTC) < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def test_drift_alert_triggers_retraining_and_a_new_challenger(
    spark: SparkSession, broker_platform: PlatformConfig, tmp_path: Path
) -> None:
    platform, uc = broker_platform, small_fraud()
    name = model_name(uc)
    client = MlflowClient(platform.mlflow.tracking_uri, registry_uri=platform.mlflow.tracking_uri)

    # ---- level 1, run once: events and labels on Kafka -> champion v1
    first = produce_usecase(platform, uc, events=800, seed=3, flush_labels=True)
    assert first.ok and first.labels_acked == 800
    initial = pipeline.run(spark, platform, uc, reason="initial")
    assert initial.ingested == {"events": 800, "labels": 800}
    assert initial.version == 1 and initial.promoted is True
    assert alias_version(client, name, CHAMPION) == 1

    # ---- drift rows: window 0 was recomputed (the latest computation is clean), windows 1 and 2 drifted
    drift = monitoring_path(platform, uc, "drift")
    write_drift(spark, drift, [(0, "amount", True, 0), (0, "country", False, 0), (0, "amount", False, 30),
                               (0, "country", False, 30), (1, "amount", True, 0), (1, "country", False, 0),
                               (2, "amount", True, 0), (2, "country", True, 0)])
    alerts = evaluate_alerts(spark, platform, uc)
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.window_start, alert.window_end) == (W0, W0 + timedelta(minutes=3))
    assert (alert.bad_windows, alert.windows, alert.retrain) == (2, 3, True)
    assert [(r.window_end, r.subject) for r in alert.reasons] == [
        (W0 + timedelta(minutes=2), "amount"), (W0 + timedelta(minutes=3), "amount"),
        (W0 + timedelta(minutes=3), "country")]

    # on the topic, read back with a real consumer, and in monitoring/<uc>_alerts
    messages = read_topic(platform, uc.topic("alerts"), expected=1)
    assert len(messages) == 1 and messages[0].key().decode() == alert.alert_id
    published = json.loads(messages[0].value())
    assert published["alert_id"] == alert.alert_id and published["usecase"] == uc.name
    assert published["rule"]["n"] == 2 and published["rule"]["m"] == 3
    assert {r["subject"] for r in published["reasons"]} == {"amount", "country"}
    recorded = DeltaTable(monitoring_path(platform, uc, "alerts")).to_pyarrow_table().to_pylist()
    assert [r["alert_id"] for r in recorded] == [alert.alert_id]
    assert recorded[0]["topic"] == uc.topic("alerts") and len(recorded[0]["reasons"]) == 3

    # re-evaluating the same windows raises nothing and publishes nothing
    assert evaluate_alerts(spark, platform, uc) == []
    assert sum(high for _, high in kafka_watermarks(platform.kafka, uc.topic("alerts")).values()) == 1
    assert len(DeltaTable(monitoring_path(platform, uc, "alerts")).to_pyarrow_table()) == 1

    # ---- fresh data, then the trigger: consume the alert, retrain, new challenger v2
    fresh = produce_usecase(platform, uc, events=300, seed=4, flush_labels=True, start="2024-02-02T00:00:00Z")
    assert fresh.ok
    handled = pipeline.run_on_alert(spark, platform, uc, max_alerts=1, timeout_s=300)
    assert [(h.alert_id, h.action) for h in handled] == [(alert.alert_id, "retrained")]
    outcome = handled[0].outcome
    assert outcome.ingested == {"events": 300, "labels": 300} and outcome.version == 2
    # model.retrain_window: v2 trained on the last 2 h of event time (the 300 fresh rows), v1 on all 800
    trained = {v: client.get_run(client.get_model_version(name, str(v)).run_id).data.params for v in (1, 2)}
    assert {v: sum(int(p[f"rows.{k}"]) for k in ("train", "validation", "test")) for v, p in trained.items()} == {
        1: 800, 2: 300}
    assert (trained[1]["window"], trained[2]["window"]) == ("all", "2h")
    assert alias_version(client, name, CHALLENGER) == 2
    # delivery.mode progressive (the default): the gate pass puts v2 in shadow, the champion stays
    assert (outcome.gate, outcome.promoted) == ("shadow_start", False)
    assert alias_version(client, name, CHAMPION) == 1
    assert [v["version"] for v in list_versions(platform, uc)] == [2, 1]
    triggers = [e for e in events_as_dicts(spark, platform, uc) if e["action"] == "retrain_triggered"]
    assert [(e["reason"], e["to_version"]) for e in triggers] == [
        ("initial", 1), (f"alert {alert.alert_id}", 2)]
    assert triggers[1]["from_version"] == 1 and triggers[1]["run_id"] == outcome.run_id
    # the trigger is stamped when the run started, before the versions it registered
    actions = [e["action"] for e in events_as_dicts(spark, platform, uc)]
    assert actions.index("retrain_triggered", 1 + actions.index("retrain_triggered")) < actions.index("register", 2)

    # ---- at-least-once delivery: the same alert again is skipped, nothing is retrained
    producer = make_producer(platform.kafka)
    producer.produce(uc.topic("alerts"), key=messages[0].key(), value=messages[0].value())
    producer.produce(uc.topic("alerts"), value=b"not an alert")
    assert producer.flush(30) == 0
    again = pipeline.run_on_alert(spark, platform, uc, max_alerts=2, timeout_s=120)
    assert [(h.alert_id, h.action) for h in again] == [(alert.alert_id, "skipped"), (None, "invalid")]
    assert "already triggered" in again[0].detail
    assert [v["version"] for v in list_versions(platform, uc)] == [2, 1]

    # ---- a new alert while v2 is in shadow: no second challenger before the evidence on v2 is in
    newer = {**published, "alert_id": f"{alert.alert_id}-later",
             "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    producer.produce(uc.topic("alerts"), key=newer["alert_id"].encode(), value=json.dumps(newer).encode())
    assert producer.flush(30) == 0
    later = pipeline.run_on_alert(spark, platform, uc, max_alerts=1, timeout_s=120)
    assert [(h.alert_id, h.action) for h in later] == [(newer["alert_id"], "skipped")]
    assert "challenger v2 is in progressive delivery" in later[0].detail
    assert [v["version"] for v in list_versions(platform, uc)] == [2, 1]


def test_windows_combine_drift_quality_and_performance_rows(
    spark: SparkSession, base_platform: PlatformConfig, tmp_path: Path
) -> None:
    data = base_platform.model_dump(mode="json")
    data["lake_root"] = str(tmp_path / "lake")
    platform, uc = PlatformConfig.model_validate(data), small_fraud()
    quality = ("window_start timestamp, window_end timestamp, metric string, column string, value double, "
               "threshold double, breached boolean, computed_at timestamp")
    performance = ("window_start timestamp, window_end timestamp, metric string, value double, n long, "
                   "threshold double, breached boolean, computed_at timestamp")

    def w(i: int) -> tuple[datetime, datetime]:
        return W0 + timedelta(minutes=i), W0 + timedelta(minutes=i + 1)

    computed = W0 + timedelta(hours=1)
    spark.createDataFrame([
        (*w(0), "volume", "events", 600.0, None, False, computed),
        (*w(0), "quarantine_rate", None, 0.2, 0.05, True, computed),
        (*w(1), "missing_rate", "device", 0.01, 0.1, None, computed),  # null counts as not breached
        (*w(3), "volume", "events", 10.0, None, False, computed),
    ], quality).write.format("delta").save(monitoring_path(platform, uc, "quality"))
    spark.createDataFrame([
        (*w(1), "roc_auc", 0.55, 300, 0.7, True, computed),
        (*w(2), "roc_auc", 0.9, 300, 0.7, False, computed),
    ], performance).write.format("delta").save(monitoring_path(platform, uc, "performance"))
    # a drift table without the contract's columns is left out, not an error
    spark.createDataFrame([(1,)], "x int").write.format("delta").save(monitoring_path(platform, uc, "drift"))

    windows = read_windows(platform, uc)
    assert [(x.window_end, [(r.source, r.subject, r.statistic) for r in x.reasons]) for x in windows] == [
        (w(0)[1], [("quality", "quarantine_rate", "quarantine_rate")]),
        (w(1)[1], [("performance", "roc_auc", "roc_auc")]),
        (w(2)[1], []),
        (w(3)[1], []),
    ]
    assert windows[1].reasons[0].value == pytest.approx(0.55) and windows[1].reasons[0].threshold == 0.7
    alerts = evaluate_alerts(spark, platform, uc, dry_run=True)
    assert [(a.window_end, a.bad_windows) for a in alerts] == [(w(1)[1], 2)]
    only_drift = uc.replace(drift={"alert": {"sources": ["drift"]}})
    assert evaluate_alerts(spark, platform, only_drift, dry_run=True) == []
