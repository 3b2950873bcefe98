"""Model training: a Spark ML pipeline declared in a use case's ``model:`` section.

Nothing here branches on a use case's name; the label kind (binary or
regression) and the estimator name decide. The pieces compose::

    spec = model_spec(uc)                                  # validated `model:` section
    df, version = read_training_table(spark, path)         # pinned Delta version
    check_columns(df, uc, spec)                            # clear error naming missing columns
    splits = split_dataset(df, uc, spec.split)             # train / validation / test
    result = fit(splits, uc, spec)                         # pipeline + hyper-parameter search
    result.metrics                                         # held-out test metrics

``model:`` schema (every key but ``numeric``/``categorical`` has a default)::

    model:
      numeric: [amount, cust_txn_count_1h]       # cast to double, imputed
      categorical: [merchant_category, country]   # StringIndexer(keep) + OneHotEncoder
      estimator: logistic_regression              # | random_forest | gbt | linear_regression | gbt_regressor
      estimator_params: {maxIter: 50}             # fixed params of the estimator
      impute: median                              # | mean
      scale: true                                 # StandardScaler
      pca: null                                   # or {k: 5}
      threshold: 0.5                              # binary: score >= threshold is class 1; or a rule on the
                                                  # validation split: {rule: max_f1} | {rule: recall_at_precision,
                                                  # precision: 0.5} | {rule: precision_at_recall, recall: 0.5}
      class_weight: null                          # binary: balanced | {0: w0, 1: w1}
      split: {method: time, fractions: [0.7, 0.15, 0.15], seed: 42}   # | random (hash of event id)
      train_partitions: 2                         # rows hash-partitioned by event id: reproducible fits
      search: {method: grid, n: 4, params: {regParam: [0.0, 0.1]},
               validation: train_validation_split, folds: 3, parallelism: 2, metric: roc_auc}
      gate: {metric: roc_auc, tolerance: 0.005, min: 0.6, max: null}
      profile: {bins: 10}
      card: {intended_use: ..., slices: [channel], min_slice_rows: 100, min_positives: 50, limits: [...]}
      retention: {log: 30d, deleted_files: 7d}    # floors; see driftline.retention
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Literal

import numpy as np
from pyspark.ml import Estimator, Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import GBTClassifier, LogisticRegression, RandomForestClassifier
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.feature import (
    PCA,
    Imputer,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param
from pyspark.ml.regression import GBTRegressor, LinearRegression
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from driftline.config import UseCaseConfig
from driftline.config.sections import (
    CLASSIFIER_NAMES,
    REGRESSOR_NAMES,
    ModelSpec,
    RangeSpec,
    SearchSpec,
    SplitSpec,
    ThresholdRule,
)
from driftline.delta import delta_version, is_delta_table, read_delta
from driftline.errors import MissingColumnsError, ModelSpecError, TrainingDataError, UsageError

log = logging.getLogger(__name__)

LabelKind = Literal["binary", "regression"]

# the names the ``model:`` section accepts (config.sections), in the same order
CLASSIFIERS: dict[str, Any] = dict(zip(CLASSIFIER_NAMES, (LogisticRegression, RandomForestClassifier, GBTClassifier),
                                       strict=True))
REGRESSORS: dict[str, Any] = dict(zip(REGRESSOR_NAMES, (LinearRegression, GBTRegressor), strict=True))
# Metrics where a smaller value is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse"})
DEFAULT_METRIC: dict[str, str] = {"binary": "roc_auc", "regression": "rmse"}

SCORE_COL = "score"
FEATURES_COL = "_dl_assembled"
WEIGHT_COL = "_dl_weight"
FOLD_COL = "_dl_fold"
PREFIX = "_dl_"


def model_spec(uc: UseCaseConfig) -> ModelSpec:
    """The use case's ``model:`` section (parsed and checked against the label kind at load).

    Example::

        spec = model_spec(load_usecase("fraud"))
        spec.estimator  # 'logistic_regression'
    """
    if uc.model is None:
        raise ModelSpecError(f"usecase {uc.name}: model: the section is missing; add one to train "
                             "(see conf/usecases/fraud.yaml)")
    return uc.model


def is_higher_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` means a better model.

        >>> is_higher_better("roc_auc"), is_higher_better("rmse")
        (True, False)
    """
    return metric not in LOWER_IS_BETTER


def gate_metric(spec: ModelSpec, kind: LabelKind) -> str:
    """The metric the gate compares: ``model.gate.metric`` or the kind's default."""
    return spec.gate.metric or DEFAULT_METRIC[kind]


# --------------------------------------------------------------------------- data


def read_training_table(spark: SparkSession, path: str, version: int | None = None) -> tuple[DataFrame, int]:
    """Read a Delta table pinned at ``version`` (default: its latest) and return it with that version.

    Example::

        df, v = read_training_table(spark, catalog.path(platform, "features_offline", "fraud"))
    """
    if not path:
        raise UsageError("path: expected a Delta table path, got an empty string")
    if not is_delta_table(spark, path):
        raise TrainingDataError(f"path: {path} is not a Delta table (run the feature job first)")
    if version is None:
        version = delta_version(spark, path)
        if version is None:
            raise TrainingDataError(f"path: {path} has no commits")
    if version < 0:
        raise UsageError(f"version: expected a Delta version >= 0, got {version}")
    df = read_delta(spark, path, version)
    return df, version


