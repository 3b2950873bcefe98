"""Issue 17's pure pieces: exact and order-free test metrics, the model's environment, Delta
retention intervals, the model card's Markdown and the ``model.card``/``model.retention`` keys."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from driftline.config import load_usecase
from driftline.config.sections import ModelSpec
from driftline.errors import ConfigError
from driftline.model_card import render_markdown
from driftline.retention import interval_seconds
from driftline.tracking import MODEL_PACKAGES, jvm_requirements, pip_requirements
from driftline.training import exact_aucs, pair_binary_metrics, pair_metric


def test_exact_metrics_match_mann_whitney_and_ignore_row_order() -> None:
    rng = np.random.default_rng(3)
    s = rng.uniform(size=2000).round(2)  # many ties
    y = (rng.uniform(size=2000) < s).astype(float)
    roc, _ = exact_aucs(s, y)
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic  # ties count half
    assert roc == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), rel=1e-12)
    order = rng.permutation(len(s))
    assert pair_binary_metrics(s[order], y[order], 0.5) == pair_binary_metrics(s, y, 0.5)  # bit for bit
    assert pair_metric("rmse", s[order], y[order]) == pair_metric("rmse", s, y)
    m = pair_binary_metrics(s, y, 0.5)
    assert m["tp"] + m["fn"] == y.sum() and m["rows"] == 2000
    assert m["precision"] == m["tp"] / (m["tp"] + m["fp"])


def test_one_class_has_no_auc() -> None:
    roc, pr = exact_aucs([0.1, 0.9], [1, 1])
    assert np.isnan(roc) and np.isnan(pr)


def test_the_environment_names_every_package_and_jvm_artefact() -> None:
    pins = pip_requirements()
    assert [p.split("==")[0] for p in pins] == list(MODEL_PACKAGES)
    assert {"pyspark", "delta-spark", "mlflow", "pandas", "numpy", "scipy", "pyarrow"} <= set(MODEL_PACKAGES)
    assert f"delta-spark=={importlib.metadata.version('delta-spark')}" in pins
    jvm = {r["coordinate"]: r["required"] for r in jvm_requirements()}
    assert jvm["io.delta:delta-spark_4.2_2.13:4.4.0"] == "yes"
    assert jvm["org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"] == "yes"
    assert jvm["org.apache.hadoop:hadoop-aws:3.5.0"] == "no"
    assert not any("${" in c for c in jvm)


@pytest.mark.parametrize(("text", "seconds"), [
    ("interval 1 week", 604800), ("interval 30 days", 2592000), ("interval 3630 seconds", 3630),
    ("interval 0 seconds", 0), ("interval 2 hours", 7200), (None, None), ("soon", None)])
def test_delta_intervals(text: str | None, seconds: int | None) -> None:
    assert interval_seconds(text) == seconds


def test_card_and_retention_keys() -> None:
    spec = load_usecase("fraud").model
    assert spec is not None and spec.card.slices == ["channel", "country"] and spec.retention.seconds("log") == 30 * 86400
    with pytest.raises(ValueError, match="card.slices"):
        ModelSpec(numeric=["a"], categorical=["c"], estimator="gbt", card={"slices": ["a"]})
    with pytest.raises(ValueError, match="expected a duration"):
        ModelSpec(numeric=["a"], estimator="gbt", retention={"log": "soon"})
    with pytest.raises(ConfigError, match="train_partitions"):
        load_usecase("fraud").replace(model={**load_usecase("fraud").raw("model"), "train_partitions": 0})


def test_markdown_card() -> None:
    card: dict[str, Any] = {
        "model": "eta-model", "version": 2, "run_id": "r1", "usecase": "eta", "created": "2024-05-01T00:00:00Z",
        "estimator": "linear_regression", "label": {"field": "delivery_minutes", "kind": "regression"},
        "intended_use": "ETA.", "decision_threshold": None,
        "training_data": [{"role": "training table", "path": "/l/gold/eta", "version": 3,
                           "rows": {"train": 70, "validation": 15, "test": 15}},
                          {"role": "input of the training table", "path": "/l/silver/eta_events", "version": 9}],
        "split": {"method": "time", "fractions": [0.7, 0.15, 0.15], "seed": 42},
        "metrics": {"overall": {"rmse": 4.5, "mae": 3.25, "r2": 0.8, "rows": 15.0},
                    "slices": [{"column": "courier_zone", "value": "z1", "rmse": 5.0, "mae": 4.0, "r2": 0.5,
                                "rows": 4.0, "too_small": True}]},
        "feature_weights": {"kind": "coefficients", "note": "n", "values": [{"feature": "courier_zone=z1",
                                                                             "value": 2.0}]},
        "limits": ["few rows"]}
    md = render_markdown(card)
    assert md.startswith("# Model card: eta-model v2\n")
    assert "- training table: `/l/gold/eta` at Delta version 3 (train 70, validation 15, test 15 rows)" in md
    assert "- input of the training table: `/l/silver/eta_events` at Delta version 9" in md
    assert "| overall | 4.5 | 3.25 | 0.8 | 15 | |" in md
    assert "| courier_zone=z1 | 5 | 4 | 0.5 | 4 | too small |" in md
    assert "| courier_zone=z1 | 2 |" in md and "- few rows" in md
