"""Fixtures of the reliability battery; helpers are in rel_support.py."""

from __future__ import annotations

from typing import cast

import mlflow
import pytest
from pyspark.sql import SparkSession
from rel_support import FRAUD, gold_frame

from driftline.config import PlatformConfig
from driftline.registry import client_for
from driftline.tracking import MODEL_ARTIFACT, pip_requirements
from driftline.training import build_pipeline, model_spec


@pytest.fixture(scope="session")
def spark_master() -> str:
    """local[2,3]: a failed task is retried up to 3 times, as on a cluster (issue 14's setting),
    so a fault a retry absorbs is tested as users meet it."""
    return "local[2,3]"


@pytest.fixture(scope="session")
def champion_run(spark: SparkSession, base_platform: PlatformConfig) -> str:
    """One small fitted fraud pipeline logged as an MLflow run (Spark flavour), for the whole run."""
    client_for(base_platform)
    spec = model_spec(FRAUD).model_copy(update={"estimator_params": {"maxIter": 10, "regParam": 0.0}})
    model = build_pipeline(spec, FRAUD.label.field, seed=1).fit(gold_frame(spark, 400, 1))
    with mlflow.start_run(run_name="reliability-champion") as run:
        mlflow.spark.log_model(model, artifact_path=MODEL_ARTIFACT, pip_requirements=pip_requirements())
    return cast(str, run.info.run_id)
