"""Issue 17: what a registered version carries beside the model (its model card, its full
environment, its data as MLflow dataset inputs) and that its training data stays readable
while it is registered (``driftline vacuum``), on real Delta tables and a real MLflow store."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from model_gold import gold_rows, usecase, write_gold
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline.cli import main
from driftline.config import PlatformConfig
from driftline.delta import commit_user_metadata, delta_version
from driftline.model_card import CARD_MD, load_model_card
from driftline.pipelines import train as train_job
from driftline.registry import model_name, rebuild_test_set
from driftline.retention import FILES_PROP, interval_seconds, vacuum
from driftline.tracking import JVM_ARTIFACT, JVM_TAG, MODEL_PACKAGES, jvm_requirements
from driftline.training import evaluate

FRAUD = {"numeric": ["amount", "txn_count_1h", "hour_of_day"], "categorical": ["channel", "country"],
         "estimator": "logistic_regression", "estimator_params": {"maxIter": 20},
         "search": {"method": "grid", "params": {"regParam": [0.0, 0.01]}}}


def _client(platform: PlatformConfig) -> MlflowClient:
    uri = platform.mlflow.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_registered_version_carries_its_card_environment_and_datasets(
    spark: SparkSession, mlflow_platform: PlatformConfig
) -> None:
    card_spec: dict[str, Any] = {"intended_use": "Test use only.", "slices": ["channel", "country"],
                                 "min_slice_rows": 40, "min_positives": 200, "limits": ["Simulated data."]}
    uc = usecase("fraud", **FRAUD, card=card_spec)
    # channel 'd' is rare: its test slice is too small to judge
    path = write_gold(spark, mlflow_platform, uc, gold_rows(uc, 1600, seed=21, weights=(0.4, 0.35, 0.22, 0.03)))
    out = train_job.run(spark, mlflow_platform, uc)
    client = _client(mlflow_platform)
    run = client.get_run(out.run_id)
    name = model_name(uc)

    # 5. the model card: overall = the run's test metrics, each slice = a recomputation on its rows
    card = load_model_card(mlflow_platform, uc, out.version)
    assert card is not None and card["version"] == out.version and card["run_id"] == out.run_id
    assert card["intended_use"] == "Test use only."
    overall = card["metrics"]["overall"]
    for k in ("precision", "recall", "f1", "roc_auc", "pr_auc", "threshold"):
        assert overall[k] == run.data.metrics[f"test_{k}"], k
    assert overall["threshold"] == out.threshold == card["decision_threshold"]
    assert card["training_data"][0] == {"role": "training table", "path": path, "version": 0,
                                        "rows": {k: int(run.data.params[f"rows.{k}"]) for k in
                                                 ("train", "validation", "test")}}
    model = mlflow.spark.load_model(f"models:/{name}/{out.version}")
    test, _, _ = rebuild_test_set(spark, mlflow_platform, uc, out.version)
    slices = {(s["column"], s["value"]): s for s in card["metrics"]["slices"]}
    assert set(slices) == {("channel", v) for v in "abcd"} | {("country", v) for v in "abcd"}
    for (column, value), s in slices.items():
        again = evaluate(model, test.where(F.col(column) == value), "binary", uc.label.field, out.threshold)
        for k in ("precision", "recall", "f1", "roc_auc", "rows"):
            assert s[k] == pytest.approx(again[k], rel=1e-12, nan_ok=True), (column, value, k)
        assert s["positives"] == again["tp"] + again["fn"]
        assert s["too_small"] == (s["rows"] < 40 or s["positives"] < 200)
    assert slices[("channel", "d")]["rows"] < 40 and slices[("channel", "d")]["too_small"]
    assert sum(s["rows"] for (c, _), s in slices.items() if c == "channel") == overall["rows"]
    limits = " | ".join(card["limits"])
    assert card["limits"][0] == "Simulated data."
    assert f"fewer than 200 test positives ({int(overall['positives'])} of" in limits
    assert "channel=d" in limits and "too small" in limits
    # coefficients by feature name, one-hot slots included; the label's drivers weigh most
    weights = {w["feature"]: w["value"] for w in card["feature_weights"]["values"]}
    assert card["feature_weights"]["kind"] == "coefficients"
    assert len(weights) == len(model.stages[-1].coefficients) == len(card["features"])
    assert {"amount", "txn_count_1h", "hour_of_day"} <= set(weights)
    assert {f"channel={v}" for v in "abc"} <= set(weights) and all(f.count("=") <= 1 for f in weights)
    assert card["feature_weights"]["values"][0]["feature"] == "amount" and weights["amount"] > 0
    markdown = mlflow.artifacts.load_text(f"runs:/{out.run_id}/{CARD_MD}")
    assert "## Intended use\n\nTest use only." in markdown and "| channel=d |" in markdown
    printed = CliRunner().invoke(main, ["--set", f"mlflow.tracking_uri={mlflow_platform.mlflow.tracking_uri}",
                                        "--set", f"mlflow.home={mlflow_platform.mlflow.home}",
                                        "models", "card", "--usecase", "fraud"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.strip() == markdown.strip()  # the champion's card

    # 3. the environment: every Python package at its installed version, the JVM artefacts of conf/jvm
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/{out.version}")).read_text()
    for package in MODEL_PACKAGES:
        assert f"{package}=={importlib.metadata.version(package)}" in requirements.splitlines(), package
    conda = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{out.version}/conda.yaml")).read_text()
    assert "pyspark==4.2.0" in conda and "delta-spark==" in conda
    jvm = mlflow.artifacts.load_text(f"runs:/{out.run_id}/{JVM_ARTIFACT}")
    coordinates = [r["coordinate"] for r in jvm_requirements()]
    assert "io.delta:delta-spark_4.2_2.13:4.4.0" in coordinates
    assert "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0" in coordinates
    assert all(c in jvm for c in coordinates)
    assert run.data.tags[JVM_TAG].split(",") == ["org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0",
                                                 "io.delta:delta-spark_4.2_2.13:4.4.0"]

    # 4. MLflow dataset tracking: the Delta path and version of the training and test rows
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "testing"}
    for context, ds in inputs.items():
        assert ds.source_type == "delta_table"
        source = json.loads(ds.source)
        assert source["path"] == path and str(source["delta_table_version"]) == "0"
        assert ds.name == f"fraud_features_offline@v0/{context}"
    assert inputs["training"].digest != inputs["testing"].digest


def test_vacuum_keeps_the_data_of_registered_versions_and_releases_it_after(
    spark: SparkSession, mlflow_platform: PlatformConfig
) -> None:
    uc = usecase("fraud", **FRAUD, retention={"log": "1h", "deleted_files": "0s"})
    path = write_gold(spark, mlflow_platform, uc, gold_rows(uc, 1000, seed=31), partitions=3)
    out = train_job.run(spark, mlflow_platform, uc)
    assert out.data.version == 0
    v0_files = [Path(f.removeprefix("file:")) for f in spark.read.format("delta").option("versionAsOf", 0)
                .load(path).inputFiles()]
    assert len(v0_files) == 3 and all(f.exists() for f in v0_files)
    before, _, metrics = rebuild_test_set(spark, mlflow_platform, uc, out.version)
    rows_before = sorted(before.collect())

    # the table moves on: rewritten (its files replaced), then appended to with lineage metadata
    write_gold(spark, mlflow_platform, uc, gold_rows(uc, 1000, seed=32), partitions=2)
    spark.createDataFrame(gold_rows(uc, 50, seed=33)).write.format("delta").mode("append") \
        .option("userMetadata", '{"job": "build_features"}').save(path)
    assert delta_version(spark, path) == 2

    # vacuum at the shortest retention: version 0 is registered, so its files stay and it rebuilds alike
    kept = vacuum(spark, mlflow_platform, uc)
    assert [r.table.path for r in kept] == [path]
    assert kept[0].table.referenced == {0: [out.version]} and kept[0].table.changed
    assert 3600 <= kept[0].table.deleted_files_s < 3600 + 600  # its age (minutes) + 1 h + the floor 0s
    assert all(f.exists() for f in v0_files)
    assert kept[0].deleted_files == 0
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail is not None
    assert interval_seconds(detail["properties"][FILES_PROP]) == kept[0].table.deleted_files_s
    # metadata-only commits (the properties; Delta's VACUUM START/END), each keeping the last write's lineage
    later = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where("version > 2").collect()
    assert {r["operation"] for r in later} <= {"SET TBLPROPERTIES", "VACUUM START", "VACUUM END"}
    assert "SET TBLPROPERTIES" in {r["operation"] for r in later}
    assert {r["userMetadata"] for r in later} == {'{"job": "build_features"}'}
    assert commit_user_metadata(spark, path) == '{"job": "build_features"}'
    after, _, _ = rebuild_test_set(spark, mlflow_platform, uc, out.version)
    assert sorted(after.collect()) == rows_before
    model = mlflow.spark.load_model(f"models:/{model_name(uc)}/{out.version}")
    again = evaluate(model, after, "binary", uc.label.field, out.threshold)
    assert again["roc_auc"] == metrics["roc_auc"] and again["f1"] == metrics["f1"]

    # the version deleted from the registry: nothing holds version 0 any more, vacuum removes its files
    _client(mlflow_platform).delete_model_version(model_name(uc), str(out.version))
    released = vacuum(spark, mlflow_platform, uc)
    assert released[0].table.referenced == {} and released[0].table.deleted_files_s == 0
    assert released[0].deleted_files >= 3 and not any(f.exists() for f in v0_files)
    assert spark.read.format("delta").load(path).count() == 1050  # the current version is whole
