"""The drift monitor: Spark counts give the numpy/scipy statistics, simulator scenarios
are detected within two windows, an unchanged stream raises nothing, windows aligned to
drift.origin, the stream end to end (every window of a finished topic, final windows stay
final), and the job through spark-submit (every batch in monitoring/queries, a clean exit)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from pandas.testing import assert_frame_equal
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from scipy import stats
from scipy.spatial import distance

from driftline import catalog, drift
from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.errors import ConfigError, MonitorError, UsageError
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.monitoring import (
    CLOSED,
    DRIFT_SCHEMA,
    LATE,
    OUTPUT_KEYS,
    PERFORMANCE_SCHEMA,
    QUALITY_SCHEMA,
    SOURCES,
    DriftSpec,
    WindowEmitter,
    drift_spec,
    event_counts,
    join_labels,
    output_paths,
    performance_counts,
    prediction_counts,
    resolve_origin,
    state_path,
    training_start,
    window_offset_us,
    window_tables,
)
from driftline.pipelines import monitor
from driftline.produce import produce_stream
from driftline.profile import build_reference_profile
from driftline.query_metrics import metrics_path
from driftline.registry import client_for, model_name
from driftline.simulate import make_generator
from driftline.tracking import experiment_for

UC = load_usecase("fraud")
RATE = 2000 / 60  # simulated events per second: about 2000 per one-minute window
CATEGORICAL = ["merchant_category", "currency", "country", "channel", "device"]
THRESHOLD = 0.3
NOW = dt.datetime(2026, 1, 1)
PREDICTION_SCHEMA = T.StructType([
    T.StructField("event_id", T.StringType()), T.StructField("entity", T.StringType()),
    T.StructField("event_time", T.TimestampType()), T.StructField("score", T.DoubleType()),
    T.StructField("prediction", T.DoubleType()), T.StructField("served", T.BooleanType()),
    T.StructField("route", T.StringType()), T.StructField("model_name", T.StringType()),
    T.StructField("model_version", T.IntegerType()), T.StructField("batch_id", T.LongType()),
    T.StructField("scoring_time", T.TimestampType()),
])


# --------------------------------------------------------------------------- helpers


def simulate(n: int, seed: int, scenarios: Sequence[str] = (), uc: UseCaseConfig = UC,
             rate: float = RATE, start: str = "2024-01-01T00:00:00Z") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` simulated events (schema columns) and their labels (event id, label, label_time)."""
    gen = make_generator(uc, seed=seed, scenarios=list(scenarios), events_per_second=rate, diurnal=False,
                         chunk_size=n, start=start)
    chunk = gen.next_chunk()
    events = chunk.events[[f.name for f in uc.schema_]].reset_index(drop=True)
    return events, chunk.labels[[uc.event_id, uc.label.field, "label_time"]].reset_index(drop=True)


def score(events: pd.DataFrame) -> np.ndarray:
    """A fixed stand-in for the champion: large, online, risky-device, far-away payments score high."""
    z = (-6.0 + np.log(events["amount"].to_numpy() / 35.0) + 1.5 * (events["channel"] == "online")
         + 2.0 * events["device"].isin(["magstripe", "web"]) + 1.5 * events["country"].isin(["US", "BR", "NG", "CN"])
         + 1.0 * events["merchant_category"].isin(["electronics", "online_services", "gambling", "travel"]))
    return np.asarray(1.0 / (1.0 + np.exp(-z.astype(float))))


def predictions(events: pd.DataFrame) -> pd.DataFrame:
    """Rows of the ``predictions/<uc>`` contract for ``events``, all served by the champion."""
    s = score(events)
    return pd.DataFrame({
        "event_id": events["event_id"], "entity": events["customer_id"], "event_time": events["event_time"],
        "score": s, "prediction": (s >= THRESHOLD).astype(float), "served": True, "route": "champion",
        "model_name": "fraud-model", "model_version": np.int32(1), "batch_id": np.int64(0),
        "scoring_time": events["event_time"],
    })


def labels_frame(spark: SparkSession, labels: pd.DataFrame) -> DataFrame:
    return spark.createDataFrame(pd.DataFrame({
        "label_event_id": labels["event_id"], "label": labels["is_fraud"].astype(float),
        "label_time": labels["label_time"],
    }))


