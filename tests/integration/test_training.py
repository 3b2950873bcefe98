"""Issue 5's proof: train → MLflow (local sqlite store) → registry → gate → promote /
rollback → batch scoring, on real Delta tables built inline, through the same code
for a binary and a regression use case."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.errors import MissingColumnsError, RegistryError
from driftline.pipelines import batch_score as score_job
from driftline.pipelines import train as train_job
from driftline.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_TAG,
    alias_version,
    events_as_dicts,
    list_versions,
    model_name,
    promote,
    rollback,
    version_threshold,
)
from driftline.tracking import PROFILE_ARTIFACT, DataRef, git_commit
from driftline.training import fit, model_spec, prepare, read_training_table, score_frame, split_dataset

START = datetime(2024, 1, 1)


def small_usecase(name: str, **model: Any) -> UseCaseConfig:
    """The shipped use case with a smaller search, so a run takes seconds."""
    uc = load_usecase(name)
    return uc.replace(model={**uc.raw("model"), **model})


def gold_rows(uc: UseCaseConfig, n: int, seed: int, shuffle_before: float | None = None) -> list[dict[str, Any]]:
    """``n`` labelled rows with every feature the model section names. The label
    depends on the first numeric and the first categorical feature; with
    ``shuffle_before`` the labels of the oldest share of rows are permuted (the
    most recent rows, the time-split test set, keep their true labels)."""
    spec = model_spec(uc)
    rng = np.random.default_rng(seed)
    numeric = {c: rng.normal(0.0, 1.0, n) for c in spec.numeric}
    levels = ["a", "b", "c", "d"]
    categorical = {c: rng.choice(levels, n) for c in spec.categorical}
    x0 = numeric[spec.numeric[0]]
    bump = np.where(categorical[spec.categorical[0]] == "a", 1.5, 0.0)
    if uc.label.kind == "binary":
        p = 1.0 / (1.0 + np.exp(-(2.5 * x0 + bump - 1.0)))
        label: np.ndarray = (rng.uniform(size=n) < p).astype(int)
    else:
        label = 30.0 + 6.0 * x0 + 4.0 * bump + rng.normal(0.0, 1.0, n)
    if shuffle_before is not None:
        cut = int(n * shuffle_before)
        label = np.concatenate([rng.permutation(label[:cut]), label[cut:]])
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            uc.event_id: f"e{i:05d}",
            uc.entity_key: f"k{i % 37}",
            uc.event_time: START + timedelta(minutes=10 * i),
            uc.label.field: int(label[i]) if uc.label.kind == "binary" else float(label[i]),
        }
        row.update({c: float(v[i]) for c, v in numeric.items()})
        row.update({c: str(v[i]) for c, v in categorical.items()})
        rows.append(row)
    return rows


def write_gold(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, rows: list[dict[str, Any]]) -> str:
    path = train_job.features_table(platform, uc)
    spark.createDataFrame(rows).write.format("delta").mode("overwrite").save(path)
    return path


FRAUD_SMALL: dict[str, Any] = {
    "estimator": "logistic_regression",
    "estimator_params": {"maxIter": 10},
    "search": {"method": "grid", "params": {"regParam": [0.0, 0.1]}, "parallelism": 2},
    "gate": {"metric": "roc_auc", "tolerance": 0.005, "min": None},
}


def test_binary_lifecycle_lineage_reproducibility_gate_rollback_and_batch_scoring(
    spark: SparkSession, mlflow_platform: PlatformConfig
) -> None:
    uc = small_usecase("fraud", **FRAUD_SMALL)
    name = model_name(uc)
    path = write_gold(spark, mlflow_platform, uc, gold_rows(uc, 800, seed=1))

    # 1. first model: registered as version 1, no champion yet -> gate passes on its checks
    first = train_job.run(spark, mlflow_platform, uc)
    assert first.version == 1 and first.gate is not None and first.gate.passed
    assert first.gate.champion is None and first.metrics["roc_auc"] > 0.8
    tp, fp, tn, fn = (first.metrics[k] for k in ("tp", "fp", "tn", "fn"))
    assert tp + fp + tn + fn == first.metrics["rows"] == 120  # 15% of 800, the most recent rows
    assert first.metrics["precision"] == pytest.approx(tp / (tp + fp))
    assert first.metrics["recall"] == pytest.approx(tp / (tp + fn))
    # the shipped rule picked the threshold on the validation split; the test metrics are at it
    assert first.threshold is not None and first.metrics["threshold"] == first.threshold != 0.5
    assert [set(r) for r in first.search_results] == [{"regParam", "roc_auc"}] * 2

    # lineage: registered version -> run -> Delta path + version + git commit + config hashes
    client = MlflowClient(mlflow_platform.mlflow.tracking_uri, registry_uri=mlflow_platform.mlflow.tracking_uri)
    run = client.get_run(client.get_model_version(name, "1").run_id)
    assert run.info.run_id == first.run_id
    params = run.data.params
    assert params["data.path"] == path and params["data.version"] == "0"
    assert params["git.commit"] == git_commit() and params["git.commit"] != ""
    assert params["config.usecase_hash"] == uc.digest()
    assert params["config.platform_hash"] == mlflow_platform.digest()
    assert params["seed"] == "42" and params["spark.version"] == spark.version
    assert run.data.metrics["test_roc_auc"] == pytest.approx(first.metrics["roc_auc"])
    profile = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/{PROFILE_ARTIFACT}")
    assert sorted(profile["numeric"]) == sorted(model_spec(uc).numeric)
    assert all(sum(p["counts"]) + p["null_count"] == profile["rows"] for p in profile["numeric"].values())
    assert sum(profile["prediction"]["counts"]) == 800  # the score reference: every labelled row
    search = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/search_results.json")
    assert search["columns"] == ["regParam", "roc_auc"] and len(search["data"]) == 2
    # artifacts stay under the test's MLflow home, not in the working directory
    assert run.info.artifact_uri.startswith(Path(mlflow_platform.mlflow.home).as_uri())

    # 2. reproducibility: the same data version, config and seed give the same search results and
    # test metrics (to 1e-9: Spark may sum partial aggregates in another order, changing the last bit)
    spec = model_spec(uc)
    pinned, _ = read_training_table(spark, path, first.data.version)
    again = fit(split_dataset(prepare(pinned, uc, spec), uc, spec.split), uc, spec)
    assert [r["regParam"] for r in again.search_results] == [r["regParam"] for r in first.search_results]
    assert [r["roc_auc"] for r in again.search_results] == pytest.approx(
        [r["roc_auc"] for r in first.search_results], rel=1e-9)
    assert again.metrics == pytest.approx(first.metrics, rel=1e-9)

    # 3. table version 1: training labels shuffled, test labels intact -> a worse model, refused
    write_gold(spark, mlflow_platform, uc, gold_rows(uc, 800, seed=1, shuffle_before=0.85))
    second = train_job.run(spark, mlflow_platform, uc)
    assert second.data == DataRef(path, 1) and second.version == 2
    assert second.gate is not None and not second.gate.passed
    assert second.gate.champion is not None and second.gate.challenger < second.gate.champion - 0.005
    assert second.gate.champion == pytest.approx(first.metrics["roc_auc"])  # same test rows, same labels
    assert "below champion" in second.gate.reason
    assert alias_version(client, name, CHAMPION) == 1
    assert alias_version(client, name, CHALLENGER) == 2

    # 4. a manual promotion goes through the gate on the version's test set, rebuilt from its lineage;
    # forced, it skips the gate; then rollback to version 1 in one call
    manual = promote(spark, mlflow_platform, uc)  # the challenger, version 2
    assert manual is not None and not manual.passed
    assert manual.challenger == pytest.approx(second.metrics["roc_auc"])
    assert manual.champion == pytest.approx(second.gate.champion)
    assert promote(spark, mlflow_platform, uc, 2, force=True) is None
    assert alias_version(client, name, CHAMPION) == 2
    assert client.get_model_version(name, "2").tags[PREVIOUS_TAG] == "1"
    assert rollback(spark, mlflow_platform, uc) == 1
    assert alias_version(client, name, CHAMPION) == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(spark, mlflow_platform, uc)
    listed = {r["version"]: r["aliases"] for r in list_versions(mlflow_platform, uc)}
    assert listed == {2: [CHALLENGER], 1: [CHAMPION]}

    events = events_as_dicts(spark, mlflow_platform, uc)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in events] == [
        ("register", None, 1), ("promote", None, 1),
        ("register", 1, 2), ("gate_refused", 1, 2), ("gate_refused", 1, 2),
        ("promote", 1, 2), ("rollback", 2, 1),
    ]
    refused = events[3]
    assert refused["metrics"]["challenger_roc_auc"] == pytest.approx(second.metrics["roc_auc"])
    assert refused["metrics"]["champion_roc_auc"] == pytest.approx(second.gate.champion)
    assert refused["run_id"] == second.run_id
    assert "forced" in events[5]["reason"]

    # 5. batch scoring with the champion, twice into the same partition: no duplicates, same values
    out1 = score_job.run(spark, mlflow_platform, uc, batch_date="2024-03-01")
    before = spark.read.format("delta").load(out1.output).orderBy(uc.event_id).collect()
    out2 = score_job.run(spark, mlflow_platform, uc, batch_date="2024-03-01")
    after = spark.read.format("delta").load(out2.output).orderBy(uc.event_id).collect()
    assert out1.rows == out2.rows == len(before) == len(after) == 800
    assert before == after
    assert {(r["model_name"], r["model_version"], r["batch_date"]) for r in before} == {(name, 1, "2024-03-01")}
    threshold = version_threshold(client, uc, 1)  # the version's own, as streaming scoring applies it
    assert threshold == first.threshold
    assert all(0.0 <= r["score"] <= 1.0 and r["prediction"] == float(r["score"] >= threshold) for r in before)


def test_balanced_class_weights_come_from_the_train_split_alone(
    spark: SparkSession, mlflow_platform: PlatformConfig
) -> None:
    """An unregularised logistic regression with an intercept, at its optimum, has
    sum(w * (p - y)) = 0 over the rows it was fitted on (train ∪ validation here). With
    weights from the train split's label counts (10% positives) that holds; with weights from
    train ∪ validation's counts (the validation split has 40%) it would not."""
    uc = small_usecase("fraud", **{**FRAUD_SMALL, "estimator_params": {"maxIter": 200, "tol": 1e-12},
                                   "search": {"params": {"regParam": [0.0]}}, "class_weight": "balanced"})
    rows = gold_rows(uc, 1000, seed=6)
    rng = np.random.default_rng(6)
    for i, row in enumerate(rows):  # time order: the oldest 70% are the train split
        row[uc.label.field] = int(rng.uniform() < (0.1 if i < 700 else 0.4))
    spec = model_spec(uc)
    splits = split_dataset(prepare(spark.createDataFrame(rows), uc, spec), uc, spec.split)
    result = fit(splits, uc, spec)
    n1 = sum(r[uc.label.field] for r in rows[:700])
    assert result.class_weights == pytest.approx({0: 700 / (2 * (700 - n1)), 1: 700 / (2 * n1)})
    dev = splits.tagged.where(F.col("_dl_split") < 2)
    scored = score_frame(result.model, dev, "binary", keep=[uc.label.field]).toPandas()
    y, p = scored[uc.label.field].to_numpy(), scored["score"].to_numpy()
    w = np.where(y == 1, result.class_weights[1], result.class_weights[0])
    assert abs(np.sum(w * (p - y))) < 1e-4 * np.sum(w * y)
    n1_dev, n_dev = y.sum(), len(y)
    w_dev = np.where(y == 1, n_dev / (2 * n1_dev), n_dev / (2 * (n_dev - n1_dev)))
    assert abs(np.sum(w_dev * (p - y))) > 0.05 * np.sum(w_dev * y)
    assert p.mean() > 2 * y.mean()  # the weights lift the scores towards a balanced prior


