"""Calibrated drift thresholds (driftline.calibration): the rule on synthetic values, the Spark
chunk counts against numpy, the configuration, and on simulated streams: no reference window
is flagged, and every shipped drift scenario is flagged no later than with the fixed thresholds."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from driftline import drift
from driftline.calibration import (
    CalibrationPlan,
    calibrate_profile,
    calibration_plan,
    chunk_counts,
    chunk_length,
    threshold_for,
    threshold_of,
    thresholds_from,
)
from driftline.config import UseCaseConfig, load_usecase
from driftline.errors import ConfigError, UsageError
from driftline.monitoring import window_tables
from driftline.profile import build_reference_profile
from driftline.simulate import make_generator

NOW = dt.datetime(2026, 1, 1)
FLOOR = {"psi": 0.01, "js": 0.02, "wasserstein": 0.01}


def calibrated(uc: UseCaseConfig, **calibrate: Any) -> UseCaseConfig:
    return uc.replace(drift={**uc.raw("drift"), "calibrate": {"method": "reference_windows", **calibrate}})


# --------------------------------------------------------------------------- the rule (pure)


def test_threshold_is_mean_plus_k_std_or_a_quantile_never_below_the_floor() -> None:
    values = [0.01, 0.02, 0.03, float("nan")]  # NaN (an empty chunk) is left out
    assert threshold_of(values, k=3.0) == pytest.approx(0.02 + 3 * 0.01)
    # one chunk far out (skewed statistics, bursts): the threshold goes just above it, not to mean + k * std
    outlier = [0.01] * 19 + [0.2]
    assert float(np.mean(outlier) + 3 * np.std(outlier, ddof=1)) < 0.2
    assert threshold_of(outlier, k=3.0) > 0.2 and threshold_of(outlier, k=3.0) == pytest.approx(0.2)
    assert threshold_of(values, quantile=1.0) == pytest.approx(0.03)
    assert threshold_of(values, k=3.0, floor=0.5) == 0.5
    with pytest.raises(UsageError, match="values"):
        threshold_of([0.1, float("nan")])


def test_chunk_length_is_one_window_unless_windows_are_too_small_or_too_few() -> None:
    # 2000 rows a minute over 2 hours: chunks are the monitoring windows
    assert chunk_length(240_000, 7200, 60, 500, 10) == 60.0
    # a sparse history (23 rows a minute over 30 days): chunks of 2 x 500 rows on average
    assert chunk_length(1_000_000, 30 * 86400, 60, 500, 10) == pytest.approx(2592.0)
    # ... unless that leaves fewer than min_windows chunks
    assert chunk_length(8000, 30 * 86400, 60, 500, 10) == pytest.approx(30 * 86400 / 10)
    # 5 windows only: 10 chunks
    assert chunk_length(100_000, 300, 60, 500, 10) == pytest.approx(30.0)
    # fewer than min_windows x min_samples rows: no calibration
    assert chunk_length(4999, 7200, 60, 500, 10) is None


def test_thresholds_are_finite_above_the_floor_and_larger_for_noisier_features() -> None:
    """Synthetic chunk statistics: a steady feature (small spread), a noisy one (ten times
    the spread) and a very steady one (below the floor); one with too few chunks is left out."""
    rng = np.random.default_rng(5)
    rows = []
    for chunk in range(50):
        for feature, scale in (("steady", 0.002), ("noisy", 0.02), ("still", 0.0001)):
            for stat in ("psi", "js", "wasserstein"):
                rows.append({"chunk": chunk, "kind": "numeric", "feature": feature, "statistic": stat,
                             "value": abs(rng.normal(2 * scale, scale)), "n": 1000})
    rows += [{"chunk": c, "kind": "categorical", "feature": "rare", "statistic": "psi", "value": 0.5, "n": 600}
             for c in range(5)]
    plan = CalibrationPlan(time_col="t", window_s=60, min_samples=500, min_windows=10, floor=FLOOR)
    found = thresholds_from(pd.DataFrame(rows), plan)
    assert set(found) == {("numeric", "steady"), ("numeric", "noisy"), ("numeric", "still")}
    for stat in ("psi", "js", "wasserstein"):
        thr = {f: found[("numeric", f)]["thresholds"][stat] for f in ("steady", "noisy", "still")}
        assert all(math.isfinite(v) and v >= FLOOR[stat] for v in thr.values())
        assert thr["noisy"] > thr["steady"] >= thr["still"] == FLOOR[stat]
        spread = found[("numeric", "noisy")]["spread"][stat]
        assert spread["chunks"] == 50 and spread["max"] < thr["noisy"]
        assert thr["noisy"] == pytest.approx(max(spread["mean"] + 3 * spread["std"], spread["max"]))


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("calibrate", "message"), [
    ({"k": 2, "quantile": 0.99}, r"drift\.calibrate: k, quantile: give one rule"),
    ({"window": "soon"}, r"drift\.calibrate\.window: got 'soon'"),
    ({"min_windows": 1}, r"drift\.calibrate\.min_windows: got 1"),
    ({"quantile": 0.3}, r"drift\.calibrate\.quantile: got 0\.3"),
    ({"floor": {"psi": -0.1}}, r"drift\.calibrate\.floor\.psi: got -0\.1"),
    ({"floor": {"chi2": 1}}, r"drift\.calibrate\.floor\.chi2: unknown key"),
    ({"method": "guess"}, r"drift\.calibrate\.method: got 'guess'"),
])
def test_bad_calibrate_keys_fail_at_load_naming_the_key(calibrate: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        calibrated(load_usecase("fraud"), **calibrate)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"window_s": 0}, "window_s"), ({"min_samples": 0}, "min_samples"), ({"min_windows": 2}, "min_windows"),
    ({"k": 0.0}, "k"), ({"quantile": 0.2}, "quantile"), ({"floor": {"psi": -1.0}}, "floor"), ({"time_col": ""}, "time_col"),
])
def test_a_bad_plan_is_refused_naming_the_parameter(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(UsageError, match=f"^{name}:"):
        CalibrationPlan(**{"time_col": "t", "window_s": 60, "min_samples": 500, **kwargs})


def test_the_plan_follows_the_drift_section() -> None:
    fraud = load_usecase("fraud")
    assert fraud.drift.calibrate is None and calibration_plan(fraud) is None  # shipped: fixed thresholds
    plan = calibration_plan(calibrated(fraud))
    assert plan == CalibrationPlan(time_col="event_time", window_s=60, min_samples=500, min_windows=10, k=3.0,
                                   quantile=None, floor=FLOOR)
    assert plan.rule == "mean + 3 * std"
    eta = calibration_plan(calibrated(load_usecase("eta"), window="10m", quantile=0.99, floor={"psi": 0.05}))
    assert eta is not None and (eta.window_s, eta.min_samples, eta.quantile) == (600, 200, 0.99)
    assert eta.floor == {**FLOOR, "psi": 0.05} and eta.rule == "quantile 0.99"


def test_the_monitor_uses_calibrated_thresholds_only_when_asked_and_present() -> None:
    fraud = load_usecase("fraud")
    on = calibrated(fraud).drift
    profile = {"numeric": {"amount": {"thresholds": {"psi": 0.03, "js": 0.05, "wasserstein": 0.02}}},
               "categorical": {"country": {}}, "prediction": {"thresholds": {"psi": 0.004}}}
    assert threshold_for(profile, on, "numeric", "amount", "psi") == 0.03
    assert threshold_for(profile, on, "prediction", "score", "psi") == 0.004
    # not calibrated (a feature without enough chunks, an old profile): the fixed threshold
    assert threshold_for(profile, on, "categorical", "country", "js") == fraud.drift.categorical.js
    assert threshold_for(profile, on, "prediction", "score", "js") == fraud.drift.prediction.js
    assert threshold_for({"version": 1, "numeric": {"amount": {}}}, on, "numeric", "amount", "psi") == 0.2
    # drift.calibrate: null switches back to the fixed thresholds whatever the profile holds
    assert threshold_for(profile, fraud.drift, "numeric", "amount", "psi") == fraud.drift.numeric.psi


# --------------------------------------------------------------------------- Spark: counts and the profile


def test_chunk_counts_equal_numpy_per_chunk(spark: SparkSession) -> None:
    rng = np.random.default_rng(8)
    t0 = pd.Timestamp("2024-01-01")
    n = 3000
    frame = pd.DataFrame({
        "t": (t0 + pd.to_timedelta(np.sort(rng.uniform(0, 600, n)), unit="s")).round("ms"),
        "x": np.where(rng.random(n) < 0.05, np.nan, rng.normal(0, 1, n)),
        "c": rng.choice(np.array(["a", "b", "c", None], dtype=object), n, p=[0.5, 0.3, 0.15, 0.05]),
    })
    edges = [-1.0, 0.0, 1.0]
    origin = t0.timestamp()
    got = chunk_counts(spark.createDataFrame(frame), "t", origin_s=origin, length_s=120.0, stride=2,
                       numeric={"x": edges}, categorical=["c"])
    chunk = ((frame["t"] - t0).dt.total_seconds() // 120).astype(int)
    assert sorted(got["chunk"].unique()) == [0, 2, 4]  # every second chunk
    for c in (0, 2, 4):
        sub = frame[chunk == c]
        mine = got[got["chunk"] == c]
        x = mine[mine["feature"] == "x"]
        assert (x["kind"] == "numeric").all()
        counts = dict(zip(x["bucket"].astype(int), x["n"], strict=True))
        expected = drift.numeric_counts(sub["x"].to_numpy(), edges)
        assert [counts.get(b, 0) for b in range(4)] == expected.tolist()
        cat = mine[mine["feature"] == "c"]
        assert dict(zip(cat["bucket"], cat["n"], strict=True)) == drift.categorical_counts(sub["c"].tolist())


def test_calibrated_profile_on_synthetic_data(spark: SparkSession) -> None:
    """A steady numeric and categorical feature, and noisy ones whose level wanders from one
    window to the next: finite thresholds at or above the floor, larger for the noisy ones;
    the profile stays JSON and keeps everything it had."""
    rng = np.random.default_rng(11)
    minutes, per_minute = 40, 600
    t0 = pd.Timestamp("2024-03-01")
    minute = np.repeat(np.arange(minutes), per_minute)
    n = len(minute)
    wander = rng.normal(0, 0.4, minutes)[minute]
    share = np.clip(0.5 + rng.normal(0, 0.1, minutes), 0.05, 0.95)[minute]
    frame = pd.DataFrame({
        "event_time": (t0 + pd.to_timedelta(minute * 60 + rng.uniform(0, 60, n), unit="s")).round("ms"),
        "steady": rng.normal(0, 1, n),
        "noisy": rng.normal(0, 1, n) + wander,
        "steady_cat": np.where(rng.random(n) < 0.5, "a", "b"),
        "noisy_cat": np.where(rng.random(n) < share, "a", "b"),
    })
    scores = pd.DataFrame({"event_time": frame["event_time"], "score": 1 / (1 + np.exp(-frame["steady"]))})
    train, scored = spark.createDataFrame(frame), spark.createDataFrame(scores)
    base = build_reference_profile(train, ["steady", "noisy"], ["steady_cat", "noisy_cat"], scores=scored, bins=10)
    plan = CalibrationPlan(time_col="event_time", window_s=60, min_samples=500, floor=FLOOR)
    profile = calibrate_profile(base, train, plan, scores=scored)

    assert json.loads(json.dumps(profile)) == profile
    assert {k: v for k, v in profile["numeric"]["noisy"].items() if k != "thresholds"} == base["numeric"]["noisy"]
    assert "thresholds" not in base["numeric"]["noisy"]  # the input is not changed
    num = {f: profile["numeric"][f]["thresholds"] for f in ("steady", "noisy")}
    cat = {f: profile["categorical"][f]["thresholds"] for f in ("steady_cat", "noisy_cat")}
    pred = profile["prediction"]["thresholds"]
    for thresholds in [*num.values(), *cat.values(), pred]:
        assert all(math.isfinite(v) and v >= FLOOR[s] for s, v in thresholds.items())
    assert set(num["steady"]) == set(pred) == {"psi", "js", "wasserstein"} and set(cat["steady_cat"]) == {"psi", "js"}
    assert all(num["noisy"][s] > num["steady"][s] for s in ("psi", "js", "wasserstein"))
    assert all(cat["noisy_cat"][s] > cat["steady_cat"][s] for s in ("psi", "js"))
    record = profile["calibration"]
    assert record["chunks"]["features"]["by"] == "window" and record["chunks"]["features"]["length_s"] == 60
    assert record["spread"]["numeric"]["noisy"]["psi"]["chunks"] == minutes and record["uncalibrated"] == []


@pytest.mark.parametrize(("min_samples", "by", "length_s", "counted"), [
    (500, "rows", 3000.0, 12),   # 20 rows a minute: chunks of 50 minutes hold 2 x 500 rows on average
    (10, "window", 60.0, 200),   # 600 windows of 20 rows: every third one is counted (MAX_CHUNKS)
])
def test_a_sparse_or_long_reference_is_chunked_by_rows_or_thinned(
    spark: SparkSession, min_samples: int, by: str, length_s: float, counted: int,
) -> None:
    rng = np.random.default_rng(3)
    n = 600 * 20  # ten hours, 20 rows a minute
    frame = pd.DataFrame({"event_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n) * 3, unit="s"),
                          "x": rng.normal(0, 1, n)})
    train = spark.createDataFrame(frame)
    plan = CalibrationPlan(time_col="event_time", window_s=60, min_samples=min_samples, floor=FLOOR)
    profile = calibrate_profile(build_reference_profile(train, ["x"], [], bins=5), train, plan)
    layout = profile["calibration"]["chunks"]["features"]
    assert (layout["by"], layout["length_s"]) == (by, pytest.approx(length_s, rel=1e-3))
    assert profile["calibration"]["spread"]["numeric"]["x"]["psi"]["chunks"] == counted
    assert all(v >= FLOOR[k] for k, v in profile["numeric"]["x"]["thresholds"].items())


def test_a_reference_too_small_to_chunk_keeps_the_fixed_thresholds(spark: SparkSession) -> None:
    frame = pd.DataFrame({"event_time": pd.date_range("2024-01-01", periods=400, freq="s"),
                          "x": np.arange(400.0)})
    train = spark.createDataFrame(frame)
    plan = CalibrationPlan(time_col="event_time", window_s=60, min_samples=50)
    profile = calibrate_profile(build_reference_profile(train, ["x"], [], bins=4), train, plan)
    assert "thresholds" not in profile["numeric"]["x"]
    assert profile["calibration"]["chunks"]["features"] is None
    assert profile["calibration"]["uncalibrated"] == ["numeric:x"]


# --------------------------------------------------------------------------- simulated streams


def fraud_score(events: pd.DataFrame) -> np.ndarray:
    """A fixed stand-in for the fraud champion: large, online, risky-device, far-away payments score high."""
    z = (-6.0 + np.log(events["amount"].to_numpy() / 35.0) + 1.5 * (events["channel"] == "online")
         + 2.0 * events["device"].isin(["magstripe", "web"]) + 1.5 * events["country"].isin(["US", "BR", "NG", "CN"])
         + 1.0 * events["merchant_category"].isin(["electronics", "online_services", "gambling", "travel"]))
    return np.asarray(1.0 / (1.0 + np.exp(-z.astype(float))))


def eta_score(events: pd.DataFrame) -> np.ndarray:
    """A fixed stand-in for the eta champion: minutes from distance and items."""
    return np.asarray(14.0 + 2.8 * events["distance_km"].to_numpy() + 1.0 * events["items"].to_numpy())


@dataclass(frozen=True)
class Setup:
    """A shipped use case on simulated streams: its monitored features, a stand-in model, the
    event rate (events per window) and its drift scenarios: name -> (spec without a start, "kind:feature")."""

    uc: UseCaseConfig
    numeric: list[str]
    categorical: list[str]
    score: Callable[[pd.DataFrame], np.ndarray]
    per_window: int
    scenarios: dict[str, tuple[str, str]]

    @property
    def rate(self) -> float:
        return self.per_window / self.uc.drift.window_s


# every shipped drift scenario of both generators, with its defaults and a milder setting, and
# the feature it moves (prior_shift and concept_drift of eta, and concept_drift of fraud, move
# only the label, which no drift statistic sees: they must not be flagged later, i.e. at all)
SETUPS = {
    "fraud": Setup(load_usecase("fraud"), ["amount"], ["merchant_category", "currency", "country", "channel", "device"],
                   fraud_score, 1000, {
                       "covariate_shift": ("covariate_shift", "numeric:amount"),
                       "covariate_shift:factor=1.1": ("covariate_shift:factor=1.1", "numeric:amount"),
                       "covariate_shift:country=US": ("covariate_shift:factor=1,country=US,share=0.05",
                                                      "categorical:country"),
                       "prior_shift": ("prior_shift", "prediction:score"),
                       "prior_shift:rate=0.02": ("prior_shift:rate=0.02", "prediction:score"),
                       "concept_drift": ("concept_drift", "prediction:score"),
                       "new_category": ("new_category", "categorical:merchant_category"),
                       "new_category:share=0.01": ("new_category:share=0.01", "categorical:merchant_category"),
                   }),
    "eta": Setup(load_usecase("eta"), ["items", "distance_km", "order_value"], ["courier_zone"], eta_score, 1000, {
        "covariate_shift": ("covariate_shift", "numeric:distance_km"),
        "covariate_shift:factor=1.1": ("covariate_shift:factor=1.1", "numeric:distance_km"),
        "covariate_shift:zone=center": ("covariate_shift:factor=1,zone=center,share=0.1", "categorical:courier_zone"),
        "prior_shift": ("prior_shift", "prediction:score"),
        "concept_drift": ("concept_drift", "prediction:score"),
        "new_category": ("new_category", "categorical:courier_zone"),
    }),
}
REFERENCE_WINDOWS = 120
SERVING_WINDOWS = 30
START_WINDOW = 15           # scenarios switch on 15 windows into their stream


def simulate(setup: Setup, windows: int, seed: int, day: int, scenarios: Sequence[str] = ()) -> pd.DataFrame:
    """``windows`` monitoring windows of simulated events (schema columns) from midnight of 2024-01-``day``."""
    uc = setup.uc
    n = setup.per_window * windows
    gen = make_generator(uc, seed=seed, scenarios=list(scenarios), events_per_second=setup.rate, diurnal=False,
                         chunk_size=n, start=f"2024-01-{day:02d}T00:00:00Z")
    events = gen.next_chunk().events[[f.name for f in uc.schema_]]
    t = events[uc.event_time]
    return events[t < t.min().floor("D") + pd.Timedelta(seconds=windows * uc.drift.window_s)]


def counts_of(setup: Setup, events: pd.DataFrame, profile: dict[str, Any]) -> pd.DataFrame:
    """The monitor's per-window counts (its ``COUNT_SCHEMA`` frame) of ``events`` and of their
    stand-in scores, made with numpy: volume, the profile's numeric and score bins, category values."""
    uc = setup.uc
    window = events[uc.event_time].dt.floor(f"{uc.drift.window_s}s")
    score = setup.score(events)

    def cells(kind: str, feature: str, bucket: Any, keep: Any = slice(None), value: Any = np.nan) -> pd.DataFrame:
        return pd.DataFrame({"w": window[keep], "kind": kind, "feature": feature, "bucket": bucket, "value": value})

    parts = [cells("input", "volume", ""), cells("output", "volume", ""),
             cells("prediction", "score", np.searchsorted(profile["prediction"]["edges"], score, "right").astype(str),
                   value=score)]
    for c in setup.numeric:
        x = events[c].to_numpy(dtype=float)
        known = ~np.isnan(x)
        parts.append(cells("numeric", c, np.searchsorted(profile["numeric"][c]["edges"], x[known], "right")
                           .astype(str), keep=known))
    for c in setup.categorical:
        known = events[c].notna().to_numpy()
        parts.append(cells("categorical", c, events.loc[known, c].astype(str).to_numpy(), keep=known))
    counted = (pd.concat(parts, ignore_index=True)
               .groupby(["w", "kind", "feature", "bucket"], as_index=False)
               .agg(n=("value", "size"), total=("value", "sum"), low=("value", "min"), high=("value", "max")))
    return counted.assign(window_start=counted["w"], newest=counted["w"],
                          window_end=counted["w"] + pd.Timedelta(seconds=uc.drift.window_s)).drop(columns="w")