def tables_for(spark: SparkSession, events: pd.DataFrame, labels: pd.DataFrame, profile: dict[str, Any],
               spec: DriftSpec, preds: pd.DataFrame | None = None) -> dict[str, list[dict[str, Any]]]:
    """Counts of events, served predictions and labelled predictions with Spark, statistics from them."""
    ev = spark.createDataFrame(events if "quarantined" in events else events.assign(quarantined=False))
    pr = spark.createDataFrame(predictions(events) if preds is None else preds, PREDICTION_SCHEMA)
    parts = [event_counts(ev, profile, spec, UC), prediction_counts(pr, profile, spec, UC),
             performance_counts(join_labels(pr, labels_frame(spark, labels), spec), spec, UC)]
    counts = pd.concat([p.toPandas() for p in parts], ignore_index=True)
    return window_tables(counts, profile, spec, UC, NOW)


def flags(tables: dict[str, list[dict[str, Any]]]) -> dict[pd.Timestamp, set[str]]:
    """What was flagged per window: ``drift:<kind>:<feature>:<statistic>``, ``quality:<metric>:<column>``,
    ``performance:<metric>``."""
    out: dict[pd.Timestamp, set[str]] = {}
    for r in tables["drift"]:
        out.setdefault(pd.Timestamp(r["window_start"]), set())
        if r["drifted"]:
            out[pd.Timestamp(r["window_start"])].add(f"drift:{r['kind']}:{r['feature']}:{r['statistic']}")
    for r in tables["quality"]:
        if r["breached"]:
            out.setdefault(pd.Timestamp(r["window_start"]), set()).add(f"quality:{r['metric']}:{r['column']}")
    for r in tables["performance"]:
        if r["breached"]:
            out.setdefault(pd.Timestamp(r["window_start"]), set()).add(f"performance:{r['metric']}")
    return out


def window_of(times: pd.Series, seconds: int = 60) -> pd.Series:
    return times.dt.floor(f"{seconds}s")


@pytest.fixture(scope="module")
def reference(spark: SparkSession) -> dict[str, Any]:
    """The reference profile of 20,000 unchanged training events and their scores (10 bins)."""
    train, _ = simulate(20_000, seed=1)
    scores = spark.createDataFrame(pd.DataFrame({"score": score(train)}))
    return build_reference_profile(spark.createDataFrame(train), ["amount"], CATEGORICAL, scores=scores,
                                   score_col="score", score_kind="binary", bins=10)


@pytest.fixture(scope="module")
def spec() -> DriftSpec:
    return drift_spec(UC)


# --------------------------------------------------------------------------- statistics equal the reference


