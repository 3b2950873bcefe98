"""The query-metrics listener on a real streaming query: one row per micro-batch in
monitoring/queries (read back with delta-rs), with what was fed; callbacks never raise;
close() right after an availableNow run records its last batch and leaves no callback running."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline import query_metrics
from driftline.cli import main
from driftline.config import PlatformConfig
from driftline.query_metrics import QUERY_METRICS_COLUMNS, attach_query_metrics, latest_per_query, metrics_path

FILES = [3, 2, 4]  # events per file; one file per micro-batch


def lake_platform(base_platform: PlatformConfig, tmp_path: Path) -> PlatformConfig:
    data = base_platform.model_dump(mode="json")
    data["lake_root"] = str(tmp_path / "lake")
    return PlatformConfig.model_validate(data)


def json_files(tmp_path: Path, sizes: list[int]) -> Path:
    """One JSON file of ``n`` events ``{k, ts}`` per size, minute ``i`` of 2024-02-01, oldest first."""
    source = tmp_path / "in"
    source.mkdir()
    for i, n in enumerate(sizes):
        lines = [json.dumps({"k": f"k{j % 2}", "ts": f"2024-02-01T00:0{i}:{j:02d}Z"}) for j in range(n)]
        part = source / f"part-{i}.json"
        part.write_text("\n".join(lines) + "\n")
        os.utime(part, (1_700_000_000 + 60 * i, 1_700_000_000 + 60 * i))  # the file source reads oldest first
    return source


def test_listener_records_every_batch_of_a_stateful_query(
    spark: SparkSession, base_platform: PlatformConfig, tmp_path: Path
) -> None:
    platform = lake_platform(base_platform, tmp_path)
    source = json_files(tmp_path, FILES)
    name = f"qm_{uuid.uuid4().hex[:8]}"

    listener = attach_query_metrics(spark, platform, flush_interval_s=3600)
    assert attach_query_metrics(spark, platform) is listener  # once per session
    query = None
    try:
        stream = (
            spark.readStream.schema("k string, ts timestamp").option("maxFilesPerTrigger", 1).json(str(source))
            .withWatermark("ts", "1 minute")
            .groupBy(F.window(F.col("ts"), "1 minute"), F.col("k")).count()
        )
        query = (stream.writeStream.format("memory").queryName(name).outputMode("append")
                 .option("checkpointLocation", str(tmp_path / "ckpt")).trigger(availableNow=True).start())
        query.awaitTermination(120)
        last = query.lastProgress
        assert last is not None
        assert listener.wait_for_batch(query.id, last.batchId, timeout_s=60)
        # a malformed event is logged, never raised into Spark's listener bus
        listener.onQueryProgress(SimpleNamespace(progress=None))
        listener.flush()  # the query's termination may have flushed already, in the background
        assert listener.pending() == 0
    finally:
        if query is not None:
            query.stop()
        listener.close()

    rows = [r for r in DeltaTable(metrics_path(platform)).to_pyarrow_table().to_pylist() if r["query_name"] == name]
    assert set(rows[0]) == set(QUERY_METRICS_COLUMNS)
    rows.sort(key=lambda r: r["batch_id"])
    assert [r["batch_id"] for r in rows] == list(range(len(rows)))
    assert len({(r["query_id"], r["run_id"], r["batch_id"]) for r in rows}) == len(rows)
    with_input = [r for r in rows if r["num_input_rows"]]
    # one file per batch; afterwards maybe a no-data batch that only moves the watermark
    assert [r["num_input_rows"] for r in with_input] == FILES
    assert all(r["num_input_rows"] == 0 for r in rows[len(FILES):])
    assert {(r["query_id"], r["run_id"]) for r in rows} == {(str(query.id), str(query.runId))}
    assert all(r["batch_duration_ms"] is not None and r["batch_duration_ms"] >= 0 for r in rows)
    assert all(r["state_rows_total"] is not None and r["rows_dropped_by_watermark"] is not None for r in rows)
    assert rows[len(FILES) - 1]["state_rows_total"] > 0
    # event times are in 2024: the newest event of a batch reached the sink long after it happened
    assert all(r["event_to_output_latency_ms"] > 24 * 3600 * 1000 for r in with_input)
    assert with_input[-1]["event_time_max"].isoformat().startswith("2024-02-01T00:02:03")

    latest = [r for r in latest_per_query(metrics_path(platform)) if r["query_name"] == name]
    assert [r["batch_id"] for r in latest] == [rows[-1]["batch_id"]]
    out = CliRunner().invoke(main, ["--set", f"lake_root={platform.lake_root}", "queries", "--query", name])
    assert out.exit_code == 0, out.output
    header, line = out.output.strip().splitlines()
    assert header.split()[:3] == ["query", "batch", "time"]
    assert line.split()[:2] == [name, str(rows[-1]["batch_id"])]


def test_close_right_after_an_available_now_run_records_its_last_batch(
    spark: SparkSession, base_platform: PlatformConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spark hands progress events to a Python listener after the fact, so when
    awaitTermination() returns the last ones may still be queued behind a slow callback.
    close() alone (no wait_for_batch) writes one row per batch of the run, with its job
    count, and returns only once no callback is running: a callback cut off by the process
    exiting is what made Spark log 'Listener PythonStreamingQueryListenerWrapper threw an exception'."""
    platform = lake_platform(base_platform, tmp_path)
    sizes = [2, 3, 1, 2]
    source = json_files(tmp_path, sizes)
    name = f"qm_{uuid.uuid4().hex[:8]}"
    real_row = query_metrics.progress_row
    finished: list[float] = []
    lock = threading.Lock()

    def slow_row(progress: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        time.sleep(0.5)  # as long as the py4j work a callback once did
        row = real_row(progress, *args, **kwargs)
        with lock:
            finished.append(time.monotonic())
        return row

    monkeypatch.setattr(query_metrics, "progress_row", slow_row)
    listener = attach_query_metrics(spark, platform, flush_interval_s=3600)
    query = None
    try:
        query = (spark.readStream.schema("k string, ts timestamp").option("maxFilesPerTrigger", 1).json(str(source))
                 .writeStream.format("noop").queryName(name).option("checkpointLocation", str(tmp_path / "ckpt"))
                 .trigger(availableNow=True).start())
        query.awaitTermination(120)
        batches = [p.batchId for p in query.recentProgress]
        listener.close()
        closed_at = time.monotonic()
    finally:
        if query is not None:
            query.stop()
        listener.close()
    assert query.exception() is None
    assert batches == list(range(len(sizes)))

    rows = sorted((r for r in DeltaTable(metrics_path(platform)).to_pyarrow_table().to_pylist()
                   if r["query_name"] == name), key=lambda r: r["batch_id"])
    assert [r["batch_id"] for r in rows] == batches
    assert [r["num_input_rows"] for r in rows] == sizes
    assert {(r["query_id"], r["run_id"]) for r in rows} == {(str(query.id), str(query.runId))}
    assert all(r["spark_jobs"] >= 1 and r["spark_stages"] >= r["spark_jobs"] for r in rows)
    assert len(finished) == len(sizes) and max(finished) < closed_at  # no callback outlived close()
    assert listener.pending() == 0
