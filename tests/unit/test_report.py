"""The pure pandas helpers of driftline.report on small frames with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pandas.testing import assert_frame_equal, assert_series_equal

from driftline import report
from driftline.config import PlatformConfig, load_platform

T0 = pd.Timestamp("2024-05-01 12:00:00")


def _s(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def predictions() -> pd.DataFrame:
    """Shadow mode: e1..e4 served by champion v1 (latencies 1, 2, 3, 4 s); e1..e2 also by shadow v2."""
    rows = [
        # event, score, prediction, served, route, version, kafka s, scoring s
        ("e1", 0.10, 0.0, True, "champion", 1, 0, 1),
        ("e2", 0.80, 1.0, True, "champion", 1, 0, 2),
        ("e3", 0.30, 0.0, True, "champion", 1, 60, 63),
        ("e4", 0.60, 1.0, True, "champion", 1, 60, 64),
        ("e1", 0.20, 0.0, False, "shadow", 2, 0, 1),
        ("e2", 0.40, 0.0, False, "shadow", 2, 0, 2),
    ]
    return pd.DataFrame(
        [{"event_id": e, "score": s, "prediction": p, "served": sv, "route": r, "model_version": v,
          "kafka_timestamp": _s(k), "scoring_time": _s(t)} for e, s, p, sv, r, v, k, t in rows]
    )


def test_latency_uses_served_rows_only() -> None:
    assert report.latency_ms(predictions()).tolist() == [1000.0, 2000.0, 3000.0, 4000.0]


def test_latency_percentiles_interpolate_linearly() -> None:
    got = report.latency_percentiles(predictions())
    expected = pd.Series([2500.0, 3850.0, 3970.0], index=["p50", "p95", "p99"], name="latency_ms")
    assert_series_equal(got, expected)


def test_latency_percentiles_of_nothing_are_nan() -> None:
    got = report.latency_percentiles(predictions().iloc[0:0])
    assert list(got.index) == ["p50", "p95", "p99"]
    assert all(math.isnan(v) for v in got)


def test_latency_percentiles_reject_out_of_range() -> None:
    with pytest.raises(ValueError, match="percentiles"):
        report.latency_percentiles(predictions(), percentiles=(50, 120))


def test_route_shares_are_per_distinct_event() -> None:
    got = report.route_shares(predictions())
    expected = pd.DataFrame({"route": ["champion", "shadow"], "model_version": [1, 2], "events": [4, 2],
                             "share": [1.0, 0.5]})
    assert_frame_equal(got, expected)


def test_route_shares_over_time_buckets() -> None:
    got = report.route_shares(predictions(), freq="1min")
    expected = pd.DataFrame({
        "time": [_s(0), _s(0), _s(60)],
        "route": ["champion", "shadow", "champion"],
        "model_version": [1, 2, 1],
        "events": [2, 2, 2],
        "share": [1.0, 1.0, 1.0],
    })
    assert_frame_equal(got, expected)


def test_route_shares_of_a_canary() -> None:
    canary = predictions().iloc[:4].assign(route=["champion", "challenger", "champion", "champion"],
                                           model_version=[1, 2, 1, 1])
    got = report.route_shares(canary)
    assert got.to_dict("list") == {"route": ["champion", "challenger"], "model_version": [1, 2],
                                   "events": [3, 1], "share": [0.75, 0.25]}


def test_shadow_pairs_join_served_and_shadow_by_event() -> None:
    pairs = report.shadow_pairs(predictions())
    expected = pd.DataFrame({
        "event_id": ["e1", "e2"], "served_version": [1, 1], "served_score": [0.1, 0.8],
        "served_prediction": [0.0, 1.0], "shadow_version": [2, 2], "shadow_score": [0.2, 0.4],
        "shadow_prediction": [0.0, 0.0],
    })
    assert_frame_equal(pairs, expected)
    agreement = report.shadow_agreement(pairs)
    assert agreement["n"] == 2
    assert agreement["prediction_agreement"] == 0.5
    assert agreement["mean_abs_score_diff"] == pytest.approx(0.25)
    assert agreement["score_correlation"] == pytest.approx(1.0)


def test_shadow_pairs_empty_without_shadow() -> None:
    pairs = report.shadow_pairs(predictions().iloc[:4])
    assert pairs.empty
    assert report.shadow_agreement(pairs)["n"] == 0


W1, W2 = pd.Timestamp("2024-05-01 12:00"), pd.Timestamp("2024-05-01 13:00")


def drift() -> pd.DataFrame:
    rows = [
        # window, feature, statistic, value, drifted
        (W1, "amount", "psi", 0.05, False), (W1, "amount", "chi2", 3.0, False),
        (W1, "channel", "psi", 0.01, False), (W1, "channel", "chi2", 1.0, False),
        (W2, "amount", "psi", 0.40, True), (W2, "amount", "chi2", 90.0, True),
        # channel drifts in W2 by its unseen share only, not by psi
        (W2, "channel", "psi", 0.02, False), (W2, "channel", "unseen_share", 0.3, True),
    ]
    return pd.DataFrame([{"window_start": w, "window_end": w + pd.Timedelta(hours=1), "feature": f,
                          "statistic": s, "value": v, "drifted": d} for w, f, s, v, d in rows])


def test_drift_matrix_pivots_one_statistic_and_marks_drifted_features() -> None:
    values, drifted = report.drift_matrix(drift(), "psi")
    columns = pd.DatetimeIndex([W1, W2], name="window_start")
    index = pd.Index(["amount", "channel"], name="feature")
    assert_frame_equal(values, pd.DataFrame([[0.05, 0.40], [0.01, 0.02]], index=index, columns=columns))
    assert_frame_equal(drifted, pd.DataFrame([[False, True], [False, True]], index=index, columns=columns))


def test_drift_matrix_names_known_statistics() -> None:
    with pytest.raises(ValueError, match=r"'ks'.*\['chi2', 'psi', 'unseen_share'\]"):
        report.drift_matrix(drift(), "ks")


def test_drifted_windows() -> None:
    got = report.drifted_windows(drift())
    expected = pd.DataFrame({
        "window_start": [W1, W2], "window_end": [W1 + pd.Timedelta(hours=1), W2 + pd.Timedelta(hours=1)],
        "features": [2, 2], "drifted": [0, 2], "drifted_features": ["", "amount, channel"],
    })
    assert_frame_equal(got, expected)


def test_breached_windows_label_the_column() -> None:
    quality = pd.DataFrame({
        "window_start": [W2, W1, W2], "window_end": [W2, W1, W2],
        "metric": ["missing_rate", "missing_rate", "volume"], "column": ["amount", "amount", None],
        "value": [0.3, 0.0, 5.0], "threshold": [0.05, 0.05, None], "breached": [True, False, True],
    })
    got = report.breached_windows(quality)
    expected = pd.DataFrame({"window_start": [W2, W2], "window_end": [W2, W2],
                             "metric": ["missing_rate[amount]", "volume"], "value": [0.3, 5.0],
                             "threshold": [0.05, None]})
    assert_frame_equal(got, expected)


def _platform(lake: Path) -> PlatformConfig:
    return load_platform(overrides=[f"lake_root={lake}"], env={})


def test_load_table_and_counts_on_a_local_lake(tmp_path: Path) -> None:
    platform = _platform(tmp_path / "lake")
    assert report.load_table(platform, "predictions", "fraud") is None
    stamps = pa.array([0, 1_000_000], type=pa.timestamp("us", tz="UTC"))
    write_deltalake(platform.table_path("predictions", "fraud"),
                    pa.table({"event_id": ["a", "b"], "scoring_time": stamps}))
    write_deltalake(platform.table_path("predictions", "fraud"),
                    pa.table({"event_id": ["c"], "scoring_time": stamps[:1]}), mode="append")
    write_deltalake(platform.table_path("monitoring", "fraud_monitor_state_events"), pa.table({"n": [1]}))
    write_deltalake(platform.table_path("monitoring", "eta_drift"), pa.table({"n": [1]}))

    loaded = report.load_table(platform, "predictions", "fraud")
    assert loaded is not None
    assert loaded.sort_values("event_id")["scoring_time"].tolist() == [
        pd.Timestamp("1970-01-01 00:00:00"), pd.Timestamp("1970-01-01 00:00:01"), pd.Timestamp("1970-01-01")]
    assert str(loaded["scoring_time"].dtype).startswith("datetime64")  # naive UTC

    counts = report.table_counts(platform, "fraud")
    assert counts.loc["predictions/fraud"].tolist() == [3, 1]
    assert counts.loc["monitoring/fraud_monitor_state_events"].tolist() == [1, 0]
    assert counts.loc["bronze/fraud_events"].isna().all()
    assert "monitoring/eta_drift" not in counts.index
    assert counts.index[0] == "bronze/fraud_events"


def test_registry_versions_does_not_create_a_store(tmp_path: Path) -> None:
    platform = load_platform(overrides=[f"mlflow.home={tmp_path / 'mlflow'}"], env={})
    assert report.registry_versions(platform, "fraud") is None
    assert not (tmp_path / "mlflow").exists()


def test_alert_table_newest_first_with_reasons_as_text() -> None:
    reason = {"source": "drift", "subject": "amount", "statistic": "psi", "value": 0.41234}
    alerts = pd.DataFrame({
        "alert_id": ["a1", "a2"], "window_start": [W1, W2], "window_end": [W2, W2 + pd.Timedelta(hours=1)],
        "bad_windows": [2, 3], "windows": [3, 3], "retrain": [True, False], "created_at": [W2, W2],
        "reasons": [[reason, reason, {**reason, "source": "quality", "subject": "volume", "statistic": "volume",
                                      "value": 3.0}], []],
    })
    got = report.alert_table(alerts)
    assert got["alert_id"].tolist() == ["a2", "a1"]
    assert got["bad"].tolist() == ["3/3", "2/3"]
    assert got["reasons"].tolist() == ["", "drift:amount psi=0.412; quality:volume volume=3"]
