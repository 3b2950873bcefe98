"""Online scoring (issue 6): the Structured Streaming scoring query against Spark's own
Kafka ceiling and a plain confluent-kafka + pandas consumer doing the same work;
event-to-prediction latency at a steady rate; native scoring against ``mlflow.pyfunc.spark_udf``.

    .venv/bin/python -m benchmarks.bench_score                          # defaults (~13 min on 2 quiet cores)
    .venv/bin/python -m benchmarks.bench_score --events 20000 --latency-seconds 20 --udf-rows 500   # a quick look
    .venv/bin/python -m benchmarks.bench_score --shadow --latency-seconds 60 --json /tmp/score.json   # RESULTS.md

Self-contained: starts its own Kafka broker (KRaft, loopback, free ports), one
SparkSession (``local[2]``, UI off) and an MLflow store (sqlite) in a temporary
directory, fits a small fraud pipeline (the use case's own stages: cast, median
Imputer, StringIndexer/OneHotEncoder keep, VectorAssembler, StandardScaler,
LogisticRegression), registers it and promotes it to champion. The use case is a
renamed copy of ``fraud`` (fresh topics; routing ``champion``), its simulator at
``--events-per-hour`` of simulated time; ``--bad-rate`` of the events are malformed
(not JSON, wrong type, missing field) and as many are repeats of an earlier event.

Measured, in this order:

(a) ceiling     Spark's Kafka source with the same ``maxOffsetsPerTrigger`` into the
                ``noop`` sink (availableNow): reading and nothing else.
(1) driftline   ``start_scoring(..., trigger="availableNow")`` over the same topic for
                each ``--max-offsets`` (fresh lake and checkpoint each, same registry):
                dedupe state, parse + quarantine, point-in-time stream features, native
                champion scoring, Delta predictions + features (exactly once), served
                predictions and bad records published to Kafka. events/s = events on the
                topic / wall time from ``start()`` until the query ended; "steady" =
                rows / triggerExecution time of every batch but the first (which loads the
                model). Per-batch stage times come from the scorer's own log line.
(b) python      one confluent-kafka Consumer, ``consume()`` of ``--python-batch`` messages,
                ``json.loads``, dedupe by event id, the schema checks (required, type,
                range, allowed), the same stream features (windows up to
                ``streaming.stream_window_max`` point in time over the consumer's own
                history kept in numpy arrays; longer windows and labels 0 / NaN as
                without an online table) and the same fitted PipelineModel evaluated in
                numpy from its parameters; predictions and features to one Parquet file
                each per batch, served predictions and bad records to Kafka. Its scores
                are compared with the Spark query's predictions event by event.
(2) latency     the query with a processing-time trigger while the simulator publishes at
                a steady rate (each ``--latency-rates``, ``--latency-seconds``) to a fresh
                topic: Kafka timestamp of the prediction on ``<uc>.predictions`` minus the
                event's Kafka timestamp (which the prediction carries).
(3) model only  a static frame of feature rows (gold/<uc>_features_stream from (1)),
                ``PipelineModel.transform`` into ``noop`` against
                ``mlflow.pyfunc.spark_udf(spark, models:/<name>/1)`` into ``noop``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform as py_platform
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from driftline.config import PlatformConfig, UseCaseConfig, load_platform, load_usecase
from driftline.kafka.broker import EmbeddedBroker, free_port

log = logging.getLogger("benchmarks.bench_score")

MICROS = 1_000_000
BAD_KINDS = "not_json+wrong_type+missing_field"


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    """CPU count and model, versions."""
    from importlib import metadata

    import confluent_kafka
    import mlflow
    import pyspark

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": str(os.cpu_count()), "cpu_model": model, "python": py_platform.python_version(),
            "pyspark": pyspark.__version__, "mlflow": mlflow.__version__, "pandas": pd.__version__,
            "numpy": np.__version__, "confluent_kafka": metadata.version("confluent-kafka"),
            "delta_spark": metadata.version("delta-spark"),
            "librdkafka": confluent_kafka.libversion()[0]}


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- set-up


def bench_platform(root: Path, bootstrap: str, mlflow_home: Path, shuffle_partitions: int | None) -> PlatformConfig:
    overrides = [
        f"lake_root={root / 'lake'}",
        f"checkpoint_root={root / 'checkpoints'}",
        f"mlflow.home={mlflow_home}",
        "spark.master=local[2]",
        "spark.ui_enabled=false",
        "spark.log_level=ERROR",
        f"kafka.bootstrap_servers={bootstrap}",
    ]
    if shuffle_partitions:
        overrides.append(f"spark.shuffle_partitions={shuffle_partitions}")
    data = load_platform(overrides=overrides, env={}).model_dump(mode="json")
    data["spark"]["conf"] = {**data["spark"]["conf"], "spark.ui.showConsoleProgress": "false"}
    return PlatformConfig.model_validate(data)


def stop_gracefully(query: Any, timeout_s: float = 300.0) -> None:
    """Let the running micro-batch finish, then stop (as streaming/score.py does on SIGTERM)."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()


def bench_usecase(name: str, events_per_hour: int, customers: int, max_offsets: int | None,
                  mode: str = "champion") -> UseCaseConfig:
    fraud = load_usecase("fraud")
    sim = {**fraud.simulator, "events_per_hour": events_per_hour, "customers": customers}
    streaming = {**fraud.raw("streaming"), "max_offsets_per_trigger": max_offsets, "publish": True}
    return fraud.replace(name=name, simulator=sim, streaming=streaming, routing={"mode": mode, "share": 0.05})


def training_frame(spark: Any, uc: UseCaseConfig, n: int, seed: int) -> Any:
    """Rows with every model feature of the fraud use case (some nulls); the label follows the amount."""
    from driftline.training import model_spec

    spec = model_spec(uc)
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {c: rng.gamma(2.0, 2.0, n) for c in spec.numeric}
    data["amount"] = rng.gamma(2.0, 40.0, n)
    data["hour_of_day"] = rng.integers(0, 24, n).astype(float)
    data["is_night"] = ((data["hour_of_day"] >= 22) | (data["hour_of_day"] < 6)).astype(float)
    for c in ("amount_mean_7d", "amount_std_7d", "amount_to_mean_7d"):
        data[c] = np.where(rng.uniform(size=n) < 0.2, np.nan, data[c])
    for c in spec.categorical:
        allowed = [str(a) for a in (uc.field(c).allowed or ["x"])]
        values = rng.choice(allowed, n).astype(object)
        if not uc.field(c).required:
            values[rng.uniform(size=n) < 0.1] = None
        data[c] = values
    logit = (data["amount"] - 80) / 20 + 0.5 * (np.asarray(data["country"]) == "NG")
    data[uc.label.field] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(float)
    return spark.createDataFrame(pd.DataFrame(data))