def check_columns(df: DataFrame, uc: UseCaseConfig, spec: ModelSpec) -> None:
    """Raise :class:`MissingColumnsError` naming every column the model needs but ``df`` lacks."""
    needed = list(dict.fromkeys([uc.event_id, uc.entity_key, uc.event_time, uc.label.field, *spec.features]))
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise MissingColumnsError(
            f"training table lacks columns {missing} (model.numeric/model.categorical or the use case's keys); "
            f"it has {sorted(df.columns)}"
        )


@dataclass(frozen=True)
class Splits:
    """The three parts, and the whole frame tagged with ``_dl_split`` (0 train, 1 validation, 2 test)."""

    train: DataFrame
    validation: DataFrame
    test: DataFrame
    tagged: DataFrame

    def counts(self) -> dict[str, int]:
        """Rows per part, in one aggregation."""
        got = {int(r["_dl_split"]): int(r["n"]) for r in
               self.tagged.groupBy("_dl_split").agg(F.count(F.lit(1)).alias("n")).collect()}
        return {"train": got.get(0, 0), "validation": got.get(1, 0), "test": got.get(2, 0)}


def split_dataset(df: DataFrame, uc: UseCaseConfig, split: SplitSpec) -> Splits:
    """Split into train / validation / test, deterministically.

    ``time``: by event-time cut points at the cumulative fractions (exact
    quantiles), so the test set is the most recent data. ``random``: by a seeded
    hash of the event id, so the assignment does not depend on partitioning.

    Example::

        s = split_dataset(df, uc, SplitSpec(method="random", seed=7))
        s.test.count()
    """
    if not isinstance(split, SplitSpec):
        raise TypeError(f"split: expected SplitSpec, got {type(split).__name__}")
    f_train, f_val, _ = split.fractions
    if split.method == "time":
        t = F.col(uc.event_time).cast("timestamp").cast("double")
        cuts = df.select(t.alias("_t")).approxQuantile("_t", [f_train, f_train + f_val], 0.0)
        if len(cuts) < 2:
            raise TrainingDataError(f"split: no rows with a non-null {uc.event_time} to split by time")
        c1, c2 = cuts
        bucket = F.when(t <= F.lit(c1), 0).when(t <= F.lit(c2), 1).otherwise(2)
    else:
        u = (F.abs(F.xxhash64(F.col(uc.event_id).cast("string"), F.lit(split.seed))) % 1_000_000) / 1_000_000.0
        bucket = F.when(u < F.lit(f_train), 0).when(u < F.lit(f_train + f_val), 1).otherwise(2)
    tagged = df.withColumn("_dl_split", bucket)
    parts = [tagged.where(F.col("_dl_split") == i).drop("_dl_split") for i in range(3)]
    return Splits(train=parts[0], validation=parts[1], test=parts[2], tagged=tagged)


# --------------------------------------------------------------------------- pipeline


def make_estimator(spec: ModelSpec, label_col: str, seed: int, features_col: str = FEATURES_COL,
                   weight_col: str | None = None) -> Estimator:
    """The configured estimator, reading ``features_col`` (and row weights from ``weight_col``),
    with ``seed`` where it has one."""
    cls = {**CLASSIFIERS, **REGRESSORS}[spec.estimator]
    est: Estimator = cls(featuresCol=features_col, labelCol=label_col, predictionCol="prediction")
    if est.hasParam("seed"):
        est.set(est.getParam("seed"), seed)
    if weight_col is not None:
        est.set(est.getParam("weightCol"), weight_col)
    for name, value in spec.estimator_params.items():
        _set_param(est, name, value, "model.estimator_params")
    return est


def _set_param(est: Estimator, name: str, value: Any, where: str) -> None:
    if not est.hasParam(name):
        raise ModelSpecError(f"{where}.{name}: {type(est).__name__} has no parameter {name!r}")
    est.set(est.getParam(name), value)