def test_every_statistic_equals_numpy_scipy_on_the_same_data(spark: SparkSession, reference: dict[str, Any],
                                                             spec: DriftSpec) -> None:
    """Three windows with quarantined rows, missing devices, an unseen category, NaN and
    unserved predictions: every value the monitor writes equals the numpy/scipy value on
    the raw rows (1e-9, or 2e-3 for ROC AUC from 1000 score bins)."""
    events, labels = simulate(5000, seed=3, scenarios=["new_category@0:share=0.05", "missing_spike@0:rate=0.1"])
    rng = np.random.default_rng(3)
    events["quarantined"] = rng.random(len(events)) < 0.03
    preds = predictions(events)
    preds.loc[rng.random(len(preds)) < 0.02, "score"] = np.nan
    preds["served"] = rng.random(len(preds)) >= 0.1
    tables = tables_for(spark, events, labels, reference, spec, preds)

    drift_rows = {(pd.Timestamp(r["window_start"]), r["feature"], r["statistic"]): r for r in tables["drift"]}
    quality = {(pd.Timestamp(r["window_start"]), r["metric"], r["column"]): r for r in tables["quality"]}
    perf = {(pd.Timestamp(r["window_start"]), r["metric"]): r for r in tables["performance"]}
    events["w"] = window_of(events["event_time"])
    preds["w"] = window_of(preds["event_time"])
    windows = sorted(events["w"].unique())
    assert len(windows) == 3 and {k[0] for k in drift_rows} == set(windows)
    num = reference["numeric"]["amount"]
    edges, ref_amount = num["edges"], np.asarray(num["counts"], dtype=float)
    for w in windows:
        ev = events[events["w"] == w]
        good = ev[~ev["quarantined"]]
        # numeric: amount, against scipy on the same bins
        cur = drift.numeric_counts(good["amount"].to_numpy(), edges).astype(float)
        row = drift_rows[(w, "amount", "psi")]
        assert row["n_current"] == len(good) and row["n_reference"] == 20_000
        assert row["value"] == pytest.approx(drift.psi(ref_amount, cur), abs=1e-9)
        assert drift_rows[(w, "amount", "js")]["value"] == pytest.approx(
            distance.jensenshannon(ref_amount / ref_amount.sum(), cur / cur.sum(), base=2), abs=1e-9)
        pts = drift.bin_points(edges)
        assert drift_rows[(w, "amount", "wasserstein")]["value"] == pytest.approx(
            stats.wasserstein_distance(pts, pts, ref_amount, cur) / (edges[-1] - edges[0]), abs=1e-9)
        chi = stats.chi2_contingency(np.vstack([ref_amount, cur])[:, (ref_amount + cur) > 0], correction=False)
        assert drift_rows[(w, "amount", "chi2")]["value"] == pytest.approx(chi.statistic, rel=1e-9)
        p_values = [chi.pvalue]
        # categorical: unseen categories are counted (crypto), nulls are not
        for c in CATEGORICAL:
            ref_map = reference["categorical"][c]["counts"]
            cur_map = good[c].dropna().astype(str).value_counts().to_dict()
            _, r, k = drift.align_categories(ref_map, cur_map)
            assert drift_rows[(w, c, "psi")]["value"] == pytest.approx(drift.psi(r, k), abs=1e-9)
            assert drift_rows[(w, c, "js")]["value"] == pytest.approx(
                distance.jensenshannon(r / r.sum(), k / k.sum(), base=2), abs=1e-9)
            chi_c = stats.chi2_contingency(np.vstack([r, k])[:, (r + k) > 0], correction=False)
            assert drift_rows[(w, c, "chi2")]["value"] == pytest.approx(chi_c.statistic, rel=1e-9)
            assert drift_rows[(w, c, "chi2")]["p_value"] == pytest.approx(chi_c.pvalue, rel=1e-6, abs=1e-300)
            assert drift_rows[(w, c, "unseen_share")]["value"] == pytest.approx(
                sum(v for key, v in cur_map.items() if key not in ref_map) / sum(cur_map.values()), abs=1e-12)
            p_values.append(chi_c.pvalue)
        # Benjamini-Hochberg across the window's six features
        adjusted = stats.false_discovery_control(np.asarray(p_values), method="bh")
        for feature, p_adj in zip(["amount", *CATEGORICAL], adjusted, strict=True):
            assert drift_rows[(w, feature, "psi")]["p_adjusted"] == pytest.approx(p_adj, rel=1e-6, abs=1e-300)
        assert drift_rows[(w, "merchant_category", "unseen_share")]["value"] > 0.02
        # input metrics
        assert quality[(w, "volume", "events")]["value"] == len(ev)
        assert quality[(w, "quarantine_rate", None)]["value"] == pytest.approx(ev["quarantined"].mean(), abs=1e-12)
        for c in ("device", "amount", "country"):
            assert quality[(w, "missing_rate", c)]["value"] == pytest.approx(ev[c].isna().mean(), abs=1e-12)
        # prediction drift and output metrics over served rows
        pr = preds[(preds["w"] == w) & preds["served"]]
        valid = pr["score"].notna()
        ref_pred = np.asarray(reference["prediction"]["counts"], dtype=float)
        cur_pred = drift.numeric_counts(pr["score"].to_numpy(), reference["prediction"]["edges"]).astype(float)
        assert drift_rows[(w, "score", "psi")]["value"] == pytest.approx(drift.psi(ref_pred, cur_pred), abs=1e-9)
        assert drift_rows[(w, "score", "psi")]["kind"] == "prediction"
        assert quality[(w, "volume", "predictions")]["value"] == len(pr)
        assert quality[(w, "null_prediction_rate", "score")]["value"] == pytest.approx((~valid).mean(), abs=1e-12)
        assert quality[(w, "null_prediction_rate", "score")]["breached"]  # any NaN score breaches the 0.0 limit
        assert quality[(w, "score_min", "score")]["value"] == pytest.approx(pr["score"].min(), abs=1e-15)
        assert quality[(w, "score_max", "score")]["value"] == pytest.approx(pr["score"].max(), abs=1e-15)
        assert quality[(w, "positive_rate", "prediction")]["value"] == pytest.approx(
            ((pr["prediction"] == 1) & valid).sum() / len(pr), abs=1e-12)
        # online performance: served, valid predictions joined with their labels
        joined = pr[valid].merge(labels, on="event_id", how="inner")
        y, s = joined["is_fraud"].astype(float).to_numpy(), joined["score"].to_numpy()
        assert perf[(w, "roc_auc")]["n"] == len(joined)
        assert perf[(w, "roc_auc")]["value"] == pytest.approx(drift.roc_auc(y, s), abs=2e-3)
        assert perf[(w, "roc_auc")]["value"] == pytest.approx(
            drift.roc_auc(y, np.minimum(np.floor(s * 1000), 999)), abs=1e-12)
        expected = drift.confusion_metrics(((s >= THRESHOLD) & (y == 1)).sum(), ((s >= THRESHOLD) & (y == 0)).sum(),
                                           ((s < THRESHOLD) & (y == 1)).sum())
        assert perf[(w, "precision")]["value"] == pytest.approx(expected["precision"], abs=1e-12)
        assert perf[(w, "recall")]["value"] == pytest.approx(expected["recall"], abs=1e-12)


