"""Small gold feature tables for the model tests of tests/loop (reproducibility, model cards,
retention): every feature the use case's ``model:`` section names, a label that depends on
the first numeric and the first categorical feature."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from driftline.config import PlatformConfig, UseCaseConfig, load_usecase
from driftline.pipelines import train as train_job
from driftline.training import model_spec

START = datetime(2024, 1, 1)


def usecase(name: str, **model: Any) -> UseCaseConfig:
    """The shipped use case with ``model`` keys replaced (a smaller search, another estimator)."""
    uc = load_usecase(name)
    return uc.replace(model={**uc.raw("model"), **model})


def gold_rows(uc: UseCaseConfig, n: int, seed: int, levels: tuple[str, ...] = ("a", "b", "c", "d"),
              weights: tuple[float, ...] | None = None) -> list[dict[str, Any]]:
    """``n`` labelled rows, 10 minutes apart; categorical values drawn from ``levels``
    (with ``weights``), the label from the first numeric and the first categorical feature."""
    spec = model_spec(uc)
    rng = np.random.default_rng(seed)
    numeric = {c: rng.normal(0.0, 1.0, n) for c in spec.numeric}
    p_levels = None if weights is None else np.asarray(weights) / np.sum(weights)
    categorical = {c: rng.choice(list(levels), n, p=p_levels) for c in spec.categorical}
    x0 = numeric[spec.numeric[0]]
    bump = np.where(categorical[spec.categorical[0]] == levels[0], 1.5, 0.0)
    if uc.label.kind == "binary":
        p = 1.0 / (1.0 + np.exp(-(2.5 * x0 + bump - 1.0)))
        label: np.ndarray = (rng.uniform(size=n) < p).astype(int)
    else:
        label = 30.0 + 6.0 * x0 + 4.0 * bump + rng.normal(0.0, 1.0, n)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            uc.event_id: f"e{i:05d}", uc.entity_key: f"k{i % 37}", uc.event_time: START + timedelta(minutes=10 * i),
            uc.label.field: int(label[i]) if uc.label.kind == "binary" else float(label[i]),
        }
        row.update({c: float(v[i]) for c, v in numeric.items()})
        row.update({c: str(v[i]) for c, v in categorical.items()})
        rows.append(row)
    return rows


def write_gold(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, rows: list[dict[str, Any]],
               mode: str = "overwrite", partitions: int = 3) -> str:
    """Write ``rows`` to the use case's gold offline table (``partitions`` files); returns its path."""
    path = train_job.features_table(platform, uc)
    spark.createDataFrame(rows).repartition(partitions).write.format("delta").mode(mode).save(path)
    return path