def feature_stages(spec: ModelSpec) -> tuple[list[Any], str]:
    """The preprocessing stages (cast → Imputer → StringIndexer/OneHotEncoder →
    VectorAssembler → StandardScaler → optional PCA) and the vector column they produce.

    Casting lives inside the pipeline (an SQLTransformer), so the logged model
    scores raw feature rows on its own, in batch and in streaming.
    """
    stages: list[Any] = []
    num_cast = [f"{PREFIX}num_{c}" for c in spec.numeric]
    num_imp = [f"{PREFIX}imp_{c}" for c in spec.numeric]
    if spec.numeric:
        casts = ", ".join(f"CAST(`{c}` AS DOUBLE) AS `{o}`" for c, o in zip(spec.numeric, num_cast, strict=True))
        stages.append(SQLTransformer(statement=f"SELECT *, {casts} FROM __THIS__"))
        stages.append(Imputer(inputCols=num_cast, outputCols=num_imp, strategy=spec.impute))
    cat_idx = [f"{PREFIX}idx_{c}" for c in spec.categorical]
    cat_ohe = [f"{PREFIX}ohe_{c}" for c in spec.categorical]
    if spec.categorical:
        stages.append(StringIndexer(inputCols=spec.categorical, outputCols=cat_idx, handleInvalid="keep"))
        stages.append(OneHotEncoder(inputCols=cat_idx, outputCols=cat_ohe, handleInvalid="keep"))
    current = FEATURES_COL
    stages.append(VectorAssembler(inputCols=num_imp + cat_ohe, outputCol=current, handleInvalid="keep"))
    if spec.scale:
        stages.append(StandardScaler(inputCol=current, outputCol=f"{PREFIX}scaled", withMean=False, withStd=True))
        current = f"{PREFIX}scaled"
    if spec.pca is not None:
        stages.append(PCA(k=spec.pca.k, inputCol=current, outputCol=f"{PREFIX}pca"))
        current = f"{PREFIX}pca"
    return stages, current


def build_pipeline(spec: ModelSpec, label_col: str, seed: int = 42) -> Pipeline:
    """The whole Spark ML pipeline: :func:`feature_stages` then the estimator.

    Example::

        model = build_pipeline(spec, "is_fraud").fit(train)
    """
    stages, features_col = feature_stages(spec)
    return Pipeline(stages=[*stages, make_estimator(spec, label_col, seed, features_col=features_col)])


# --------------------------------------------------------------------------- search


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def sample_values(
    name: str, domain: list[Any] | Mapping[str, Any] | RangeSpec, n: int, rng: np.random.Generator
) -> list[Any]:
    """``n`` seeded samples of one parameter: uniform over a list of values, or over a
    ``{min, max, log}`` range (integers if both bounds are integers).

        >>> sample_values("maxDepth", {"min": 2, "max": 5}, 3, np.random.default_rng(0))
        [5, 4, 4]
    """
    if isinstance(domain, RangeSpec):
        domain = domain.model_dump()
    if isinstance(domain, list):
        if not domain:
            raise ModelSpecError(f"model.search.params.{name}: empty list of values")
        return [domain[int(i)] for i in rng.integers(0, len(domain), size=n)]
    if not {"min", "max"} <= set(domain):
        raise ModelSpecError(f"model.search.params.{name}: expected a list or {{min, max, log}}, got {dict(domain)}")
    lo, hi, log_scale = domain["min"], domain["max"], bool(domain.get("log", False))
    if not hi >= lo:
        raise ModelSpecError(f"model.search.params.{name}: max {hi} is below min {lo}")
    if _is_int(lo) and _is_int(hi) and not log_scale:
        return [int(v) for v in rng.integers(lo, hi + 1, size=n)]
    if log_scale:
        if lo <= 0:
            raise ModelSpecError(f"model.search.params.{name}: log scale needs min > 0, got {lo}")
        return [float(v) for v in np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))]
    return [float(v) for v in rng.uniform(lo, hi, size=n)]


def candidate_params(search: SearchSpec, seed: int = 42) -> list[dict[str, Any]]:
    """The candidates as plain ``{param: value}`` dicts: the full grid, or ``n``
    random samples from a numpy Generator seeded with ``seed`` (duplicates dropped, order kept).

        >>> candidate_params(SearchSpec(method="grid", params={"a": [1, 2], "b": [0.1]}))
        [{'a': 1, 'b': 0.1}, {'a': 2, 'b': 0.1}]
    """
    names = sorted(search.params)
    if not names:
        return [{}]
    if search.method == "grid":
        for n in names:
            if not isinstance(search.params[n], list):
                raise ModelSpecError(f"model.search.params.{n}: grid search needs a list of values")
        return [dict(zip(names, combo, strict=True)) for combo in product(*(search.params[n] for n in names))]
    rng = np.random.default_rng(seed)
    columns = {n: sample_values(n, search.params[n], search.n, rng) for n in names}
    out: list[dict[str, Any]] = []
    for i in range(search.n):
        cand = {n: columns[n][i] for n in names}
        if cand not in out:
            out.append(cand)
    return out


def param_maps(estimator: Estimator, candidates: Sequence[Mapping[str, Any]]) -> list[dict[Param, Any]]:
    """Spark ``ParamMap``s for ``estimator`` from plain candidates (built with ParamGridBuilder)."""
    maps: list[dict[Param, Any]] = []
    for cand in candidates:
        builder = ParamGridBuilder()
        for name, value in cand.items():
            if not estimator.hasParam(name):
                raise ModelSpecError(f"model.search.params.{name}: {type(estimator).__name__} has no parameter {name!r}")
            builder.addGrid(estimator.getParam(name), [value])
        maps.extend(builder.build())
    return maps


SEARCH_METRICS: dict[str, tuple[str, ...]] = {"binary": ("roc_auc", "pr_auc"),
                                               "regression": ("rmse", "mae", "r2", "mse")}


