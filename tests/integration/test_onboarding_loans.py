"""A third use case, onboarded from its YAML alone (docs/examples/loans/loans.yaml): the
entity is the event itself, there are no windowed aggregates, booleans and optional
fields, categories full of spaces and symbols. The records are published with kcat,
a Kafka client the project does not use, and go through ingest → validate → features
→ train → streaming score → monitor on the real broker, Delta and MLflow."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from driftline import catalog
from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.kafka.broker import EmbeddedBroker
from driftline.kafka.clients import ensure_topics
from driftline.monitoring import await_all, load_reference_profile, start_monitor
from driftline.pipelines import batch_score, build_features, ingest, train, validate
from driftline.scoring import start_scoring

EXAMPLE = PROJECT_ROOT / "docs" / "examples" / "loans"
N = 3000

# bad records, each with the reason validation must give (RFC 8259 and extra: forbid)
POISON = [
    ("{'application_id': 'bad-1', 'product': 'BNPL: 3×'}", "not_json"),
    ('{"application_id": "bad-2", "product": "BNPL: 3×", "region": "N/A", "income": NaN, "amount": 500.0, '
     '"age": 30, "has_coapplicant": false, "submitted_at": "2024-03-01T10:00:00Z"}', "not_json"),
    ('{"application_id": "bad-3", "product": "BNPL: 3×", "region": "N/A", "income": "Infinity", "amount": 500.0, '
     '"age": 30, "has_coapplicant": false, "submitted_at": "2024-03-01T10:00:00Z"}', "wrong_type:income"),
    ('{"application_id": "bad-4", "product": "BNPL: 3×", "region": "N/A", "income": 100.0, "amount": 500.0, '
     '"age": 30, "has_coapplicant": false, "submitted_at": "2024-03-01T10:00:00Z", "promo_code": "X"}',
     "unknown_field:promo_code"),
    ('{"application_id": "bad-5", "product": "Card - Gold", "region": "N/A", "income": 100.0, "amount": 500.0, '
     '"age": 30, "has_coapplicant": "yes", "submitted_at": "2024-03-01T10:00:00Z"}', "not_allowed:product"),
]


def kcat(bootstrap: str, topic: str, lines: list[str], tmp: Path) -> None:
    """Publish one message per line with kcat (Debian's kcat; bin/ensure-system installs it)."""
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed: run bin/ensure-system (apt-get install kcat)"
    path = tmp / f"{topic}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    subprocess.run([exe, "-P", "-b", bootstrap, "-t", topic, "-l", str(path)], check=True, timeout=60)


def make_data(n: int) -> tuple[list[dict], list[dict]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("loans_data", EXAMPLE / "make_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    events, labels = module.records(n, 3, dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    return events, labels


def delta(path: str) -> pd.DataFrame:
    return DeltaTable(path).to_pandas()


def test_a_new_use_case_from_yaml_alone_end_to_end(
    spark: SparkSession, broker_platform: PlatformConfig, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    platform = broker_platform
    uc: UseCaseConfig = load_usecase(EXAMPLE / "loans.yaml").replace(name=f"loans_{uuid.uuid4().hex[:6]}")
    events, labels = make_data(N)
    ensure_topics(platform.kafka, [uc.topic("events"), uc.topic("labels")], partitions=2)
    lines = [json.dumps(e, ensure_ascii=False) for e in events]
    # the poison records sit among the good ones, and one good event is sent twice
    lines = lines[:100] + [text for text, _ in POISON] + lines[100:] + [lines[7]]
    kcat(broker.bootstrap, uc.topic("events"), lines, tmp_path)
    kcat(broker.bootstrap, uc.topic("labels"), [json.dumps(lb) for lb in labels], tmp_path)

    # --- batch: ingest, validate, features, train
    ingest.run(spark, platform, uc)
    bronze = delta(catalog.path(platform, "bronze_events", uc))
    assert sorted(bronze["value"].tolist()) == sorted(lines)  # byte for byte, accents and symbols included
    validate.run(spark, platform, uc)
    silver = delta(catalog.path(platform, "silver_events", uc)).set_index("application_id").sort_index()
    assert len(silver) == N and silver.index.is_unique
    quarantine = delta(catalog.path(platform, "quarantine_events", uc))
    got = dict(zip(quarantine["value"], quarantine["reason"], strict=True))
    assert got == {**{text: reason for text, reason in POISON}, lines[7]: "duplicate"}
    sent = pd.DataFrame(events).set_index("application_id").sort_index()
    assert silver["product"].tolist() == sent["product"].tolist()
    assert silver["has_coapplicant"].tolist() == sent["has_coapplicant"].tolist()
    assert silver["existing_customer"].isna().sum() == sent["existing_customer"].isna().sum() > 0
    report = delta(catalog.path(platform, "validation", uc)).set_index("dataset")
    assert report.loc["events", "records_in"] == len(lines)
    assert dict(report.loc["events", "unknown_fields"]) == {"promo_code": 1}

    assert build_features.run(spark, platform, uc) == {"offline": True, "online": False}
    offline = delta(catalog.path(platform, "features_offline", uc)).set_index("application_id").sort_index()
    assert len(offline) == N  # every event is labelled
    assert list(offline.columns[:2]) == ["submitted_at", "income"]  # the entity column is the id, once
    np.testing.assert_allclose(offline["amount_to_income"], sent["amount"] / sent["income"], rtol=1e-12)
    assert offline["has_coapplicant"].tolist() == sent["has_coapplicant"].astype(float).tolist()
    assert set(offline["existing_customer"].dropna()) == {"true", "false"}
    assert offline["hour_of_day"].tolist() == pd.to_datetime(sent["submitted_at"]).dt.hour.tolist()
    truth = pd.DataFrame(labels).set_index("application_id").sort_index()
    assert offline["defaulted"].tolist() == truth["defaulted"].astype(int).tolist()

    outcome = train.run(spark, platform, uc)
    assert outcome.gate is not None and outcome.gate.passed, outcome
    assert outcome.metrics["roc_auc"] > 0.75, outcome.metrics  # the generator's signal is strong

    # --- streaming score: the same topic, the new champion
    query = start_scoring(spark, platform, uc, trigger="availableNow")
    query.awaitTermination(600)
    assert query.exception() is None
    predictions = delta(catalog.path(platform, "predictions", uc)).set_index("event_id").sort_index()
    assert predictions.index.tolist() == silver.index.tolist()  # every good event once
    stream_bad = delta(catalog.path(platform, "quarantine_events_stream", uc))
    assert sorted(stream_bad["reason"]) == sorted([r for _, r in POISON] + ["duplicate"])
    # online scores equal batch scores of the same model on the offline features
    batch_score.run(spark, platform, uc, table=catalog.path(platform, "features_offline", uc))
    batch = delta(catalog.path(platform, "predictions_batch", uc)).set_index("application_id").sort_index()
    np.testing.assert_allclose(predictions["score"], batch["score"], rtol=0, atol=1e-9)
    assert predictions["prediction"].tolist() == batch["prediction"].tolist()

    # --- monitor: drift, quality and performance windows of the finished topics
    profile = load_reference_profile(platform, uc)
    await_all(start_monitor(spark, platform, uc, profile, trigger="availableNow"))
    drift = delta(catalog.path(platform, "drift", uc))
    window = pd.Timedelta(uc.drift.window)
    expected = sorted(set(pd.to_datetime(sent["submitted_at"], utc=True).dt.floor(window)))
    assert sorted(set(pd.to_datetime(drift["window_start"], utc=True))) == expected  # the last window too
    assert not drift["drifted"].any()  # the same distribution throughout
    performance = delta(catalog.path(platform, "performance", uc))
    assert not performance.empty and math.isfinite(performance["value"].iloc[0])
