"""driftline.delta: the Spark-free readers, the write options and the retried MERGE; the error hierarchy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline import errors
from driftline.delta import (
    count_local,
    delete_rows,
    delta_version,
    is_delta_table,
    local_table,
    local_version,
    merge_with_retry,
    read_delta,
    read_if_exists,
    read_local,
    retry_concurrent,
    rows_local,
    write_delta,
)


def test_local_readers_without_and_with_a_table(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    assert local_table(path) is None and read_local(path) is None
    assert count_local(path) is None and local_version(path) is None and rows_local(path) == []
    write_deltalake(path, pa.table({"id": [1, 2, None], "name": ["a", "b", "c"]}))
    write_deltalake(path, pa.table({"id": [4], "name": ["d"]}), mode="append")
    assert count_local(path) == 4 and local_version(path) == 1
    assert sorted(r["name"] for r in rows_local(path)) == ["a", "b", "c", "d"]
    frame = read_local(path, ["id"], types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    assert frame is not None and list(frame.columns) == ["id"] and str(frame["id"].dtype) == "Int64"
    with pytest.raises(errors.UsageError, match="path: expected a Delta table path"):
        local_table("")


def test_write_options_and_retried_merge(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "w")
    assert not is_delta_table(spark, path) and delta_version(spark, path) is None
    assert read_if_exists(spark, path) is None
    with pytest.raises(ValueError, match="mode: expected 'overwrite' or 'append'"):
        write_delta(spark.range(1), path, mode="merge")
    with pytest.raises(errors.UsageError, match="replace_where: only with mode 'overwrite'"):
        write_delta(spark.range(1), path, mode="append", replace_where="id = 0")

    df = spark.createDataFrame([("2024-05-01", 1), ("2024-05-02", 2)], "day string, n int")
    write_delta(df, path, partition_by=["day"])
    write_delta(spark.createDataFrame([("2024-05-01", 10)], "day string, n int"), path,
                partition_by=["day"], replace_where="day = '2024-05-01'")
    assert sorted((r["day"], r["n"]) for r in read_delta(spark, path).collect()) == [
        ("2024-05-01", 10), ("2024-05-02", 2)]
    write_delta(df, path, mode="append", txn=("test-app", 0))
    write_delta(df, path, mode="append", txn=("test-app", 0))  # a repeat: skipped
    assert read_delta(spark, path).count() == 4 and delta_version(spark, path) == 2

    merged = str(tmp_path / "m")
    schema = "k string, w timestamp, v double"
    t0 = dt.datetime(2024, 5, 1)
    merge_with_retry(spark, spark.createDataFrame([("a", t0, 1.0), (None, t0, 2.0)], schema), merged, ["k", "w"])
    merge_with_retry(spark, spark.createDataFrame([("a", t0, 3.0), (None, t0, 4.0)], schema), merged, ["k", "w"])
    assert sorted(r["v"] for r in read_delta(spark, merged).collect()) == [3.0, 4.0]  # null-safe keys
    delete_rows(spark, merged, F.col("k").isNull())
    assert [r["k"] for r in read_delta(spark, merged).collect()] == ["a"]


def test_retry_concurrent_retries_only_conflicts() -> None:
    from delta.exceptions import ConcurrentAppendException

    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException("another writer committed first")

    retry_concurrent(flaky, "test", attempts=3)
    assert len(calls) == 3
    with pytest.raises(KeyError):
        retry_concurrent(lambda: {}["x"], "test")


def test_every_error_is_a_driftline_error_and_keeps_its_builtin_base() -> None:
    value_errors = [errors.ConfigError, errors.ModelSpecError, errors.UsageError, errors.SimulationError,
                    errors.TrainingDataError, errors.MissingColumnsError]
    runtime_errors = [errors.BrokerError, errors.SetupError, errors.MissingTableError, errors.DataQualityError,
                      errors.RegistryError, errors.MonitorError]
    for cls in value_errors:
        assert issubclass(cls, errors.DriftlineError) and issubclass(cls, ValueError), cls
    for cls in runtime_errors:
        assert issubclass(cls, errors.DriftlineError) and issubclass(cls, RuntimeError), cls
    assert issubclass(errors.ModelSpecError, errors.ConfigError)
    assert issubclass(errors.MissingColumnsError, errors.TrainingDataError)