def search_evaluator(metric: str, kind: LabelKind, label_col: str) -> Evaluator:
    """The evaluator the search maximises or minimises: a :class:`PairEvaluator` (exact, and
    the same from run to run)."""
    if metric not in SEARCH_METRICS[kind]:
        raise ModelSpecError(f"model.search.metric: got {metric!r}, expected one of {sorted(SEARCH_METRICS[kind])} "
                             f"for {kind}")
    return PairEvaluator(metric, kind, label_col)


def exact_aucs(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """ROC AUC and PR AUC of (score, label) pairs, exactly and independent of their order:
    the ROC and precision-recall curves have a point per distinct score (tied scores move
    together) and their areas are trapezoids; the PR curve starts at recall 0 with the first
    point's precision, as Spark's ``areaUnderPR`` does (without its binning). NaN when a class
    is missing.

        >>> exact_aucs([0.9, 0.8, 0.6, 0.2], [1, 0, 1, 0])
        (0.75, 0.7916666666666666)
    """
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    order = np.lexsort((y, -s))  # by score descending; the order among ties does not matter below
    s, y = s[order], y[order]
    positives, negatives = float(y.sum()), float(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        return float("nan"), float("nan")
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[ends]
    fp = (ends + 1) - tp
    tpr, fpr = np.r_[0.0, tp / positives], np.r_[0.0, fp / negatives]
    roc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))
    precision, recall = tp / (tp + fp), tp / positives
    precision, recall = np.r_[precision[0], precision], np.r_[0.0, recall]
    pr = float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) / 2.0))
    return roc, pr


