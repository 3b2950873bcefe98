"""Model cards: what a registered model version is for, what it was trained on, how good it
is (overall and per slice) and what it weighs, written into the version's MLflow run at
registration as ``model_card.json`` and ``model_card.md``::

    card = build_model_card(spark, uc=uc, spec=spec, result=result, test=splits.test,
                            data=DataRef(path, 3), version=4, run_id=run_id)
    log_model_card(platform, run_id, card)        # model_card.json + model_card.md
    load_model_card(platform, uc)                 # the champion's, as a dict (None without one)
    print(render_markdown(card))

The sections:

- **intended use**: ``model.card.intended_use``, or a sentence made from the use case;
- **training data**: the training table and its Delta version, rows per split, and the
  tables (with their versions) that commit was computed from (its lineage);
- **test metrics** at the version's decision threshold (binary: precision, recall, F1,
  ROC AUC, PR AUC; regression: RMSE, MAE, R²), overall (the run's ``test_*`` metrics) and
  per value of each ``model.card.slices`` column, computed on the same scored test rows
  with the same functions as the overall ones (:func:`driftline.training.evaluate`); a slice
  with fewer than ``min_slice_rows`` rows (binary: or ``min_positives`` positives) is
  marked ``too_small``;
- **feature weights** by feature name: the coefficients of a logistic or linear regression
  (per standard deviation of the feature when ``model.scale`` is on), the feature
  importances of a tree ensemble; the assembled vector is mapped back to names from the
  VectorAssembler's metadata, one-hot slots as ``column=value``. With ``model.pca`` the
  estimator sees components: coefficients map back exactly through the loadings
  (``loadings @ coefficients``), importances approximately (each component's importance
  shared out by its squared loadings, so they still sum to 1);
- **known limits**: ``model.card.limits`` and automatic notes (few test positives, slices
  too small to judge, a threshold floor not reached, a random split, PCA).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCAModel, VectorAssembler
from pyspark.sql import DataFrame, SparkSession

from driftline.config import PlatformConfig, UseCaseConfig
from driftline.config.sections import ModelSpec
from driftline.errors import RegistryError
from driftline.training import (
    FEATURES_COL,
    PREFIX,
    SCORE_COL,
    TrainResult,
    pair_binary_metrics,
    pair_metric,
    score_frame,
)

log = logging.getLogger(__name__)

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
# the metrics a card shows, per label kind, in this order
CARD_METRICS = {"binary": ("precision", "recall", "f1", "roc_auc", "pr_auc"), "regression": ("rmse", "mae", "r2")}


# --------------------------------------------------------------------------- features


def feature_names(model: PipelineModel, df: DataFrame, spec: ModelSpec) -> list[str]:
    """The name of each slot of the assembled feature vector, read from the VectorAssembler's
    output metadata (no Spark job: the schema of ``df`` transformed up to the assembler):
    a numeric feature by its name, a one-hot slot as ``column=value``.

    Example::

        feature_names(model, test, spec)   # ['amount', ..., 'country=DE', 'country=FR', ...]
    """
    stages = list(model.stages)
    idx = next((i for i, s in enumerate(stages) if isinstance(s, VectorAssembler)), None)
    if idx is None:
        raise RegistryError("model: no VectorAssembler stage to read feature names from")
    schema = PipelineModel(stages=stages[: idx + 1]).transform(df.limit(0)).schema
    attrs = schema[FEATURES_COL].metadata.get("ml_attr", {})
    slots: dict[int, str] = {}
    for group in attrs.get("attrs", {}).values():
        for a in group:
            slots[int(a["idx"])] = str(a.get("name", f"slot_{a['idx']}"))
    size = int(attrs.get("num_attrs", len(slots)))
    return [_clean(slots.get(i, f"slot_{i}"), spec) for i in range(size)]


def _clean(name: str, spec: ModelSpec) -> str:
    if name.startswith(f"{PREFIX}imp_"):
        return name[len(f"{PREFIX}imp_"):]
    for cat in sorted(spec.categorical, key=len, reverse=True):
        prefix = f"{PREFIX}ohe_{cat}_"
        if name.startswith(prefix):
            return f"{cat}={name[len(prefix):]}"
    return name


def feature_weights(model: PipelineModel, names: list[str]) -> dict[str, Any]:
    """The estimator's weights by feature name, largest magnitude first: ``kind``
    (``coefficients`` or ``importances``), ``values`` (``[{feature, value}]``) and a ``note``
    on how to read them. With a PCA stage the weights are mapped back to the features
    (see the module docstring)."""
    stages = list(model.stages)
    est = stages[-1]
    if hasattr(est, "coefficients"):
        kind, raw = "coefficients", np.asarray(est.coefficients.toArray(), dtype=float)
    elif hasattr(est, "featureImportances"):
        kind, raw = "importances", np.asarray(est.featureImportances.toArray(), dtype=float)
    else:
        return {"kind": "none", "values": [], "note": f"{type(est).__name__} has no coefficients or importances"}
    pca = next((s for s in stages if isinstance(s, PCAModel)), None)
    scaled = any(type(s).__name__ == "StandardScalerModel" for s in stages)
    note = ("coefficients of the features standardised to unit variance: the change of the "
            + ("log-odds" if hasattr(est, "numClasses") else "prediction") + " per standard deviation"
            if kind == "coefficients" and scaled else
            "coefficients in the features' own units" if kind == "coefficients" else
            "impurity-based feature importances of the trees (they sum to 1)")
    if pca is not None:
        loadings = np.asarray(pca.pc.toArray(), dtype=float)  # features x components
        if kind == "coefficients":
            raw = loadings @ raw
            note += f"; mapped back from {loadings.shape[1]} principal components through their loadings (exact)"
        else:
            raw = (loadings ** 2) @ raw
            note += (f"; the {loadings.shape[1]} principal components' importances shared out by their squared "
                     "loadings (an approximation)")
    if len(raw) != len(names):
        names = [f"slot_{i}" for i in range(len(raw))]
    order = np.argsort(-np.abs(raw), kind="stable")
    return {"kind": kind, "note": note,
            "values": [{"feature": names[i], "value": float(raw[i])} for i in order]}


# --------------------------------------------------------------------------- metrics


def _metric_row(m: dict[str, float], kind: str) -> dict[str, float]:
    row = {k: float(m[k]) for k in CARD_METRICS[kind] if k in m}
    row["rows"] = float(m.get("rows", 0.0))
    if kind == "binary":
        row["positives"] = float(m.get("tp", 0.0) + m.get("fn", 0.0))
        row["threshold"] = float(m["threshold"])
    return row


def slice_metrics(model: PipelineModel, test: DataFrame, uc: UseCaseConfig, spec: ModelSpec,
                  threshold: float | None) -> list[dict[str, Any]]:
    """Test metrics per value of each ``model.card.slices`` column (null values as ``None``),
    from one collect of the scored test rows, by the functions behind the overall test
    metrics (binary: :func:`~driftline.training.pair_binary_metrics`, as
    :func:`~driftline.training.evaluate` computes them on any frame of those rows)."""
    card, kind, label = spec.card, uc.label.kind, uc.label.field
    if not card.slices:
        return []
    frame: pd.DataFrame = score_frame(model, test, kind, keep=[label, *card.slices]).toPandas()
    scores = frame[SCORE_COL].to_numpy(dtype=float)
    labels = frame[label].to_numpy(dtype=float)
    out: list[dict[str, Any]] = []
    for column in card.slices:
        col = frame[column]
        values = sorted(col.dropna().unique().tolist(), key=str) + ([None] if col.isna().any() else [])
        for value in values:
            mask = (col.isna() if value is None else col == value).to_numpy()
            if kind == "binary":
                m = pair_binary_metrics(scores[mask], labels[mask], float(threshold if threshold is not None else 0.5))
            else:
                m = {k: pair_metric(k, scores[mask], labels[mask]) for k in ("rmse", "mae", "r2")}
                m["rows"] = float(mask.sum())
            row = _metric_row(m, kind)
            small = row["rows"] < card.min_slice_rows or (kind == "binary" and row.get("positives", 0.0)
                                                          < card.min_positives)
            out.append({"column": column, "value": value, **row, "too_small": bool(small)})
    return out


# --------------------------------------------------------------------------- the card


def default_intended_use(uc: UseCaseConfig) -> str:
    """The sentence a card says when ``model.card.intended_use`` is not set."""
    what = ("the probability that an event is positive for" if uc.label.kind == "binary" else "the value of")
    return (f"Scores {what} {uc.label.field!r} for the events of use case {uc.name!r} (entity {uc.entity_key!r}), "
            "in batch and online, at the version's decision threshold. Not validated for other populations, "
            "periods or purposes than its training data.")


def training_data(spark: SparkSession, path: str, version: int, rows: dict[str, int]) -> list[dict[str, Any]]:
    """The training table at its version, with rows per split, then the tables its commit was
    computed from (the commit's lineage; none for a table written without it)."""
    from driftline.lineage import read_lineage

    out: list[dict[str, Any]] = [{"role": "training table", "path": path, "version": int(version), "rows": rows}]
    try:
        lineage = read_lineage(spark, path, version)
    except Exception as e:  # noqa: BLE001 - the card still names the table itself
        log.warning("model card: the lineage of %s@v%d could not be read: %s", path, version, e)
        lineage = None
    for source in (lineage.inputs if lineage is not None else ()):
        entry = {k: v for k, v in dict(source).items() if k in ("path", "version", "topic", "offsets", "file")}
        out.append({"role": "input of the training table", **entry})
    return out


def auto_limits(uc: UseCaseConfig, spec: ModelSpec, result: TrainResult, overall: dict[str, float],
                slices: list[dict[str, Any]]) -> list[str]:
    """The limits a card notes by itself."""
    card, notes = spec.card, []
    if uc.label.kind == "binary":
        positives = int(overall.get("positives", 0))
        if positives < card.min_positives:
            notes.append(f"fewer than {card.min_positives} test positives ({positives} of {int(overall['rows'])} "
                         "rows): precision, recall and F1 are uncertain")
        if result.threshold_choice is not None and not result.threshold_choice.met:
            notes.append(f"the decision threshold rule {result.threshold_choice.rule} did not reach its floor on "
                         "the validation split; the closest threshold is used")
    small = [f"{s['column']}={s['value']}" for s in slices if s["too_small"]]
    if small:
        notes.append(f"slices too small to judge (fewer than {card.min_slice_rows} test rows"
                     + (f" or {card.min_positives} positives" if uc.label.kind == "binary" else "")
                     + f"): {', '.join(small)}")
    if spec.split.method == "random":
        notes.append("random split: the test rows come from the same period as the training rows, so the test "
                     "metrics do not show how the model ages")
    if spec.pca is not None:
        notes.append(f"the estimator sees {spec.pca.k} principal components, not the features themselves")
    if spec.categorical:
        notes.append("a category not seen in training is scored as an unknown category (one shared slot)")
    return notes


def build_model_card(
    spark: SparkSession, *, uc: UseCaseConfig, spec: ModelSpec, result: TrainResult, test: DataFrame,
    data_path: str, data_version: int, version: int, run_id: str, model_name: str,
) -> dict[str, Any]:
    """The card of one registered version, as a JSON-able dict (see the module docstring).

    Example::

        card = build_model_card(spark, uc=uc, spec=spec, result=result, test=splits.test, data_path=path,
                                data_version=3, version=4, run_id=run_id, model_name="fraud-model")
        card["metrics"]["overall"]["f1"]
    """
    kind = uc.label.kind
    overall = _metric_row(result.metrics, kind)
    slices = slice_metrics(result.model, test, uc, spec, result.threshold)
    names = feature_names(result.model, test, spec)
    return {
        "model": model_name, "version": int(version), "run_id": run_id, "usecase": uc.name,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "estimator": spec.estimator, "label": {"field": uc.label.field, "kind": kind},
        "intended_use": spec.card.intended_use or default_intended_use(uc),
        "training_data": training_data(spark, data_path, data_version, dict(result.rows)),
        "split": spec.split.model_dump(mode="json"),
        "best_params": dict(result.best_params),
        "decision_threshold": result.threshold,
        "metrics": {"overall": overall, "slices": slices,
                    "slice_rules": {"min_slice_rows": spec.card.min_slice_rows,
                                    "min_positives": spec.card.min_positives}},
        "features": names,
        "feature_weights": feature_weights(result.model, names),
        "limits": [*spec.card.limits, *auto_limits(uc, spec, result, overall, slices)],
    }


def _num(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{int(v)}" if v.is_integer() and abs(v) >= 1 else f"{v:.4g}"
    return str(v)


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (what ``model_card.md`` holds and ``driftline models card`` prints)."""
    kind = card["label"]["kind"]
    cols = [*CARD_METRICS[kind], "rows", *(("positives",) if kind == "binary" else ())]
    lines = [f"# Model card: {card['model']} v{card['version']}", "",
             f"Use case `{card['usecase']}`, {card['estimator']} for label `{card['label']['field']}` ({kind}); "
             f"MLflow run `{card['run_id']}`, written {card['created']}.", "",
             "## Intended use", "", card["intended_use"], "", "## Training data", ""]
    for t in card["training_data"]:
        where = t.get("path") or t.get("topic") or t.get("file")
        what = f"- {t['role']}: `{where}`" + (f" at Delta version {t['version']}" if t.get("version") is not None
                                               else "")
        if t.get("rows"):
            what += " (" + ", ".join(f"{k} {v}" for k, v in t["rows"].items()) + " rows)"
        lines.append(what)
    split = card.get("split", {})
    lines += [f"- split: {split.get('method')} {split.get('fractions')}, seed {split.get('seed')}", ""]
    threshold = card.get("decision_threshold")
    lines += ["## Test metrics", "",
              f"At the decision threshold {_num(float(threshold))}." if threshold is not None else "", "",
              "| slice | " + " | ".join(cols) + " | |", "|---" * (len(cols) + 2) + "|",
              "| overall | " + " | ".join(_num(card["metrics"]["overall"].get(c, float("nan"))) for c in cols) + " | |"]
    for s in card["metrics"]["slices"]:
        lines.append(f"| {s['column']}={s['value']} | " + " | ".join(_num(s.get(c, float("nan"))) for c in cols)
                     + (" | too small |" if s["too_small"] else " | |"))
    weights = card["feature_weights"]
    lines += ["", f"## Feature {weights['kind']}", "", weights.get("note", ""), "", "| feature | value |", "|---|---|"]
    lines += [f"| {w['feature']} | {w['value']:.4g} |" for w in weights["values"]]
    lines += ["", "## Known limits", ""] + [f"- {x}" for x in card["limits"]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- MLflow


def log_model_card(platform: PlatformConfig, run_id: str, card: dict[str, Any]) -> None:
    """Write ``model_card.json`` and ``model_card.md`` into the run ``run_id``."""
    from driftline.registry import client_for

    client = client_for(platform)
    client.log_dict(run_id, card, CARD_JSON)
    client.log_text(run_id, render_markdown(card), CARD_MD)


def load_model_card(platform: PlatformConfig, uc: UseCaseConfig, version: int | None = None) -> dict[str, Any] | None:
    """The card of ``version`` (default: the champion, else the newest version) as a dict;
    None when the version's run has no card (registered before cards existed).

    Example::

        load_model_card(platform, uc)["metrics"]["overall"]
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from driftline.registry import CHAMPION, alias_version, client_for, list_versions, model_name

    client = client_for(platform)
    name = model_name(uc)
    if version is None:
        version = alias_version(client, name, CHAMPION)
        if version is None:
            versions = list_versions(platform, uc)
            if not versions:
                raise RegistryError(f"version: {name} has no registered version")
            version = int(versions[0]["version"])
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as e:
        raise RegistryError(f"version: {name} has no version {version}") from e
    if not mv.run_id:
        return None
    names = {a.path for a in client.list_artifacts(mv.run_id)}
    if CARD_JSON not in names:
        return None
    card: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{CARD_JSON}")
    return card
