"""Training time (issue 5): the train job against a plain MLlib fit of the same pipeline on
the same rows (the platform's overhead), and against scikit-learn on the same rows.

    .venv/bin/python -m benchmarks.bench_train                              # 100k and 1M rows, once each
    .venv/bin/python -m benchmarks.bench_train --rows 100000 --repeat 3
    .venv/bin/python -m benchmarks.bench_train --rows 100000,1000000 --repeat 3 --repeat-large 1 --shipped-grid

Data: for each size a seeded synthetic gold/fraud_features_offline Delta table (every
column the feature job writes: ids, event_time, the 14 numeric and 5 categorical model
features with their natural nulls, the boolean label is_fraud and label_time; about 2.5%
fraud whose odds depend on the amount ratio, velocity, country, channel, category and
hour). Generating and writing it is not measured.

Every variant uses the fraud use case's pipeline (cast -> median Imputer ->
StringIndexer/OneHotEncoder -> VectorAssembler -> StandardScaler -> LogisticRegression,
maxIter 50) with one fixed candidate, regParam 0.01 and elasticNetParam 0.0 (a point of
the shipped grid), fitted on the same rows: the oldest 85% by event_time (the job's
train + validation parts; its final model is refitted on exactly these), scored on the
most recent 15% (the job's test set). Measured, in one process, one Spark session
(local[2] by default, driver memory 6g), in this order per repeat:

(a) train job   ``driftline.pipelines.train.run()`` as a user runs it, with the search narrowed
                to the single candidate: pinned Delta read, time split, preprocessing
                fit, TrainValidationSplit (fits the candidate on a random ~82% of
                train+validation, scores it on the rest, then refits it on all of
                train+validation: two LogisticRegression fits), test metrics, reference
                profile, MLflow run with the Spark model (sqlite store, fresh per repeat in
                the temporary directory), registry version + challenger alias, quality
                gate (no champion yet in a fresh store, so the gate does not re-score one)
                and the audit rows. Wall time of ``run()``; a breakdown per step is printed.
(b) plain MLlib ``training.build_pipeline(...)`` ``.fit()`` once on the train+validation rows
                read straight from the Delta table (filter on the same event_time cut),
                then ``transform`` of the test rows and ``BinaryClassificationEvaluator``
                ROC AUC. No caching, no tracking, no registry.
(c) sklearn     the same Delta table read into pandas with delta-rs (``deltalake``; "load"
                includes the time split), then ColumnTransformer(SimpleImputer(median) on
                numeric, OneHotEncoder(handle_unknown=ignore) on categorical) ->
                StandardScaler(with_mean=False) -> LogisticRegression(lbfgs, max_iter=50,
                tol=1e-6, C = 1 / (n_train * regParam), l1_ratio = elasticNetParam), which
                minimises the same objective as Spark's LogisticRegression; then
                predict_proba and roc_auc_score on the test rows. BLAS/OpenMP are limited
                to one thread (``--sklearn-threads``, default 1): OpenBLAS threads spin-wait
                on a busy shared machine; so scikit-learn uses one core, Spark two.

With ``--shipped-grid`` the job also runs once per repeat with the fraud use case's
shipped search (a 3 x 2 grid, 6 candidates, parallelism 2). A warm-up pass of all
variants on 20k rows runs first and is not reported (JVM JIT, MLflow imports).
Reported: median and best wall time over the repeats, ROC AUC on the test rows (all
three must agree: they fit the same model), and the ratios (a)/(b) and (b)/(c).
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform as py_platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_platform, load_usecase
from driftline.config.sections import ModelSpec
from driftline.pipelines import train as train_pipeline
from driftline.training import build_pipeline, model_spec

log = logging.getLogger("benchmarks.bench_train")

CANDIDATE: dict[str, float] = {"regParam": 0.01, "elasticNetParam": 0.0}
WARMUP_ROWS = 20_000
SPLIT_SEED_OFFSET = 1000  # data seed of a size: seed + rows // SPLIT_SEED_OFFSET, so sizes differ

CATEGORIES: dict[str, tuple[list[str], list[float]]] = {
    "merchant_category": (["grocery", "restaurants", "fuel", "travel", "electronics", "fashion", "online_services",
                           "gambling"], [0.3, 0.2, 0.12, 0.06, 0.08, 0.12, 0.1, 0.02]),
    "country": (["DE", "FR", "NL", "ES", "IT", "GB", "US", "BR", "NG", "CN"],
                [0.35, 0.15, 0.1, 0.1, 0.1, 0.08, 0.07, 0.02, 0.01, 0.02]),
    "channel": (["pos", "online", "atm"], [0.6, 0.3, 0.1]),
    "device": (["chip", "contactless", "mobile", "web", "magstripe"], [0.35, 0.3, 0.15, 0.15, 0.05]),
    "currency": (["EUR", "USD", "GBP"], [0.8, 0.12, 0.08]),
}
RISKY: dict[str, dict[str, float]] = {  # log-odds added to the fraud score per category level
    "merchant_category": {"electronics": 0.8, "gambling": 1.2, "online_services": 0.6, "travel": 0.4},
    "country": {"NG": 1.5, "BR": 1.0, "CN": 0.8},
    "channel": {"online": 0.7, "atm": 0.3},
    "device": {"magstripe": 1.0, "web": 0.5},
}


# --------------------------------------------------------------------------- data


def bench_usecase(search: dict[str, Any] | None = None) -> UseCaseConfig:
    """The shipped fraud use case; ``search`` replaces its search params (None keeps the shipped grid)."""
    uc = load_usecase("fraud")
    if search is None:
        return uc
    model = uc.raw("model")
    model["search"] = {**model.get("search", {}), "params": search}
    return uc.replace(model=model)


def single_candidate_usecase() -> UseCaseConfig:
    return bench_usecase({k: [v] for k, v in CANDIDATE.items()})


def gold_frame(uc: UseCaseConfig, n: int, seed: int) -> pd.DataFrame:
    """``n`` seeded rows shaped like gold/fraud_features_offline (see the module docstring)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00", "ms")
    span_ms = int(n / 2000 * 3600 * 1000)  # 2,000 events an hour, the simulator's history rate
    offsets = np.sort(rng.integers(0, span_ms, n))
    event_time = start + offsets.astype("timedelta64[ms]")
    hour = ((offsets // 3_600_000) % 24).astype("int32")
    is_night = ((hour >= 22) | (hour < 6)).astype("int32")

    cats = {c: rng.choice(np.array(levels, dtype=object), n, p=probs) for c, (levels, probs) in CATEGORIES.items()}
    cats["device"][rng.uniform(size=n) < 0.1] = None  # device is optional in the event schema

    amount = np.minimum(np.round(rng.lognormal(3.5, 1.0, n), 2), 50_000.0)
    txn_10m = rng.poisson(0.2, n)
    txn_1h = txn_10m + rng.poisson(0.8, n)
    txn_24h = txn_1h + rng.poisson(18.0, n)
    amount_sum_1h = np.where(txn_1h > 0, rng.gamma(np.maximum(txn_1h, 1), 35.0), 0.0)
    first_seen = rng.uniform(size=n) < 0.01
    amount_mean_7d = np.where(first_seen, np.nan, rng.lognormal(3.5, 0.4, n))
    amount_std_7d = np.where(first_seen | (rng.uniform(size=n) < 0.01), np.nan, rng.lognormal(3.0, 0.5, n))
    merchants_24h = np.minimum(rng.poisson(5.0, n), txn_24h)
    countries_7d = 1 + rng.poisson(0.15, n)
    frauds_7d = rng.poisson(0.02, n).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_amount = amount / amount_mean_7d
        ratio_txn = np.where(txn_24h > 0, txn_1h / np.maximum(txn_24h, 1), np.nan)

    score = (-7.2 + 1.6 * np.log1p(np.nan_to_num(ratio_amount, nan=1.0)) + 1.0 * txn_10m
             + 1.2 * (countries_7d - 1) + 1.5 * frauds_7d + 0.8 * is_night)
    for col, bumps in RISKY.items():
        score = score + np.array([bumps.get(v, 0.0) if v is not None else 0.2 for v in cats[col]])
    label = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-score))

    prefix = f"b{seed:04d}"
    return pd.DataFrame({
        uc.event_id: [f"{prefix}-{i:08d}" for i in range(n)],
        uc.entity_key: [f"c{k:05d}" for k in rng.integers(0, 2000, n)],
        uc.event_time: pd.to_datetime(event_time).tz_localize("UTC"),
        "amount": amount,
        **{c: cats[c] for c in ("merchant_category", "currency", "country", "channel", "device")},
        "txn_count_10m": txn_10m.astype("int64"),
        "txn_count_1h": txn_1h.astype("int64"),
        "txn_count_24h": txn_24h.astype("int64"),
        "amount_sum_1h": amount_sum_1h,
        "amount_mean_7d": amount_mean_7d,
        "amount_std_7d": amount_std_7d,
        "merchants_distinct_24h": merchants_24h.astype("int64"),
        "countries_distinct_7d": countries_7d.astype("int64"),
        "frauds_known_7d": frauds_7d,
        "amount_to_mean_7d": ratio_amount,
        "txn_1h_to_24h": ratio_txn,
        "hour_of_day": hour,
        "is_night": is_night,
        uc.label.field: label,
        "label_time": pd.to_datetime(event_time + np.timedelta64(int(uc.label.delay_s * 1000), "ms")
                                     ).tz_localize("UTC"),
    })