def pair_metric(metric: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """One search metric of collected (score, label) pairs (see :data:`SEARCH_METRICS`)."""
    if metric in ("roc_auc", "pr_auc"):
        roc, pr = exact_aucs(scores, labels)
        return roc if metric == "roc_auc" else pr
    order = np.lexsort((scores, labels))  # a fixed order whatever the rows' order
    err = labels[order] - scores[order]
    if not len(err):
        return float("nan")
    if metric == "mae":
        return float(np.mean(np.abs(err)))
    mse = float(np.mean(err * err))
    if metric == "mse":
        return mse
    if metric == "rmse":
        return math.sqrt(mse)
    var = float(np.var(labels[order]))
    return 1.0 - mse / var if var > 0 else float("nan")


class PairEvaluator(Evaluator):
    """A pyspark.ml evaluator for the tuners: the (score, label) pairs of a transformed frame
    collected to the driver and measured there (:func:`pair_metric`). Spark's own evaluators
    bin the ROC curve and add per-partition partial areas in the order tasks finish, so the
    same model could score differently in the last bits from run to run; these are exact
    and repeatable. Collects one validation set per candidate (the threshold rules collect
    it too)."""

    def __init__(self, metric: str, kind: LabelKind, label_col: str) -> None:
        super().__init__()
        self.metric, self.kind, self.label_col = metric, kind, label_col

    def _evaluate(self, dataset: DataFrame) -> float:
        rows = dataset.select(score_column(self.kind).alias("s"), F.col(self.label_col).cast("double").alias("y")
                              ).collect()
        pairs = np.array([(r["s"], r["y"]) for r in rows], dtype=float).reshape(-1, 2)
        return pair_metric(self.metric, pairs[:, 0], pairs[:, 1])

    def isLargerBetter(self) -> bool:
        return is_higher_better(self.metric)

    def copy(self, extra: Any = None) -> PairEvaluator:
        return PairEvaluator(self.metric, self.kind, self.label_col)


# --------------------------------------------------------------------------- scoring and metrics


def score_column(kind: LabelKind) -> Column:
    """The score a model output carries: P(class 1) for binary, the prediction for regression."""
    if kind == "binary":
        return vector_to_array(F.col("probability")).getItem(1)
    return F.col("prediction").cast("double")


def decision(score: Column, kind: LabelKind, threshold: float) -> Column:
    """The one decision rule of batch and streaming scoring: class 1.0 when ``score >= threshold``
    (binary; the model's own ``prediction`` column is ignored, since it always cuts at 0.5), the
    score itself (regression).

    Example::

        decision(F.col("score"), "binary", 0.3)
    """
    if kind == "binary":
        return (score >= F.lit(threshold)).cast("double")
    return score


def score_frame(model: Transformer, df: DataFrame, kind: LabelKind, keep: Sequence[str] = ()) -> DataFrame:
    """``model.transform(df)`` natively in the JVM, closed with a select: ``keep`` columns,
    ``prediction`` and ``score``.

    Example::

        score_frame(model, events, "binary", keep=["event_id"])  # event_id, prediction, score
    """
    out = model.transform(df)
    return out.select(*[F.col(c) for c in keep], F.col("prediction").cast("double").alias("prediction"),
                      score_column(kind).alias(SCORE_COL))


def binary_metrics(scored: DataFrame, label_col: str, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC (exact, :func:`exact_aucs`) and, at ``threshold`` on ``score``,
    precision, recall, F1, accuracy and the confusion matrix (tp, fp, tn, fn), from the
    (score, label) pairs collected to the driver (:func:`pair_binary_metrics`).

    Example::

        binary_metrics(score_frame(model, test, "binary", keep=["is_fraud"]), "is_fraud", 0.5)
    """
    if not 0 < threshold < 1:
        raise UsageError(f"threshold: expected a value in (0, 1), got {threshold}")
    return pair_binary_metrics(*score_pairs(scored, label_col), threshold)


def pair_binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """:func:`binary_metrics` of (score, label) arrays; pairs with a missing score or label are
    left out. The same pairs in any order give the same numbers, to the last bit.

        >>> pair_binary_metrics(np.array([0.9, 0.8, 0.6, 0.2]), np.array([1.0, 0.0, 1.0, 0.0]), 0.7)["f1"]
        0.5
    """
    keep = ~(np.isnan(scores) | np.isnan(labels))
    s, y = scores[keep], labels[keep]
    is_pos, is_pred = y == 1.0, s >= threshold
    tp, fp = float(np.sum(is_pos & is_pred)), float(np.sum(~is_pos & is_pred))
    tn, fn = float(np.sum(~is_pos & ~is_pred)), float(np.sum(is_pos & ~is_pred))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tp + fp + tn + fn
    if tp + fn == 0 or tn + fp == 0:
        roc = pr = float("nan")  # one class only: AUC is undefined
    else:
        roc, pr = exact_aucs(s, y)
    return {
        "roc_auc": roc, "pr_auc": pr, "precision": precision, "recall": recall, "f1": f1,
        "accuracy": (tp + tn) / total if total else float("nan"),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "threshold": threshold, "rows": total,
    }


def regression_metrics(scored: DataFrame, label_col: str) -> dict[str, float]:
    """RMSE, MAE and R² of ``score`` against ``label_col`` in one aggregation.

    Example::

        regression_metrics(score_frame(model, test, "regression", keep=["delivery_minutes"]), "delivery_minutes")
    """
    y, p = F.col(label_col).cast("double"), F.col(SCORE_COL)
    row = scored.agg(
        F.count(y).alias("n"), F.sum((y - p) * (y - p)).alias("sse"), F.sum(F.abs(y - p)).alias("sae"),
        F.avg(y).alias("mean_y"), F.var_pop(y).alias("var_y"),
    ).first()
    n = float(row["n"]) if row else 0.0
    if row is None or not n:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "rows": 0.0}
    sse, sae, var_y = float(row["sse"]), float(row["sae"]), float(row["var_y"] or 0.0)
    r2 = 1.0 - sse / (var_y * n) if var_y > 0 else float("nan")
    return {"rmse": math.sqrt(sse / n), "mae": sae / n, "r2": r2, "rows": n}


def evaluate(model: Transformer, df: DataFrame, kind: LabelKind, label_col: str, threshold: float = 0.5
             ) -> dict[str, float]:
    """Score ``df`` with ``model`` and compute the kind's metrics.

    Example::

        evaluate(champion, splits.test, "binary", "is_fraud", 0.5)["roc_auc"]
    """
    scored = score_frame(model, df, kind, keep=[label_col])
    if kind == "binary":
        return binary_metrics(scored, label_col, threshold)
    return regression_metrics(scored, label_col)


# --------------------------------------------------------------------------- class weights and thresholds


def class_weights(spec: ModelSpec, counts: Mapping[int, int]) -> dict[int, float] | None:
    """``model.class_weight`` as ``{0: w0, 1: w1}`` (None: unweighted). ``balanced`` gives each
    class ``n / (2 * n_class)`` of ``counts``, the label counts of the training split, so
    both classes carry the same total weight.

        >>> class_weights(ModelSpec(numeric=["a"], estimator="gbt", class_weight="balanced"), {0: 990, 1: 10})
        {0: 0.5050505050505051, 1: 50.0}
    """
    if spec.class_weight is None:
        return None
    if isinstance(spec.class_weight, dict):
        return {int(k): float(v) for k, v in spec.class_weight.items()}
    n0, n1 = int(counts.get(0, 0)), int(counts.get(1, 0))
    if n0 == 0 or n1 == 0:
        raise TrainingDataError(f"model.class_weight: balanced needs both classes in the train split, got "
                                f"{n0} negatives and {n1} positives")
    n = n0 + n1
    return {0: n / (2.0 * n0), 1: n / (2.0 * n1)}


def label_counts(df: DataFrame, label_col: str) -> dict[int, int]:
    """Rows per binary label value (0/1), in one aggregation."""
    y = F.col(label_col).cast("double")
    row = df.agg(F.count_if(y == 0.0).alias("n0"), F.count_if(y == 1.0).alias("n1")).first()
    return {0: int(row["n0"] or 0), 1: int(row["n1"] or 0)} if row else {0: 0, 1: 0}


def weight_column(label_col: str, weights: Mapping[int, float]) -> Column:
    """Each row's weight: ``weights[1]`` for label 1, ``weights[0]`` otherwise."""
    return (F.when(F.col(label_col).cast("double") == 1.0, F.lit(float(weights[1])))
            .otherwise(F.lit(float(weights[0]))))


# the metric each rule's floor (or, for max_f1, its goal) is about
THRESHOLD_FLOOR = {"max_f1": "f1", "recall_at_precision": "precision", "precision_at_recall": "recall"}


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold chosen by a rule on (score, label) pairs, and what it reaches there.

    ``met`` is False when the rule's floor was out of reach: the threshold is then the one
    that comes closest to it (the best precision for ``recall_at_precision``, the best
    recall for ``precision_at_recall``)."""

    threshold: float
    rule: str
    precision: float
    recall: float
    f1: float
    met: bool
    rows: int
    positives: int

    def metrics(self, prefix: str = "validation_") -> dict[str, float]:
        """What an MLflow run logs: ``decision_threshold``, ``decision_threshold_met`` (0/1) and
        ``validation_precision``, ``_recall``, ``_f1``, ``_rows``, ``_positives``."""
        reached = {f"{prefix}{k}": float(getattr(self, k)) for k in ("precision", "recall", "f1", "rows", "positives")}
        return {"decision_threshold": self.threshold, "decision_threshold_met": float(self.met), **reached}


def choose_threshold(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray,
                     rule: ThresholdRule) -> ThresholdChoice:
    """The threshold ``rule`` picks on exact (score, label) pairs, for the decision ``score >= t``.

    The candidates are the midpoints between consecutive distinct scores and half the lowest
    score, so tied scores always fall on the same side and every way of splitting the pairs
    that flags something is considered (exact: no binning). ``max_f1`` maximises F1; ``recall_at_precision``
    the recall among cuts with precision >= ``rule.precision``; ``precision_at_recall`` the
    precision among cuts with recall >= ``rule.recall``. Ties go to the other metric, then to
    the higher threshold (fewer positives). An unreachable floor is not an error: see
    :class:`ThresholdChoice` ``met``.

        >>> c = choose_threshold([0.9, 0.8, 0.6, 0.2], [1, 0, 1, 0], ThresholdRule(rule="max_f1"))
        >>> c.threshold, c.recall, round(c.precision, 3)
        (0.4, 1.0, 0.667)
    """
    if not isinstance(rule, ThresholdRule):
        raise TypeError(f"rule: expected ThresholdRule, got {type(rule).__name__}")
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    if s.shape != y.shape or s.ndim != 1:
        raise UsageError(f"scores, labels: expected two 1-d sequences of one length, got {s.shape} and {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise UsageError("labels: expected 0/1 values")
    if not np.isfinite(s).all():
        raise UsageError("scores: expected finite values")
    positives = int(y.sum())
    if positives == 0:
        raise TrainingDataError(f"model.threshold: rule {rule.rule} needs positive labels in the validation split, "
                                f"it has none among {len(y)} rows; use a fixed threshold or more data")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last row of each distinct score, descending
    values = s[ends]
    cuts = (values + np.r_[values[1:], 0.0]) / 2.0
    tp = np.cumsum(y)[ends]
    flagged = (ends + 1).astype(float)
    precision, recall, f1 = tp / flagged, tp / positives, 2.0 * tp / (flagged + positives)
    valid = (cuts > 0.0) & (cuts < 1.0)  # a threshold lies in (0, 1); all scores 0 leaves nothing to cut
    if not valid.any():
        raise TrainingDataError(f"model.threshold: every validation score is {values[0]}; nothing to choose from")
    floor = 0.0 if rule.floor is None else rule.floor
    if rule.rule == "max_f1":
        goal, tie, allowed, fallback = f1, precision, valid, (f1, precision)
    elif rule.rule == "recall_at_precision":
        goal, tie, allowed, fallback = recall, precision, valid & (precision >= floor), (precision, recall)
    else:
        goal, tie, allowed, fallback = precision, recall, valid & (recall >= floor), (recall, precision)
    met = bool(allowed.any())
    if not met:
        goal, tie = fallback
        allowed = valid
        log.warning("model.threshold: no cut reaches %s >= %s on the validation split; using the closest (%s %.4g)",
                    THRESHOLD_FLOOR[rule.rule], floor, THRESHOLD_FLOOR[rule.rule], float(goal[valid].max()))
    idx = np.flatnonzero(allowed)
    # best goal, then best tie-breaker, then the highest threshold (cuts descend with the index)
    pick = int(idx[np.lexsort((idx, -tie[idx], -goal[idx]))[0]])
    return ThresholdChoice(threshold=float(cuts[pick]), rule=rule.rule, precision=float(precision[pick]),
                           recall=float(recall[pick]), f1=float(f1[pick]), met=met, rows=len(y), positives=positives)


def score_pairs(scored: DataFrame, label_col: str) -> tuple[np.ndarray, np.ndarray]:
    """The (score, label) pairs of a :func:`score_frame` output, collected to the driver."""
    rows = scored.select(F.col(SCORE_COL).alias("s"), F.col(label_col).cast("double").alias("y")).collect()
    pairs = np.array([(r["s"], r["y"]) for r in rows], dtype=float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


# --------------------------------------------------------------------------- fit


@dataclass
class TrainResult:
    """What :func:`fit` produces: the fitted pipeline, the test metrics (binary: at ``threshold``)
    and the search table; for a threshold rule, the choice made on the validation split."""

    model: PipelineModel
    metrics: dict[str, float]
    search_results: list[dict[str, Any]]
    best_params: dict[str, Any]
    rows: dict[str, int]
    search_metric: str
    extra: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None  # the binary decision threshold of this model; None for regression
    threshold_choice: ThresholdChoice | None = None
    class_weights: dict[int, float] | None = None


def prepare(df: DataFrame, uc: UseCaseConfig, spec: ModelSpec) -> DataFrame:
    """The columns training reads, with the label as double and rows without a label dropped,
    hash-partitioned by event id into ``model.train_partitions`` partitions and sorted within
    them; with ``model.window`` only the rows of that last stretch of event time, up to the
    newest labelled row (a pinned table version gives the same rows every time). These are
    the rows every later step sees, and their order depends on the data alone (not on the
    files of the table or the cluster), so the same data, config and seed give the same
    model, its floating-point values equal to about 1e-9 (Spark merges partial sums in the
    order tasks finish, which can change the last bits)."""
    label = uc.label.field
    cols = list(dict.fromkeys([uc.event_id, uc.entity_key, uc.event_time, *spec.features]))
    rows = df.select(*[F.col(c) for c in cols], F.col(label).cast("double").alias(label)).where(
        F.col(label).isNotNull())
    if spec.window_s is not None:  # the last window of event time, up to the newest labelled row (lazy: no job)
        newest = rows.agg(F.max(uc.event_time).alias("_dl_newest"))
        rows = (rows.crossJoin(F.broadcast(newest))
                .where(F.col(uc.event_time) > F.col("_dl_newest") - F.make_dt_interval(secs=F.lit(spec.window_s)))
                .drop("_dl_newest"))
    return (
        rows
        .repartition(spec.train_partitions, F.col(uc.event_id))
        .sortWithinPartitions(uc.event_id, uc.event_time)
    )


def best_index(scores: Sequence[float], evaluator: Evaluator) -> int:
    """The index of the best search score, in the evaluator's direction."""
    return int(np.argmax(scores) if evaluator.isLargerBetter() else np.argmin(scores))


def search_on_split(estimator: Estimator, maps: Sequence[dict[Param, Any]], evaluator: Evaluator,
                    vectors: DataFrame, parallelism: int = 1) -> tuple[list[float], list[Transformer]]:
    """Each candidate (a param map) fitted on the rows of ``_dl_split`` 0 and scored by
    ``evaluator`` on those of ``_dl_split`` 1: (metrics, models) in candidate order. Up to
    ``parallelism`` fits run at once, in threads that keep the caller's Spark local properties
    (its scheduler pool)."""
    from concurrent.futures import ThreadPoolExecutor

    from pyspark import inheritable_thread_target

    train, validation = vectors.where(F.col("_dl_split") == 0), vectors.where(F.col("_dl_split") == 1)

    def one(params: dict[Param, Any]) -> tuple[float, Transformer]:
        model = estimator.fit(train, params=params)
        return float(evaluator.evaluate(model.transform(validation))), model

    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(maps)))) as pool:
        done = list(pool.map(inheritable_thread_target(one), maps))
    return [m for m, _ in done], [model for _, model in done]