def test_regression_performance_equals_numpy(spark: SparkSession) -> None:
    eta = load_usecase("eta")
    spec = drift_spec(eta)
    rng = np.random.default_rng(4)
    t0 = pd.Timestamp("2024-01-01")
    times = (t0 + pd.to_timedelta(np.sort(rng.uniform(0, 600, 400)), unit="s")).round("ms")
    y, yhat = rng.normal(35, 8, 400), rng.normal(35, 8, 400)
    joined = spark.createDataFrame(pd.DataFrame({"event_time": times, "score": yhat, "prediction": yhat, "label": y}))
    rows = window_tables(performance_counts(joined, spec, eta).toPandas(), {}, spec, eta, NOW)["performance"]
    got = {(pd.Timestamp(r["window_start"]), r["metric"]): r for r in rows}
    w = window_of(pd.Series(times), 300)
    for start in w.unique():
        sel = (w == start).to_numpy()
        expected = drift.regression_metrics(y[sel], yhat[sel])
        assert got[(start, "rmse")]["value"] == pytest.approx(expected["rmse"], rel=1e-9)
        assert got[(start, "mae")]["value"] == pytest.approx(expected["mae"], rel=1e-9)
        assert got[(start, "rmse")]["n"] == sel.sum()


# --------------------------------------------------------------------------- detection


SCENARIOS = {
    "covariate_shift": ("covariate_shift@3m", "drift:numeric:amount:"),
    "prior_shift": ("prior_shift@3m", "drift:prediction:score:"),
    "concept_drift": ("concept_drift@3m", "performance:"),
    "new_category": ("new_category@3m", "drift:categorical:merchant_category:"),
    "missing_spike": ("missing_spike@3m", "quality:missing_rate:device"),
}
SCENARIO_START = pd.Timedelta(minutes=3)
UNCHANGED = "unchanged"


@pytest.fixture(scope="module")
def detection(spark: SparkSession, reference: dict[str, Any], spec: DriftSpec
              ) -> dict[str, tuple[pd.Timestamp, dict[pd.Timestamp, set[str]], dict[str, list[dict[str, Any]]]]]:
    """Each scenario 5 windows long (switched on at minute 3), and 30 windows of an unchanged
    stream, on separate simulated days so that one Spark pass counts them all:
    run -> (its first window, flags per window, output rows)."""
    runs = {**{name: [scenario] for name, (scenario, _) in SCENARIOS.items()}, UNCHANGED: []}
    events, labels, days = [], [], {}
    for i, (name, scenarios) in enumerate(runs.items()):
        day = pd.Timestamp("2024-01-01") + pd.Timedelta(days=i)
        n = 30 * 2000 + 500 if name == UNCHANGED else 5 * 2000
        ev, lab = simulate(n, seed=2, scenarios=scenarios, start=day.isoformat() + "Z")
        events.append(ev)
        labels.append(lab)
        days[name] = day
    tables = tables_for(spark, pd.concat(events, ignore_index=True), pd.concat(labels, ignore_index=True),
                        reference, spec)
    found = flags(tables)
    out = {}
    for name, day in days.items():
        mine = {w: f for w, f in found.items() if day <= w < day + pd.Timedelta(days=1)}
        rows = {k: [r for r in v if day <= pd.Timestamp(r["window_start"]) < day + pd.Timedelta(days=1)]
                for k, v in tables.items()}
        out[name] = (day, mine, rows)
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_is_detected_within_two_windows_of_its_start(detection: dict[str, Any], name: str) -> None:
    _, expected = SCENARIOS[name]
    day, found, _ = detection[name]
    windows = sorted(found)
    start = day + SCENARIO_START
    assert windows[0] == day and start in windows
    before = {w: f for w, f in found.items() if w < start and f}
    assert not before, f"flagged before the scenario started: {before}"
    detected = [w for w in windows if w >= start and any(f.startswith(expected) for f in found[w])]
    assert detected, f"{name}: nothing flagged like {expected!r}: {found}"
    assert detected[0] <= start + pd.Timedelta(minutes=1), f"{name}: first detected at {detected[0]}"


