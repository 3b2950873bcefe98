"""Helpers shared by the test suites (tests/ is on ``sys.path`` through tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from driftline.config import load_usecase
from driftline.training import model_spec

FRAUD = load_usecase("fraud")


def gold_frame(spark: SparkSession, n: int, seed: int) -> DataFrame:
    """``n`` rows with every model feature of the fraud use case; the label follows ``amount``."""
    spec = model_spec(FRAUD)
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {c: rng.gamma(2.0, 2.0, n) for c in spec.numeric}
    data["amount"] = rng.gamma(2.0, 40.0, n)
    for c in spec.categorical:
        allowed = FRAUD.field(c).allowed or ["x"]
        data[c] = rng.choice([str(a) for a in allowed], n)
    data[FRAUD.label.field] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(data["amount"] - 80) / 20))).astype(float)
    return spark.createDataFrame(pd.DataFrame(data))