def test_regression_trains_and_registers_through_the_same_code(
    spark: SparkSession, mlflow_platform: PlatformConfig
) -> None:
    uc = small_usecase(
        "eta",
        estimator="linear_regression",
        estimator_params={"maxIter": 10},
        search={"method": "random", "n": 2, "params": {"regParam": {"min": 0.001, "max": 0.1, "log": True}}},
    )
    rows = gold_rows(uc, 500, seed=3)
    write_gold(spark, mlflow_platform, uc, rows)
    out = train_job.run(spark, mlflow_platform, uc)
    assert out.version == 1 and out.gate is not None and out.gate.passed and out.gate.metric == "rmse"
    label_std = float(np.std([r[uc.label.field] for r in rows]))
    assert out.metrics["rmse"] < label_std / 2 and out.metrics["r2"] > 0.8
    assert out.metrics["mae"] <= out.metrics["rmse"]
    assert len(out.search_results) == 2 and all("rmse" in r for r in out.search_results)

    scored = score_job.run(spark, mlflow_platform, uc, alias=CHALLENGER, batch_date="2024-03-01")
    preds = spark.read.format("delta").load(scored.output)
    assert preds.where(F.col("score") != F.col("prediction")).count() == 0
    assert sorted(preds.columns) == sorted(
        [uc.event_id, uc.entity_key, uc.event_time, "prediction", "score", "model_name", "model_version",
         "batch_date"]
    )


def test_missing_feature_columns_are_named(spark: SparkSession, mlflow_platform: PlatformConfig) -> None:
    uc = small_usecase("fraud", **FRAUD_SMALL)
    rows = [{k: v for k, v in r.items() if k not in ("amount", "country")} for r in gold_rows(uc, 20, seed=4)]
    write_gold(spark, mlflow_platform, uc, rows)
    with pytest.raises(MissingColumnsError, match=r"lacks columns \['amount', 'country'\]"):
        train_job.run(spark, mlflow_platform, uc)


def test_job_entry_points_reject_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train_job.main(["--usecase", "fraud", "--data-version", "-1"])
    assert exc.value.code == 2 and "--data-version" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        score_job.main(["--usecase", "fraud", "--batch-date", "03/01/2024"])
    assert exc.value.code == 2 and "--batch-date: expected YYYY-MM-DD" in capsys.readouterr().err