def write_gold(spark: SparkSession, path: str, frame: pd.DataFrame) -> None:
    """Write ``frame`` as a Delta table at ``path`` (NaN in float columns become nulls, as the feature job writes)."""
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "true")
    try:
        df = spark.createDataFrame(frame)
        floats = [c for c, t in frame.dtypes.items() if t == np.float64]
        df = df.select(*[F.nanvl(F.col(c), F.lit(None)).alias(c) if c in floats else F.col(c) for c in df.columns])
        df.write.format("delta").mode("overwrite").save(path)
    finally:
        spark.conf.set(key, before or "false")


def time_cut(spark: SparkSession, path: str, uc: UseCaseConfig, spec: ModelSpec) -> float:
    """The job's second time-split cut (exact quantile): rows at or before it are train + validation."""
    f_train, f_val, _ = spec.split.fractions
    t = F.col(uc.event_time).cast("timestamp").cast("double")
    cuts = spark.read.format("delta").load(path).select(t.alias("_t")).approxQuantile("_t", [f_train + f_val], 0.0)
    return float(cuts[0])


# --------------------------------------------------------------------------- (a) the train job


TRAIN_JOB = train_pipeline
JOB_STEPS = ("split_dataset", "fit", "build_reference_profile", "log_training_run", "register_version",
             "gate_and_promote")
