"""The `model:` section, the search candidates and the quality gate: pure logic, exact values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from driftline.config import UseCaseConfig, load_usecase
from driftline.config.sections import GateSpec
from driftline.errors import ModelSpecError
from driftline.registry import format_versions, gate_decision
from driftline.training import (
    SearchSpec,
    SplitSpec,
    build_pipeline,
    candidate_params,
    gate_metric,
    is_higher_better,
    model_spec,
    param_maps,
    sample_values,
)


def _uc(name: str, **model: Any) -> UseCaseConfig:
    uc = load_usecase(name)
    return uc.replace(model=model)


def test_shipped_use_cases_have_valid_model_sections() -> None:
    fraud, eta = model_spec(load_usecase("fraud")), model_spec(load_usecase("eta"))
    assert fraud.estimator in {"logistic_regression", "random_forest", "gbt"}
    assert eta.estimator in {"linear_regression", "gbt_regressor"}
    assert gate_metric(fraud, "binary") == "roc_auc" and gate_metric(eta, "regression") == "rmse"
    assert fraud.split == SplitSpec(method="time", fractions=(0.7, 0.15, 0.15), seed=42)


def test_estimator_must_fit_the_label_kind() -> None:
    with pytest.raises(ModelSpecError, match=r"model.estimator: got 'linear_regression', but label.kind is 'binary'"):
        model_spec(_uc("fraud", numeric=["amount"], estimator="linear_regression"))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"numeric": ["amount"], "estimator": "svm"}, "estimator: got 'svm'"),
        ({"estimator": "gbt"}, "at least one feature column"),
        ({"numeric": ["a"], "categorical": ["a"], "estimator": "gbt"}, r"\['a'\] are listed as both"),
        ({"numeric": ["a"], "estimator": "gbt", "split": {"fractions": [0.5, 0.5, 0.5]}}, "model.split.fractions"),
        ({"numeric": ["a"], "estimator": "gbt", "serach": {}}, "model.serach"),
        ({"numeric": ["a"], "estimator": "gbt", "retrain_window": "6 hours"}, r"model.retrain_window.*'6 hours'"),
        ({"numeric": ["a"], "estimator": "gbt", "window": "0h"}, r"model.window.*such as 6h"),
    ],
)
def test_bad_model_sections_name_the_key(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        model_spec(_uc("fraud", **model))


def test_grid_is_the_cartesian_product_in_sorted_param_order() -> None:
    search = SearchSpec(method="grid", params={"regParam": [0.0, 0.1], "elasticNetParam": [0.0, 1.0]})
    assert candidate_params(search) == [
        {"elasticNetParam": 0.0, "regParam": 0.0}, {"elasticNetParam": 0.0, "regParam": 0.1},
        {"elasticNetParam": 1.0, "regParam": 0.0}, {"elasticNetParam": 1.0, "regParam": 0.1},
    ]
    assert candidate_params(SearchSpec()) == [{}]


def test_random_search_is_seeded_and_respects_ranges() -> None:
    search = SearchSpec(method="random", n=6, params={
        "maxDepth": {"min": 2, "max": 5}, "stepSize": {"min": 0.01, "max": 1.0, "log": True}, "subsamplingRate": [0.5, 1.0],
    })
    a, b = candidate_params(search, seed=3), candidate_params(search, seed=3)
    assert a == b and candidate_params(search, seed=4) != a
    assert 1 <= len(a) <= 6
    assert all(isinstance(c["maxDepth"], int) and 2 <= c["maxDepth"] <= 5 for c in a)
    assert all(0.01 <= c["stepSize"] <= 1.0 and c["subsamplingRate"] in (0.5, 1.0) for c in a)
    assert sample_values("x", [10, 20, 30], 4, np.random.default_rng(0)) == [30, 20, 20, 10]


def test_bad_search_spaces_name_the_param() -> None:
    with pytest.raises(ModelSpecError, match="model.search.params.regParam: grid search needs a list"):
        candidate_params(SearchSpec(method="grid", params={"regParam": {"min": 0, "max": 1}}))
    with pytest.raises(ModelSpecError, match="model.search.params.stepSize: log scale needs min > 0"):
        sample_values("stepSize", {"min": 0.0, "max": 1.0, "log": True}, 2, np.random.default_rng(0))
    with pytest.raises(ModelSpecError, match="model.search.params.maxDepth: max 1 is below min 3"):
        sample_values("maxDepth", {"min": 3, "max": 1}, 2, np.random.default_rng(0))


def test_pipeline_stages_follow_the_spec_and_unknown_params_are_named(spark: SparkSession) -> None:
    uc = _uc("fraud", numeric=["amount"], categorical=["country"], estimator="gbt", pca={"k": 2},
             estimator_params={"maxIter": 5})
    spec = model_spec(uc)
    stages = build_pipeline(spec, "is_fraud", seed=11).getStages()
    assert [type(s).__name__ for s in stages] == [
        "SQLTransformer", "Imputer", "StringIndexer", "OneHotEncoder", "VectorAssembler", "StandardScaler", "PCA",
        "GBTClassifier",
    ]
    est = stages[-1]
    assert est.getOrDefault("seed") == 11 and est.getOrDefault("maxIter") == 5
    assert est.getOrDefault("featuresCol") == "_dl_pca" and est.getOrDefault("labelCol") == "is_fraud"
    assert stages[2].getOrDefault("handleInvalid") == "keep"
    with pytest.raises(ModelSpecError, match="model.search.params.regParam: GBTClassifier has no parameter"):
        param_maps(est, [{"regParam": 0.1}])
    bad = _uc("fraud", numeric=["amount"], estimator="gbt", estimator_params={"nope": 1})
    with pytest.raises(ModelSpecError, match="model.estimator_params.nope"):
        build_pipeline(model_spec(bad), "is_fraud")


def test_metric_direction() -> None:
    assert is_higher_better("roc_auc") and is_higher_better("r2")
    assert not is_higher_better("rmse") and not is_higher_better("mae")


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "gate", "passed", "reason"),
    [
        ("roc_auc", 0.80, None, GateSpec(min=0.6), True, "no comparable champion"),
        ("roc_auc", 0.55, None, GateSpec(min=0.6), False, "below the minimum 0.6"),
        ("roc_auc", float("nan"), 0.7, GateSpec(), False, "is NaN"),
        ("roc_auc", 0.796, 0.80, GateSpec(tolerance=0.005), True, "at least champion's"),
        ("roc_auc", 0.79, 0.80, GateSpec(tolerance=0.005), False, "below champion's"),
        ("rmse", 4.04, 4.0, GateSpec(tolerance=0.05), True, "at most champion's"),
        ("rmse", 4.2, 4.0, GateSpec(tolerance=0.05), False, "above champion's"),
        ("rmse", 9.0, None, GateSpec(max=8.0), False, "above the maximum 8.0"),
    ],
)
def test_gate_decision(
    metric: str, challenger: float, champion: float | None, gate: GateSpec, passed: bool, reason: str
) -> None:
    decision = gate_decision(metric, challenger, champion, gate)
    assert decision.passed is passed
    assert reason in decision.reason
    expected = {f"challenger_{metric}": challenger} | ({f"champion_{metric}": champion} if champion else {})
    assert decision.metrics().keys() == expected.keys()


def test_gate_rejects_a_non_spec() -> None:
    with pytest.raises(TypeError, match="gate"):
        gate_decision("roc_auc", 0.9, None, {"min": 0.5})  # type: ignore[arg-type]


def test_format_versions_table() -> None:
    rows = [
        {"version": 2, "aliases": ["champion"], "run_id": "abc", "metrics": {"rmse": 1.23456}},
        {"version": 1, "aliases": [], "run_id": "def", "metrics": {}},
    ]
    assert format_versions(rows).splitlines() == [
        "version  aliases   run_id  metrics",
        '2        champion  abc     {"rmse": 1.2346}',
        "1        -         def     {}",
    ]
