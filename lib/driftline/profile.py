"""The reference profile a model is trained against, for drift detection later.

One pass per kind of column, no raw rows on the driver: bin edges come from
training quantiles, counts from built-in aggregations. The profile is a plain
JSON-able dict, logged with every model as ``reference_profile.json``::

    profile = build_reference_profile(train_df, numeric=["amount"], categorical=["country"],
                                      score=test_scores, score_col="score", score_kind="binary")
    profile["numeric"]["amount"]["edges"]   # 9 interior cut points for 10 bins
    profile["numeric"]["amount"]["counts"]  # 10 counts, len(edges) + 1

Bins are half-open ``[edge[i-1], edge[i])``: a value's bin is the number of
edges less than or equal to it (``numpy.searchsorted(edges, x, side="right")``),
with ``-inf`` and ``+inf`` as the outer ends. :func:`bin_index` is the same rule
as a Spark column, so the streaming drift monitor counts exactly the same way.

Version 2 (``PROFILE_VERSION``) adds two optional keys, written by
:func:`driftline.calibration.calibrate_profile` when ``drift.calibrate`` is set:
``thresholds`` in a feature's (or the prediction's) entry, ``{"psi": .., "js": ..,
"wasserstein": ..}``, and a top-level ``calibration`` record of how they were set.
A profile without them (every version 1 profile) is read the same way and the
monitor uses the fixed thresholds of ``drift:``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from driftline.errors import MissingColumnsError, UsageError

PROFILE_VERSION = 2


def edges_from_quantiles(quantiles: Sequence[float]) -> list[float]:
    """Interior bin edges from quantile values: NaN dropped, sorted, duplicates removed.

    A feature with many equal values (a count that is mostly 0) has repeated
    quantiles; repeated edges would make empty, meaningless bins::

        >>> edges_from_quantiles([0.0, 0.0, 1.0, 2.5, 2.5, float("nan")])
        [0.0, 1.0, 2.5]
    """
    clean = sorted({float(q) for q in quantiles if q is not None and not math.isnan(float(q))})
    return clean


def quantile_probabilities(bins: int) -> list[float]:
    """The ``bins - 1`` interior probabilities for equal-frequency bins.

        >>> quantile_probabilities(4)
        [0.25, 0.5, 0.75]
    """
    if not isinstance(bins, int) or bins < 2:
        raise UsageError(f"bins: expected an int >= 2, got {bins!r}")
    return [round(i / bins, 10) for i in range(1, bins)]


def uniform_edges(low: float, high: float, bins: int) -> list[float]:
    """Interior edges of ``bins`` equal-width bins over ``[low, high]``.

        >>> uniform_edges(0.0, 1.0, 4)
        [0.25, 0.5, 0.75]
    """
    if not isinstance(bins, int) or bins < 2:
        raise UsageError(f"bins: expected an int >= 2, got {bins!r}")
    if not high > low:
        raise UsageError(f"high: expected a value greater than low={low}, got {high}")
    return [round(low + (high - low) * i / bins, 10) for i in range(1, bins)]


def histogram(values: Sequence[float], edges: Sequence[float]) -> tuple[list[int], int]:
    """Counts per bin (``len(edges) + 1`` of them) and the number of null/NaN values.

        >>> histogram([0.0, 1.0, 1.5, 3.0, None], [1.0, 2.0])
        ([1, 2, 1], 1)
    """
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    missing = int(np.isnan(arr).sum())
    idx = np.searchsorted(np.asarray(edges, dtype=float), arr[~np.isnan(arr)], side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return [int(c) for c in counts], missing


def frequencies(counts: dict[str, int]) -> dict[str, float]:
    """Relative frequencies of category counts, keys sorted, rounded to 10 places.

        >>> frequencies({"b": 1, "a": 3})
        {'a': 0.75, 'b': 0.25}
    """
    total = sum(counts.values())
    if total == 0:
        return {}
    return {k: round(counts[k] / total, 10) for k in sorted(counts)}


def bin_index(col: Column, edges: Sequence[float]) -> Column:
    """Spark column: the bin of ``col`` under ``edges`` (same rule as :func:`histogram`), null stays null.

    Example::

        df.select(bin_index(F.col("amount"), [10.0, 50.0]).alias("bin"))  # 0, 1 or 2
    """
    x = col.cast("double")
    idx: Column = F.lit(0)
    for e in edges:
        idx = idx + F.when(x >= F.lit(float(e)), 1).otherwise(0)
    return F.when(x.isNull() | F.isnan(x), F.lit(None)).otherwise(idx)


def _numeric_counts(df: DataFrame, edges: dict[str, list[float]]) -> dict[str, tuple[list[int], int]]:
    """All numeric histograms in one small aggregation: one bin index per column,
    unpivoted to (column, bin) pairs and counted (null bin = null or NaN value)."""
    if not edges:
        return {}
    pairs = F.explode(F.array(*[
        F.struct(F.lit(c).alias("column"), bin_index(F.col(c), e).alias("bin")) for c, e in edges.items()
    ])).alias("pair")
    rows = (
        df.select(pairs)
        .groupBy(F.col("pair.column").alias("column"), F.col("pair.bin").alias("bin"))
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    out: dict[str, tuple[list[int], int]] = {c: ([0] * (len(e) + 1), 0) for c, e in edges.items()}
    for r in rows:
        counts, nulls = out[r["column"]]
        if r["bin"] is None:
            out[r["column"]] = (counts, nulls + int(r["n"]))
        else:
            counts[int(r["bin"])] = int(r["n"])
    return out


def _approx_quantiles(df: DataFrame, cols: Sequence[str], probs: Sequence[float], rel_error: float) -> list[list[float]]:
    if not cols:
        return []
    casted = df.select(*[F.col(c).cast("double").alias(c) for c in cols])
    result = casted.approxQuantile(list(cols), list(probs), rel_error)
    return [list(r) for r in result]


def numeric_profile(
    df: DataFrame, cols: Sequence[str], bins: int = 10, rel_error: float = 0.0
) -> dict[str, dict[str, Any]]:
    """Per numeric column: quantile ``edges``, ``counts`` per bin, ``null_count``.

    Example::

        numeric_profile(train, ["amount"], bins=4)
        # {'amount': {'edges': [12.0, 40.5, 99.0], 'counts': [25, 25, 25, 25], 'null_count': 0}}
    """
    probs = quantile_probabilities(bins)
    quantiles = _approx_quantiles(df, cols, probs, rel_error)
    edges = {c: edges_from_quantiles(q) for c, q in zip(cols, quantiles, strict=True)}
    counts = _numeric_counts(df, edges)
    return {c: {"edges": edges[c], "counts": counts[c][0], "null_count": counts[c][1]} for c in cols}


def categorical_profile(df: DataFrame, cols: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per categorical column: ``counts`` and ``frequencies`` per value, ``null_count``
    (all columns in one aggregation: the frame is unpivoted to (column, value) pairs).

    Example::

        categorical_profile(train, ["country"])
        # {'country': {'counts': {'DE': 3, 'FR': 1}, 'frequencies': {'DE': 0.75, 'FR': 0.25}, 'null_count': 0}}
    """
    if not cols:
        return {}
    pairs = F.explode(F.array(*[
        F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value")) for c in cols
    ])).alias("pair")
    rows = (
        df.select(pairs)
        .groupBy(F.col("pair.column").alias("column"), F.col("pair.value").alias("value"))
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    out: dict[str, dict[str, Any]] = {}
    for c in cols:
        counts = {r["value"]: int(r["n"]) for r in rows if r["column"] == c and r["value"] is not None}
        nulls = sum(int(r["n"]) for r in rows if r["column"] == c and r["value"] is None)
        out[c] = {
            "counts": {k: counts[k] for k in sorted(counts)},
            "frequencies": frequencies(counts),
            "null_count": nulls,
        }
    return out


def prediction_profile(
    scores: DataFrame, score_col: str, kind: Literal["binary", "regression"], bins: int = 10, rel_error: float = 0.0
) -> dict[str, Any]:
    """The distribution of the model's score: equal-width bins over [0, 1] for a
    probability (``kind='binary'``), quantile bins otherwise.

    Example::

        prediction_profile(test_scores, "score", "binary", bins=4)
        # {'column': 'score', 'edges': [0.25, 0.5, 0.75], 'counts': [...], 'null_count': 0}
    """
    if kind == "binary":
        edges = uniform_edges(0.0, 1.0, bins)
    elif kind == "regression":
        edges = edges_from_quantiles(_approx_quantiles(scores, [score_col], quantile_probabilities(bins), rel_error)[0])
    else:
        raise UsageError(f"kind: expected 'binary' or 'regression', got {kind!r}")
    counts, nulls = _numeric_counts(scores, {score_col: edges})[score_col]
    return {"column": score_col, "edges": edges, "counts": counts, "null_count": nulls}


def build_reference_profile(
    train: DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    scores: DataFrame | None = None,
    score_col: str = "score",
    score_kind: Literal["binary", "regression"] = "binary",
    bins: int = 10,
    rel_error: float = 0.0,
) -> dict[str, Any]:
    """The whole reference profile: numeric bins, categorical frequencies and,
    when ``scores`` is given, the prediction distribution.

    Example::

        profile = build_reference_profile(train, ["amount"], ["country"], scores=history_scored, bins=10)
        json.dumps(profile)  # what is logged as reference_profile.json
    """
    if bins < 2:
        raise UsageError(f"bins: expected an int >= 2, got {bins!r}")
    missing = [c for c in [*numeric, *categorical] if c not in train.columns]
    if missing:
        raise MissingColumnsError(f"numeric/categorical: columns {missing} are not in the training frame")
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "bins": bins,
        "bin_rule": "searchsorted-right: bin = number of edges <= value",
        "rows": train.count(),
        "numeric": numeric_profile(train, numeric, bins, rel_error),
        "categorical": categorical_profile(train, categorical),
    }
    if scores is not None:
        profile["prediction"] = prediction_profile(scores, score_col, score_kind, bins, rel_error)
    return profile
