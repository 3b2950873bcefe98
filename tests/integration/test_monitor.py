"""The drift monitor: Spark counts give the numpy/scipy statistics, simulator scenarios
are detected within two windows, an unchanged stream raises nothing, the stream end to end."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from scipy import stats
from scipy.spatial import distance

from driftline import drift
from driftline.config import PROJECT_ROOT, PlatformConfig, UseCaseConfig, load_usecase
from driftline.kafka.clients import ensure_topics, make_producer
from driftline.monitoring import (
    DRIFT_SCHEMA,
    PERFORMANCE_SCHEMA,
    QUALITY_SCHEMA,
    DriftSpec,
    WindowEmitter,
    drift_spec,
    event_counts,
    join_labels,
    output_paths,
    performance_counts,
    prediction_counts,
    state_path,
    window_tables,
)
from driftline.pipelines import monitor
from driftline.produce import produce_stream
from driftline.profile import build_reference_profile
from driftline.simulate import make_generator

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


# --------------------------------------------------------------------------- state, replay, end to end


def test_monitor_stream_end_to_end(spark: SparkSession, reference: dict[str, Any], platform: PlatformConfig,
                                   tmp_path: Path) -> None:
    """Events and labels through the real broker, predictions from a Delta table, three
    queries with availableNow: closed windows carry the numpy values, the open one is held back."""
    name = f"mon{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((PROJECT_ROOT / "conf" / "usecases" / "fraud.yaml").read_text())
    raw["name"] = name
    raw["drift"] = {**raw["drift"], "lateness": "0s", "min_samples": 100}
    uc_path = tmp_path / f"{name}.yaml"
    uc_path.write_text(yaml.safe_dump(raw))
    uc = load_usecase(uc_path)
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(json.dumps(reference))

    n, rate = 1400, 400 / 60  # about 3.5 minutes of events
    gen = make_generator(uc, seed=6, events_per_second=rate, diurnal=False, chunk_size=n)
    ensure_topics(platform.kafka, [uc.topic("events"), uc.topic("labels")], partitions=2)
    produce_stream(make_producer(platform.kafka, delivery_report_only_error=True), gen,
                   events_topic=uc.topic("events"), labels_topic=uc.topic("labels"), max_events=n, flush_labels=True)
    events, labels = simulate(n, seed=6, uc=uc, rate=rate)
    preds = predictions(events)
    spark.createDataFrame(preds, PREDICTION_SCHEMA).write.format("delta").save(platform.table_path("predictions", name))

    args = ["--usecase", str(uc_path), "--profile", str(profile_path),
            "--set", f"lake_root={platform.lake_root}", "--set", f"checkpoint_root={platform.checkpoint_root}",
            "--set", f"kafka.bootstrap_servers={platform.kafka.bootstrap}", "--set", "spark.shuffle_partitions=2",
            "--set", "spark.ui_enabled=false", "--set", "spark.log_level=ERROR"]
    assert monitor.main(args) == 0

    paths = output_paths(platform, uc)
    got = {k: spark.read.format("delta").load(p).toPandas() for k, p in paths.items()}
    assert list(got["drift"].columns) == DRIFT_SCHEMA.fieldNames()
    assert list(got["quality"].columns) == QUALITY_SCHEMA.fieldNames()
    assert list(got["performance"].columns) == PERFORMANCE_SCHEMA.fieldNames()
    events["w"] = window_of(events["event_time"])
    closed = sorted(events["w"].unique())[:-1]  # lateness 0: the window of the newest event stays open
    assert sorted(got["drift"]["window_start"].unique()) == closed
    assert sorted(got["performance"]["window_start"].unique()) == closed
    drift_rows = got["drift"].set_index(["window_start", "feature", "statistic"])
    quality = got["quality"].set_index(["window_start", "metric", "column"])
    perf = got["performance"].set_index(["window_start", "metric"])
    num = reference["numeric"]["amount"]
    ref_amount = np.asarray(num["counts"], dtype=float)
    ref_pred = np.asarray(reference["prediction"]["counts"], dtype=float)
    for w in closed:
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
        assert quality.loc[(w, "volume", "events"), "value"] == len(ev)
        assert quality.loc[(w, "volume", "predictions"), "value"] == len(ev)
        joined = preds[window_of(preds["event_time"]) == w].merge(labels, on="event_id", how="inner")
        assert perf.loc[(w, "roc_auc"), "n"] == len(joined) == len(ev)
        assert perf.loc[(w, "roc_auc"), "value"] == pytest.approx(
            drift.roc_auc(joined["is_fraud"].astype(float), joined["score"]), abs=2e-3)
    assert not got["drift"]["drifted"].any()

    # A replayed micro-batch adds nothing (txnAppId/txnVersion), rows of windows already
    # emitted are dropped as late, and emitted windows are not written again.
    spec = drift_spec(uc)
    state = state_path(platform, uc, "events")
    held = spark.read.format("delta").load(state).count()
    typed = spark.createDataFrame(events.drop(columns="w").assign(quarantined=False))
    emitter = WindowEmitter(spark, platform, uc, reference, spec, "events", f"monitor:{uc.name}:events")
    assert emitter.process(event_counts(typed, reference, spec, uc), 0) == {}
    late = spark.createDataFrame(events[events["w"] < closed[-1]].drop(columns="w").assign(quarantined=True))
    assert emitter.process(event_counts(late, reference, spec, uc), 1000) == {}
    assert spark.read.format("delta").load(state).count() == held
    open_window = spark.read.format("delta").load(state).select("window_start").distinct().toPandas()
    assert open_window["window_start"].tolist() == [sorted(events["w"].unique())[-1]]
    again = spark.read.format("delta").load(paths["quality"]).toPandas()
    assert len(again) == len(got["quality"]) and (again["metric"] == "quarantine_rate").sum() == len(closed)
    assert (again[again["metric"] == "quarantine_rate"]["value"] == 0.0).all()