def fit_and_log(spark: Any, platform: PlatformConfig, uc: UseCaseConfig, seed: int, reg: float) -> str:
    """Fit the use case's pipeline on synthetic rows and log it as an MLflow run (Spark flavour)."""
    import mlflow
    import mlflow.spark

    from driftline.registry import client_for
    from driftline.tracking import MODEL_ARTIFACT, experiment_for, pip_requirements
    from driftline.training import build_pipeline, model_spec

    client_for(platform)
    spec = model_spec(uc).model_copy(update={"estimator_params": {"maxIter": 20, "regParam": reg}})
    model = build_pipeline(spec, uc.label.field, seed=seed).fit(training_frame(spark, uc, 5000, seed))
    with mlflow.start_run(experiment_id=experiment_for(platform, uc), run_name=f"bench-score-{seed}") as run:
        mlflow.spark.log_model(model, artifact_path=MODEL_ARTIFACT, pip_requirements=pip_requirements())
    return str(run.info.run_id)


def register_champion(spark: Any, platform: PlatformConfig, uc: UseCaseConfig, run_id: str) -> int:
    from driftline.registry import promote, register_version

    version = register_version(spark, platform, uc, run_id)
    promote(spark, platform, uc, version, force=True)
    return version


def with_roots(platform: PlatformConfig, root: Path) -> PlatformConfig:
    """The same platform with its own lake and checkpoints under ``root`` (same broker and registry)."""
    data = platform.model_dump(mode="json")
    data["lake_root"] = str(root / "lake")
    data["checkpoint_root"] = str(root / "checkpoints")
    return PlatformConfig.model_validate(data)


def topic_size(platform: PlatformConfig, topic: str) -> int:
    from driftline.kafka.spark import kafka_watermarks

    return sum(high - low for low, high in kafka_watermarks(platform.kafka, topic).values())


# --------------------------------------------------------------------------- Spark runs


class StageLog(logging.Handler):
    """Collects the scorer's per-batch log line: scored, quarantined, total seconds, stage seconds."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.batches: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not isinstance(record.msg, str) or not record.msg.startswith("batch %d: %d scored"):
            return
        args = cast(tuple[Any, ...], record.args)
        stages = {k: float(v[:-1]) for k, v in (part.rsplit(" ", 1) for part in str(args[-1]).split(", ") if part)}
        self.batches.append({"batch_id": int(args[0]), "scored": int(args[1]), "quarantined": int(args[2]),
                             "total_s": float(args[-2]), "stages": stages})


def progress_summary(progress: Sequence[dict[str, Any]], skip_first: bool = True) -> dict[str, Any]:
    """Rows and time per batch from ``query.recentProgress`` (only batches with input)."""
    batches = [p for p in progress if p.get("numInputRows", 0) > 0]
    steady = batches[1:] if skip_first and len(batches) > 1 else batches
    rows = sum(int(p["numInputRows"]) for p in steady)
    ms = sum(int(p["durationMs"].get("triggerExecution", 0)) for p in steady)
    durations: dict[str, int] = {}
    for p in steady:
        for k, v in p["durationMs"].items():
            durations[k] = durations.get(k, 0) + int(v)
    return {"batches": len(batches), "first_batch_rows": int(batches[0]["numInputRows"]) if batches else 0,
            "first_batch_ms": int(batches[0]["durationMs"].get("triggerExecution", 0)) if batches else 0,
            "steady_rows": rows, "steady_ms": ms, "steady_events_per_s": rows / (ms / 1000) if ms else None,
            "steady_duration_ms": durations}


def run_ceiling(spark: Any, platform: PlatformConfig, uc: UseCaseConfig, root: Path, max_offsets: int | None,
                expected: int) -> dict[str, Any]:
    """(a) Kafka source -> the bronze columns -> noop, availableNow."""
    from driftline.kafka.spark import raw_records, read_kafka_stream

    raw = raw_records(read_kafka_stream(spark, platform.kafka, uc.topic("events"), "earliest", max_offsets))
    t0 = time.perf_counter()
    query = (raw.writeStream.format("noop").option("checkpointLocation", str(root / f"ceiling-{uuid.uuid4().hex[:6]}"))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    elapsed = time.perf_counter() - t0
    if query.exception() is not None:
        raise RuntimeError(f"ceiling query failed: {query.exception()}")
    summary = progress_summary(query.recentProgress, skip_first=False)
    rows = summary["steady_rows"]
    if rows != expected:
        log.warning("ceiling read %d rows, expected %d", rows, expected)
    return {"events": rows, "elapsed_s": elapsed, "events_per_s": rows / elapsed, "progress": summary}


def run_driftline(spark: Any, platform: PlatformConfig, uc: UseCaseConfig, expected: int, stages: StageLog
                  ) -> dict[str, Any]:
    """(1) the scoring query, availableNow, fresh lake and checkpoint."""
    from deltalake import DeltaTable

    from driftline.scoring import predictions_path, quarantine_stream_path, start_scoring

    stages.batches.clear()
    t0 = time.perf_counter()
    query = start_scoring(spark, platform, uc, trigger="availableNow")
    query.awaitTermination()
    elapsed = time.perf_counter() - t0
    if query.exception() is not None:
        raise RuntimeError(f"scoring query failed: {query.exception()}")
    summary = progress_summary(query.recentProgress)
    summary.update(spark_jobs(spark, str(query.runId)))
    from driftline.query_metrics import batch_jobs

    per_batch = batch_jobs(spark, str(query.id))
    summary["jobs_per_batch"] = {str(b): n for b, (n, _) in sorted(per_batch.items())}
    summary["max_jobs_per_batch"] = max((n for n, _ in per_batch.values()), default=None)
    preds = DeltaTable(predictions_path(platform, uc)).to_pandas(columns=["route"])
    quarantine_path = quarantine_stream_path(platform, uc)
    quarantined = len(DeltaTable(quarantine_path).to_pandas(columns=["reason"])) if Path(quarantine_path).exists() else 0
    total_rows = sum(int(p["numInputRows"]) for p in query.recentProgress)
    return {"events": expected, "input_rows": total_rows, "elapsed_s": elapsed, "events_per_s": expected / elapsed,
            "predictions": int((preds["route"] == "champion").sum()), "prediction_rows": len(preds),
            "quarantined": quarantined, "progress": summary, "batches": list(stages.batches)}


def spark_jobs(spark: Any, group: str) -> dict[str, int]:
    """Spark jobs and stages the query ran (streaming jobs carry the run id as their job group)."""
    tracker = spark.sparkContext.statusTracker()
    ids = tracker.getJobIdsForGroup(group)
    stages = 0
    for job_id in ids:
        info = tracker.getJobInfo(job_id)
        stages += len(info.stageIds) if info is not None else 0
    return {"spark_jobs": len(ids), "spark_stages": stages}


def stage_table(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean seconds per stage over the batches after the first, and the first batch on its own."""
    if not batches:
        return {}
    later = batches[1:] or batches
    names = sorted({k for b in batches for k in b["stages"]})
    return {"first": {"total_s": batches[0]["total_s"], **batches[0]["stages"]},
            "later_mean": {"total_s": statistics.mean(b["total_s"] for b in later),
                           **{k: statistics.mean(b["stages"].get(k, 0.0) for b in later) for k in names}},
            "later_last": {"total_s": later[-1]["total_s"], **later[-1]["stages"]}}