def test_thirty_windows_of_an_unchanged_stream_flag_nothing(detection: dict[str, Any], spec: DriftSpec) -> None:
    _, found, tables = detection[UNCHANGED]
    full = sorted(found)[:30]
    assert len(full) == 30
    assert {w: found[w] for w in full if found[w]} == {}
    # the statistics were computed, not skipped: every window has every feature's rows, with enough rows
    psi_rows = [r for r in tables["drift"] if r["statistic"] == "psi" and pd.Timestamp(r["window_start"]) in full]
    assert len(psi_rows) == 30 * 7 and min(r["n_current"] for r in psi_rows) >= spec.min_samples
    recall = [r for r in tables["performance"] if r["metric"] == "recall" and pd.Timestamp(r["window_start"]) in full]
    assert len(recall) == 30 and min(r["n"] for r in recall) >= spec.performance.min_labels


# --------------------------------------------------------------------------- window origin


def usecase_copy(tmp_path: Path, **drift_keys: Any) -> tuple[UseCaseConfig, Path]:
    """The fraud use case under a fresh name (so fresh topics and tables), ``drift:`` keys replaced."""
    name = f"mon{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT_ROOT / "conf" / "usecases" / "fraud.yaml").read_text())
    raw["name"] = name
    raw["drift"] = {**raw["drift"], **drift_keys}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_usecase(path), path


def starts(times: pd.Series) -> list[pd.Timestamp]:
    """The distinct window starts of a column, in order."""
    return sorted(pd.Timestamp(t) for t in times.unique())


