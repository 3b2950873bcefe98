"""Train a use case's model on the offline features, log it to MLflow, register it
as challenger and run the quality gate.

    ./spark-submit.sh jobs/train.py --usecase fraud
    ./spark-submit.sh jobs/train.py --usecase eta --data-version 12
    ./spark-submit.sh jobs/train.py --usecase fraud --no-gate

Reads ``gold/<uc>_features_offline`` pinned at a Delta version (default: the
latest, recorded in the run), splits it per ``model.split``, searches
``model.search`` with pyspark.ml.tuning, evaluates on the held-out test set and
logs params, lineage, search results, metrics, ``reference_profile.json``, the
training and test rows as MLflow dataset inputs (the Delta path at its version), the
JVM artefacts and the Spark model with its pinned Python requirements. Binary labels:
``model.class_weight`` weights the training rows, and a ``model.threshold`` rule
picks the decision threshold on the validation split; the test metrics (precision, recall, F1) are at that threshold, which is logged
(``decision_threshold``) and tagged on the registered version. The model is
registered as ``<uc>-model`` with alias ``challenger``, its model card
(``model_card.md``/``.json``, :mod:`driftline.model_card`) is written into the run,
and the training table's retention is extended when needed so the version's data stays
readable (:mod:`driftline.retention`); the gate re-scores the
champion on the same test set at the champion's own threshold and promotes the
challenger only if it is at least as good (``model.gate``); with ``delivery.mode:
progressive`` (the default) and a champion in place, a pass puts it in shadow instead
(:func:`driftline.registry.start_shadow`).
Every registry change is audited in ``audit/<uc>_model_events``.

Exit codes: 0 trained (whether or not the gate promoted), 2 bad arguments,
configuration or missing input.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

import mlflow
from pyspark.sql import SparkSession

from driftline import catalog
from driftline.calibration import calibrate_profile, calibration_plan
from driftline.config import ModelSpec, PlatformConfig, UseCaseConfig
from driftline.jobs import JobContext, entry_point
from driftline.model_card import build_model_card, log_model_card
from driftline.preflight import needs
from driftline.profile import build_reference_profile
from driftline.registry import GateDecision, gate_and_promote, model_name, register_version
from driftline.retention import keep_training_data
from driftline.timing import Laps
from driftline.tracking import DataRef, configure_mlflow, experiment_for, log_training_run
from driftline.training import (
    check_columns,
    fit,
    model_spec,
    prepare,
    read_training_table,
    score_frame,
    split_dataset,
)

log = logging.getLogger("driftline.jobs.train")


@dataclass(frozen=True)
class TrainOutcome:
    """What one training run produced."""

    run_id: str
    version: int
    data: DataRef
    metrics: dict[str, float]
    search_results: list[dict[str, Any]]
    gate: GateDecision | None
    threshold: float | None = None  # binary: the version's decision threshold (tag driftline.decision_threshold)

    @property
    def verdict(self) -> str:
        if self.gate is None:
            return "not gated"
        if self.gate.passed:
            return "promoted to champion" if self.gate.promoted else "gate passed, in shadow"
        return "gate refused"


def features_table(platform: PlatformConfig, usecase: UseCaseConfig) -> str:
    return catalog.path(platform, "features_offline", usecase)


def run(
    spark: SparkSession,
    platform: PlatformConfig,
    usecase: UseCaseConfig,
    *,
    table: str | None = None,
    data_version: int | None = None,
    gate: bool = True,
    run_name: str | None = None,
    spec: ModelSpec | None = None,
) -> TrainOutcome:
    """Train, log, register as challenger and (unless ``gate=False``) gate.

    Example::

        out = run(spark, platform, load_usecase("fraud"))
        out.version, out.metrics["roc_auc"], out.gate.passed

    ``spec`` replaces the use case's ``model:`` section (a retrain on an alert passes its
    ``retrain_window``); the spec used is logged with the run, so its test set can be rebuilt.
    """
    spec = spec or model_spec(usecase)
    path = table or features_table(platform, usecase)
    raw, version = read_training_table(spark, path, data_version)
    check_columns(raw, usecase, spec)
    data = DataRef(path, version)
    # every step below reads the same small pinned snapshot: read it once
    prepared = prepare(raw, usecase, spec).cache()
    took = Laps()
    try:
        splits = split_dataset(prepared, usecase, spec.split)
        result = fit(splits, usecase, spec)
        took.lap("fit and test")
        log.info("%s: test metrics %s", usecase.name, result.metrics)
        # the score's drift reference: every labelled row of the history, not the test split
        # alone. With a time split the test split is the last hours of one time of day, and
        # scores that follow the time of day (delivery times at rush hour) would then drift
        # at any other hour without any change in the data.
        scores = score_frame(result.model, splits.tagged, usecase.label.kind, keep=[usecase.event_time])
        profile = build_reference_profile(
            splits.train, spec.numeric, spec.categorical, scores=scores, score_kind=usecase.label.kind,
            bins=spec.profile.bins, rel_error=spec.profile.rel_error,
        )
        plan = calibration_plan(usecase)
        if plan is not None:  # drift.calibrate: thresholds from the training rows' own spread, kept in the profile
            profile = calibrate_profile(profile, splits.train, plan, scores=scores)
        example = splits.train.select(*spec.features).limit(5).toPandas()
        took.lap("reference profile")

        configure_mlflow(platform)
        with mlflow.start_run(experiment_id=experiment_for(platform, usecase),
                              run_name=run_name or f"{usecase.name}-{spec.estimator}") as active:
            log_training_run(result, spec=spec, uc=usecase, platform=platform, data=data,
                             spark_version=spark.version, profile=profile, input_example=example,
                             datasets={"training": splits.tagged.where("_dl_split < 2").drop("_dl_split"),
                                       "testing": splits.test})
            run_id = active.info.run_id
        took.lap("MLflow run")
        model_version = register_version(spark, platform, usecase, run_id, metrics=result.metrics,
                                         threshold=result.threshold)
        took.lap("register")
        card = build_model_card(spark, uc=usecase, spec=spec, result=result, test=splits.test, data_path=path,
                                data_version=version, version=model_version, run_id=run_id,
                                model_name=model_name(usecase))
        log_model_card(platform, run_id, card)
        took.lap("model card")
        keep_training_data(spark, platform, usecase)  # the registered version's data stays readable
        decision = None
        if gate:
            decision = gate_and_promote(spark, platform, usecase, model_version, splits.test, spec, result.metrics)
            took.lap("gate")
    finally:
        prepared.unpersist()
    log.info("train %s: %s", usecase.name, took)
    return TrainOutcome(run_id=run_id, version=model_version, data=data, metrics=result.metrics,
                        search_results=result.search_results, gate=decision, threshold=result.threshold)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", help="Delta table to train on (default gold/<uc>_features_offline)")
    parser.add_argument("--data-version", type=int, help="Delta version to pin (default: the latest)")
    parser.add_argument("--no-gate", action="store_true", help="register as challenger only, do not gate")


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.data_version is not None and args.data_version < 0:
        parser.error("--data-version: expected a Delta version >= 0")


def _run(ctx: JobContext) -> None:
    a = ctx.args
    out = run(ctx.spark, ctx.platform, ctx.uc, table=a.table, data_version=a.data_version, gate=not a.no_gate)
    log.info("train %s: run %s, version %d (%s), data %s@v%d, metrics %s", ctx.uc.name, out.run_id, out.version,
             out.verdict, out.data.path, out.data.version, out.metrics)


main = entry_point("train", __doc__, run=_run, arguments=_arguments, check=_check,
                   preflight=needs(mlflow=True))