# --------------------------------------------------------------------------- numpy model


_CAST = re.compile(r"CAST\(`([^`]+)` AS DOUBLE\) AS `([^`]+)`")


@dataclass
class NumpyPipeline:
    """A fitted PipelineModel of the stages :func:`driftline.training.feature_stages` uses and a
    binary LogisticRegression, evaluated in numpy from the model's own parameters."""

    steps: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    inputs_numeric: list[str] = field(default_factory=list)
    inputs_categorical: list[str] = field(default_factory=list)

    def score(self, cols: dict[str, Any]) -> np.ndarray:
        work = dict(cols)
        for step in self.steps:
            step(work)
        return cast(np.ndarray, work["__score"])


def numpy_pipeline(model: Any) -> NumpyPipeline:
    """Read the parameters of each stage; raise on a stage this baseline does not implement."""
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.feature import (
        ImputerModel,
        OneHotEncoderModel,
        SQLTransformer,
        StandardScalerModel,
        StringIndexerModel,
        VectorAssembler,
    )

    out = NumpyPipeline()
    for stage in model.stages:
        if isinstance(stage, SQLTransformer):
            pairs = _CAST.findall(stage.getStatement())
            if not pairs:
                raise NotImplementedError(f"SQLTransformer {stage.getStatement()!r}")
            out.inputs_numeric += [src for src, _ in pairs]

            def cast_step(w: dict[str, Any], pairs: list[tuple[str, str]] = pairs) -> None:
                for src, dst in pairs:
                    w[dst] = np.asarray(w[src], dtype=float)
            out.steps.append(cast_step)
        elif isinstance(stage, ImputerModel):
            row = stage.surrogateDF.collect()[0]
            triples = [(i, o, float(row[i])) for i, o in zip(stage.getInputCols(), stage.getOutputCols(), strict=True)]

            def impute_step(w: dict[str, Any], triples: list[tuple[str, str, float]] = triples) -> None:
                for i, o, s in triples:
                    x = w[i]
                    w[o] = np.where(np.isnan(x), s, x)
            out.steps.append(impute_step)
        elif isinstance(stage, StringIndexerModel):
            if stage.getHandleInvalid() != "keep":
                raise NotImplementedError("StringIndexer without handleInvalid=keep")
            maps = [(i, o, {label: float(k) for k, label in enumerate(labels)}, float(len(labels)))
                    for i, o, labels in zip(stage.getInputCols(), stage.getOutputCols(), stage.labelsArray,
                                            strict=True)]
            out.inputs_categorical += [i for i, _, _, _ in maps]

            def index_step(w: dict[str, Any], maps: list[tuple[str, str, dict[str, float], float]] = maps) -> None:
                for i, o, lookup, unknown in maps:
                    w[o] = pd.Series(w[i], dtype=object).map(lookup).fillna(unknown).to_numpy(dtype=float)
            out.steps.append(index_step)
        elif isinstance(stage, OneHotEncoderModel):
            keep, drop_last = stage.getHandleInvalid() == "keep", stage.getDropLast()
            sizes = list(stage.categorySizes)
            specs = [(i, o, s, s + int(keep) - int(drop_last))
                     for i, o, s in zip(stage.getInputCols(), stage.getOutputCols(), sizes, strict=True)]

            def ohe_step(w: dict[str, Any], specs: list[tuple[str, str, int, int]] = specs, keep: bool = keep) -> None:
                for i, o, orig, width in specs:
                    idx = np.asarray(w[i], dtype=float)
                    valid = (idx >= 0) & (idx < orig)
                    if not keep and not valid.all():
                        raise ValueError(f"{i}: invalid category index")
                    pos = np.where(valid, idx, orig).astype(np.int64)
                    mat = np.zeros((len(idx), width))
                    hit = pos < width
                    mat[np.flatnonzero(hit), pos[hit]] = 1.0
                    w[o] = mat
            out.steps.append(ohe_step)
        elif isinstance(stage, VectorAssembler):
            ins, o = stage.getInputCols(), stage.getOutputCol()

            def assemble_step(w: dict[str, Any], ins: list[str] = ins, o: str = o) -> None:
                w[o] = np.column_stack([np.asarray(w[c], dtype=float).reshape(len(w[c]), -1) for c in ins])
            out.steps.append(assemble_step)
        elif isinstance(stage, StandardScalerModel):
            std, mean = stage.std.toArray(), stage.mean.toArray()
            with_std, with_mean = stage.getWithStd(), stage.getWithMean()
            factor = np.where(std != 0, 1.0 / np.where(std != 0, std, 1.0), 0.0)
            si, so = stage.getInputCol(), stage.getOutputCol()

            shift = mean if with_mean else np.zeros_like(std)
            mult = factor if with_std else np.ones_like(std)

            def scale_step(w: dict[str, Any], si: str = si, so: str = so, shift: np.ndarray = shift,
                           mult: np.ndarray = mult) -> None:
                w[so] = (w[si] - shift) * mult
            out.steps.append(scale_step)
        elif isinstance(stage, LogisticRegressionModel):
            if stage.numClasses != 2:
                raise NotImplementedError("multinomial logistic regression")
            coef, intercept, fi = stage.coefficients.toArray(), float(stage.intercept), stage.getFeaturesCol()

            def lr_step(w: dict[str, Any], coef: np.ndarray = coef, intercept: float = intercept, fi: str = fi) -> None:
                margin = w[fi] @ coef + intercept
                w["__score"] = 1.0 / (1.0 + np.exp(-margin))
            out.steps.append(lr_step)
        else:
            raise NotImplementedError(f"numpy baseline: stage {type(stage).__name__}")
    return out


# --------------------------------------------------------------------------- plain Python consumer