def windows_from(times: pd.Series, origin: str, seconds: int = 60) -> pd.Series:
    """pandas oracle: the start of each time's tumbling window, the windows aligned to ``origin``."""
    start = pd.Timestamp(origin).tz_convert("UTC").tz_localize(None)
    step = pd.Timedelta(seconds=seconds)
    return start + ((times - start) // step) * step


@pytest.mark.parametrize(("written", "kept", "offset_us"), [
    (None, "epoch", 0),
    ("epoch", "epoch", 0),
    ("2024-01-01T00:00:25Z", "2024-01-01T00:00:25+00:00", 25_000_000),
    ("2024-01-01T02:00:25.5+02:00", "2024-01-01T00:00:25.500000+00:00", 25_500_000),
    (dt.datetime(2024, 1, 1, 0, 3, 10), "2024-01-01T00:03:10+00:00", 10_000_000),  # an unquoted YAML time
    ("1969-12-31T23:59:50", "1969-12-31T23:59:50+00:00", 50_000_000),  # no offset: UTC
])
def test_window_origin_is_parsed_at_load(tmp_path: Path, written: Any, kept: str, offset_us: int) -> None:
    uc, _ = usecase_copy(tmp_path, **({} if written is None else {"origin": written}))
    assert uc.drift.origin == kept
    assert window_offset_us(uc.drift) == offset_us


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01T00:00:00Z", 60])
def test_a_bad_window_origin_stops_the_load_naming_drift_origin(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match=rf"drift\.origin: got {re.escape(repr(bad))}, expected epoch, "
                                          r"training_start or an ISO 8601 time"):
        usecase_copy(tmp_path, origin=bad)


def test_training_start_is_the_first_labelled_event_of_the_champions_training_data(
    spark: SparkSession, mlflow_platform: PlatformConfig, tmp_path: Path
) -> None:
    """drift.origin: training_start is read from the champion's lineage: its run's training
    table at the pinned version (a row appended since does not count, nor one without a label)."""
    platform = mlflow_platform
    uc, _ = usecase_copy(tmp_path, origin="training_start")
    with pytest.raises(UsageError, match="training_start must be resolved first"):
        window_offset_us(uc.drift)
    with pytest.raises(MonitorError, match="drift.origin: training_start needs a model with alias 'champion'"):
        resolve_origin(spark, platform, uc, uc.drift)

    schema = T.StructType([T.StructField("event_id", T.StringType()), T.StructField("event_time", T.TimestampType()),
                           T.StructField("is_fraud", T.DoubleType())])
    table = str(tmp_path / "train")
    at = [dt.datetime(2024, 3, 1, 10, 0, s, us, tzinfo=dt.UTC) for s, us in ((7, 250_000), (9, 500_000), (50, 0))]
    spark.createDataFrame([("a", at[0], None), ("b", at[1], 0.0), ("c", at[2], 1.0)], schema) \
        .write.format("delta").save(table)  # version 0: what the champion was trained on
    spark.createDataFrame([("z", dt.datetime(2024, 2, 1, tzinfo=dt.UTC), 1.0)], schema) \
        .write.format("delta").mode("append").save(table)  # version 1: arrived later
    client = client_for(platform)
    with mlflow.start_run(experiment_id=experiment_for(platform, uc)) as run:
        mlflow.log_params({"data.path": table, "data.version": "0"})
    name = model_name(uc)
    client.create_registered_model(name)
    version = client.create_model_version(name, source=str(tmp_path / "model"), run_id=run.info.run_id).version
    client.set_registered_model_alias(name, "champion", str(version))

    assert training_start(spark, platform, uc) == at[1]
    spec = resolve_origin(spark, platform, uc, uc.drift)
    assert spec.origin == "2024-03-01T10:00:09.500000+00:00"
    assert window_offset_us(spec) == 9_500_000
    assert resolve_origin(spark, platform, uc, spec) is spec  # a time stays as it is


# --------------------------------------------------------------------------- the stream end to end


def publish(spark: SparkSession, platform: PlatformConfig, uc: UseCaseConfig, n: int, seed: int, start: str,
            rate: float = 400 / 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` simulated events from ``start`` and their labels into Kafka, their predictions appended
    to ``predictions/<uc>``; returns the events and labels (the same simulation, for the oracle)."""
    ensure_topics(platform.kafka, [uc.topic("events"), uc.topic("labels")], partitions=2)
    gen = make_generator(uc, seed=seed, events_per_second=rate, diurnal=False, chunk_size=n, start=start)
    produce_stream(make_producer(platform.kafka, delivery_report_only_error=True), gen,
                   events_topic=uc.topic("events"), labels_topic=uc.topic("labels"), max_events=n, flush_labels=True)
    events, labels = simulate(n, seed=seed, uc=uc, rate=rate, start=start)
    (spark.createDataFrame(predictions(events), PREDICTION_SCHEMA).write.format("delta").mode("append")
     .save(platform.table_path("predictions", uc.name)))
    return events, labels


def monitor_args(uc_path: Path, profile_path: Path, platform: PlatformConfig) -> list[str]:
    return ["--usecase", str(uc_path), "--profile", str(profile_path), "--trigger", "availableNow",
            "--set", f"lake_root={platform.lake_root}", "--set", f"checkpoint_root={platform.checkpoint_root}",
            "--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap}", "--set", "spark.shuffle_partitions=2",
            "--set", "spark.ui_enabled=false", "--set", "spark.log_level=ERROR"]


def without_computed_at(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return frame.drop(columns="computed_at").sort_values(list(keys)).reset_index(drop=True)


def test_monitor_stream_end_to_end(spark: SparkSession, reference: dict[str, Any], platform: PlatformConfig,
                                   tmp_path: Path) -> None:
    """Events and labels through the real broker, predictions from a Delta table, three
    queries with availableNow and windows aligned to drift.origin: every window of the
    finished topics is written, the last ones too (the lateness alone would hold them back),
    with the pandas counts and the numpy values. The windows are then final: a later run drops
    events of them as late and adds only the new windows; a run with nothing new changes nothing."""
    origin = "2024-01-01T00:00:25Z"
    uc, uc_path = usecase_copy(tmp_path, lateness="2m", min_samples=100, origin=origin)
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(json.dumps(reference))
    paths = output_paths(platform, uc)

    def run() -> dict[str, pd.DataFrame]:
        assert monitor.main(monitor_args(uc_path, profile_path, platform)) == 0
        return {k: spark.read.format("delta").load(p).toPandas() for k, p in paths.items()}

    def state() -> dict[str, list[tuple[Any, ...]]]:
        return {s: [(r["kind"], r["window_start"], r["window_end"], r["n"]) for r in
                    spark.read.format("delta").load(state_path(platform, uc, s)).collect()] for s in SOURCES}

    # --- run 1: about 3.5 minutes of events, windows from 23:59:25 to 00:03:25
    events, labels = publish(spark, platform, uc, 1400, seed=6, start="2024-01-01T00:00:00Z")
    got = run()
    assert list(got["drift"].columns) == DRIFT_SCHEMA.fieldNames()
    assert list(got["quality"].columns) == QUALITY_SCHEMA.fieldNames()
    assert list(got["performance"].columns) == PERFORMANCE_SCHEMA.fieldNames()
    events["w"] = windows_from(events["event_time"], origin)
    windows = starts(events["w"])
    assert [str(w) for w in windows] == ["2023-12-31 23:59:25", "2024-01-01 00:00:25", "2024-01-01 00:01:25",
                                         "2024-01-01 00:02:25", "2024-01-01 00:03:25"]
    for table in ("drift", "quality", "performance"):
        assert starts(got[table]["window_start"]) == windows, table
        assert (got[table]["window_end"] - got[table]["window_start"] == pd.Timedelta(minutes=1)).all()
    volume = got["quality"].set_index(["metric", "column", "window_start"])["value"].sort_index()
    assert volume.loc[("volume", "events")].to_dict() == events.groupby("w").size().astype(float).to_dict()
    assert volume.loc[("volume", "predictions")].to_dict() == events.groupby("w").size().astype(float).to_dict()
    drift_rows = got["drift"].set_index(["window_start", "feature", "statistic"])
    perf = got["performance"].set_index(["window_start", "metric"])
    preds = predictions(events)
    num = reference["numeric"]["amount"]
    ref_amount = np.asarray(num["counts"], dtype=float)
    ref_pred = np.asarray(reference["prediction"]["counts"], dtype=float)
    for w in windows:
        ev = events[events["w"] == w]
        cur = drift.numeric_counts(ev["amount"].to_numpy(), num["edges"])
        assert drift_rows.loc[(w, "amount", "psi"), "value"] == pytest.approx(drift.psi(ref_amount, cur), abs=1e-9)
        assert drift_rows.loc[(w, "amount", "wasserstein"), "value"] == pytest.approx(
            drift.wasserstein_binned(num["edges"], ref_amount, cur), abs=1e-9)
        assert drift_rows.loc[(w, "amount", "psi"), "n_current"] == len(ev)
        ref_c = reference["categorical"]["country"]["counts"]
        _, r, k = drift.align_categories(ref_c, ev["country"].value_counts().to_dict())
        assert drift_rows.loc[(w, "country", "js"), "value"] == pytest.approx(drift.js_distance(r, k), abs=1e-9)
        cur_pred = drift.numeric_counts(score(ev), reference["prediction"]["edges"])
        assert drift_rows.loc[(w, "score", "js"), "value"] == pytest.approx(drift.js_distance(ref_pred, cur_pred),
                                                                           abs=1e-9)
        joined = preds[windows_from(preds["event_time"], origin) == w].merge(labels, on="event_id", how="inner")
        assert perf.loc[(w, "roc_auc"), "n"] == len(joined) == len(ev)
        assert perf.loc[(w, "roc_auc"), "value"] == pytest.approx(  # from the 1000 score bins it counts
            drift.roc_auc(joined["is_fraud"].astype(float), np.minimum(np.floor(joined["score"] * 1000), 999)),
            abs=1e-12, nan_ok=True)  # NaN: a window without a fraud
    assert not got["drift"]["drifted"].any()
    # nothing is held back: each state table is one row saying how far windows are final
    final = [(CLOSED, windows[-1] + pd.Timedelta(minutes=1), windows[-1] + pd.Timedelta(minutes=1), 0)]
    assert {s: [(k, pd.Timestamp(a), pd.Timestamp(b), n) for k, a, b, n in rows] for s, rows in state().items()} \
        == {s: final for s in SOURCES}

    # --- run 2: 20 late events of the final window 00:01:25 and a minute of new events from 00:06
    late, _ = publish(spark, platform, uc, 20, seed=8, start="2024-01-01T00:01:30Z")
    assert set(windows_from(late["event_time"], origin)) == {pd.Timestamp("2024-01-01 00:01:25")}
    new, _ = publish(spark, platform, uc, 400, seed=7, start="2024-01-01T00:06:00Z")
    new["w"] = windows_from(new["event_time"], origin)
    new_windows = starts(new["w"])
    assert [str(w) for w in new_windows] == ["2024-01-01 00:05:25", "2024-01-01 00:06:25"]
    again = run()
    for table, keys in OUTPUT_KEYS.items():
        before = without_computed_at(got[table], keys)
        kept = again[table][again[table]["window_start"].isin(windows)]
        if table == "quality":  # the late events are not in the final window, but counted beside it
            counted = kept[kept["metric"] == "late_events"]
            kept = kept[kept["metric"] != "late_events"]
            assert set(counted["window_start"]) == {pd.Timestamp("2024-01-01 00:01:25")}
            assert {"events": 20.0, "predictions": 20.0}.items() <= dict(zip(counted["column"], counted["value"],
                                                                             strict=True)).items()
        assert_frame_equal(without_computed_at(kept, keys), before)  # final windows: the same rows, late events not in
    for table in ("drift", "quality"):
        assert starts(again[table]["window_start"]) == windows + new_windows, table
    volume = again["quality"].set_index(["metric", "column", "window_start"])["value"].sort_index()
    assert volume.loc[("volume", "events")].to_dict() == {
        **events.groupby("w").size().astype(float).to_dict(), **new.groupby("w").size().astype(float).to_dict()}
    assert [r[0] for r in state()["events"] if r[0] != LATE] == [CLOSED]  # and the late count kept

    # --- run 3: nothing new, nothing changes
    third = run()
    for table, keys in OUTPUT_KEYS.items():
        assert_frame_equal(without_computed_at(third[table], keys), without_computed_at(again[table], keys))

    # a replayed micro-batch adds nothing to the state table (txnAppId/txnVersion), even of an open window
    spec = drift_spec(uc)
    emitter = WindowEmitter(spark, platform, uc, reference, spec, "events", f"monitor:{uc.name}:events")
    future = spark.createDataFrame(new.drop(columns="w").head(2).assign(
        event_time=pd.Timestamp("2024-01-01 00:09:00"), quarantined=False))
    assert emitter.process(event_counts(future, reference, spec, uc), 0) == {}
    assert [r[0] for r in state()["events"] if r[0] != LATE] == [CLOSED]


def test_monitor_job_records_every_batch_and_exits_cleanly(spark: SparkSession, reference: dict[str, Any],
                                                           platform: PlatformConfig, tmp_path: Path) -> None:
    """streaming/monitor.py through spark-submit, as a user runs it, over finished topics: every
    window of the events is written, monitoring/queries holds exactly one row per micro-batch each
    query committed (its last included), and the process ends without Spark logging that the
    Python listener threw (a callback cut off by the exit)."""
    uc, uc_path = usecase_copy(tmp_path, min_samples=100)  # lateness 2m, windows aligned to the epoch
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(json.dumps(reference))
    events, _ = publish(spark, platform, uc, 600, seed=9, start="2024-01-01T00:00:00Z")

    res = subprocess.run([str(PROJECT_ROOT / "spark-submit.sh"), "streaming/monitor.py",
                          *monitor_args(uc_path, profile_path, platform)],
                         cwd=PROJECT_ROOT, env={**os.environ, "SPARK_MASTER": "local[2]"},
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    for sign in ("threw an exception", "Py4JException", "PythonStreamingQueryListenerWrapper"):
        assert sign not in res.stderr, res.stderr[-3000:]

    metrics = DeltaTable(metrics_path(platform)).to_pyarrow_table().to_pylist()
    for source in SOURCES:
        commits = Path(catalog.checkpoint(platform, "monitor", uc, source=source)) / "commits"
        committed = sorted(int(p.name) for p in commits.iterdir() if p.name.isdigit())
        recorded = sorted(r["batch_id"] for r in metrics if r["query_name"] == f"monitor-{uc.name}-{source}")
        assert committed and recorded == committed, source
    drift_rows: pd.DataFrame = spark.read.format("delta").load(output_paths(platform, uc)["drift"]).toPandas()
    expected = starts(windows_from(events["event_time"], "1970-01-01T00:00:00Z"))
    assert starts(drift_rows["window_start"]) == expected and len(expected) == 2