def fit(splits: Splits, uc: UseCaseConfig, spec: ModelSpec) -> TrainResult:
    """Search hyper-parameters on train ∪ validation with pyspark.ml.tuning, keep the
    best model (refitted on train ∪ validation by the tuner) behind the fitted
    preprocessing as one PipelineModel, and evaluate it on test.

    ``train_validation_split`` fits each candidate on the train split and scores it on the
    validation split (with a time split: on later rows than it learned from, as it will be
    used), then refits the best on both; ``cross_validation`` uses ``model.search.folds``, each row's
    fold a seeded hash of its event id. Both carry ``model.split.seed``, as does every
    estimator with a seed; with the rows :func:`prepare` partitions and orders, a second fit
    on the same data gives the same model, search results and threshold.

    Binary labels: ``model.class_weight`` weights the rows (weights from the train split's
    label counts). A ``model.threshold`` rule is applied to the validation split scored by
    the best parameters fitted on the train split alone (the search's own model under
    ``train_validation_split``, one more fit under ``cross_validation``: the refitted model
    has seen the validation rows), on the exact collected (score, label) pairs; the
    refitted model keeps that threshold and is evaluated on test at it.

    Example::

        result = fit(split_dataset(prepare(df, uc, spec), uc, spec.split), uc, spec)
        result.metrics["roc_auc"]
    """
    kind: LabelKind = uc.label.kind
    label = uc.label.field
    seed = spec.split.seed
    stages, features_col = feature_stages(spec)
    counts = label_counts(splits.train, label) if kind == "binary" and spec.class_weight == "balanced" else {}
    weights = class_weights(spec, counts) if kind == "binary" else None
    estimator = make_estimator(spec, label, seed, features_col=features_col,
                               weight_col=WEIGHT_COL if weights else None)
    candidates = candidate_params(spec.search, seed)
    maps = param_maps(estimator, candidates)
    metric = spec.search.metric or DEFAULT_METRIC[kind]
    evaluator = search_evaluator(metric, kind, label)
    dev = splits.tagged.where(F.col("_dl_split") < 2)
    rows = splits.counts()
    if rows["train"] == 0 or rows["test"] == 0:
        raise TrainingDataError(f"split: train or test set is empty ({rows}); need more labelled rows")
    rule = spec.threshold if kind == "binary" and isinstance(spec.threshold, ThresholdRule) else None
    if spec.search.validation == "train_validation_split" and rows["validation"] == 0:
        raise TrainingDataError(f"model.search: train_validation_split scores the candidates on the validation "
                                f"split, which is empty ({rows}); need more labelled rows")
    if rule is not None and rows["validation"] == 0:
        raise TrainingDataError(f"model.threshold: rule {rule.rule} needs validation rows, the split has none ({rows})")
    log.info("fitting %s: %d candidates, %s, rows %s, class weights %s", spec.estimator, len(maps),
             spec.search.validation, rows, weights)
    # The preprocessing is fitted once on train ∪ validation, not once per candidate:
    # it has no hyper-parameters, and each Spark job costs time on a small machine.
    features = Pipeline(stages=stages).fit(dev)
    weight = [weight_column(label, weights).alias(WEIGHT_COL)] if weights else []
    fold = F.pmod(F.xxhash64(F.col(uc.event_id).cast("string"), F.lit(seed + 1)), F.lit(spec.search.folds))
    vectors = features.transform(dev).select(F.col(features_col), F.col(label), *weight, F.col("_dl_split"),
                                             fold.cast("int").alias(FOLD_COL)).cache()
    try:
        on_train: Transformer | None = None
        if spec.search.validation == "cross_validation":  # folds from a seeded hash of the event id
            tuner = CrossValidator(estimator=estimator, estimatorParamMaps=maps, evaluator=evaluator,
                                   numFolds=spec.search.folds, parallelism=spec.search.parallelism, seed=seed,
                                   foldCol=FOLD_COL)
            tuned = tuner.fit(vectors)
            scores, best_model = list(tuned.avgMetrics), tuned.bestModel
            pick = best_index(scores, evaluator)
        else:
            scores, fitted = search_on_split(estimator, maps, evaluator, vectors, spec.search.parallelism)
            pick = best_index(scores, evaluator)
            on_train = fitted[pick]  # fitted on the train split alone: the threshold's model
            best_model = estimator.fit(vectors, params=maps[pick])  # refitted on train ∪ validation
        choice = None
        if rule is not None:
            if on_train is None:
                on_train = estimator.fit(vectors.where(F.col("_dl_split") == 0), params=maps[pick])
            validation = score_frame(on_train, vectors.where(F.col("_dl_split") == 1), kind, keep=[label])
            choice = choose_threshold(*score_pairs(validation, label), rule)
            log.info("threshold %s on %d validation rows (%d positives): %.6g, precision %.4f, recall %.4f%s",
                     rule.rule, choice.rows, choice.positives, choice.threshold, choice.precision, choice.recall,
                     "" if choice.met else " (floor not reached)")
    finally:
        vectors.unpersist()
    results = [{**cand, metric: float(s)} for cand, s in zip(candidates, scores, strict=True)]
    best = PipelineModel(stages=[*features.stages, best_model])
    threshold = choice.threshold if choice else spec.default_threshold
    metrics = evaluate(best, splits.test, kind, label, threshold)
    return TrainResult(model=best, metrics=metrics, search_results=results, best_params=dict(candidates[pick]),
                       rows=rows, search_metric=metric, threshold=threshold if kind == "binary" else None,
                       threshold_choice=choice, class_weights=weights)