def flagged(counts: pd.DataFrame, profile: dict[str, Any], uc: UseCaseConfig) -> dict[pd.Timestamp, set[str]]:
    """``kind:feature`` drifted per window, as the monitor decides with ``uc.drift``."""
    out: dict[pd.Timestamp, set[str]] = {}
    for r in window_tables(counts, profile, uc.drift, uc, NOW)["drift"]:
        found = out.setdefault(pd.Timestamp(r["window_start"]), set())
        if r["drifted"]:
            found.add(f"{r['kind']}:{r['feature']}")
    return out


@pytest.fixture(scope="module", params=list(SETUPS))
def reference(request: pytest.FixtureRequest, spark: SparkSession) -> tuple[Setup, pd.DataFrame, dict[str, Any]]:
    """120 windows of unchanged events (1000 payments a minute, 1000 orders per 5 minutes), and
    their profile calibrated with ``drift.calibrate: {method: reference_windows}``."""
    setup = SETUPS[request.param]
    uc = setup.uc
    events = simulate(setup, REFERENCE_WINDOWS, seed=1, day=1)
    train = spark.createDataFrame(events)
    scores = spark.createDataFrame(pd.DataFrame({uc.event_time: events[uc.event_time], "score": setup.score(events)}))
    base = build_reference_profile(train, setup.numeric, setup.categorical, scores=scores, bins=10,
                                   score_kind=uc.label.kind)
    plan = calibration_plan(calibrated(uc))
    assert plan is not None
    return setup, events, calibrate_profile(base, train, plan, scores=scores)


