"""The reference profile: pure binning rules, then the Spark profile on tiny frames, exact values."""

from __future__ import annotations

import json
import math

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline.profile import (
    bin_index,
    build_reference_profile,
    categorical_profile,
    edges_from_quantiles,
    frequencies,
    histogram,
    numeric_profile,
    prediction_profile,
    quantile_probabilities,
    uniform_edges,
)


def test_edges_drop_nan_and_duplicates_and_sort() -> None:
    assert edges_from_quantiles([2.5, 0.0, 0.0, 1.0, 2.5, float("nan")]) == [0.0, 1.0, 2.5]
    assert edges_from_quantiles([]) == []


def test_quantile_probabilities_and_uniform_edges() -> None:
    assert quantile_probabilities(4) == [0.25, 0.5, 0.75]
    assert quantile_probabilities(10) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert uniform_edges(0.0, 1.0, 5) == [0.2, 0.4, 0.6, 0.8]
    assert uniform_edges(-1.0, 1.0, 2) == [0.0]


@pytest.mark.parametrize("bad", [1, 0, -3])
def test_bins_below_two_are_rejected_naming_the_parameter(bad: int) -> None:
    with pytest.raises(ValueError, match="bins"):
        quantile_probabilities(bad)
    with pytest.raises(ValueError, match="bins"):
        uniform_edges(0.0, 1.0, bad)


def test_uniform_edges_need_an_increasing_range() -> None:
    with pytest.raises(ValueError, match="high"):
        uniform_edges(1.0, 1.0, 4)


def test_histogram_bins_are_left_closed_and_nulls_are_counted_apart() -> None:
    # bins: (-inf, 1), [1, 2), [2, +inf)
    assert histogram([0.0, 1.0, 1.5, 2.0, 3.0, None, float("nan")], [1.0, 2.0]) == ([1, 2, 2], 2)
    assert histogram([], [1.0]) == ([0, 0], 0)
    assert histogram([5.0, 6.0], []) == ([2], 0)


def test_frequencies_are_sorted_and_sum_to_one() -> None:
    assert frequencies({"b": 1, "a": 3}) == {"a": 0.75, "b": 0.25}
    assert frequencies({"x": 1, "y": 1, "z": 1}) == {"x": 0.3333333333, "y": 0.3333333333, "z": 0.3333333333}
    assert frequencies({}) == {}


def test_spark_bin_index_matches_the_pure_rule(spark: SparkSession) -> None:
    values = [-1.0, 0.0, 0.5, 1.0, 1.99, 2.0, 10.0, None]
    edges = [0.0, 1.0, 2.0]
    df = spark.createDataFrame([(v,) for v in values], "x double")
    got = [r["b"] for r in df.select(bin_index(F.col("x"), edges).alias("b")).collect()]
    assert got == [0, 1, 1, 2, 2, 3, 3, None]
    counts, missing = histogram(values, edges)
    assert counts == [sum(1 for g in got if g == i) for i in range(4)] and missing == 1


def test_numeric_profile_exact_quantile_edges_and_counts(spark: SparkSession) -> None:
    df = spark.createDataFrame([(float(v), v % 2) for v in range(1, 9)] + [(None, 0)], "x double, n int")
    prof = numeric_profile(df, ["x", "n"], bins=4)
    # exact quantiles of 1..8 at 0.25/0.5/0.75 are 2, 4, 6; bins [.,2) [2,4) [4,6) [6,.)
    assert prof["x"] == {"edges": [2.0, 4.0, 6.0], "counts": [1, 2, 2, 3], "null_count": 1}
    # a 0/1 column: repeated quantiles collapse to two edges, so three bins
    assert prof["n"] == {"edges": [0.0, 1.0], "counts": [0, 5, 4], "null_count": 0}


def test_categorical_profile_counts_frequencies_and_nulls(spark: SparkSession) -> None:
    df = spark.createDataFrame([("DE",), ("DE",), ("FR",), ("DE",), (None,)], "country string")
    assert categorical_profile(df, ["country"]) == {
        "country": {"counts": {"DE": 3, "FR": 1}, "frequencies": {"DE": 0.75, "FR": 0.25}, "null_count": 1}
    }


def test_prediction_profile_binary_uses_fixed_probability_bins(spark: SparkSession) -> None:
    df = spark.createDataFrame([(0.05,), (0.3,), (0.5,), (0.74,), (0.99,), (1.0,)], "score double")
    assert prediction_profile(df, "score", "binary", bins=4) == {
        "column": "score", "edges": [0.25, 0.5, 0.75], "counts": [1, 1, 2, 2], "null_count": 0,
    }


def test_prediction_profile_regression_uses_quantiles(spark: SparkSession) -> None:
    df = spark.createDataFrame([(float(v),) for v in (10, 20, 30, 40)], "score double")
    prof = prediction_profile(df, "score", "regression", bins=2)
    assert prof == {"column": "score", "edges": [20.0], "counts": [1, 3], "null_count": 0}
    with pytest.raises(ValueError, match="kind"):
        prediction_profile(df, "score", "multiclass", bins=2)  # type: ignore[arg-type]


def test_reference_profile_is_json_and_names_missing_columns(spark: SparkSession) -> None:
    train = spark.createDataFrame([(1.0, "a"), (2.0, "b"), (3.0, "a"), (4.0, "a")], "amount double, cat string")
    scores = spark.createDataFrame([(0.1,), (0.9,)], "score double")
    prof = build_reference_profile(train, ["amount"], ["cat"], scores=scores, bins=2)
    assert json.loads(json.dumps(prof)) == prof
    assert prof["rows"] == 4 and prof["bins"] == 2 and prof["version"] == 2
    assert prof["numeric"]["amount"] == {"edges": [2.0], "counts": [1, 3], "null_count": 0}
    assert prof["categorical"]["cat"]["frequencies"] == {"a": 0.75, "b": 0.25}
    assert prof["prediction"]["edges"] == [0.5] and prof["prediction"]["counts"] == [1, 1]
    assert math.isclose(sum(prof["categorical"]["cat"]["frequencies"].values()), 1.0)
    with pytest.raises(ValueError, match=r"numeric/categorical: columns \['nope'\]"):
        build_reference_profile(train, ["nope"], [], bins=2)