def batch_predictions(
    model: Transformer, df: DataFrame, uc: UseCaseConfig, *, model_name: str, model_version: int, batch_key: str,
    threshold: float | None = None,
) -> DataFrame:
    """Score ``df`` with the decision rule streaming scoring uses too (:func:`decision` at
    ``threshold``: the model version's own, see :func:`driftline.registry.version_threshold`;
    default the use case's fixed ``model.threshold`` or its rule's fallback) and stamp each row
    with the model and the batch key; closes with a select: the use case's id/entity/time
    columns present in ``df``, ``prediction``, ``score``, ``model_name``, ``model_version``, ``batch_date``.

    Example::

        batch_predictions(model, features, uc, model_name="fraud-model", model_version=3, batch_key="2024-05-01",
                          threshold=0.27)
    """
    if not batch_key:
        raise UsageError("batch_key: expected a non-empty partition value, e.g. '2024-05-01'")
    keep = [c for c in dict.fromkeys((uc.event_id, uc.entity_key, uc.event_time)) if c in df.columns]
    scored = score_frame(model, df, uc.label.kind, keep=keep)
    if threshold is None:
        threshold = model_spec(uc).default_threshold
    return scored.select(
        *[F.col(c) for c in keep], decision(F.col(SCORE_COL), uc.label.kind, threshold).alias("prediction"),
        F.col(SCORE_COL),
        F.lit(model_name).alias("model_name"), F.lit(int(model_version)).alias("model_version"),
        F.lit(batch_key).alias("batch_date"),
    )
