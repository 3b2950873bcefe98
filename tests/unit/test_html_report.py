"""The data shaping of driftline.html_report on small frames with known answers."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from pandas.testing import assert_frame_equal, assert_series_equal

from driftline import html_report as hr

T0 = pd.Timestamp("2024-05-01 12:00:00")
W1, W2, W3 = T0, T0 + pd.Timedelta(hours=1), T0 + pd.Timedelta(hours=2)
H = pd.Timedelta(hours=1)


def _s(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def drift() -> pd.DataFrame:
    rows = [  # window, feature, kind, statistic, value, threshold, drifted
        (W1, "amount", "numeric", "psi", 0.05, 0.2, False), (W1, "amount", "numeric", "chi2", 3.0, 0.05, False),
        (W1, "score", "prediction", "psi", 0.01, 0.1, False),
        (W2, "amount", "numeric", "psi", 0.40, 0.2, True), (W2, "amount", "numeric", "chi2", 90.0, 0.05, True),
        (W2, "score", "prediction", "psi", 0.02, 0.1, False),
        (W2, "channel", "categorical", "unseen_share", 0.3, 0.1, True),
    ]
    return pd.DataFrame([{"window_start": w, "window_end": w + H, "feature": f, "kind": k, "statistic": s,
                          "value": v, "threshold": t, "drifted": d} for w, f, k, s, v, t, d in rows])


def test_psi_trend_frame_one_metric_per_feature_with_its_threshold_and_flag() -> None:
    got = hr.psi_trend_frame(drift())
    expected = pd.DataFrame({
        "window_start": [W1, W2, W1, W2], "metric": ["amount", "amount", "score (prediction)", "score (prediction)"],
        "value": [0.05, 0.40, 0.01, 0.02], "threshold": [0.2, 0.2, 0.1, 0.1], "drifted": [False, True, False, False],
    })
    assert_frame_equal(got, expected)


def audit() -> pd.DataFrame:
    rows = [  # seconds, action, from, to, reason
        (0, "register", None, 1, "registered"),
        (60, "promote", None, 1, "gate passed"),
        (90, "route", None, None, "routing champion/0 -> shadow/1"),
        (120, "register", 1, 2, "registered"),
        (150, "route", None, None, "routing shadow/1 -> canary/0.25"),
        (200, "promote", 1, 2, "gate passed"),
        (300, "rollback", 2, 1, "manual rollback"),
        (400, "gate_refused", 1, 3, "challenger worse"),
    ]
    return pd.DataFrame([{"event_time": _s(t), "action": a, "from_version": f, "to_version": v, "reason": r,
                          "metrics": [("roc_auc", 0.8 + 0.01 * (v or 0))]} for t, a, f, v, r in rows]
                        ).astype({"from_version": "Int32", "to_version": "Int32"})


def test_parse_routing() -> None:
    assert hr.parse_routing("routing shadow/1 -> canary/0.05") == ("canary", 0.05)
    assert hr.parse_routing("routing canary/0.25 -> champion/0.25") == ("champion", 0.25)
    assert hr.parse_routing("gate passed") is None
    assert hr.parse_routing(None) is None


def test_routing_steps_start_with_the_routing_before_the_first_change() -> None:
    got = hr.routing_steps(audit())
    expected = pd.DataFrame({"time": [_s(0), _s(90), _s(150)], "mode": ["champion", "shadow", "canary"],
                             "share": [0.0, 1.0, 0.25]})
    assert_frame_equal(got, expected)
    assert hr.routing_steps(audit()[audit()["action"] != "route"]).empty


def test_champion_periods_follow_promotions_and_rollbacks() -> None:
    got = hr.champion_periods(audit())
    expected = pd.DataFrame({"version": [1, 2, 1], "start": [_s(60), _s(200), _s(300)],
                             "end": [_s(200), _s(300), pd.NaT]})
    assert_frame_equal(got, expected)


def test_served_versions_label_each_window_with_the_versions_that_served_it() -> None:
    preds = pd.DataFrame({
        "event_time": [_s(10), _s(20), _s(3700), _s(3710), _s(3720), _s(7300)],
        "served": [True, True, True, True, False, True],
        "model_version": pd.array([1, 1, 1, 2, 3, 2], dtype="Int32"),
    })
    # one row per metric and window, as in monitoring/<uc>_performance
    windows = pd.DataFrame({"window_start": [W2, W1, W3 + H, W2, W1], "window_end": [W3, W2, W3 + 2 * H, W3, W2]},
                           index=[10, 11, 12, 13, 14])
    got = hr.served_versions(preds, windows)
    # W2 mixes v1 and the canary's v2 (v3 only in shadow, not served); the third window has no event
    assert list(got.index) == [10, 11, 12, 13, 14]
    assert [None if pd.isna(v) else v for v in got] == ["v1+v2", "v1", None, "v1+v2", "v1"]


def test_score_bins_and_shares_bin_as_the_monitor_does() -> None:
    assert hr.score_bins([0.25, 0.5, 0.75]) == ["<0.25", "0.25–0.5", "0.5–0.75", "≥0.75"]
    preds = pd.DataFrame({"route": ["champion"] * 4 + ["shadow"] * 2, "model_version": [1, 1, 1, 1, 2, 2],
                          "score": [0.1, 0.25, 0.5, 0.9, 0.8, None]})
    got = hr.score_shares(preds, [0.25, 0.5, 0.75], reference=[10, 30, 40, 20])
    expected = pd.DataFrame({"reference": [0.1, 0.3, 0.4, 0.2], "champion v1": [0.25, 0.25, 0.25, 0.25],
                             "shadow v2": [0.0, 0.0, 0.0, 1.0]},
                            index=pd.Index(["<0.25", "0.25–0.5", "0.5–0.75", "≥0.75"], name="bin"))
    assert_frame_equal(got, expected)
    with pytest.raises(ValueError, match="reference: expected 4 bin counts"):
        hr.score_shares(preds, [0.25, 0.5, 0.75], reference=[1, 2])


def test_series_colors_tell_versions_of_one_route_apart() -> None:
    assert hr.series_colors(["reference (champion v2)", "champion v1", "champion v2", "shadow v3", "challenger v4"]) \
        == ["black", "tab:blue", "tab:green", "tab:gray", "tab:orange"]


def shadow_predictions() -> pd.DataFrame:
    champion, shadow = [0.1, 0.7, 0.2, 0.9, 0.3], [0.2, 0.4, 0.3]
    rows = [{"event_id": f"e{i}", "route": "champion", "model_version": 1, "served": True, "score": s,
             "prediction": float(s >= 0.5)} for i, s in enumerate(champion, start=1)]
    rows += [{"event_id": f"e{i}", "route": "shadow", "model_version": 2, "served": False, "score": s,
              "prediction": float(s >= 0.5)} for i, s in enumerate(shadow, start=1)]
    return pd.DataFrame(rows)


def test_online_metrics_by_version_on_labelled_events() -> None:
    labels = pd.DataFrame({"event_id": ["e1", "e2", "e3", "e4", "e5", "e9"], "is_fraud": [0, 1, 1, 1, 0, 1]})
    got = hr.online_metrics_by_version(shadow_predictions(), labels, event_id="event_id", label="is_fraud",
                                       kind="binary")
    assert got[["route", "model_version", "n"]].to_dict("list") == {
        "route": ["champion", "shadow"], "model_version": [1, 2], "n": [5, 3]}
    champion, shadow = got.iloc[0], got.iloc[1]
    assert champion["roc_auc"] == pytest.approx(5 / 6)
    assert (champion["precision"], champion["recall"]) == (1.0, pytest.approx(2 / 3))
    assert shadow["roc_auc"] == 1.0 and shadow["recall"] == 0.0 and math.isnan(shadow["precision"])


def test_online_metrics_of_a_regression() -> None:
    preds = shadow_predictions().assign(score=[1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 5.0])
    labels = pd.DataFrame({"id": ["e1", "e2", "e3"], "minutes": [1.0, 2.0, 4.0]})
    got = hr.online_metrics_by_version(preds, labels, event_id="id", label="minutes", kind="regression")
    assert got["n"].tolist() == [3, 3]
    assert got["mae"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert got["rmse"].tolist() == pytest.approx([math.sqrt(1 / 3), math.sqrt(1 / 3)])


def test_registered_metrics_from_the_registry_or_else_the_audit() -> None:
    versions = pd.DataFrame({"version": [3, 2, 1], "aliases": ["", "challenger", "champion"],
                             "test_f1": [0.1, 0.5, 0.4], "test_roc_auc": [0.7, 0.95, 0.93],
                             "test_tp": [1.0, 80.0, 70.0], "test_rows": [10.0, 736.0, 700.0]})
    assert hr.alias_versions(versions, None) == {"champion": 1, "challenger": 2}
    got = hr.registered_metrics(versions, None)  # counts left out
    assert_frame_equal(got, pd.DataFrame({"f1": [0.4, 0.5], "roc_auc": [0.93, 0.95]},
                                         index=["champion v1", "challenger v2"]))
    # without the registry: champion = last promote/rollback (v1), challenger = last registered (v2)
    assert hr.alias_versions(None, audit()) == {"champion": 1, "challenger": 2}
    fallback = hr.registered_metrics(None, audit())
    assert list(fallback.index) == ["champion v1", "challenger v2"]
    assert fallback["roc_auc"].tolist() == pytest.approx([0.81, 0.82])
    assert hr.registered_metrics(None, None).empty


def test_registered_metrics_once_when_one_version_is_both() -> None:
    versions = pd.DataFrame({"version": [1], "aliases": ["challenger, champion"], "test_f1": [0.6]})
    assert hr.alias_versions(versions, None) == {"champion": 1, "challenger": 1}
    assert_frame_equal(hr.registered_metrics(versions, None), pd.DataFrame({"f1": [0.6]}, index=["champion v1"]))


def test_quarantine_reasons_sum_batch_runs_and_count_the_stream() -> None:
    validation = pd.DataFrame({"reason_counts": [[("not_json", 3), ("duplicate", 1)], {"not_json": 2}, None]})
    stream = pd.DataFrame({"reason": ["duplicate", "duplicate", "wrong_type:amount"]})
    got = hr.quarantine_reasons(validation, stream)
    expected = pd.DataFrame({"batch": [5, 1, 0], "stream": [0, 2, 1]},
                            index=pd.Index(["not_json", "duplicate", "wrong_type:amount"], name="reason"))
    assert_frame_equal(got, expected)
    assert hr.quarantine_reasons(None, None).empty


def test_bad_windows_count_what_the_alert_rule_counts() -> None:
    quality = pd.DataFrame({"window_start": [W1, W2, W2], "window_end": [W2, W3, W3], "breached": [False, True, True]})
    got = hr.bad_windows(drift(), quality, None)
    expected = pd.DataFrame({"window_start": [W1, W2], "window_end": [W2, W3], "drifted": [0, 2],
                             "quality": [0, 2], "performance": [0, 0]})
    assert_frame_equal(got, expected)
    assert hr.bad_windows(None, None, None).empty


def test_auto_freq_and_time_range() -> None:
    assert hr.auto_freq(T0, T0 + pd.Timedelta(seconds=50)) == "1s"
    assert hr.auto_freq(T0, T0 + H) == "1min"
    assert hr.auto_freq(T0, T0 + pd.Timedelta(hours=5)) == "5min"
    assert hr.auto_freq(T0, T0 + pd.Timedelta(days=30)) == "1D"
    a = pd.DataFrame({"s": [_s(10), _s(5)], "e": [_s(20), _s(30)]})
    b = pd.DataFrame({"s": [_s(1)], "e": [pd.NaT]})
    assert hr.time_range([(a, "s", "e"), (b, "s", "e"), (None, "s", "e")]) == (_s(1), _s(30))
    assert hr.time_range([(None, "s", "e")]) is None


def test_figure_svg_is_inline_svg_with_text_and_ids_of_its_own() -> None:
    def figure() -> Figure:
        fig = Figure(figsize=(3, 2))
        fig.subplots().plot([0, 1], [0, 1], label="amount")
        return fig

    one, two = hr.figure_svg(figure(), "one"), hr.figure_svg(figure(), "two")
    assert one.startswith("<svg") and one.rstrip().endswith("</svg>") and "<?xml" not in one
    assert "<!DOCTYPE" not in one and "<text" in one  # text kept as text, no glyph paths
    ids = [set(re.findall(r'id="([^"]+)"', svg)) for svg in (one, two)]
    assert ids[0] and not ids[0] & ids[1]
    for svg, known in zip((one, two), ids, strict=True):  # every reference still finds its target
        refs = set(re.findall(r"url\(#([^)]+)\)", svg)) | set(re.findall(r'href="#([^"]+)"', svg))
        assert refs and refs <= known
    assert hr.figure_svg(figure(), "one") == one  # deterministic


def test_html_table_escapes_and_formats() -> None:
    frame = pd.DataFrame({"reason": ["<script>alert(1)</script>"], "value": [0.123456], "when": [T0],
                          "none": [np.nan]})
    got = hr.html_table(frame, "t")
    assert "<script>" not in got and "&lt;script&gt;" in got
    assert "<td>0.1235</td>" in got and "<td>2024-05-01 12:00:00</td>" in got and "<td></td>" in got


def test_query_of_matches_the_use_case_as_a_word() -> None:
    names = pd.Series(["score-fraud", "monitor-fraud-events", "score_fraud", "score-fraudster", "raw-fraud.events",
                       None])
    assert_series_equal(hr._query_of(names, "fraud"), pd.Series([True, True, True, False, True, False]))


def test_build_charts_and_page_from_loaded_data() -> None:
    from datetime import UTC, datetime

    from driftline.config import load_platform, load_usecase

    calm = drift().assign(drifted=False)
    data = hr.ReportData(load_usecase("fraud"), tables={"drift": calm},
                         notes={"alerts": "monitoring/fraud_alerts: no table yet",
                                "predictions": "predictions/fraud: no table yet"},
                         registry_note="no MLflow store at sqlite:///x")
    charts = hr.build_charts(data)
    assert [c.name for c in charts] == list(hr.CHARTS)
    drawn = {c.name for c in charts if c.figure is not None}
    assert drawn == {"drift-heatmap", "psi-trend"}
    by_name = {c.name: c for c in charts}
    assert by_name["alerts"].empty == ("none of the 2 windows was bad: no drifted feature, no breached quality or "
                                       "performance row")
    assert by_name["latency"].empty == "predictions/fraud: no table yet"
    with pytest.raises(ValueError, match="statistic: 'ks'"):
        hr.build_charts(data, statistic="ks")

    page = hr.render_html(data, charts, load_platform(env={}), datetime(2024, 5, 2, 8, 0, tzinfo=UTC))
    assert page.count('<figure id="chart-') == 2 and '<p class="empty" id="empty-alerts">' in page
    assert "<dt>generated at</dt><dd>2024-05-02 08:00:00 UTC</dd>" in page
    assert "<dt>models</dt><dd>no MLflow store at sqlite:///x</dd>" in page
    assert "<script" not in page and "<metadata>" not in page
    # nothing to fetch: every link and image source is a fragment of the page or inline data
    assert re.findall(r'(?:src|href)="(?!#|data:)[^"]*"', page) == []