STEP_NAMES = {"split_dataset": "time split (Delta read, cache fill, exact quantiles)",
              "fit": "fit (split counts, preprocessing, TrainValidationSplit, test metrics)",
              "build_reference_profile": "reference profile", "log_training_run": "MLflow run + Spark model",
              "register_version": "registry + audit", "gate_and_promote": "gate + audit",
              "other": "other (Delta history, input example, experiment)"}


def _timed(name: str, fn: Callable[..., Any], sink: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink[name] = sink.get(name, 0.0) + time.perf_counter() - t0
    return wrapper


def bench_job(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig) -> dict[str, Any]:
    """``driftline.pipelines.train.run()`` with wall time per step (the step functions are wrapped, not changed)."""
    steps: dict[str, float] = {}
    originals = {name: getattr(TRAIN_JOB, name) for name in JOB_STEPS}
    for name, fn in originals.items():
        setattr(TRAIN_JOB, name, _timed(name, fn, steps))
    try:
        t0 = time.perf_counter()
        out = TRAIN_JOB.run(spark, platform, uc)
        total = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(TRAIN_JOB, name, fn)
    steps["other"] = total - sum(steps.values())
    return {"total_s": total, "steps_s": steps, "roc_auc": out.metrics["roc_auc"], "test_rows": int(out.metrics["rows"]),
            "candidates": len(out.search_results), "gate_passed": bool(out.gate and out.gate.passed),
            "version": out.version}


# --------------------------------------------------------------------------- (b) plain MLlib


def bench_mllib(spark: SparkSession, path: str, uc: UseCaseConfig, spec: ModelSpec, cut: float) -> dict[str, Any]:
    """One ``build_pipeline(...).fit()`` on the train + validation rows, then ROC AUC on the test rows."""
    label = uc.label.field
    fixed = spec.model_copy(update={"estimator_params": {**spec.estimator_params, **CANDIDATE}})
    t0 = time.perf_counter()
    t = F.col(uc.event_time).cast("timestamp").cast("double")
    data = (spark.read.format("delta").load(path)
            .select(*spec.features, F.col(label).cast("double").alias(label), t.alias("_t"))
            .where(F.col(label).isNotNull()))
    model = build_pipeline(fixed, label, seed=spec.split.seed).fit(data.where(F.col("_t") <= cut))
    t1 = time.perf_counter()
    scored = model.transform(data.where(F.col("_t") > cut))
    evaluator = BinaryClassificationEvaluator(labelCol=label, rawPredictionCol="rawPrediction",
                                              metricName="areaUnderROC")
    auc = float(evaluator.evaluate(scored))
    t2 = time.perf_counter()
    test_rows = data.where(F.col("_t") > cut).count()  # not timed: only to check the test set is the job's
    fitted: Any = model.stages[-1]
    iterations = int(fitted.summary.totalIterations)
    return {"total_s": t2 - t0, "fit_s": t1 - t0, "score_s": t2 - t1, "roc_auc": auc, "test_rows": test_rows,
            "iterations": iterations}


# --------------------------------------------------------------------------- (c) scikit-learn


def sklearn_pipeline(spec: ModelSpec, n_train: int) -> Any:
    """The same preprocessing and penalised logistic regression in scikit-learn.

    Spark minimises mean log-loss + regParam * ((1 - a) / 2 * |w|^2 + a * |w|_1); scikit-learn
    minimises C * sum log-loss + (1 - a) / 2 * |w|^2 + a * |w|_1, so C = 1 / (n * regParam).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    reg, alpha = CANDIDATE["regParam"], CANDIDATE["elasticNetParam"]
    c = np.inf if reg == 0 else 1.0 / (n_train * reg)
    pre = ColumnTransformer([
        ("num", SimpleImputer(strategy=spec.impute), spec.numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), spec.categorical),
    ])
    steps: list[Any] = [pre]
    if spec.scale:
        steps.append(StandardScaler(with_mean=False))
    steps.append(LogisticRegression(C=c, l1_ratio=alpha, solver="lbfgs" if alpha == 0 else "saga",
                                    max_iter=int(spec.estimator_params.get("maxIter", 100)), tol=1e-6))
    return make_pipeline(*steps)


def bench_sklearn(path: str, uc: UseCaseConfig, spec: ModelSpec, cut: float, threads: int) -> dict[str, Any]:
    """delta-rs -> pandas (load + split), fit on train + validation, ROC AUC on test; BLAS and
    OpenMP pools limited to ``threads`` (0: library defaults) during fit and scoring."""
    import warnings
    from contextlib import nullcontext

    from deltalake import DeltaTable
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    label = uc.label.field
    t0 = time.perf_counter()
    frame = DeltaTable(path).to_pandas(columns=[*spec.features, label, uc.event_time])
    frame = frame[frame[label].notna()]
    seconds = frame[uc.event_time].dt.tz_localize(None).astype("datetime64[us]").astype("int64") / 1e6
    dev, test = frame[seconds <= cut], frame[seconds > cut]
    x_dev, y_dev = dev[spec.features], dev[label].astype("float64").to_numpy()
    t1 = time.perf_counter()
    pipe = sklearn_pipeline(spec, len(dev))
    limits = threadpool_limits(threads) if threads > 0 else nullcontext()
    with limits, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is Spark's maxIter; both stop there
        pipe.fit(x_dev, y_dev)
        t2 = time.perf_counter()
        proba = pipe.predict_proba(test[spec.features])[:, 1]
        auc = float(roc_auc_score(test[label].astype("float64").to_numpy(), proba))
    t3 = time.perf_counter()
    return {"total_s": t3 - t0, "load_s": t1 - t0, "fit_s": t2 - t1, "score_s": t3 - t2, "roc_auc": auc,
            "test_rows": len(test), "iterations": int(pipe[-1].n_iter_[0])}


# --------------------------------------------------------------------------- harness


def _machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB"
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu_model": model, "memory": mem,
            "python": py_platform.python_version(), "load_average_at_start": _load()}


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _versions(spark: SparkSession) -> dict[str, str]:
    out = {}
    for dist in ("pyspark", "delta-spark", "mlflow", "scikit-learn", "numpy", "pandas", "deltalake", "pyarrow"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    jvm = spark.sparkContext._jvm
    out["java"] = str(jvm.System.getProperty("java.version")) if jvm is not None else "unknown"
    return out


def _platform(tmp: Path, tag: str, master: str, driver_memory: str) -> PlatformConfig:
    """The default platform config with the lake, checkpoints and MLflow (sqlite) under ``tmp``
    and Spark's console progress bars off."""
    platform = load_platform(env={}, overrides=[
        f"lake_root={tmp / 'lake'}",
        f"checkpoint_root={tmp / 'checkpoints'}",
        f"mlflow.home={tmp / 'mlflow' / tag}",
        f"spark.master={master}",
        f"spark.driver_memory={driver_memory}",
        "spark.ui_enabled=false",
        "spark.log_level=ERROR",
    ])
    data = platform.model_dump(mode="json")
    data["spark"]["conf"] = {**data["spark"]["conf"], "spark.ui.showConsoleProgress": "false"}
    return PlatformConfig.model_validate(data)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                               check=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _measure_size(spark: SparkSession, tmp: Path, args: argparse.Namespace, rows: int, repeat: int,
                  report: bool = True) -> dict[str, Any]:
    uc = single_candidate_usecase()
    spec = model_spec(uc)
    base = _platform(tmp, f"{rows}-setup", args.master, args.driver_memory)
    path = TRAIN_JOB.features_table(base, uc)
    t0 = time.perf_counter()
    write_gold(spark, path, gold_frame(uc, rows, args.seed + rows // SPLIT_SEED_OFFSET))
    cut = time_cut(spark, path, uc, spec)
    log.info("%d rows: gold table written in %.1f s (not measured)", rows, time.perf_counter() - t0)
    runs: dict[str, list[dict[str, Any]]] = {"job": [], "mllib": [], "sklearn": []}
    if args.shipped_grid:
        runs["job_shipped"] = []
    for r in range(repeat):
        tag = f"{rows}-{'warmup' if not report else r}"
        runs["job"].append(bench_job(spark, _platform(tmp, tag, args.master, args.driver_memory), uc))
        log.info("%d rows, repeat %d: (a) job %.1f s", rows, r + 1, runs["job"][-1]["total_s"])
        runs["mllib"].append(bench_mllib(spark, path, uc, spec, cut))
        log.info("%d rows, repeat %d: (b) mllib %.1f s", rows, r + 1, runs["mllib"][-1]["total_s"])
        runs["sklearn"].append(bench_sklearn(path, uc, spec, cut, args.sklearn_threads))
        log.info("%d rows, repeat %d: (c) sklearn %.1f s", rows, r + 1, runs["sklearn"][-1]["total_s"])
        if args.shipped_grid:
            shipped = _platform(tmp, f"{tag}-shipped", args.master, args.driver_memory)
            runs["job_shipped"].append(bench_job(spark, shipped, bench_usecase(None)))
            log.info("%d rows, repeat %d: (a) job, shipped grid %.1f s", rows, r + 1,
                     runs["job_shipped"][-1]["total_s"])
    tests = {name: {run["test_rows"] for run in rs} for name, rs in runs.items()}
    if len(set().union(*tests.values())) != 1:
        raise RuntimeError(f"the variants scored different test sets: {tests}")
    return {"rows": rows, "repeat": repeat, "test_rows": runs["job"][0]["test_rows"], "runs": runs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from driftline.session import build_session

    machine = _machine()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="driftline-bench-train-") as name:
        tmp = Path(name)
        spark = build_session(_platform(tmp, "session", args.master, args.driver_memory), "driftline-bench-train")
        try:
            versions = _versions(spark)
            log.info("warm-up on %d rows (not reported)", WARMUP_ROWS)
            _measure_size(spark, tmp, args, WARMUP_ROWS, 1, report=False)
            sizes = []
            for rows in args.rows:
                repeat = args.repeat_large if args.repeat_large and rows >= 1_000_000 else args.repeat
                sizes.append(_measure_size(spark, tmp, args, rows, repeat))
        finally:
            spark.stop()
    machine["load_average_at_end"] = _load()
    return {"started": started, "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench_train",
                                                    *sys.argv[1:]]),
            "git": _git_commit(), "machine": machine, "versions": versions, "master": args.master,
            "driver_memory": args.driver_memory, "sklearn_threads": args.sklearn_threads, "candidate": CANDIDATE,
            "sizes": sizes}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


LABELS = {"job": "(a) train job, 1 candidate", "job_shipped": "(a) train job, shipped 6-candidate grid",
          "mllib": "(b) plain MLlib fit", "sklearn": "(c) scikit-learn"}


def to_markdown(report: dict[str, Any]) -> str:
    """Three tables: times and ROC AUC per variant, the ratios, and the job's time per step."""
    lines = ["| rows | variant | load s | fit s | score + AUC s | total s (median) | total s (best) | ROC AUC | "
             "iterations |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = ["| rows | repeats | (a) / (b) | (a, shipped grid) / (b) | (b) / (c) total | (b) / (c) fit only |",
              "|---:|---:|---:|---:|---:|---:|"]
    columns: list[tuple[str, list[dict[str, Any]]]] = []
    for size in report["sizes"]:
        rows, runs = size["rows"], size["runs"]
        n = f"{rows:,}"
        for key in ("job", "job_shipped", "mllib", "sklearn"):
            if key not in runs:
                continue
            rs = runs[key]
            load = f"{_median(rs, 'load_s'):.1f}" if "load_s" in rs[0] else "-"
            fit = f"{_median(rs, 'fit_s'):.1f}" if "fit_s" in rs[0] else "-"
            score = f"{_median(rs, 'score_s'):.1f}" if "score_s" in rs[0] else "-"
            iters = str(rs[0]["iterations"]) if "iterations" in rs[0] else "-"
            lines.append(f"| {n} | {LABELS[key]} | {load} | {fit} | {score} | {_median(rs, 'total_s'):.1f} | "
                         f"{min(r['total_s'] for r in rs):.1f} | {rs[0]['roc_auc']:.4f} | {iters} |")
        a, b, c = _median(runs["job"], "total_s"), _median(runs["mllib"], "total_s"), _median(runs["sklearn"], "total_s")
        shipped = f"{_median(runs['job_shipped'], 'total_s') / b:.1f}x" if "job_shipped" in runs else "-"
        ratios.append(f"| {n} | {size['repeat']} | {a / b:.1f}x | {shipped} | {b / c:.1f}x | "
                      f"{_median(runs['mllib'], 'fit_s') / _median(runs['sklearn'], 'fit_s'):.1f}x |")
        columns.append((f"{n}, 1 candidate", runs["job"]))
        if "job_shipped" in runs:
            columns.append((f"{n}, shipped grid", runs["job_shipped"]))
    steps = ["| (a) step, seconds (median) | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for step in (*JOB_STEPS, "other"):
        cells = [f"{statistics.median(r['steps_s'].get(step, 0.0) for r in rs):.1f}" for _, rs in columns]
        steps.append(f"| {STEP_NAMES[step]} | " + " | ".join(cells) + " |")
    totals = [f"{_median(rs, 'total_s'):.1f}" for _, rs in columns]
    steps.append("| **total** | " + " | ".join(totals) + " |")
    return "\n".join([*lines, "", *ratios, "", *steps])


def _rows(text: str) -> list[int]:
    try:
        rows = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated row counts, e.g. 100000,1000000: {e}") from e
    if not rows or any(r < 1000 for r in rows):
        raise argparse.ArgumentTypeError(f"expected row counts >= 1000, got {text!r}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=_rows, default=[100_000, 1_000_000],
                        help="comma-separated table sizes [100000,1000000]")
    parser.add_argument("--repeat", type=int, default=1, help="measure each variant this many times per size [1]")
    parser.add_argument("--repeat-large", type=int, default=0,
                        help="repeats for sizes of 1,000,000 rows and more (0: same as --repeat) [0]")
    parser.add_argument("--shipped-grid", action="store_true",
                        help="also run the job with the fraud use case's shipped 6-candidate search")
    parser.add_argument("--master", default="local[2]", help="Spark master [local[2]]")
    parser.add_argument("--driver-memory", default="6g", help="Spark driver memory [6g]")
    parser.add_argument("--sklearn-threads", type=int, default=1,
                        help="BLAS/OpenMP threads for scikit-learn, 0 for the libraries' default (one per core) [1]")
    parser.add_argument("--seed", type=int, default=5, help="data seed [5]")
    parser.add_argument("--json", dest="json_path", help="also write the raw figures to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.repeat_large < 0 or args.sklearn_threads < 0:
        parser.error("--repeat: expected >= 1; --repeat-large, --sklearn-threads: expected >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    report = run(args)
    print(f"command: {report['command']}")
    print(f"started: {report['started']}, git {report['git']}")
    print(f"machine: {report['machine']}")
    print(f"versions: {report['versions']}")
    print(f"spark: {report['master']}, driver memory {report['driver_memory']}; scikit-learn threads "
          f"{report['sklearn_threads'] or 'default'}; candidate {report['candidate']}")
    tests = ", ".join(f"{s['rows']:,}: {s['test_rows']:,}" for s in report["sizes"])
    print(f"test rows: {tests}")
    print(to_markdown(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