def test_calibrated_thresholds_flag_no_reference_window(reference: tuple[Setup, pd.DataFrame, dict[str, Any]]) -> None:
    setup, events, profile = reference
    record = profile["calibration"]
    assert record["chunks"]["features"]["by"] == "window" and record["uncalibrated"] == []
    found = flagged(counts_of(setup, events, profile), profile, calibrated(setup.uc))
    assert len(found) == REFERENCE_WINDOWS
    assert {w: f for w, f in found.items() if f} == {}


@pytest.fixture(scope="module")
def detection(reference: tuple[Setup, pd.DataFrame, dict[str, Any]]
              ) -> dict[str, dict[str, dict[pd.Timestamp, set[str]]]]:
    """Each scenario switched on 15 windows into its own simulated night (the reference's hours),
    all counted together: scenario -> {"fixed": flags per window, "calibrated": flags per window}."""
    setup, _, profile = reference
    at = START_WINDOW * setup.uc.drift.window_s
    streams = []
    for i, (spec, _) in enumerate(setup.scenarios.values()):
        name, _, params = spec.partition(":")
        streams.append(simulate(setup, SERVING_WINDOWS, seed=2, day=2 + i,
                                scenarios=[f"{name}@{at}s" + (f":{params}" if params else "")]))
    counts = counts_of(setup, pd.concat(streams, ignore_index=True), profile)
    out: dict[str, dict[str, dict[pd.Timestamp, set[str]]]] = {}
    for i, name in enumerate(setup.scenarios):
        day = pd.Timestamp(f"2024-01-{2 + i:02d}")
        mine = counts[(counts["window_start"] >= day) & (counts["window_start"] < day + pd.Timedelta(days=1))]
        out[name] = {"fixed": flagged(mine, profile, setup.uc), "calibrated": flagged(mine, profile, calibrated(setup.uc))}
    return out