@dataclass
class Checks:
    """The schema rules of the use case, as plain Python / pandas operations."""

    fields: list[Any]
    id_field: str

    def classify(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """Typed frame and the first failing rule per row (None when good), in driftline's rule order."""
        n = len(frame)
        reason = pd.Series([None] * n, index=frame.index, dtype=object)
        typed = pd.DataFrame(index=frame.index)

        def mark(mask: Any, text: str) -> None:
            mask = pd.Series(mask, index=frame.index).fillna(False).astype(bool) & reason.isna()
            if mask.any():
                reason[mask] = text

        for f in self.fields:
            raw = frame[f.name] if f.name in frame.columns else pd.Series([None] * n, index=frame.index, dtype=object)
            present = raw.notna()
            if f.type == "double" or f.type in ("int", "long"):
                if raw.dtype.kind in "fiu":
                    value = raw.astype(float)
                else:
                    ok = raw.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))
                    value = pd.to_numeric(raw.where(ok), errors="coerce").astype(float)
            elif f.type == "timestamp":
                text = raw.where(raw.map(lambda v: isinstance(v, str)))
                value = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            else:  # string: like Spark's from_json, a JSON number becomes its text
                as_text = raw.map(lambda v: v if v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v))
                                  else json.dumps(v))
                value = as_text.where(as_text.notna(), None)
            typed[f.name] = value
            if f.required or f.name == self.id_field:
                mark(~present, f"missing_required:{f.name}")
            mark(present & value.isna(), f"wrong_type:{f.name}")
            if f.min is not None or f.max is not None:
                lo = value < f.min if f.min is not None else False
                hi = value > f.max if f.max is not None else False
                mark(lo | hi, f"out_of_range:{f.name}")
            if f.allowed is not None:
                mark(value.notna() & ~value.isin(f.allowed), f"not_allowed:{f.name}")
            if f.max_length is not None:
                mark(value.str.len() > f.max_length, f"too_long:{f.name}")
        return typed, reason