def first_flag(found: dict[pd.Timestamp, set[str]], feature: str) -> int | None:
    """Index (0 = the stream's first window) of the first window flagging ``feature``."""
    windows = sorted(found)
    return next((i for i, w in enumerate(windows) if feature in found[w]), None)


def test_scenarios_are_flagged_no_later_than_with_fixed_thresholds(
    reference: tuple[Setup, pd.DataFrame, dict[str, Any]], detection: dict[str, dict[str, dict[pd.Timestamp, set[str]]]],
) -> None:
    setup = reference[0]
    report, late = [], []
    for name, (_, feature) in setup.scenarios.items():
        runs = detection[name]
        for how, found in runs.items():
            assert len(found) == SERVING_WINDOWS
            before = {w: f for w, f in sorted(found.items())[:START_WINDOW] if f}
            assert not before, f"{setup.uc.name} {name}, {how} thresholds: flagged before the scenario started: {before}"
        fixed, cal = first_flag(runs["fixed"], feature), first_flag(runs["calibrated"], feature)
        report.append(f"{setup.uc.name} {name}: first window flagging {feature}: fixed {fixed}, calibrated {cal}")
        if fixed is not None and (cal is None or cal > fixed):
            late.append(report[-1])
    print(f"\n(scenarios start at window {START_WINDOW})\n" + "\n".join(report))
    assert not late, late