class History:
    """Each entity's recent events (entity code, event time, summed columns) in numpy arrays."""

    SHIFT = 44  # entity code in the high bits, event time (µs since ``base``) below: ~200 days

    def __init__(self, keep_s: int, columns: list[str]) -> None:
        self.keep_us = keep_s * MICROS
        self.columns = columns
        self.codes: dict[str, int] = {}
        self.base: int | None = None
        self.key = np.empty(0, dtype=np.int64)
        self.values = {c: np.empty(0) for c in columns}
        self.latest: dict[int, int] = {}  # per Kafka partition: the latest event time seen (µs since base)

    def encode(self, entities: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
        if self.base is None:
            self.base = int(ts_us.min()) - 4 * self.keep_us
        codes = np.fromiter((self.codes.setdefault(e, len(self.codes)) for e in entities), dtype=np.int64,
                            count=len(entities))
        return (codes << self.SHIFT) | (ts_us - self.base)

    def window_aggregates(self, key: np.ndarray, values: dict[str, np.ndarray], aggs: Sequence[Any],
                          partitions: np.ndarray) -> dict[str, np.ndarray]:
        """Point in time: for each new event, the same entity's events in ``[t - window, t)``,
        the new batch included; then the batch joins the history. An entity lives in one Kafka
        partition (the key), in time order; partitions are consumed at different speeds, so the
        history forgets only what precedes every partition's latest event by more than ``keep_s``."""
        all_key = np.concatenate([self.key, key])
        order = np.argsort(all_key, kind="stable")
        sorted_key = all_key[order]
        hi = np.searchsorted(sorted_key, key, side="left")
        sums: dict[str, np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for a in aggs:
            lo = np.searchsorted(sorted_key, key - a.window_s * MICROS, side="left")
            count = (hi - lo).astype(np.int64)
            if a.fn == "count":
                out[a.name] = count
                continue
            if a.column not in sums:
                sums[a.column] = np.concatenate([[0.0], np.cumsum(np.concatenate(
                    [self.values[a.column], values[a.column]])[order])])
            total = sums[a.column][hi] - sums[a.column][lo]
            if a.fn == "sum":
                out[a.name] = total
            elif a.fn == "mean":
                out[a.name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            else:
                raise NotImplementedError(f"python baseline: stream aggregate fn {a.fn}")
        self.key = all_key
        for c in self.columns:
            self.values[c] = np.concatenate([self.values[c], values[c]])
        # forget what no later window can reach (no late events in this benchmark)
        offsets = key & ((1 << self.SHIFT) - 1)
        for p in np.unique(partitions):
            self.latest[int(p)] = max(self.latest.get(int(p), 0), int(offsets[partitions == p].max()))
        horizon = min(self.latest.values()) - self.keep_us
        keep = (self.key & ((1 << self.SHIFT) - 1)) >= horizon
        if not keep.all():
            self.key = self.key[keep]
            for c in self.columns:
                self.values[c] = self.values[c][keep]
        return out


def run_python(platform: PlatformConfig, uc: UseCaseConfig, model: Any, expected: int, batch_size: int,
               out_dir: Path) -> dict[str, Any]:
    """(b) confluent-kafka + pandas + numpy doing the query's work; returns figures and the scores."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka import KafkaError, TopicPartition

    from driftline.features import feature_spec
    from driftline.kafka.clients import ensure_topics, make_consumer, make_producer
    from driftline.registry import model_name
    from driftline.scoring import split_aggregates, streaming_spec
    from driftline.training import model_spec

    out_dir.mkdir(parents=True, exist_ok=True)
    stream = streaming_spec(uc)
    spec = feature_spec(uc)
    window_max_s = stream.stream_window_max_s
    dedupe_ms = stream.dedupe_window_s * 1000
    stream_spec, table_names = split_aggregates(spec, window_max_s)
    stream_aggs = list(stream_spec.aggregates)
    fns = {a.name: a.fn for a in spec.aggregates}
    tod = spec.definitions.time_of_day
    threshold = model_spec(uc).default_threshold  # the bench registers its model without a chosen threshold
    name = model_name(uc)
    pipeline = numpy_pipeline(model)
    checks = Checks(list(uc.schema_), uc.event_id)
    field_names = [f.name for f in uc.schema_]
    sum_columns = sorted({a.column for a in stream_aggs if a.column})
    history = History(window_max_s * 2, sum_columns)
    pred_topic, dlq_topic = f"{uc.name}.py_predictions", f"{uc.name}.py_dlq"
    ensure_topics(platform.kafka, [pred_topic, dlq_topic])

    topic = uc.topic("events")
    consumer = make_consumer(platform.kafka, f"bench-py-{uuid.uuid4().hex[:8]}", enable_partition_eof=False)
    meta = consumer.list_topics(topic, timeout=30)
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
    producer = make_producer(platform.kafka, delivery_report_only_error=True)
    failed = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    def publish(topic_name: str, keys: Sequence[str], values: Sequence[str]) -> None:
        batch: list[dict[str, Any]] = [{"key": k, "value": v} for k, v in zip(keys, values, strict=True)]
        while batch:
            producer.produce_batch(topic_name, batch, on_delivery=on_delivery)
            batch = [m for m in batch if "_error" in m and m.pop("_error").code() == KafkaError._QUEUE_FULL]
            if batch:
                producer.poll(0.05)
        producer.poll(0)

    seen: dict[str, int] = {}
    seen_order: deque[tuple[int, str]] = deque()
    consumed = scored = quarantined = duplicates = batch_id = 0
    scores: list[pd.DataFrame] = []
    timings: dict[str, float] = {}

    def timed(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - since
        return now

    t0 = time.perf_counter()
    while consumed < expected:
        t = time.perf_counter()
        msgs = consumer.consume(num_messages=batch_size, timeout=1.0)
        t = timed("consume", t)
        if not msgs:
            if time.perf_counter() - t0 > 600:
                raise RuntimeError(f"python baseline: only {consumed} of {expected} messages after 600 s")
            continue
        consumed += len(msgs)
        records: list[dict[str, Any]] = []
        rec_meta: list[tuple[int, int, int]] = []
        bad: list[tuple[str, str, int, int, int]] = []
        for m in msgs:
            if m.error() is not None:
                raise RuntimeError(f"consume: {m.error()}")
            value = cast(bytes, m.value())
            ts_ms, part, off = m.timestamp()[1], cast(int, m.partition()), cast(int, m.offset())
            try:
                obj = json.loads(value)
            except ValueError:
                obj = None
            ident = obj.get(uc.event_id) if isinstance(obj, dict) else None
            dkey = f"{topic}/{part}/{off}" if ident is None else (ident if isinstance(ident, str) else json.dumps(ident))
            if dkey in seen:
                duplicates += 1
                continue
            seen[dkey] = ts_ms
            seen_order.append((ts_ms, dkey))
            if isinstance(obj, dict):
                records.append(obj)
                rec_meta.append((ts_ms, part, off))
            else:
                bad.append(("not_json", value.decode("utf-8", "replace"), ts_ms, part, off))
        while seen_order and seen_order[0][0] < seen_order[-1][0] - dedupe_ms:
            seen.pop(seen_order.popleft()[1], None)
        t = timed("parse", t)
        frame = pd.DataFrame(records, columns=field_names)
        typed, reason = checks.classify(frame)
        is_bad = reason.notna().to_numpy()
        if is_bad.any():
            for i in np.flatnonzero(is_bad):
                ts_ms, part, off = rec_meta[i]
                bad.append((str(reason.iloc[i]), json.dumps(records[i]), ts_ms, part, off))
        good = typed[~is_bad].reset_index(drop=True)
        kafka_ms = np.array([m[0] for m, b in zip(rec_meta, is_bad, strict=True) if not b], dtype=np.int64)
        parts = np.array([m[1] for m, b in zip(rec_meta, is_bad, strict=True) if not b], dtype=np.int64)
        t = timed("validate", t)
        if bad:
            quarantined += len(bad)
            qframe = pd.DataFrame(bad, columns=["reason", "value", "kafka_timestamp", "partition", "offset"])
            pq.write_table(pa.Table.from_pandas(qframe), out_dir / f"quarantine-{batch_id:06d}.parquet")
            publish(dlq_topic, [f"{topic}/{p}/{o}" for p, o in zip(qframe["partition"], qframe["offset"], strict=True)],
                    qframe.to_json(orient="records", lines=True).splitlines())
        t = timed("quarantine", t)
        if len(good):
            ts = good[uc.event_time]
            ts_us = ts.dt.as_unit("us").astype("int64").to_numpy()
            entities = good[spec.entity].to_numpy()
            key = history.encode(entities, ts_us)
            aggs = history.window_aggregates(key, {c: good[c].to_numpy(dtype=float) for c in sum_columns}, stream_aggs,
                                             parts)
            feats: dict[str, Any] = {c: good[c].to_numpy() for c in (*spec.definitions.numeric,
                                                                      *spec.definitions.categorical)}
            hour = (ts_us // (3600 * MICROS)) % 24
            if tod.hour:
                feats[tod.hour] = hour.astype(float)
            if tod.is_night:
                night = ((hour >= tod.night_start) | (hour < tod.night_end)) if tod.night_start > tod.night_end \
                    else ((hour >= tod.night_start) & (hour < tod.night_end))
                feats[tod.is_night] = night.astype(float)
            feats.update({k: v.astype(float) for k, v in aggs.items()})
            for n in table_names:
                feats[n] = np.zeros(len(good)) if fns[n] in ("count", "sum", "distinct_count") else \
                    np.full(len(good), np.nan)
            for r in spec.ratios:
                num = feats[r.numerator] if r.numerator in feats else good[r.numerator].to_numpy(dtype=float)
                den = feats[r.denominator] if r.denominator in feats else good[r.denominator].to_numpy(dtype=float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    feats[r.name] = np.where(den == 0, np.nan, np.asarray(num, dtype=float) / den)
            t = timed("features", t)
            pq.write_table(pa.Table.from_pandas(pd.DataFrame({uc.event_id: good[uc.event_id], **{
                k: v for k, v in feats.items() if k not in (uc.event_id,)}})),
                out_dir / f"features-{batch_id:06d}.parquet")
            t = timed("write_features", t)
            score = pipeline.score(feats)
            t = timed("score", t)
            preds = pd.DataFrame({
                "event_id": good[uc.event_id].to_numpy(), "entity": entities,
                "event_time": ts, "score": score, "prediction": (score >= threshold).astype(float),
                "served": True, "route": "champion", "model_name": name, "model_version": 1,
                "batch_id": batch_id, "scoring_time": pd.Timestamp.now(tz="UTC"),
                "kafka_timestamp": pd.to_datetime(kafka_ms, unit="ms", utc=True),
            })
            pq.write_table(pa.Table.from_pandas(preds), out_dir / f"predictions-{batch_id:06d}.parquet")
            t = timed("write_predictions", t)
            publish(pred_topic, list(preds["event_id"]),
                    preds.to_json(orient="records", lines=True, date_format="iso").splitlines())
            t = timed("publish", t)
            scored += len(good)
            scores.append(preds[["event_id", "score"]])
        batch_id += 1
    t = time.perf_counter()
    in_flight = producer.flush(120)
    timed("publish", t)
    elapsed = time.perf_counter() - t0
    consumer.close()
    if failed or in_flight:
        raise RuntimeError(f"python baseline: {failed} deliveries failed, {in_flight} in flight")
    return {"events": consumed, "elapsed_s": elapsed, "events_per_s": consumed / elapsed, "predictions": scored,
            "quarantined": quarantined, "duplicates": duplicates, "batches": batch_id, "stages_s": timings,
            "scores": pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(columns=["event_id", "score"])}


# --------------------------------------------------------------------------- latency


def run_latency(spark: Any, platform: PlatformConfig, uc: UseCaseConfig, rate: int, seconds: float,
                trigger: str, events_per_hour: int) -> dict[str, Any]:
    """(2) processing-time trigger, the simulator publishing ``rate`` events/s for ``seconds``."""
    from confluent_kafka import TopicPartition

    from driftline.kafka.clients import make_consumer
    from driftline.produce import produce_usecase
    from driftline.scoring import start_scoring

    # warm up: a few events before the measured ones, so the model is loaded and the JVM warm
    warm = produce_usecase(platform, uc, events=200, seed=11, labels=False, start="2024-01-31T20:00:00Z")
    query = start_scoring(spark, platform, uc, trigger=trigger)
    seen: dict[int, dict[str, Any]] = {}

    def rows_so_far() -> int:
        for p in query.recentProgress:  # the last 100 progress events: merge them by batch id
            if int(p.get("numInputRows", 0)) > 0:
                seen[int(p["batchId"])] = p
        return sum(int(p["numInputRows"]) for p in seen.values())

    try:
        deadline = time.monotonic() + 300
        while rows_so_far() < warm.acked:
            if time.monotonic() > deadline or not query.isActive:
                raise RuntimeError(f"latency warm-up: query did not score the warm-up events ({query.exception()})")
            time.sleep(0.5)
        warm_batches = set(seen)
        # simulated time runs rate * 3600 / events_per_hour times faster than the wall clock,
        # so each entity sees as many events per simulated hour as in the throughput runs
        speedup = max(rate * 3600 / events_per_hour, 1e-3)
        started_ms = int(time.time() * 1000)
        stop_polling = threading.Event()

        def poll() -> None:
            while not stop_polling.is_set():
                rows_so_far()
                stop_polling.wait(2.0)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            produced = produce_usecase(platform, uc, rate=rate, duration_s=seconds, seed=12, labels=False,
                                       speedup=speedup)
        finally:
            stop_polling.set()
            poller.join()
        target = warm.acked + produced.acked
        deadline = time.monotonic() + 300
        while rows_so_far() < target and time.monotonic() < deadline and query.isActive:
            time.sleep(0.5)
        progress = [p for b, p in sorted(seen.items()) if b not in warm_batches]
    finally:
        stop_gracefully(query)
    topic = uc.topic("predictions")
    consumer = make_consumer(platform.kafka, f"bench-lat-{uuid.uuid4().hex[:8]}")
    meta = consumer.list_topics(topic, timeout=30)
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
    wanted = topic_size(platform, topic)
    got: list[tuple[int, str]] = []
    deadline = time.monotonic() + 120
    while len(got) < wanted and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None and m.value() is not None:
                got.append((m.timestamp()[1], cast(bytes, m.value()).decode()))
    consumer.close()
    frame = pd.DataFrame({"pred_ms": [g[0] for g in got],
                          "event_ts": [json.loads(g[1])["kafka_timestamp"] for g in got]})
    frame["event_ms"] = pd.to_datetime(frame["event_ts"], utc=True, format="ISO8601").astype("int64") // 1_000_000
    steady = frame[frame["event_ms"] >= started_ms]
    lat = (steady["pred_ms"] - steady["event_ms"]).to_numpy(dtype=float)
    batches = progress
    return {
        "rate": rate, "seconds": seconds, "trigger": trigger, "produced": produced.acked,
        "achieved_rate": produced.rate, "predictions": len(steady),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
        "batches": len(batches),
        "batch_ms_mean": statistics.mean(int(p["durationMs"]["triggerExecution"]) for p in batches) if batches else None,
        "batch_rows_mean": statistics.mean(int(p["numInputRows"]) for p in batches) if batches else None,
        "batch_ms_last": int(batches[-1]["durationMs"]["triggerExecution"]) if batches else None,
    }


# --------------------------------------------------------------------------- model only


def run_model_only(spark: Any, platform: PlatformConfig, uc: UseCaseConfig, model: Any, features_path: str,
                   native_rows: int, udf_rows: int, udf_timeout_s: float) -> dict[str, Any]:
    """(3) the model alone on static feature rows: native transform vs mlflow.pyfunc.spark_udf; plus the
    numpy evaluation against Spark's on a sample."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    from driftline.registry import client_for, model_name
    from driftline.training import model_spec, score_column

    spec = model_spec(uc)
    cols = [uc.event_id, *spec.features]
    source = spark.read.format("delta").load(features_path).select(*cols)
    static = source.limit(native_rows).cache()
    n_native = static.count()
    out: dict[str, Any] = {"native_rows": n_native}

    # numpy vs Spark on a sample
    sample = static.limit(20_000)
    spark_scores = model.transform(sample).select(uc.event_id, score_column(uc.label.kind).alias("score")).toPandas()
    local = sample.toPandas()
    numpy_scores = numpy_pipeline(model).score({c: local[c].to_numpy() if local[c].dtype != object else
                                                local[c].to_numpy(dtype=object) for c in spec.features})
    merged = spark_scores.merge(pd.DataFrame({uc.event_id: local[uc.event_id], "np": numpy_scores}), on=uc.event_id)
    out["numpy_vs_spark_rows"] = len(merged)
    out["numpy_vs_spark_max_abs_diff"] = float(np.abs(merged["score"] - merged["np"]).max())

    def native() -> float:
        t0 = time.perf_counter()
        model.transform(static).select(uc.event_id, score_column(uc.label.kind).alias("score")) \
            .write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t0

    native()  # warm-up
    runs = [native() for _ in range(3)]
    out["native_s"] = statistics.median(runs)
    out["native_rows_per_s"] = n_native / out["native_s"]

    client_for(platform)
    uri = f"models:/{model_name(uc)}/1"
    small = static.limit(udf_rows).repartition(2).cache()
    n_udf = small.count()
    out["udf_rows"] = n_udf
    result: dict[str, Any] = {}

    def udf_run() -> None:
        try:
            t0 = time.perf_counter()
            udf = mlflow.pyfunc.spark_udf(spark, uri, result_type="double", env_manager="local")
            result["udf_create_s"] = time.perf_counter() - t0
            spark.sparkContext.setJobGroup("bench-udf", "spark_udf", interruptOnCancel=True)
            scored = small.select(F.col(uc.event_id), udf(F.struct(*[F.col(c) for c in spec.features])).alias("p"))
            for attempt in ("udf_cold_s", "udf_s"):  # cold: the Python workers load the model first
                t1 = time.perf_counter()
                scored.write.format("noop").mode("overwrite").save()
                result[attempt] = time.perf_counter() - t1
        except Exception as e:  # noqa: BLE001 - recorded in the report
            result["udf_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"

    worker = threading.Thread(target=udf_run, daemon=True)
    worker.start()
    worker.join(udf_timeout_s)
    if worker.is_alive():
        spark.sparkContext.cancelJobGroup("bench-udf")
        worker.join(60)
        result.setdefault("udf_error", f"timeout: not done after {udf_timeout_s:.0f} s, cancelled")
    out.update(result)
    if "udf_s" in result:
        out["udf_rows_per_s"] = n_udf / result["udf_s"]
    if "udf_cold_s" in result:
        out["udf_cold_rows_per_s"] = n_udf / result["udf_cold_s"]
    static.unpersist()
    small.unpersist()
    return out


# --------------------------------------------------------------------------- the whole run


def run(args: argparse.Namespace) -> dict[str, Any]:
    from driftline.registry import client_for, model_name
    from driftline.scoring import features_stream_path, predictions_path
    from driftline.session import build_session

    report: dict[str, Any] = {"args": vars(args), "machine": machine(), "load_before": load_average(),
                              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    base = load_platform(env={})
    offsets = [int(x) for x in str(args.max_offsets).split(",") if x.strip()]
    keep_dir = contextlib.nullcontext(str(Path(args.workdir).resolve())) if args.workdir else None
    with keep_dir or tempfile.TemporaryDirectory(prefix="driftline-bench-score-") as tmp_text:
        tmp = Path(tmp_text)
        tmp.mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(home=tmp / "kafka", jars=Path(base.path(base.jars_dir)) / "kafka",
                                port=free_port(), controller_port=free_port())
        broker.start()
        stages = StageLog()
        scoring_log = logging.getLogger("driftline.scoring")
        scoring_log.addHandler(stages)
        scoring_log.setLevel(logging.INFO)
        spark = None
        try:
            platform = bench_platform(tmp / "setup", broker.bootstrap, tmp / "mlflow", args.shuffle_partitions)
            spark = build_session(platform, "driftline-bench-score")
            name = f"bs{uuid.uuid4().hex[:6]}"
            uc = bench_usecase(name, args.events_per_hour, args.customers, offsets[0])

            t0 = time.perf_counter()
            run_a = fit_and_log(spark, platform, uc, seed=1, reg=0.01)
            register_champion(spark, platform, uc, run_a)
            log.info("model fitted, logged, registered and promoted in %.1fs", time.perf_counter() - t0)

            from driftline.produce import produce_usecase

            scenarios = ([f"malformed:rate={args.bad_rate},kinds={BAD_KINDS}", f"duplicates:rate={args.bad_rate}"]
                         if args.bad_rate > 0 else [])
            t0 = time.perf_counter()
            produced = produce_usecase(platform, uc, events=args.events, seed=3, labels=False, scenarios=scenarios)
            if not produced.ok:
                raise RuntimeError(f"produce: {produced.summary()}")
            on_topic = topic_size(platform, uc.topic("events"))
            report["produced"] = {"events": produced.acked, "on_topic": on_topic,
                                  "elapsed_s": time.perf_counter() - t0, "scenarios": scenarios}
            log.info("produced %d events (%s)", on_topic, produced.summary())

            # (a) ceiling, once per max_offsets (also warms up the Kafka source)
            report["ceiling"] = {}
            for mo in offsets:
                report["ceiling"][mo] = run_ceiling(spark, platform, uc, tmp / "ceiling", mo, on_topic)
                log.info("ceiling maxOffsets=%d: %.0f events/s", mo, report["ceiling"][mo]["events_per_s"])

            # (1) the scoring query
            report["driftline"] = {}
            first_platform: PlatformConfig | None = None
            for i, mo in enumerate(offsets):
                run_platform = with_roots(platform, tmp / f"run{i}")
                first_platform = first_platform or run_platform
                uc_run = bench_usecase(name, args.events_per_hour, args.customers, mo)
                report["driftline"][mo] = run_driftline(spark, run_platform, uc_run, on_topic, stages)
                r = report["driftline"][mo]
                log.info("driftline maxOffsets=%d: %.0f events/s (steady %s)", mo, r["events_per_s"],
                         r["progress"]["steady_events_per_s"])
            if args.shadow:
                from driftline.registry import register_version

                run_b = fit_and_log(spark, platform, uc, seed=2, reg=0.1)
                register_version(spark, platform, uc, run_b)  # v2, challenger
                uc_shadow = bench_usecase(name, args.events_per_hour, args.customers, offsets[-1], mode="shadow")
                report["driftline_shadow"] = run_driftline(spark, with_roots(platform, tmp / "run-shadow"), uc_shadow,
                                                           on_topic, stages)
            assert first_platform is not None

            import mlflow.spark

            client_for(platform)
            model = mlflow.spark.load_model(f"models:/{model_name(uc)}/1")

            # (b) plain Python
            if not args.skip_python:
                py = run_python(platform, uc, model, on_topic, args.python_batch, tmp / "python")
                scores = py.pop("scores")
                from deltalake import DeltaTable

                spark_preds = DeltaTable(predictions_path(first_platform, uc)).to_pandas(
                    columns=["event_id", "score", "route"])
                spark_preds = spark_preds[spark_preds["route"] == "champion"]
                both = spark_preds.merge(scores, on="event_id", suffixes=("_spark", "_py"))
                py["compared_with_spark"] = len(both)
                py["spark_only"] = len(spark_preds) - len(both)
                py["python_only"] = len(scores) - len(both)
                diff = np.abs(both["score_spark"] - both["score_py"])
                py["max_abs_score_diff"] = float(diff.max()) if len(both) else None
                py["scores_differing_1e-9"] = int((diff > 1e-9).sum())
                report["python"] = py
                log.info("python: %.0f events/s, max |score diff| %s over %d events", py["events_per_s"],
                         py["max_abs_score_diff"], len(both))

            # (2) latency
            report["latency"] = []
            if not args.skip_latency:
                for rate in [int(x) for x in str(args.latency_rates).split(",") if x.strip()]:
                    lat_uc = bench_usecase(f"{name}l{rate}", args.events_per_hour, args.customers, offsets[0])
                    register_champion(spark, platform, lat_uc, run_a)
                    lat = run_latency(spark, with_roots(platform, tmp / f"lat{rate}"), lat_uc, rate,
                                      args.latency_seconds, args.trigger_interval, args.events_per_hour)
                    report["latency"].append(lat)
                    log.info("latency at %d ev/s: p50 %s ms, p99 %s ms", rate, lat["p50_ms"], lat["p99_ms"])

            # (3) native vs spark_udf
            if not args.skip_udf:
                report["model_only"] = run_model_only(
                    spark, platform, uc, model, features_stream_path(first_platform, uc), args.native_rows,
                    args.udf_rows, args.udf_timeout)
                log.info("model only: %s", {k: v for k, v in report["model_only"].items()})
        finally:
            scoring_log.removeHandler(stages)
            if spark is not None:
                spark.stop()
            broker.stop()
    report["load_after"] = load_average()
    return report


# --------------------------------------------------------------------------- output


def _f(value: Any, fmt: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["| measurement | events | wall s | events/s | steady events/s (batches 2..n) | batches |",
             "|---|---:|---:|---:|---:|---:|"]
    for mo, r in report.get("ceiling", {}).items():
        lines.append(f"| (a) ceiling: Kafka source -> noop, maxOffsetsPerTrigger {int(mo):,} | {r['events']:,} | "
                     f"{r['elapsed_s']:.1f} | {_f(r['events_per_s'])} | n/a | {r['progress']['batches']} |")
    for mo, r in report.get("driftline", {}).items():
        p = r["progress"]
        lines.append(f"| **(1) driftline scoring query, maxOffsetsPerTrigger {int(mo):,}** | {r['events']:,} | "
                     f"{r['elapsed_s']:.1f} | **{_f(r['events_per_s'])}** | {_f(p['steady_events_per_s'])} | "
                     f"{p['batches']} ({p.get('spark_jobs', '?')} Spark jobs, {p.get('spark_stages', '?')} stages) |")
    if "driftline_shadow" in report:
        r = report["driftline_shadow"]
        p = r["progress"]
        lines.append(f"| (1) driftline, shadow challenger (2 models) | {r['events']:,} | {r['elapsed_s']:.1f} | "
                     f"{_f(r['events_per_s'])} | {_f(p['steady_events_per_s'])} | {p['batches']} |")
    if "python" in report:
        r = report["python"]
        lines.append(f"| (b) plain confluent-kafka + pandas + numpy, {report['args']['python_batch']:,} per batch | "
                     f"{r['events']:,} | {r['elapsed_s']:.1f} | {_f(r['events_per_s'])} | n/a | {r['batches']} |")
    out = ["\n".join(lines)]
    if report.get("latency"):
        lat = ["| rate (events/s) | achieved | trigger | predictions | p50 ms | p99 ms | max ms | "
               "batches | mean rows/batch | mean batch ms |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in report["latency"]:
            lat.append(f"| {r['rate']:,} | {_f(r['achieved_rate'])} | {r['trigger']} | {r['predictions']:,} | "
                       f"{_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['max_ms'])} | {r['batches']} | "
                       f"{_f(r['batch_rows_mean'])} | {_f(r['batch_ms_mean'])} |")
        out.append("\n".join(lat))
    stage_lines = ["| run | batch | " + " | ".join(["total_s", "plan", "parse", "quarantine", "features",
                                                   "load_models", "score", "publish"]) + " |",
                   "|---|---|" + "---:|" * 8]
    for mo, r in report.get("driftline", {}).items():
        for which, row in stage_table(r["batches"]).items():
            stage_lines.append(f"| maxOffsets {int(mo):,} | {which} | " + " | ".join(
                _f(row.get(k), ".2f") for k in ("total_s", "plan", "parse", "quarantine", "features", "load_models",
                                                  "score", "publish")) + " |")
    if len(stage_lines) > 2:
        out.append("\n".join(stage_lines))
    if "python" in report:
        r = report["python"]
        out.append("python stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
                   + f"; predictions {r['predictions']:,}, quarantined {r['quarantined']:,}, "
                     f"duplicates dropped {r['duplicates']:,}; compared with Spark {r['compared_with_spark']:,} "
                     f"(spark only {r['spark_only']}, python only {r['python_only']}), "
                     f"max |score diff| {r['max_abs_score_diff']} ({r.get('scores_differing_1e-9')} events differ "
                     f"by more than 1e-9)")
    if "model_only" in report:
        m = report["model_only"]
        out.append(f"model only: native PipelineModel.transform -> noop {_f(m.get('native_rows_per_s'))} rows/s "
                   f"({m['native_rows']:,} rows, {m['native_s']:.2f}s); spark_udf -> noop "
                   f"{_f(m.get('udf_rows_per_s'))} rows/s warm ({m['udf_rows']:,} rows, "
                   f"{_f(m.get('udf_s'), '.1f')}s; first run {_f(m.get('udf_cold_s'), '.1f')}s, "
                   f"{_f(m.get('udf_create_s'), '.1f')}s to create the UDF)"
                   + (f"; error: {m['udf_error']}" if m.get("udf_error") else "")
                   + f"; numpy vs Spark scores: max |diff| {m['numpy_vs_spark_max_abs_diff']:.2e} over "
                     f"{m['numpy_vs_spark_rows']:,} rows")
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]) if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events on the topic for (a), (1), (b) [200000]")
    parser.add_argument("--max-offsets", default="20000,50000",
                        help="comma-separated maxOffsetsPerTrigger values for (a) and (1) [20000,50000]")
    parser.add_argument("--events-per-hour", type=int, default=20_000,
                        help="simulated arrival rate: sets how many events an entity's windows hold [20000]")
    parser.add_argument("--customers", type=int, default=2000, help="simulated customers (entities) [2000]")
    parser.add_argument("--bad-rate", type=float, default=0.01,
                        help="share of malformed events, and the same share of repeats; 0 for none [0.01]")
    parser.add_argument("--shuffle-partitions", type=int, default=None,
                        help="spark.sql.shuffle.partitions [conf/platform.yaml: 4]")
    parser.add_argument("--shadow", action="store_true", help="also run (1) with a shadow challenger")
    parser.add_argument("--skip-python", action="store_true", help="skip (b), the plain Python consumer")
    parser.add_argument("--python-batch", type=int, default=10_000, help="(b) messages per consume() [10000]")
    parser.add_argument("--skip-latency", action="store_true", help="skip (2)")
    parser.add_argument("--latency-rates", default="1000,3000", help="(2) steady rates, events/s [1000,3000]")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="(2) seconds per rate [30]")
    parser.add_argument("--trigger-interval", default="1 second", help="(2) processing-time trigger [1 second]")
    parser.add_argument("--skip-udf", action="store_true", help="skip (3)")
    parser.add_argument("--native-rows", type=int, default=100_000, help="(3) rows for native scoring [100000]")
    parser.add_argument("--udf-rows", type=int, default=10_000, help="(3) rows for spark_udf [10000]")
    parser.add_argument("--udf-timeout", type=float, default=300.0, help="(3) give spark_udf this many seconds [300]")
    parser.add_argument("--workdir", help="keep the broker, lake, MLflow store and Parquet output here "
                                          "(default: a temporary directory, deleted at the end)")
    parser.add_argument("--json", dest="json_path", help="also write the raw figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("py4j", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = run(args)
    print(f"machine: {report['machine']}")
    print(f"date: {report['date']}; load average before {report['load_before']}, after {report['load_after']}")
    print(f"produced: {report['produced']}")
    print(to_markdown(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
